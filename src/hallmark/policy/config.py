"""The policy file: YAML -> a validated, canonical `PolicyConfig`.

Contract: `parse_config(text, source)` accepts the YAML format of docs/policy.md and returns a
`PolicyConfig` with every default filled in; anything else (malformed YAML, an unknown key or
category, an action other than refuse|flag|log, a threshold outside [0, 1], a phrase that is not a
non-empty string, ...) raises a one-line `PolicyError` naming the problem and the file. `canonical()`
is the config as plain data with sorted keys: what the policy's hash covers and what
`hallmark policy show` prints.

A file replaces the shipped default whole: a category the file does not list is off, and a listed
category takes the defaults below for the fields it leaves out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hallmark.errors import HallmarkError

CATEGORIES = ("disinformation", "impersonation")
ACTIONS = ("refuse", "flag", "log")
# Most severe first: when two categories fire, the decision takes the more severe action.
SEVERITY = {"refuse": 3, "flag": 2, "log": 1}
FORMAT_VERSION = 1
MAX_PHRASES = 1000
MAX_PHRASE_CHARS = 200


class PolicyError(HallmarkError, ValueError):
    """A policy file or spec that cannot be used (one line, naming the problem and the file)."""


@dataclass(frozen=True)
class CategoryConfig:
    enabled: bool = True
    action: str = "refuse"
    threshold: float = 0.5
    deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyConfig:
    name: str
    categories: dict[str, CategoryConfig] = field(default_factory=dict)
    allow: tuple[str, ...] = ()
    # None: hallmark's default instruction (hallmark.engine.rails); False: none; else the text.
    disclosure_instruction: str | bool | None = None
    human_claim_rail: bool = True

    def canonical(self) -> dict[str, Any]:
        """Plain data, every field present, in a fixed order: hashed and printed."""
        return {
            "version": FORMAT_VERSION,
            "name": self.name,
            "categories": {
                name: {
                    "enabled": c.enabled,
                    "action": c.action,
                    "threshold": c.threshold,
                    "deny": list(c.deny),
                }
                for name, c in sorted(self.categories.items())
            },
            "allow": list(self.allow),
            "disclosure": {"instruction": self.disclosure_instruction, "rail": self.human_claim_rail},
        }

    def canonical_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_TOP_KEYS = ("version", "name", "categories", "allow", "disclosure")
_CATEGORY_KEYS = ("enabled", "action", "threshold", "deny")
_DISCLOSURE_KEYS = ("instruction", "rail")


def _fail(source: str, problem: str) -> PolicyError:
    return PolicyError(f"policy {source}: {problem}")


def _check_keys(data: dict, allowed: tuple[str, ...], where: str, source: str) -> None:
    for key in data:
        if key not in allowed:
            shown = key if isinstance(key, str) else repr(key)
            raise _fail(source, f"unknown key '{shown}' in {where} (expected one of: {', '.join(allowed)})")


def _phrases(value: Any, where: str, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail(source, f"{where} must be a list of phrases")
    if len(value) > MAX_PHRASES:
        raise _fail(source, f"{where} has {len(value)} phrases (at most {MAX_PHRASES})")
    out = []
    for item in value:
        if not isinstance(item, str) or not " ".join(item.split()):
            raise _fail(source, f"{where} holds {item!r}, not a non-empty phrase")
        if len(item) > MAX_PHRASE_CHARS:
            raise _fail(
                source, f"{where} holds a phrase of {len(item)} characters (at most {MAX_PHRASE_CHARS})"
            )
        out.append(" ".join(item.lower().split()))
    return tuple(dict.fromkeys(out))  # de-duplicated, order kept


def _category(name: str, data: Any, default_threshold: float, source: str) -> CategoryConfig:
    where = f"categories.{name}"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _fail(source, f"{where} must be a mapping (enabled, action, threshold, deny)")
    _check_keys(data, _CATEGORY_KEYS, where, source)
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _fail(source, f"{where}.enabled must be true or false, not {enabled!r}")
    action = data.get("action", "refuse")
    if action not in ACTIONS:
        raise _fail(source, f"{where}.action is {action!r}; expected one of: {', '.join(ACTIONS)}")
    threshold = data.get("threshold", default_threshold)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
        raise _fail(source, f"{where}.threshold must be a number in [0, 1], not {threshold!r}")
    return CategoryConfig(
        enabled=enabled,
        action=action,
        threshold=float(threshold),
        deny=_phrases(data.get("deny"), where + ".deny", source),
    )


def parse_config(
    text: str, source: str, name: str, default_thresholds: dict[str, float] | None = None
) -> PolicyConfig:
    """Validate a policy file's text. `source` names the file in errors; `name` is used when the file
    sets none; `default_thresholds` are the trained head's thresholds (for categories that set none)."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise _fail(source, f"malformed YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _fail(source, "the file must hold a mapping (categories, allow, disclosure)")
    _check_keys(data, _TOP_KEYS, "the file", source)
    version = data.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise _fail(source, f"version {version!r} is not supported (expected {FORMAT_VERSION})")
    file_name = data.get("name", name)
    if not isinstance(file_name, str) or not file_name.strip() or len(file_name) > 100:
        raise _fail(source, "name must be a non-empty string of at most 100 characters")
    categories_data = data.get("categories")
    if categories_data is None:
        categories_data = {}
    if not isinstance(categories_data, dict):
        raise _fail(source, "categories must be a mapping of category name -> settings")
    categories = {}
    thresholds = default_thresholds or {}
    for cat, settings in categories_data.items():
        if cat not in CATEGORIES:
            raise _fail(source, f"unknown category {cat!r} (known: {', '.join(CATEGORIES)})")
        categories[cat] = _category(cat, settings, thresholds.get(cat, 0.5), source)
    disclosure = data.get("disclosure")
    if disclosure is None:
        disclosure = {}
    if not isinstance(disclosure, dict):
        raise _fail(source, "disclosure must be a mapping (instruction, rail)")
    _check_keys(disclosure, _DISCLOSURE_KEYS, "disclosure", source)
    instruction = disclosure.get("instruction")
    if instruction is True or (
        instruction not in (None, False) and (not isinstance(instruction, str) or not instruction.strip())
    ):
        raise _fail(
            source, "disclosure.instruction must be a non-empty string, false (none) or left out (hallmark's)"
        )
    rail = disclosure.get("rail", True)
    if not isinstance(rail, bool):
        raise _fail(source, f"disclosure.rail must be true or false, not {rail!r}")
    return PolicyConfig(
        name=file_name.strip(),
        categories=categories,
        allow=_phrases(data.get("allow"), "allow", source),
        disclosure_instruction=instruction.strip() if isinstance(instruction, str) else instruction,
        human_claim_rail=rail,
    )
