"""The watermark spec: everything generation and detection must agree on, as data.

A spec names the scheme, its parameters, the key (by public id, never the secret) and the
tokenizer (by fingerprint). Its id is a compact, parseable form of the whole spec, so the id that
`generate --json` prints is all `detect --spec` needs besides the key itself:

    hm1-gumbel-w2-k<key id>-t<tokenizer fingerprint>
    hm1-kgw-w3-g0.25-d2-k<key id>-t<tokenizer fingerprint>

Specs also arrive from outside (`detect --spec`, `/v1/detect`), so every way of making one checks
it whole: types (context_width and version integers, gamma and delta finite numbers, the rest
strings), ranges, unknown or missing JSON fields, and the size of the text (MAX_SPEC_CHARS). Any
malformed input is a WatermarkSpecError with a one-line message of bounded length, never another
exception.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from hallmark.errors import WatermarkSpecError

SPEC_VERSION = 1
SCHEMES = ("gumbel", "kgw")
DEFAULT_SCHEME = "gumbel"
DEFAULT_FPR = 1e-3  # false-positive rate a detection verdict is made at, unless the caller says
MAX_SPEC_CHARS = 4096  # a spec's JSON is about 250 characters; the bound keeps parsing cheap


def _short(value: Any) -> str:
    """`value` for an error message: its repr, cut to one short line."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (sys.get_int_max_str_digits)
        return "a number too long to print"
    return text if len(text) <= 60 else text[:57] + "..."


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        kind = type(text).__name__
        raise WatermarkSpecError(f"a watermark spec must be a string (an id or JSON), not {kind}")
    if len(text) > MAX_SPEC_CHARS:
        raise WatermarkSpecError(
            f"a watermark spec is at most {MAX_SPEC_CHARS} characters; this one has {len(text)}"
        )
    return text


# Defaults per scheme. gumbel: Aaronson's exponential-minimum sampling over the 2 previous tokens.
# Width 2 was chosen by measurement (bench/experiments/watermark_context.py): after 30% word
# substitution it keeps far more intact (context, token) pairs than vLLM's width 4 (detection 0.94
# vs 0.62 at p < 0.01, bench/results/watermark_context.json), while width 1 repeats contexts so
# often that only about a third of the tokens can carry the watermark.
# kgw: Kirchenbauer et al.'s "selfhash": gamma 0.25, delta 2, a min-hash over the 3 previous tokens
# and the candidate itself.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "gumbel": {"context_width": 2},
    "kgw": {"context_width": 3, "gamma": 0.25, "delta": 2.0},
}


@dataclass(frozen=True)
class WatermarkSpec:
    scheme: str
    key_id: str
    tokenizer: str
    context_width: int
    gamma: float | None = None
    delta: float | None = None
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        # Types first: the range checks below would raise TypeError (or pass a float) otherwise.
        for name in ("scheme", "key_id", "tokenizer"):
            if not isinstance(getattr(self, name), str):
                raise WatermarkSpecError(f"{name} must be a string, got {_short(getattr(self, name))}")
        for name in ("context_width", "version"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise WatermarkSpecError(f"{name} must be an integer, got {_short(value)}")
        for name in ("gamma", "delta"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value)
            ):
                raise WatermarkSpecError(f"{name} must be a finite number, got {_short(value)}")
        if self.scheme not in SCHEMES:
            raise WatermarkSpecError(
                f"unknown watermark scheme {_short(self.scheme)}; known: {', '.join(SCHEMES)}"
            )
        if self.version != SPEC_VERSION:
            raise WatermarkSpecError(
                f"watermark spec version {_short(self.version)} is not supported (this is {SPEC_VERSION})"
            )
        if not 1 <= self.context_width <= 8:
            raise WatermarkSpecError(f"context_width must be in [1, 8], got {_short(self.context_width)}")
        if self.scheme == "gumbel" and (self.gamma is not None or self.delta is not None):
            # They would not be in the spec id, so the id and the spec would disagree.
            raise WatermarkSpecError("gamma and delta are kgw parameters; a gumbel spec has neither")
        if self.scheme == "kgw":
            if self.gamma is None or not 0 < self.gamma < 1:
                raise WatermarkSpecError(f"kgw gamma must be in (0, 1), got {self.gamma}")
            if self.delta is None or self.delta <= 0:
                raise WatermarkSpecError(f"kgw delta must be > 0, got {self.delta}")
        if not re.fullmatch(r"[0-9a-f]{6,64}", self.key_id) or not re.fullmatch(
            r"[0-9a-f]{6,64}", self.tokenizer
        ):
            raise WatermarkSpecError("key_id and tokenizer must be hex fingerprints")

    @classmethod
    def create(cls, scheme: str, key_id: str, tokenizer: str, **params: Any) -> WatermarkSpec:
        if scheme not in _DEFAULTS:
            raise WatermarkSpecError(f"unknown watermark scheme {scheme!r}; known: {', '.join(SCHEMES)}")
        return cls(scheme=scheme, key_id=key_id, tokenizer=tokenizer, **{**_DEFAULTS[scheme], **params})

    @property
    def spec_id(self) -> str:
        parts = [f"hm{self.version}", self.scheme, f"w{self.context_width}"]
        if self.scheme == "kgw":
            parts += [f"g{self.gamma:g}", f"d{self.delta:g}"]
        parts += [f"k{self.key_id}", f"t{self.tokenizer}"]
        return "-".join(parts)

    @classmethod
    def from_id(cls, spec_id: str) -> WatermarkSpec:
        m = re.fullmatch(
            r"hm([0-9]+)-(gumbel|kgw)-w([0-9]+)(?:-g([0-9.e-]+)-d([0-9.e-]+))?-k([0-9a-f]+)-t([0-9a-f]+)",
            _check_text(spec_id).strip(),
        )
        if not m:
            raise WatermarkSpecError(
                f"not a watermark spec id: {_short(spec_id)} (expected e.g. hm1-gumbel-w2-k...-t...)"
            )
        version, scheme, width, gamma, delta, key_id, tok = m.groups()
        try:
            return cls(
                scheme=scheme,
                key_id=key_id,
                tokenizer=tok,
                context_width=int(width),
                gamma=float(gamma) if gamma else None,
                delta=float(delta) if delta else None,
                version=int(version),
            )
        except WatermarkSpecError:
            raise
        except ValueError as e:  # float("1e-5-3"), which the pattern lets through
            raise WatermarkSpecError(f"malformed watermark spec id {_short(spec_id)}: {e}") from None

    def to_json(self) -> str:
        return json.dumps({"spec_id": self.spec_id, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WatermarkSpec:
        try:
            data = json.loads(_check_text(text))
        except RecursionError:  # nesting deeper than Python's recursion limit
            raise WatermarkSpecError("malformed watermark spec JSON: nested too deep") from None
        except ValueError as e:
            raise WatermarkSpecError(f"malformed watermark spec JSON: {e}") from None
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise WatermarkSpecError(f"malformed watermark spec JSON: not an object but {kind}")
        unknown = sorted(set(data) - _FIELDS - {"spec_id"})
        if unknown:
            names = ", ".join(_short(k) for k in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
            raise WatermarkSpecError(f"malformed watermark spec JSON: unknown field(s) {names}")
        missing = [name for name in ("scheme", "key_id", "tokenizer", "context_width") if name not in data]
        if missing:
            raise WatermarkSpecError(f"malformed watermark spec JSON: missing {', '.join(missing)}")
        # spec_id is derived from the other fields, which are what counts; it need only be a string.
        if not isinstance(data.pop("spec_id", ""), str):
            raise WatermarkSpecError("malformed watermark spec JSON: spec_id must be a string")
        return cls(**data)

    @classmethod
    def parse(cls, text: str) -> WatermarkSpec:
        """A spec from its id or its JSON (anything that starts like JSON is read as JSON)."""
        stripped = _check_text(text).strip()
        return cls.from_json(stripped) if stripped.startswith(("{", "[")) else cls.from_id(stripped)

    def with_key(self, key_id: str) -> WatermarkSpec:
        return replace(self, key_id=key_id)

    def check_tokenizer(self, fingerprint: str, model_name: str) -> None:
        if fingerprint != self.tokenizer:
            raise WatermarkSpecError(
                f"watermark spec {self.spec_id} was made for tokenizer {self.tokenizer}, but {model_name}'s "
                f"tokenizer is {fingerprint}; detect with the model that generated the text (-m)"
            )


_FIELDS = {f.name for f in fields(WatermarkSpec)}
