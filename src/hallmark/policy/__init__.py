"""The request policy: screens every generation request for disinformation and impersonation.

Contract (the CLI, the Python API and the server call this before any token is generated):

    policy = load_policy(spec)          # None -> $HALLMARK_POLICY or "default"; "off"; or a YAML file
    decision = policy.screen(text)      # or policy.screen_messages(messages) for a chat
    policy.check(decision)              # raises PolicyViolation when decision.action == "refuse"
    policy.name, policy.sha256          # what provenance cites

A decision comes from, in this order: the deny phrases of each enabled category (the category
fires with score 1.0), the allow phrases (the request is allowed), then the classifier (a category
fires when its score reaches its threshold). When several categories fire, the most severe action
wins (refuse > flag > log), then the higher score. `scores` always holds every enabled category's
classifier score. A policy that is off allows everything and runs nothing.

What of a chat is screened (`screen_messages`): every `user` and `system` message, each on its own
(the classifier was trained on single requests; joining turns dilutes a request in its context),
and the most severe decision wins. System messages are screened because an operator's system prompt
is where "you are Sarah from Chase Bank; never admit you are an AI" is written. Assistant and tool
messages are not: they are not requests, and a model's own earlier answer is not the user's intent.
Earlier user turns are screened too, not only the last: a client of the stateless server can put a
request in any turn and ask the model to "continue".

The classifier and its encoder load lazily, on the first screened request (about 0.3 s), once per
process; screening a 20-word request then costs milliseconds on a CPU (docs/policy.md).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hallmark.errors import HallmarkError
from hallmark.policy.config import (
    ACTIONS,
    CATEGORIES,
    SEVERITY,
    CategoryConfig,
    PolicyConfig,
    PolicyError,
    parse_config,
)
from hallmark.policy.rules import PhraseSet

__all__ = [
    "ACTIONS",
    "CATEGORIES",
    "DEFAULT_POLICY_PATH",
    "Decision",
    "Policy",
    "PolicyError",
    "PolicyViolation",
    "load_policy",
    "rank",
]

DEFAULT_POLICY_PATH = Path(__file__).resolve().parent / "default.yaml"
ENV_VAR = "HALLMARK_POLICY"
MAX_POLICY_BYTES = 1 << 20


class PolicyViolation(HallmarkError):
    """A request the policy refuses. `category` and `score` say why; str() is one line.

    `decision` is the full record (policy name and hash, every score) once the caller that screened
    the request has attached it (`Model.screen`): what the server's request log keeps of a refusal.
    """

    exit_code = 3  # the CLI's exit status for a refused request (1 is any other error)

    def __init__(self, category: str, score: float, policy: str = "default", reason: str = "classifier"):
        self.category = category
        self.score = score
        self.policy = policy
        self.reason = reason
        self.decision: dict[str, Any] | None = None
        super().__init__(
            f"request refused by policy '{policy}': {category} (score {score:.2f}, {reason}); "
            "see `hallmark policy show`"
        )


@dataclass(frozen=True)
class Decision:
    action: Literal["allow", "refuse", "flag", "log"]
    category: str | None  # the category that fired, if any
    score: float  # its score (0..1); the highest category score when none fired
    scores: dict[str, float] = field(default_factory=dict)  # every enabled category's classifier score
    reason: str = "classifier"  # "classifier", "deny phrase '...'", "allow phrase '...'", "policy off"

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "category": self.category,
            "score": round(self.score, 4),
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "reason": self.reason,
        }


ALLOW_OFF = Decision(action="allow", category=None, score=0.0, scores={}, reason="policy off")


class Policy:
    """A loaded policy. Immutable; safe to share between threads."""

    def __init__(self, config: PolicyConfig | None, enabled: bool = True):
        self.config = config
        self.enabled = enabled and config is not None
        self.name = config.name if config is not None else "off"
        self.disclosure_instruction = config.disclosure_instruction if config is not None else None
        self.human_claim_rail = config.human_claim_rail if config is not None else False
        self._active: dict[str, CategoryConfig] = (
            {n: c for n, c in config.categories.items() if c.enabled} if config is not None else {}
        )
        self._deny = {n: PhraseSet(c.deny) for n, c in self._active.items()}
        self._allow = PhraseSet(config.allow if config is not None else ())
        if self.enabled:
            from hallmark.policy.classifier import load_head

            self._head_version = load_head().version
            digest = hashlib.sha256(config.canonical_json().encode("utf-8"))
            digest.update(b"\0head:" + self._head_version.encode("ascii"))
            self.sha256 = digest.hexdigest()
        else:
            self._head_version = None
            self.sha256 = hashlib.sha256(b"hallmark-policy-off").hexdigest()

    def __repr__(self) -> str:
        return f"Policy(name={self.name!r}, sha256={self.sha256[:12]}, enabled={self.enabled})"

    # -- screening ------------------------------------------------------------------------------
    def screen(self, text: str) -> Decision:
        """The decision for one request text."""
        return self._screen_many([text])[0] if self.enabled else ALLOW_OFF

    def screen_messages(self, messages: list[dict]) -> Decision:
        """The decision for a chat: its user and system messages, each screened; the most severe wins."""
        if not self.enabled:
            return ALLOW_OFF
        texts: list[str] = []
        where: list[str] = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("user", "system"):
                continue
            text = _content_text(message.get("content"))
            if text.strip():
                texts.append(text)
                where.append(f"{message['role']} message {i + 1}")
        if not texts:
            return Decision(action="allow", category=None, score=0.0, scores={}, reason="nothing to screen")
        decisions = self._screen_many(texts)
        best = max(range(len(decisions)), key=lambda i: _rank(decisions[i]))
        d = decisions[best]
        scores = {c: max(x.scores.get(c, 0.0) for x in decisions) for c in self._active}
        reason = d.reason if len(texts) == 1 else f"{d.reason} ({where[best]})"
        return Decision(action=d.action, category=d.category, score=d.score, scores=scores, reason=reason)

    def _screen_many(self, texts: list[str]) -> list[Decision]:
        from hallmark.policy.classifier import LABELS, load_head

        probs = load_head().scores(texts) if self._active else None
        out = []
        for row, text in enumerate(texts):
            scores = (
                {c: float(probs[row, LABELS.index(c)]) for c in self._active} if probs is not None else {}
            )
            out.append(self._decide(text, scores))
        return out

    def _decide(self, text: str, scores: dict[str, float]) -> Decision:
        fired: list[Decision] = []
        for cat, settings in self._active.items():
            phrase = self._deny[cat].match(text)
            if phrase is not None:
                fired.append(Decision(settings.action, cat, 1.0, scores, f"deny phrase '{phrase}'"))  # type: ignore[arg-type]
        if not fired:
            phrase = self._allow.match(text)
            if phrase is not None:
                top = max(scores.values(), default=0.0)
                return Decision("allow", None, top, scores, f"allow phrase '{phrase}'")
            for cat, settings in self._active.items():
                if scores.get(cat, 0.0) >= settings.threshold:
                    fired.append(Decision(settings.action, cat, scores[cat], scores, "classifier"))  # type: ignore[arg-type]
        if not fired:
            return Decision("allow", None, max(scores.values(), default=0.0), scores, "classifier")
        return max(fired, key=_rank)

    def check(self, decision: Decision) -> None:
        """Raise PolicyViolation when the decision refuses the request."""
        if decision.action == "refuse":
            raise PolicyViolation(decision.category or "policy", decision.score, self.name, decision.reason)

    # -- description ----------------------------------------------------------------------------
    def describe(self) -> str:
        """The effective policy as YAML (what `hallmark policy show` prints), name and hash first."""
        import yaml

        header = f"# policy: {self.name}\n# sha256: {self.sha256}\n"
        if not self.enabled or self.config is None:
            return header + "# off: requests are not screened\nenabled: false\n"
        data = self.config.canonical()
        head = f"# classifier head: {self._head_version[:16]}\n" if self._head_version else ""
        return header + head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)

    def to_dict(self) -> dict[str, Any]:
        base: dict[str, Any] = {"name": self.name, "sha256": self.sha256, "enabled": self.enabled}
        if self.config is not None and self.enabled:
            base["config"] = self.config.canonical()
            base["classifier"] = self._head_version
        return base


def rank(action: str, score: float) -> tuple[int, float]:
    """How decisions compare: the more severe action first, then the higher score."""
    return (SEVERITY.get(action, 0), score)


def _rank(d: Decision) -> tuple[int, float]:
    return rank(d.action, d.score)


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of an OpenAI-style list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def load_policy(spec: str | os.PathLike[str] | None = None) -> Policy:
    """None -> $HALLMARK_POLICY, else the shipped default; "default"; "off" (explicitly no screening);
    or the path of a YAML policy file. Bad files raise a one-line PolicyError naming the file."""
    if spec is None:
        spec = os.environ.get(ENV_VAR) or "default"
    if isinstance(spec, str) and spec.strip().lower() == "off":
        return Policy(None, enabled=False)
    if isinstance(spec, str) and spec.strip() == "default":
        path, name = DEFAULT_POLICY_PATH, "default"
    else:
        path = Path(spec).expanduser()
        name = path.stem
    try:
        if path.is_dir():
            raise PolicyError(f"policy {path}: is a directory, not a YAML file")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"policy file not found: {path} (or use 'default' or 'off')") from None
    except OSError as e:
        raise PolicyError(f"policy {path}: cannot be read ({e.strerror})") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy {path}: {len(raw)} bytes is too large (at most {MAX_POLICY_BYTES})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"policy {path}: not UTF-8 text") from None
    from hallmark.policy.classifier import load_head

    config = parse_config(text, str(path), name, load_head().thresholds)
    return Policy(config)
