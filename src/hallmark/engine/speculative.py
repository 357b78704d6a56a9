"""Speculative decoding by prompt lookup: draft tokens from the text so far, verify them in one call.

Where an output copies its input (a summary quoting its article, an extractive answer, a name or a
number carried into a translation, code being edited), the tokens that followed an earlier
occurrence of the last few tokens are a good guess of what comes next. `lookup_draft` finds the
latest earlier occurrence of the sequence's last n tokens (n from `max_ngram` down to
`min_ngram`) in prompt + output and proposes the up to `max_draft` tokens that followed it; no
second model is needed.

The scheduler then feeds [last token, draft...] to the backend in one call with all-position
logits, and `Request.accept_draft` samples position by position exactly as one-token steps would:
a drafted token is kept only if it is the token the sampler chooses there (the argmax for greedy;
the watermark's deterministic choice for gumbel; for kgw and unwatermarked sampling, the draw from
a uniform that depends only on (seed, position), engine/sampler.py). The first token that differs
from the draft is still a valid sample (it is the real next token), so every verification step
yields at least one token; the KV cache is then cut back past the rejected draft tokens.

The output is the one-token-at-a-time output token for token wherever the backend computes a
token's logits in a multi-token call exactly as in a one-token call. llama.cpp on CPU does so only
sometimes: SmolLM2 after a short prompt, yes (difference 0.0); SmolLM2 after a 645-token prompt,
and gemma-3-270m, no (up to ~0.5-0.7 in a logit: its kernels take other paths for several rows,
as between batched and solo decoding, docs/benchmarks.md#batched-vs-alone-greedy), so there a
near-tie can resolve differently (bench/speculative.py counts identical outputs).

`DraftState` stops drafting for a while after drafts that were wholly rejected (text that copies
nothing), so a request that gains nothing pays little.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hallmark.errors import InvalidSamplingError


@dataclass(frozen=True)
class SpeculativeConfig:
    max_draft: int = 4  # tokens drafted per step
    max_ngram: int = 3  # the longest suffix looked up
    min_ngram: int = 1  # the shortest
    # After a wholly rejected draft, drafting pauses this many steps, doubling up to `max_backoff`.
    backoff: int = 1
    max_backoff: int = 16

    def __post_init__(self) -> None:
        for name in ("max_draft", "max_ngram", "min_ngram", "backoff", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
                raise InvalidSamplingError(f"speculative {name} must be an integer in [1, 64], got {value!r}")
        if self.min_ngram > self.max_ngram:
            raise InvalidSamplingError(
                f"speculative min_ngram ({self.min_ngram}) is larger than max_ngram ({self.max_ngram})"
            )


def lookup_draft(tokens: np.ndarray, max_draft: int, max_ngram: int = 3, min_ngram: int = 1) -> np.ndarray:
    """The tokens that followed the latest earlier occurrence of `tokens`' last n tokens, for the
    largest n in [min_ngram, max_ngram] that occurs earlier; at most `max_draft` of them."""
    n_tokens = tokens.shape[0]
    for n in range(min(max_ngram, n_tokens - 1), min_ngram - 1, -1):
        suffix = tokens[-n:]
        # Windows that start before the suffix itself and have at least one token after them.
        windows = sliding_window_view(tokens[: n_tokens - 1], n)
        starts = np.flatnonzero((windows == suffix).all(axis=1))
        if starts.shape[0]:
            follow = int(starts[-1]) + n
            return tokens[follow : follow + max_draft]
    return tokens[:0]


class DraftState:
    """One request's drafting: the tokens so far as an array (grown in place), counts, back-off."""

    def __init__(self, config: SpeculativeConfig, tokens: list[int]):
        self.config = config
        self._buf = np.empty(max(64, 2 * len(tokens)), dtype=np.int64)
        self._n = 0
        self.extend(tokens)
        self.drafted = 0
        self.accepted = 0
        self._pause = 0  # steps left without drafting
        self._backoff = config.backoff

    def extend(self, tokens: list[int]) -> None:
        need = self._n + len(tokens)
        if need > self._buf.shape[0]:
            self._buf = np.concatenate([self._buf[: self._n], np.empty(need, dtype=np.int64)])
        self._buf[self._n : need] = tokens
        self._n = need

    def propose(self, limit: int) -> list[int]:
        """Up to `limit` drafted tokens (none while paused)."""
        if limit <= 0:
            return []
        if self._pause > 0:
            self._pause -= 1
            return []
        c = self.config
        return lookup_draft(self._buf[: self._n], min(limit, c.max_draft), c.max_ngram, c.min_ngram).tolist()

    def record(self, drafted: int, accepted: int) -> None:
        self.drafted += drafted
        self.accepted += accepted
        if drafted and not accepted:
            self._pause = self._backoff
            self._backoff = min(2 * self._backoff, self.config.max_backoff)
        elif accepted:
            self._backoff = self.config.backoff
