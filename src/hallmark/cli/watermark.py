"""`hallmark detect` and `hallmark keys new|list|show`: watermark detection and the keys behind it.

Detection needs only tokenizers and keys; without -m or --spec it tries every installed model's
tokenizer with each local key and scheme (api.py). Several files are tested as one batch, whose
shared token pairs (boilerplate) are not scored. The numpy-heavy detection code and the key store
are imported inside the commands, so `--help` stays cheap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from hallmark.cli.options import envvar
from hallmark.errors import HallmarkError
from hallmark.watermark.spec import DEFAULT_FPR, SCHEMES
from hallmark.zeroshot import DEFAULT_ZS_FPR


@click.group()
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


@keys.command("new")
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


@keys.command("list")
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


@keys.command("show")
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


@click.command()
@click.argument("files", nargs=-1, type=click.Path(allow_dash=True, dir_okay=False))
@click.option(
    "-m",
    "--model",
    default=None,
    envvar=envvar("model"),
    show_envvar=True,
    help="Model whose tokenizer generated the text; only the tokenizer is loaded [default: found "
    "from --spec, else every installed model's tokenizer is tried].",
)
@click.option(
    "--spec",
    default=None,
    envvar=envvar("watermark_spec"),
    show_envvar=True,
    help="Watermark spec id (as printed by `generate --json`) or JSON, or @FILE holding either.",
)
@click.option(
    "--scheme",
    type=click.Choice(SCHEMES),
    default=None,
    help="Scheme to test for when no --spec is given [default: each].",
)
@click.option(
    "--key",
    "key_name",
    default=None,
    metavar="NAME_OR_ID",
    envvar=envvar("watermark_key_name"),
    show_envvar=True,
    help="Stored key [default: the spec's key, else each of your keys].",
)
@click.option(
    "--fpr",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=DEFAULT_FPR,
    show_default=True,
    help="False-positive rate the verdict is made at (for all hypotheses tested together).",
)
@click.option(
    "--reference",
    "references",
    multiple=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Boilerplate (a blank template, a letter head): its token pairs are not scored. Repeatable.",
)
@click.option(
    "--exclude-shared/--keep-shared",
    default=True,
    show_default=True,
    help="With several FILES: leave out the token pairs that two or more of them share.",
)
@click.option(
    "--windows/--no-windows",
    default=True,
    show_default=True,
    help="Also look for watermarked passages inside longer text.",
)
@click.option(
    "--zero-shot/--no-zero-shot",
    default=True,
    show_default=True,
    envvar=envvar("zero_shot"),
    show_envvar=True,
    help="Also assess whether the text looks machine-generated whoever made it (loads both shipped models).",
)
@click.option(
    "--zs-fpr",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=DEFAULT_ZS_FPR,
    show_default=True,
    help="False-positive rate of the zero-shot decision (estimated on human text, not exact).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print each result as one JSON object (a line per file)."
)
def detect(
    files: tuple[str, ...],
    model: str | None,
    spec: str | None,
    scheme: str | None,
    key_name: str | None,
    fpr: float,
    references: tuple[str, ...],
    exclude_shared: bool,
    windows: bool,
    zero_shot: bool,
    zs_fpr: float,
    as_json: bool,
) -> None:
    """Test FILES (or stdin) for the watermark (tokens scored, statistic, exact p-value, verdict),
    and assess whether the text looks machine-generated at all (zero-shot).

    The watermark test needs only tokenizers and keys. Without --model or --spec, the text is
    tested under every installed model's tokenizer, each of your keys and each scheme; the best
    match is reported with its p-value multiplied by the number of hypotheses tested, so --fpr holds
    for all of them together. Exit status is 0 whatever the verdicts; read them from the output.

    "Not watermarked" does not mean "written by a person": most machine text carries no hallmark
    watermark. The zero-shot assessment scores the text with both shipped models and compares it
    with human texts of the same length: an estimated p-value and a decision at --zs-fpr. It is a
    statistical estimate, not proof; a text of fewer than 48 words is too short for it (docs/zeroshot.md).

    Texts that share boilerplate (a form, a letter head) share its token pairs, and under one key
    their scores too: test them together (several FILES, whose shared pairs are left out), or give
    the boilerplate with --reference.

    \b
    Examples:
      hallmark detect essay.txt
      hallmark generate "Breaking news:" --json | jq -r .text | hallmark detect -
      hallmark detect essay.txt --spec hm1-gumbel-w2-k0e92caa512ae-tade6dc1a204a04a9 --json
      hallmark detect essays/*.txt --reference essays/template.txt --fpr 0.01
      hallmark detect article.txt --zs-fpr 0.001
      hallmark detect essay.txt --no-zero-shot      # the watermark only, no model loaded
    """
    from hallmark.detection import detect_many

    names = list(files) or ["-"]
    if names.count("-") > 1:
        raise click.UsageError("stdin ('-') can be read only once")
    texts = [_read_text(name) for name in names]
    reference = [_read_text(name) for name in references]
    if spec and spec.startswith("@"):
        try:
            spec = Path(spec[1:]).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise HallmarkError(f"cannot read spec file {spec[1:]}: {e.strerror}") from e
        except UnicodeDecodeError:
            raise HallmarkError(f"cannot read spec file {spec[1:]}: it is not UTF-8 text") from None
    results = detect_many(
        texts,
        model=model,
        spec=spec,
        key=key_name,
        scheme=scheme,
        fpr=fpr,
        windowed=windows,
        reference=reference,
        exclude_shared=exclude_shared,
        zero_shot=zero_shot,
        zs_fpr=zs_fpr,
    )
    for i, (name, text, result) in enumerate(zip(names, texts, results, strict=True)):
        if as_json:
            click.echo(json.dumps({"file": name, **result.to_dict()}))
            continue
        if len(names) > 1:
            click.echo(("\n" if i else "") + f"{name}:")
        _print_result(text, result)


def _read_text(name: str) -> str:
    if name == "-":
        if sys.stdin.isatty():
            raise click.UsageError("give a FILE, or pipe the text on stdin")
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "it is not UTF-8 text"
        raise HallmarkError(f"cannot read {name}: {reason}") from None


def _print_result(text: str, result: Any) -> None:
    click.echo(result.message)
    if result.model:
        click.echo(f"  model      {result.model}")
    click.echo(f"  spec       {result.spec_id}")
    excluded = f", {result.excluded} left out as boilerplate" if result.excluded else ""
    click.echo(f"  tokens     {result.tokens} ({result.scored} distinct scored{excluded})")
    click.echo(f"  statistic  {result.statistic:.2f} (z = {result.z_score:.2f})")
    if result.hypotheses > 1:
        click.echo(
            f"  p-value    {result.p_value:.3g} "
            f"({result.raw_p_value:.3g} x {result.hypotheses} hypotheses tested)"
        )
    else:
        click.echo(f"  p-value    {result.p_value:.3g}")
    for span in result.spans:
        preview = text[span.start : span.end].replace("\n", " ")
        preview = preview if len(preview) <= 60 else preview[:57] + "..."
        click.echo(f"  passage    chars {span.start}-{span.end}, p = {span.p_value:.3g}: {preview!r}")
    if result.zero_shot is not None:
        _print_zero_shot(result.zero_shot)


def _print_zero_shot(zs: Any) -> None:
    click.echo(zs.message)
    if zs.score is None:
        return
    click.echo(f"  words      {zs.words} ({zs.scored_words} compared with human texts of that length)")
    click.echo(f"  score      {zs.score:.2f} (mean z-score of {len(zs.features)} statistics)")
    click.echo(
        f"  p-value    {zs.p_value:.3g} (estimated); flagged at <= {zs.fpr:g}, "
        f"estimated false-positive rate {zs.estimated_fpr:.3g}"
    )
    click.echo(f"  note       {zs.caveat}")
