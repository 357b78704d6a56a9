"""`hallmark verify` and `hallmark provenance key`: check a signed provenance manifest, publish the key.

`verify` runs the checks of hallmark.provenance.verify_manifest (trusted key, signature, text hash)
and then watermark detection with the manifest's spec (which needs the watermark's secret key and
the model's tokenizer; without them that check is skipped, not failed). Exit status: 0 when no
check failed, else the code of the first check that failed (EXIT_CODES), so scripts can tell a
forged manifest from an edited text; 1 with a one-line `error:` for bad input (an unreadable file, a
malformed manifest or key file); 2 for a usage error.

The crypto and detection modules are imported inside the commands, so `--help` stays cheap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from hallmark.errors import HallmarkError
from hallmark.watermark.spec import DEFAULT_FPR

# The first failed check decides the exit status (1 and 2 are bad input and usage errors).
EXIT_CODES = {"signature": 3, "key": 4, "text": 5, "watermark": 6}


def _read(file: str, what: str) -> str:
    if file == "-":
        if sys.stdin.isatty():
            raise click.UsageError(f"give the {what} as a FILE, or pipe it on stdin")
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except OSError as e:
        raise HallmarkError(f"cannot read the {what} {file}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise HallmarkError(f"cannot read the {what} {file}: it is not UTF-8 text") from None


def _watermark_check(text: str, manifest: dict[str, Any], fpr: float) -> tuple[Any, dict[str, Any] | None]:
    """The watermark check: detection with the manifest's spec, or why it could not run."""
    from hallmark.provenance import Check
    from hallmark.watermark.api import detect

    spec_id = manifest["watermark"]["spec_id"]
    if not manifest["watermark"]["applied"]:
        why = "greedy decoding, or the watermark was off" if spec_id else "the model had no watermark"
        return Check("watermark", "skip", f"the manifest says no watermark was applied ({why})"), None
    try:
        result = detect(text, spec=spec_id, fpr=fpr)
    except HallmarkError as e:
        # No secret key here, or no installed model with the spec's tokenizer: only the key's holder
        # (`hallmark detect`, POST /v1/detect) can run this check.
        return Check("watermark", "skip", f"not tested: {e}"), None
    # Only verdict, p_value and to_dict() are relied on; the rest is shown when the result has it.
    scored = getattr(result, "scored", None)
    found = f"p = {result.p_value:.3g} at fpr {fpr:g}"
    if scored is not None:
        found += f", {scored} tokens scored"
    spans = getattr(result, "spans", None) or []
    if result.verdict == "watermarked":
        check = Check("watermark", "pass", f"detected ({found})")
    elif result.verdict == "too_short":
        check = Check("watermark", "skip", f"too short to test ({found})")
    elif spans:
        span = min(spans, key=lambda s: s.p_value)
        check = Check(
            "watermark",
            "fail",
            f"not detected in the whole text ({found}); a watermarked passage at characters "
            f"{span.start}-{span.end} (p = {span.p_value:.3g})",
        )
    else:
        check = Check(
            "watermark",
            "fail",
            f"not detected ({found}), though the manifest says it was applied",
        )
    return check, result.to_dict()


@click.command()
@click.argument("file", default="-", type=click.Path(allow_dash=True, dir_okay=False))
@click.option(
    "--manifest",
    "manifest_file",
    required=True,
    type=click.Path(allow_dash=True, dir_okay=False),
    help="The manifest: a JSON file holding it, or a response or `--json` result that carries one.",
)
@click.option(
    "--key",
    "key_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    metavar="PUBLIC_KEY",
    help="Trust this public key: a JWKS (GET /v1/provenance/keys, `hallmark provenance key --json`), "
    "a JWK or a PEM file; repeatable [default: your own signing key].",
)
@click.option(
    "--watermark/--no-watermark",
    default=True,
    show_default=True,
    help="Also test the text for the manifest's watermark (needs its secret key).",
)
@click.option(
    "--fpr",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=DEFAULT_FPR,
    show_default=True,
    help="False-positive rate of the watermark test.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def verify(
    file: str, manifest_file: str, key_files: tuple[str, ...], watermark: bool, fpr: float, as_json: bool
) -> None:
    """Verify that FILE (or stdin) is the text a signed provenance manifest describes.

    Checks, in order: the manifest names a trusted key, its signature is valid, the text's sha256
    matches, and the text carries the manifest's watermark. A single final newline in FILE (as
    `hallmark generate > FILE` writes) is ignored when the text matches without it.

    \b
    Exit status:
      0  every check passed (or could not run: the watermark test needs its secret key)
      1  bad input (an unreadable file, a malformed manifest or key), with a one-line error
      3  the signature does not match: the manifest was forged or altered
      4  the manifest was signed by a key you did not trust (--key)
      5  the text was edited after signing, or the manifest is for another text
      6  the watermark was not detected though the manifest says it was applied

    \b
    Examples:
      hallmark generate "Breaking news:" --provenance story.json > story.txt
      hallmark verify story.txt --manifest story.json
      hallmark verify story.txt --manifest story.json --key publisher-jwks.json --json
      curl -s localhost:8000/v1/provenance/keys > jwks.json
    """
    from hallmark.provenance import (
        ProvenanceError,
        check_manifest,
        find_manifest,
        parse_manifest_json,
        read_public_keys,
        text_sha256,
        verify_manifest,
    )

    if file == "-" and manifest_file == "-":
        raise click.UsageError("the text and the manifest cannot both come from stdin")
    text = _read(file, "text")
    doc = parse_manifest_json(_read(manifest_file, "manifest"), f"the manifest {manifest_file}")
    manifest = find_manifest(doc, text)
    try:
        check_manifest(manifest)
    except ProvenanceError as e:
        raise ProvenanceError(f"{manifest_file}: {e}") from None
    trusted = None
    if key_files:
        trusted = {}
        for key_file in key_files:
            trusted.update(read_public_keys(key_file))
    note = None
    signed = manifest["text"]["sha256"]
    if text.endswith("\n") and text_sha256(text) != signed and text_sha256(text[:-1]) == signed:
        text, note = text[:-1], "the file's final newline was ignored"
    result = verify_manifest(text, manifest, trusted)
    detection = None
    if watermark:
        check, detection = _watermark_check(text, result.manifest, fpr)
        result = result.with_check(check)
    failed = result.failed
    headline = result.message if failed is None else f"FAILED: {result.message}"
    if as_json:
        out = {**result.to_dict(), "exit_code": EXIT_CODES.get(failed or "", 0), "note": note}
        if detection is not None:
            out["detection"] = detection
        click.echo(json.dumps(out))
    else:
        m = result.manifest
        click.echo(headline)
        click.echo(f"  manifest   {m['id']}, created {m['created']} by {m['generator']}")
        click.echo(f"  model      {m['model']['name']} (sha256 {m['model']['sha256'][:16]}...)")
        policy = m["policy"]
        if policy["name"] is not None:
            click.echo(f"  policy     {policy['name']} (sha256 {policy['sha256'][:16]}...)")
        for c in result.checks:
            click.echo(f"  {c.name:10} {c.status:5} {c.detail}")
        if note:
            click.echo(f"  note       {note}")
        click.echo(f"  disclosure {m['disclosure']}")
    if failed is not None:
        sys.exit(EXIT_CODES[failed])


@click.group()
def provenance() -> None:
    """The key that signs your provenance manifests.

    The first signed generation creates an Ed25519 key in ~/.config/hallmark/provenance/ (or
    $HALLMARK_CONFIG_DIR/provenance/), readable by you only; $HALLMARK_PROVENANCE_KEY, if set, is
    used instead. Publish its public key so that others can verify your manifests.

    \b
    Examples:
      hallmark provenance key
      hallmark provenance key --json > jwks.json
    """


@provenance.command("key")
@click.option("--json", "as_json", is_flag=True, help="Print only the JWKS (the public key) as JSON.")
def provenance_key(as_json: bool) -> None:
    """Print the public signing key (a JWKS); creates the key if you have none yet.

    \b
    Examples:
      hallmark provenance key
      hallmark provenance key --json > jwks.json
      hallmark verify story.txt --manifest story.json --key jwks.json
    """
    from hallmark.provenance import public_jwk, signing_key

    key = signing_key()
    jwks = {"keys": [public_jwk(key.public)]}
    if as_json:
        click.echo(json.dumps(jwks, indent=2))
        return
    click.echo(f"kid      {key.kid}")
    click.echo(f"secret   {key.source}" + (" (keep it private)" if key.path is not None else ""))
    if key.created:
        click.echo(f"created  {key.created}")
    click.echo("public key (JWKS; publish it so that others can verify your manifests):")
    click.echo(json.dumps(jwks, indent=2))
