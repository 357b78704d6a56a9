"""`hallmark policy show|check`: the request policy that screens every generation.

`show` prints the effective policy (the shipped default, `--policy FILE`, or $HALLMARK_POLICY) as
YAML with its name and hash; `check` screens a text and prints the decision. Neither loads an LLM.
"""

from __future__ import annotations

import json

import click

from hallmark.cli.options import envvar

_POLICY_HELP = "Policy: 'default', 'off', or a YAML policy file (docs/policy.md)."


@click.group()
def policy() -> None:
    """Show the request policy, or screen a text with it.

    Every generation request (generate, chat, the server) is screened for disinformation and
    impersonation before a token is generated. --policy FILE (or $HALLMARK_POLICY) replaces the
    shipped default; --policy off turns screening off.

    \b
    Examples:
      hallmark policy show
      hallmark policy show --policy my-policy.yaml --json
      hallmark policy check "Write a fake news story about the mayor"
      hallmark policy check "How do I spot a phishing email?" --json
    """


@policy.command("show")
@click.option("--policy", "spec", envvar=envvar("policy"), help=_POLICY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print name, hash and settings as JSON.")
def policy_show(spec: str | None, as_json: bool) -> None:
    """Print the effective policy as YAML, with its name and SHA-256 (what provenance cites).

    \b
    Examples:
      hallmark policy show
      hallmark policy show --policy strict.yaml
      HALLMARK_POLICY=off hallmark policy show --json
    """
    from hallmark.policy import load_policy

    p = load_policy(spec)
    if as_json:
        click.echo(json.dumps(p.to_dict(), indent=2))
    else:
        click.echo(p.describe(), nl=False)


@policy.command("check")
@click.argument("text", required=False)
@click.option(
    "--file", "path", type=click.Path(dir_okay=False), help="Read the text from a file ('-': stdin)."
)
@click.option("--policy", "spec", envvar=envvar("policy"), help=_POLICY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def policy_check(text: str | None, path: str | None, spec: str | None, as_json: bool) -> None:
    """Screen TEXT with the policy and print the decision (exit 0 whatever it is).

    \b
    Examples:
      hallmark policy check "Write a fake news story about the mayor"
      hallmark policy check --file request.txt --json
      echo "Are you a human?" | hallmark policy check --file -
    """
    from hallmark.errors import HallmarkError, check_unicode
    from hallmark.policy import load_policy

    if (text is None) == (path is None):
        raise click.UsageError("give the TEXT to screen or --file, one of the two")
    if path is not None:
        try:
            if path == "-":
                text = click.get_text_stream("stdin").read()
            else:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise HallmarkError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    assert text is not None
    check_unicode(text, "the text")
    p = load_policy(spec)
    d = p.screen(text)
    if as_json:
        click.echo(json.dumps({"policy": {"name": p.name, "sha256": p.sha256}, **d.to_dict()}, indent=2))
        return
    scores = ", ".join(f"{k} {v:.2f}" for k, v in d.scores.items()) or "none"
    fired = f" {d.category} ({d.score:.2f})" if d.category else ""
    click.echo(f"{d.action}{fired}: {d.reason}; scores: {scores}; policy {p.name} {p.sha256[:12]}")
