"""`hallmark <command>`: the command-line face of the Python API.

Every option can also be set with an environment variable, HALLMARK_<OPTION> (for example
HALLMARK_MODEL, HALLMARK_TEMPERATURE); a flag on the command line wins over the variable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import MISSING, fields
from typing import Any

import click

from hallmark.catalog import CATALOG, DEFAULT_MODEL, is_installed, model_path
from hallmark.engine.sampling import SamplingParams
from hallmark.errors import HallmarkError

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
        elif name == "ignore_eos":
            option = click.option(flag, is_flag=True, default=None, **common)
        elif name in (
            "temperature",
            "top_p",
            "min_p",
            "repetition_penalty",
            "presence_penalty",
            "frequency_penalty",
        ):
            option = click.option(flag, type=float, default=None, **common)
        else:
            option = click.option(flag, type=int, default=None, **common)
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


def _load(model: str, ctx_size: int | None, threads: int | None, gpu_layers: int) -> Any:
    from hallmark.model import load  # imported here so that `--help` does not load llama.cpp

    return load(model, n_ctx=ctx_size, n_threads=threads, n_gpu_layers=gpu_layers)


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
    """


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("prompt", required=False)
@model_options
@sampling_options
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (text, tokens, finish reason, timings)."
)
@click.option("-v", "--verbose", is_flag=True, help="Print token counts and speed to stderr.")
def generate(
    prompt: str | None,
    model: str,
    ctx_size: int | None,
    threads: int | None,
    gpu_layers: int,
    as_json: bool,
    verbose: bool,
    **sampling: Any,
) -> None:
    """Continue PROMPT (or stdin, with '-' or no argument) and stream the text.

    \b
    Examples:
      hallmark generate "Once upon a time"
      hallmark generate "List three fruits:" --temperature 0 --max-tokens 40
      echo "The capital of France is" | hallmark generate --stop . --json
      hallmark generate -m gemma-3-270m "Water boils at" --seed 7 --logprobs 3 --json
    """
    params = _sampling_from(sampling)
    text = _read_prompt(prompt)
    llm = _load(model, ctx_size, threads, gpu_layers)
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
def chat(
    message: str | None,
    model: str,
    ctx_size: int | None,
    threads: int | None,
    gpu_layers: int,
    system: str | None,
    as_json: bool,
    verbose: bool,
    **sampling: Any,
) -> None:
    """Chat with a model: answer MESSAGE once, or talk in a loop.

    With no MESSAGE, reads messages from the terminal (history kept), or one message per line
    from piped stdin. /reset clears the history, /exit quits.

    \b
    Examples:
      hallmark chat "What is the capital of France?"
      hallmark chat --system "Answer in one sentence." --temperature 0.3
      printf 'Hi!\\nWhat did I just say?\\n' | hallmark chat
    """
    params = _sampling_from(sampling)
    llm = _load(model, ctx_size, threads, gpu_layers)
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


if __name__ == "__main__":
    main()
