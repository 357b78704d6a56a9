"""The watermark spec: everything generation and detection must agree on, as data.

A spec names the scheme, its parameters, the key (by public id, never the secret) and the
tokenizer (by fingerprint). Its id is a compact, parseable form of the whole spec, so the id that
`generate --json` prints is all `detect --spec` needs besides the key itself:

    hm1-gumbel-w2-k<key id>-t<tokenizer fingerprint>
    hm1-kgw-w3-g0.25-d2-k<key id>-t<tokenizer fingerprint>
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from hallmark.errors import WatermarkSpecError

SPEC_VERSION = 1
SCHEMES = ("gumbel", "kgw")
DEFAULT_SCHEME = "gumbel"
DEFAULT_FPR = 1e-3  # false-positive rate a detection verdict is made at, unless the caller says

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
        if self.scheme not in SCHEMES:
            raise WatermarkSpecError(f"unknown watermark scheme {self.scheme!r}; known: {', '.join(SCHEMES)}")
        if self.version != SPEC_VERSION:
            raise WatermarkSpecError(
                f"watermark spec version {self.version} is not supported (this is {SPEC_VERSION})"
            )
        if not 1 <= self.context_width <= 8:
            raise WatermarkSpecError(f"context_width must be in [1, 8], got {self.context_width}")
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
            r"hm(\d+)-(gumbel|kgw)-w(\d+)(?:-g([0-9.e-]+)-d([0-9.e-]+))?-k([0-9a-f]+)-t([0-9a-f]+)",
            spec_id.strip(),
        )
        if not m:
            raise WatermarkSpecError(
                f"not a watermark spec id: {spec_id!r} (expected e.g. hm1-gumbel-w2-k...-t...)"
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
        except ValueError as e:
            raise WatermarkSpecError(f"malformed watermark spec id {spec_id!r}: {e}") from e

    def to_json(self) -> str:
        return json.dumps({"spec_id": self.spec_id, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WatermarkSpec:
        try:
            data = json.loads(text)
            data.pop("spec_id", None)
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as e:
            raise WatermarkSpecError(f"malformed watermark spec JSON: {e}") from e

    @classmethod
    def parse(cls, text: str) -> WatermarkSpec:
        """A spec from its id or its JSON."""
        return cls.from_json(text) if text.lstrip().startswith("{") else cls.from_id(text)

    def with_key(self, key_id: str) -> WatermarkSpec:
        return replace(self, key_id=key_id)

    def check_tokenizer(self, fingerprint: str, model_name: str) -> None:
        if fingerprint != self.tokenizer:
            raise WatermarkSpecError(
                f"watermark spec {self.spec_id} was made for tokenizer {self.tokenizer}, but {model_name}'s "
                f"tokenizer is {fingerprint}; detect with the model that generated the text (-m)"
            )
