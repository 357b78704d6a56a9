"""Sampling parameters: one typed, validated dataclass shared by the API, the CLI and the server.

Each field is a `hallmark.settings.setting` carrying its CLI help text, so the flags are derived
from this class and cannot drift from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from hallmark.errors import InvalidSamplingError
from hallmark.settings import setting

# A temperature below this decodes greedily (see SamplingParams.greedy).
GREEDY_BELOW = 1e-5
# Dividing logits by a penalty of 5e-324 made them infinite; beyond these bounds it means nothing.
MIN_REPETITION_PENALTY = 0.01
MAX_REPETITION_PENALTY = 100.0
# Stop strings: OpenAI allows 4. More are fine, but each costs a search on every token, so both the
# number and the length are bounded (a request with 300 stops of 3 KB took 2x as long).
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256


class LogitBias(Mapping[int, float]):
    """A read-only token id -> bias mapping, so that SamplingParams stays immutable and hashable."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[int, float]):
        self._items = dict(items)

    def __getitem__(self, token: int) -> float:
        return self._items[token]

    def __iter__(self) -> Iterator[int]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and self._items == dict(other)

    def __repr__(self) -> str:
        return f"LogitBias({self._items!r})"


@dataclass(frozen=True)
class SamplingParams:
    # Defaults follow llama.cpp's, which suit small local models better than OpenAI's.
    temperature: float = setting(0.8, help="0 = greedy (deterministic, unwatermarkable).")
    top_k: int = setting(40, help="Keep the k most likely tokens; 0 = all.")
    top_p: float = setting(0.95, help="Nucleus sampling mass, in (0, 1]; 1 = off.")
    min_p: float = setting(0.05, help="Drop tokens below min_p x the top probability; 0 = off.")
    repetition_penalty: float = setting(
        1.0, help="CTRL-style penalty on the last `repeat_last_n` tokens; 1 = off."
    )
    repeat_last_n: int = setting(64, help="Window of recent tokens the repetition penalty sees.")
    presence_penalty: float = setting(0.0, help="OpenAI presence penalty, in [-2, 2].")
    frequency_penalty: float = setting(0.0, help="OpenAI frequency penalty, in [-2, 2].")
    logit_bias: Mapping[int, float] | None = setting(
        None, help="Token id -> bias added to its logit (-100 bans, +100 forces)."
    )
    seed: int | None = setting(None, help="Random seed; the same seed and request give the same output.")
    max_tokens: int | None = setting(256, help="Most tokens to generate; none = until the context is full.")
    stop: tuple[str, ...] = setting((), help="Stop strings; generation ends before them.")
    logprobs: int | None = setting(
        None, help="Return each token's log-probability and this many top alternatives (0-20)."
    )
    ignore_eos: bool = setting(False, help="Keep generating past the end-of-sequence token.")
    watermark: bool = setting(
        True, help="Watermark sampled output (on by default; greedy output cannot carry one)."
    )

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        self._validate()
        if self.logit_bias is not None:  # a private copy: the caller's dict may change later
            object.__setattr__(self, "logit_bias", LogitBias(self.logit_bias))

    @property
    def greedy(self) -> bool:
        # As vLLM does: below GREEDY_BELOW the division by the temperature would overflow (5e-324
        # made every logit infinite), and the distribution is greedy in all but name anyway.
        return self.temperature < GREEDY_BELOW

    def _validate(self) -> None:
        def fail(field: str, message: str) -> None:
            raise InvalidSamplingError(message, param=field)

        for name in (
            "temperature",
            "top_p",
            "min_p",
            "repetition_penalty",
            "presence_penalty",
            "frequency_penalty",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                fail(name, f"{name} must be a finite number, got {value!r}")
        if self.temperature < 0:
            fail("temperature", f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            fail("top_p", f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p <= 1:
            fail("min_p", f"min_p must be in [0, 1], got {self.min_p}")
        if not MIN_REPETITION_PENALTY <= self.repetition_penalty <= MAX_REPETITION_PENALTY:
            fail(
                "repetition_penalty",
                f"repetition_penalty must be in [{MIN_REPETITION_PENALTY}, {MAX_REPETITION_PENALTY}], "
                f"got {self.repetition_penalty}",
            )
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                fail(name, f"{name} must be in [-2, 2], got {getattr(self, name)}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            fail("top_k", f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not isinstance(self.repeat_last_n, int) or self.repeat_last_n < 0:
            fail("repeat_last_n", f"repeat_last_n must be an integer >= 0, got {self.repeat_last_n!r}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            fail("max_tokens", f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            fail("seed", f"seed must be an integer >= 0, got {self.seed!r}")
        if self.logprobs is not None and (not isinstance(self.logprobs, int) or not 0 <= self.logprobs <= 20):
            fail("logprobs", f"logprobs must be an integer in [0, 20], got {self.logprobs!r}")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                fail("stop", f"stop strings must be non-empty strings, got {s!r}")
            if len(s) > MAX_STOP_LENGTH:
                fail("stop", f"a stop string may be at most {MAX_STOP_LENGTH} characters long, got {len(s)}")
        if len(self.stop) > MAX_STOP_STRINGS:
            fail("stop", f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(self.stop)}")
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, Mapping):
                kind = type(self.logit_bias).__name__
                fail("logit_bias", f"logit_bias must be a mapping of token id -> bias, got {kind}")
            for token, bias in self.logit_bias.items():
                if not isinstance(token, int) or token < 0:
                    fail("logit_bias", f"logit_bias keys must be token ids (integers >= 0), got {token!r}")
                if not isinstance(bias, int | float) or not -100 <= bias <= 100:
                    fail(
                        "logit_bias",
                        f"logit_bias values must be numbers in [-100, 100], got {bias!r} for token {token}",
                    )

    def with_overrides(self, **overrides: Any) -> SamplingParams:
        """A copy with the given fields changed; unknown names are an error, not ignored."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InvalidSamplingError(
                f"unknown sampling option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return replace(self, **overrides)


def sampling_params(params: SamplingParams | None = None, **overrides: Any) -> SamplingParams:
    """Build validated parameters from an optional base and keyword overrides."""
    base = params or SamplingParams()
    return base.with_overrides(**overrides) if overrides else base
