"""`hallmark <command>`: the command-line face of the Python API.

Every option can also be set with an environment variable, HALLMARK_<OPTION> (for example
HALLMARK_MODEL, HALLMARK_TEMPERATURE); a flag on the command line wins over the variable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import click

from hallmark.catalog import CATALOG, DEFAULT_MODEL, is_installed, model_path
from hallmark.engine.sampling import SamplingParams
from hallmark.errors import HallmarkError
from hallmark.watermark.spec import DEFAULT_SCHEME, SCHEMES

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class HallmarkGroup(click.Group):
    """Turns HallmarkError into a one-line message and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HallmarkError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (e.g. `| head`); nothing left to say
            sys.exit(0)


def _envvar(name: str) -> str:
    return "HALLMARK_" + name.upper().replace("-", "_")


# -- options shared by every command that loads a model -----------------------------------------
def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "-m",
            "--model",
            default=DEFAULT_MODEL,
            envvar=_envvar("model"),
            show_default=True,
            show_envvar=True,
            help="Catalog name or path to a .gguf file.",
        ),
        click.option(
            "--ctx-size",
            type=click.IntRange(min=8),
            default=None,
            envvar=_envvar("ctx_size"),
            show_envvar=True,
            help="Context window in tokens [default: model's, at most 8192].",
        ),
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            default=None,
            envvar=_envvar("threads"),
            show_envvar=True,
            help="CPU threads [default: all available].",
        ),
        click.option(
            "--gpu-layers",
            type=int,
            default=0,
            envvar=_envvar("gpu_layers"),
            show_default=True,
            show_envvar=True,
            help="Layers to offload to a GPU (needs a GPU build of llama.cpp); -1 = all.",
        ),
        click.option(
            "--watermark-scheme",
            type=click.Choice(SCHEMES),
            default=DEFAULT_SCHEME,
            show_default=True,
            envvar=_envvar("watermark_scheme"),
            show_envvar=True,
            help="Scheme that watermarks sampled output (see `hallmark detect`).",
        ),
        click.option(
            "--watermark-key",
            default=None,
            metavar="NAME_OR_ID",
            envvar=_envvar("watermark_key_name"),
            show_envvar=True,
            help="Stored key to watermark with [default: $HALLMARK_WATERMARK_KEY, else your default key].",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _parse_logit_bias(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[int, float] | None:
    if not values:
        return None
    out: dict[int, float] = {}
    for item in values:
        token, sep, bias = item.partition("=")
        try:
            out[int(token)] = float(bias)
        except ValueError:
            raise click.BadParameter(f"expected TOKEN_ID=BIAS, got {item!r}") from None
        if not sep:
            raise click.BadParameter(f"expected TOKEN_ID=BIAS, got {item!r}")
    return out


# CLI-specific wording where a flag's type differs from the API's.
_HELP_OVERRIDES = {"max_tokens": "Most tokens to generate; 0 = until the context is full."}


def sampling_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """One flag per SamplingParams field, with the field's help text and default."""
    for fld in reversed(fields(SamplingParams)):
        name = fld.name
        flag = "--" + name.replace("_", "-")
        help_text = _HELP_OVERRIDES.get(name, fld.metadata.get("help", ""))
        default = fld.default if fld.default is not MISSING else None
        if default not in (None, (), False):
            help_text += f"  [default: {default}]"
        common: dict[str, Any] = {"envvar": _envvar(name), "show_envvar": True, "help": help_text}
        if name == "stop":
            option = click.option(flag, multiple=True, metavar="TEXT", **common)
        elif name == "logit_bias":
            option = click.option(
                flag, multiple=True, metavar="TOKEN_ID=BIAS", callback=_parse_logit_bias, **common
            )
        elif fld.type in ("bool", bool):
            option = click.option(f"{flag}/--no-{flag[2:]}", default=None, **common)
        else:
            # The remaining fields are numbers; the dataclass annotation says which kind.
            number = float if fld.type == "float" else int
            option = click.option(flag, type=number, default=None, **common)
        f = option(f)
    return f


def _sampling_from(kwargs: dict[str, Any]) -> SamplingParams:
    """Build SamplingParams from the flags that were given (the rest keep their defaults)."""
    overrides: dict[str, Any] = {}
    for fld in fields(SamplingParams):
        value = kwargs.pop(fld.name, None)
        if value is None or value == ():
            continue
        if fld.name == "max_tokens" and value == 0:
            value = None
        overrides[fld.name] = value
    return SamplingParams().with_overrides(**overrides)


def _load(options: dict[str, Any], default_ctx: int | None = None, max_sequences: int = 1) -> Any:
    """Load the model named by the model options (removed from `options`)."""
    from hallmark.model import load  # imported here so that `--help` does not load llama.cpp

    return load(
        options.pop("model"),
        n_ctx=options.pop("ctx_size") or default_ctx,
        max_sequences=max_sequences,
        n_threads=options.pop("threads"),
        n_gpu_layers=options.pop("gpu_layers"),
        watermark=options.pop("watermark_scheme"),
        watermark_key=options.pop("watermark_key"),
    )


def _read_prompt(prompt: str | None) -> str:
    if prompt is None or prompt == "-":
        if sys.stdin.isatty():
            raise click.UsageError("give a PROMPT argument, or pipe the prompt on stdin")
        return sys.stdin.read()
    return prompt


def _stream_to_terminal(chunks: Iterator[Any]) -> Any:
    final = None
    try:
        for chunk in chunks:
            if chunk.text:
                click.echo(chunk.text, nl=False)
                sys.stdout.flush()
            if chunk.final is not None:
                final = chunk.final
    finally:
        chunks.close()  # on Ctrl-C too: frees the sequence's KV cache at once
    click.echo()
    return final


def _print_stats(result: Any) -> None:
    t = result.timings
    click.echo(
        f"[{result.prompt_tokens} prompt tokens at {t.prompt_per_second:.1f} tok/s, "
        f"{result.completion_tokens} generated at {t.predicted_per_second:.1f} tok/s, "
        f"finish: {result.stop_reason}]",
        err=True,
    )


@click.group(cls=HallmarkGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="hallmark-llm", prog_name="hallmark")
def main() -> None:
    """Run open-weight LLMs on your own machine.

    \b
    Examples:
      hallmark generate "The three primary colours are"
      hallmark chat "Name three primary colours."
      hallmark models
      hallmark info gemma-3-270m --json
      hallmark detect essay.txt
      hallmark keys list
      hallmark serve --port 8000
      hallmark logs
    """


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("prompt", required=False)
@model_options
@sampling_options
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (text, tokens, finish reason, timings)."
)
@click.option("-v", "--verbose", is_flag=True, help="Print token counts and speed to stderr.")
def generate(prompt: str | None, as_json: bool, verbose: bool, **options: Any) -> None:
    """Continue PROMPT (or stdin, with '-' or no argument) and stream the text.

    \b
    Examples:
      hallmark generate "Once upon a time"
      hallmark generate "List three fruits:" --temperature 0 --max-tokens 40
      echo "The capital of France is" | hallmark generate --stop . --json
      hallmark generate -m gemma-3-270m "Water boils at" --seed 7 --logprobs 3 --json
    """
    params = _sampling_from(options)
    text = _read_prompt(prompt)
    llm = _load(options)
    if as_json:
        result = llm.generate(text, params=params)
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    result = _stream_to_terminal(llm.generate(text, params=params, stream=True))
    if verbose:
        _print_stats(result)


_CHAT_HELP = "Commands: /reset clears the conversation, /exit (or Ctrl-D) quits, /help shows this."


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("message", required=False)
@model_options
@sampling_options
@click.option(
    "-s", "--system", default=None, envvar=_envvar("system"), show_envvar=True, help="System prompt."
)
@click.option("--json", "as_json", is_flag=True, help="With MESSAGE: print the reply as one JSON object.")
@click.option(
    "-v", "--verbose", is_flag=True, help="Print token counts and speed to stderr after each reply."
)
def chat(message: str | None, system: str | None, as_json: bool, verbose: bool, **options: Any) -> None:
    """Chat with a model: answer MESSAGE once, or talk in a loop.

    With no MESSAGE, reads messages from the terminal (history kept), or one message per line
    from piped stdin. /reset clears the history, /exit quits.

    \b
    Examples:
      hallmark chat "What is the capital of France?"
      hallmark chat --system "Answer in one sentence." --temperature 0.3
      printf 'Hi!\\nWhat did I just say?\\n' | hallmark chat
    """
    params = _sampling_from(options)
    llm = _load(options)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []

    def reply(user_text: str) -> None:
        history.append({"role": "user", "content": user_text})
        if as_json:
            result = llm.chat(history, params=params)
            click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        else:
            result = _stream_to_terminal(llm.chat(history, params=params, stream=True))
        history.append({"role": "assistant", "content": result.text})
        if verbose:
            _print_stats(result)

    if message is not None:
        reply(message)
        return
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        click.echo(f"Chatting with {llm.name}. {_CHAT_HELP}", err=True)
    while True:
        try:
            line = input(">>> " if interactive else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            break
        if text == "/reset":
            del history[1 if system else 0 :]
            click.echo("(conversation cleared)", err=True)
            continue
        if text == "/help":
            click.echo(_CHAT_HELP, err=True)
            continue
        try:
            reply(text)
        except HallmarkError as e:
            # One bad turn (say, history too long for the context) should not end the session.
            history.pop()
            click.echo(f"error: {e}", err=True)
            if not interactive:
                sys.exit(1)
        except KeyboardInterrupt:
            if not interactive:
                raise
            history.pop()  # Ctrl-C stops this answer, not the session
            click.echo("\n(interrupted)", err=True)


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _human_count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


@main.command(context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def models(as_json: bool) -> None:
    """List the built-in models: installed or not, size, architecture, parameters, context, license.

    \b
    Examples:
      hallmark models
      hallmark models --json
    """
    from hallmark.gguf_info import read_gguf_info

    rows = []
    for entry in CATALOG:
        row: dict[str, Any] = {
            "name": entry.name,
            "aliases": list(entry.aliases),
            "package": entry.package,
            "kind": entry.kind,
            "license": entry.license,
            "default": entry.name == DEFAULT_MODEL,
            "installed": is_installed(entry),
        }
        if row["installed"]:
            info = read_gguf_info(model_path(entry))
            row.update(info.to_dict(with_metadata=False))
            row["gguf_license"] = info.license
            row["license"] = entry.license
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("NAME", "KIND", "SIZE", "ARCH", "PARAMS", "CONTEXT", "CHAT TEMPLATE", "LICENSE")
    table = [header]
    for r in rows:
        name = r["name"] + (" (default)" if r["default"] else "")
        if not r["installed"]:
            table.append(
                (name, r["kind"], "-", "-", "-", "-", "-", f"{r['license']} [pip install {r['package']}]")
            )
            continue
        table.append(
            (
                name,
                r["kind"],
                _human_size(r["file_size"]),
                r["architecture"],
                _human_count(r["parameters"]),
                str(r["context_length"]),
                "yes" if r["has_chat_template"] else "no (plain fallback)",
                r["license"],
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    click.echo('\nAny local .gguf file works too: hallmark generate -m ./my-model.gguf "..."')


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("model", envvar=_envvar("model"))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
def info(model: str, as_json: bool) -> None:
    """Show a model's GGUF metadata (MODEL is a catalog name or a .gguf path).

    \b
    Examples:
      hallmark info smollm2-135m-instruct
      hallmark info ./models/my-model.gguf --json
    """
    from hallmark.catalog import resolve
    from hallmark.gguf_info import read_gguf_info

    resolved = resolve(model)
    data = {"name": resolved.name, **read_gguf_info(resolved.path).to_dict()}
    if resolved.entry is not None:
        data["license"] = resolved.entry.license
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    meta = data.pop("metadata")
    for key, value in data.items():
        click.echo(f"{key:18} {value}")
    click.echo("\nGGUF metadata (arrays such as the token list not shown):")
    for key, value in meta.items():
        text = value.replace("\n", "\\n")
        click.echo(f"  {key:40} {text if len(text) <= 100 else text[:97] + '...'}")


# -- watermark keys and detection ----------------------------------------------------------------
@main.group(context_settings=CONTEXT_SETTINGS)
def keys() -> None:
    """Manage the secret keys that watermark your output.

    Keys live in ~/.config/hallmark/keys/ (or $HALLMARK_CONFIG_DIR/keys/), readable by you only.
    $HALLMARK_WATERMARK_KEY, if set, is used instead of the stored default key. The first
    watermarked generation creates a key named 'default' if you have none.

    \b
    Examples:
      hallmark keys new
      hallmark keys new newsroom
      hallmark keys list --json
      hallmark keys show newsroom
    """


def _key_dict(key: Any, with_secret: bool = False) -> dict[str, Any]:
    d = {
        "name": key.name,
        "key_id": key.key_id,
        "created": key.created,
        "path": str(key.path) if key.path else None,
    }
    if with_secret:
        d["secret"] = key.secret.hex()
    return d


@keys.command("new", context_settings=CONTEXT_SETTINGS)
@click.argument("name", default="default")
@click.option("--json", "as_json", is_flag=True, help="Print the new key's details as JSON.")
def keys_new(name: str, as_json: bool) -> None:
    """Create a new random key called NAME (default: 'default'); never overwrites one.

    \b
    Examples:
      hallmark keys new
      hallmark keys new newsroom --json
    """
    from hallmark.watermark.keys import new_key

    key = new_key(name)
    if as_json:
        click.echo(json.dumps(_key_dict(key)))
    else:
        click.echo(f"created key {key.name} (id {key.key_id}) at {key.path}")


@keys.command("list", context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def keys_list(as_json: bool) -> None:
    """List stored keys (names and public ids; never the secrets).

    \b
    Examples:
      hallmark keys list
      hallmark keys list --json
    """
    from hallmark.watermark.keys import ENV_KEY, env_key, keys_dir, list_keys

    found = list_keys()
    env = env_key()
    if as_json:
        click.echo(json.dumps([_key_dict(k) for k in found] + ([_key_dict(env)] if env else []), indent=2))
        return
    if not found and env is None:
        click.echo(f"no keys yet in {keys_dir()}; create one with: hallmark keys new")
        return
    for k in found:
        click.echo(f"{k.name:20} {k.key_id}  created {k.created}")
    if env is not None:
        click.echo(f"{'(from ' + ENV_KEY + ')':20} {env.key_id}  used instead of the default key")


@keys.command("show", context_settings=CONTEXT_SETTINGS)
@click.argument("name", default="default")
@click.option("--secret", is_flag=True, help="Also print the secret (hex). Keep it private.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def keys_show(name: str, secret: bool, as_json: bool) -> None:
    """Show one key by NAME or id (default: 'default').

    \b
    Examples:
      hallmark keys show
      hallmark keys show newsroom --json
    """
    from hallmark.watermark.keys import find_key

    d = _key_dict(find_key(name), with_secret=secret)
    if as_json:
        click.echo(json.dumps(d, indent=2))
    else:
        for k, v in d.items():
            click.echo(f"{k:8} {v}")


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("file", default="-", type=click.Path(allow_dash=True, dir_okay=False))
@click.option(
    "-m",
    "--model",
    default=None,
    envvar=_envvar("model"),
    show_envvar=True,
    help="Model whose tokenizer generated the text [default: found from --spec, else "
    f"{DEFAULT_MODEL}]. Only the tokenizer is loaded.",
)
@click.option(
    "--spec",
    default=None,
    envvar=_envvar("watermark_spec"),
    show_envvar=True,
    help="Watermark spec id (as printed by `generate --json`) or JSON, or @FILE holding either.",
)
@click.option(
    "--scheme",
    type=click.Choice(SCHEMES),
    default=DEFAULT_SCHEME,
    show_default=True,
    help="Scheme to test for when no --spec is given.",
)
@click.option(
    "--key",
    "key_name",
    default=None,
    metavar="NAME_OR_ID",
    envvar=_envvar("watermark_key_name"),
    show_envvar=True,
    help="Stored key [default: the spec's key, else your default key].",
)
@click.option(
    "--fpr",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=1e-3,
    show_default=True,
    help="False-positive rate the verdict is made at.",
)
@click.option(
    "--windows/--no-windows",
    default=True,
    show_default=True,
    help="Also look for watermarked passages inside longer text.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def detect(
    file: str,
    model: str | None,
    spec: str | None,
    scheme: str,
    key_name: str | None,
    fpr: float,
    windows: bool,
    as_json: bool,
) -> None:
    """Test FILE (or stdin) for the watermark: tokens scored, statistic, exact p-value, verdict.

    Needs only the generating model's tokenizer and the key, not the model itself. Exit status is
    0 whatever the verdict; read it from the output.

    \b
    Examples:
      hallmark detect essay.txt
      hallmark generate "Breaking news:" --json | jq -r .text | hallmark detect -
      hallmark detect essay.txt --spec hm1-gumbel-w2-k0e92caa512ae-tade6dc1a204a04a9 --json
      hallmark detect essay.txt --scheme kgw --fpr 0.01
    """
    from hallmark.watermark.api import detect as run_detect

    if file == "-":
        if sys.stdin.isatty():
            raise click.UsageError("give a FILE, or pipe the text on stdin")
        text = sys.stdin.read()
    else:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise HallmarkError(f"cannot read {file}: {e}") from e
    if spec and spec.startswith("@"):
        try:
            spec = Path(spec[1:]).read_text().strip()
        except OSError as e:
            raise HallmarkError(f"cannot read spec file {spec[1:]}: {e.strerror}") from e
    result = run_detect(text, model=model, spec=spec, key=key_name, scheme=scheme, fpr=fpr, windowed=windows)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    click.echo(result.message)
    click.echo(f"  spec       {result.spec_id}")
    click.echo(f"  tokens     {result.tokens} ({result.scored} distinct scored)")
    click.echo(f"  statistic  {result.statistic:.2f} (z = {result.z_score:.2f})")
    click.echo(f"  p-value    {result.p_value:.3g}")
    for span in result.spans:
        preview = text[span.start : span.end].replace("\n", " ")
        preview = preview if len(preview) <= 60 else preview[:57] + "..."
        click.echo(f"  passage    chars {span.start}-{span.end}, p = {span.p_value:.3g}: {preview!r}")


# The server's and the tasks' commands live in their own modules; importing them registers them.
from hallmark import cli_server, cli_tasks  # noqa: E402, F401

if __name__ == "__main__":
    main()
