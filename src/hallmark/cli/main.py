"""The `hallmark` click group: help settings, `--version`, and how errors reach the user.

The commands live in their own modules and are registered on `main` by `hallmark.cli`; this module
imports none of them. The context settings are set here once: click's Context passes
`help_option_names` (-h/--help) and `max_content_width` down to every subcommand.

A HallmarkError (bad input, missing model, ...) prints `error: <message>` on one line and exits 1
(or the error's own `exit_code`: 3 for a request the policy refuses, so scripts can tell a refusal
from a mistake); Ctrl-C exits 130; a closed pipe (`hallmark ... | head`) exits 0. Anything else is
a bug and shows its traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from hallmark.errors import HallmarkError

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class HallmarkGroup(click.Group):
    """Turns HallmarkError into a one-line message and exit code 1 (or its own), never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HallmarkError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(getattr(e, "exit_code", 1))
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (e.g. `| head`); nothing left to say
            sys.exit(0)


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from hallmark import __version__  # looked up only here: importlib.metadata is slow to import

    click.echo(f"hallmark, version {__version__}")
    ctx.exit()


@click.group(cls=HallmarkGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
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
      hallmark translate --to fr "Where is the station?"
      hallmark serve --port 8000
      hallmark ui
      hallmark logs
    """
