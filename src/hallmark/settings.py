"""Dataclass fields that carry their command-line form: help text, flag, range, choices.

Typed configs (`SamplingParams`, `ServerConfig`) declare each setting once, with its default and
its help; the CLI derives the flags and their HALLMARK_* environment variables from these fields
(`hallmark.cli.options.dataclass_options`), so a default is never written twice.

    port: int = setting(8000, help="Port to listen on.", min=0, max=65535)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, Field, field
from typing import Any


def setting(
    default: Any = MISSING,
    *,
    help: str,
    default_factory: Callable[[], Any] | Any = MISSING,
    flag: str | None = None,
    env: str | None = None,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    multiple: bool = False,
    negated: bool = False,
) -> Any:
    """A dataclass field with its CLI form.

    flag: the option's name (default: the field name, `_` -> `-`); env: the environment variable
    without the HALLMARK_ prefix (default: from the flag); min/max: an inclusive numeric range;
    multiple: a repeatable option collected into a tuple; negated: a boolean field set to False by
    a `--no-...` flag (so `prefix_cache=True` is turned off with `--no-prefix-cache`).
    """
    metadata = {
        "help": help,
        "flag": flag,
        "env": env,
        "min": min,
        "max": max,
        "choices": choices,
        "metavar": metavar,
        "multiple": multiple,
        "negated": negated,
    }
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_name(f: Field[Any]) -> str:
    """The option's flag, e.g. '--ctx-size'."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def env_name(f: Field[Any]) -> str:
    """The option's environment variable, e.g. 'HALLMARK_CTX_SIZE'."""
    name = f.metadata.get("env") or flag_name(f).lstrip("-")
    return "HALLMARK_" + name.upper().replace("-", "_")
