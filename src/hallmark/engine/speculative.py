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

When to draft is decided from measurement (`adaptive`, the default). A verification call of 1 + k
tokens costs `step_costs[k]` one-token calls: measured once per backend (`measure_step_costs`); on
2 CPU cores 5 tokens cost 3.4 (SmolLM2) and 3.5 (gemma-3-270m) one-token calls, where a GPU
verifies several tokens for about the price of one. `DraftState` also knows, at no cost, how many
tokens each draft would have kept: a draft it does not send is compared with the tokens the
request goes on to produce (they are the same tokens whether or not drafts are verified). From
the last `window` drafts' kept lengths a_i (and one pseudo-draft that kept nothing) it drafts k
tokens only when (1 + mean(min(a_i, k))) / step_costs[k], the expected tokens per unit of time,
beats one-token steps by `min_gain`. So a request that copies (a quoted name, a repeated list)
drafts while it copies and stops when it does not, and on hardware where verification is
expensive it rarely drafts at all.
Without `adaptive`, every draft found is verified, pausing after wholly rejected ones (`backoff`).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from hallmark.backends.base import SequenceInput
from hallmark.errors import InvalidSamplingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeculativeConfig:
    max_draft: int = 4  # tokens drafted per step
    max_ngram: int = 3  # the longest suffix looked up
    min_ngram: int = 1  # the shortest
    # Draft only where the recent drafts' kept lengths pay for the measured verification cost.
    adaptive: bool = True
    window: int = 8  # drafts remembered per request (adaptive)
    min_gain: float = 1.05  # expected speed-up a draft must promise over a one-token step (adaptive)
    # step_costs[k]: a call of 1 + k tokens (all logits) in one-token calls, k = 0 .. max_draft.
    # None: measured on the backend the first time it is needed (measure_step_costs).
    step_costs: tuple[float, ...] | None = None
    # Not adaptive: after a wholly rejected draft, drafting pauses this many steps, doubling up to
    # `max_backoff`.
    backoff: int = 1
    max_backoff: int = 16

    def __post_init__(self) -> None:
        for name in ("max_draft", "max_ngram", "min_ngram", "window", "backoff", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
                raise InvalidSamplingError(f"speculative {name} must be an integer in [1, 64], got {value!r}")
        if self.min_ngram > self.max_ngram:
            raise InvalidSamplingError(
                f"speculative min_ngram ({self.min_ngram}) is larger than max_ngram ({self.max_ngram})"
            )
        if not isinstance(self.adaptive, bool):
            raise InvalidSamplingError(f"speculative adaptive must be True or False, got {self.adaptive!r}")
        gain = self.min_gain
        if isinstance(gain, bool) or not isinstance(gain, int | float) or not 0.0 < gain <= 100.0:
            raise InvalidSamplingError(f"speculative min_gain must be a number in (0, 100], got {gain!r}")
        costs = self.step_costs
        if costs is not None and (
            not isinstance(costs, tuple)
            or len(costs) != self.max_draft + 1
            or not all(
                isinstance(c, int | float) and not isinstance(c, bool) and 0.0 < c < 1e6 for c in costs
            )
        ):
            raise InvalidSamplingError(
                f"speculative step_costs must be a tuple of max_draft + 1 = {self.max_draft + 1} positive "
                f"numbers, got {costs!r}"
            )


def lookup_draft(tokens: np.ndarray, max_draft: int, max_ngram: int = 3, min_ngram: int = 1) -> np.ndarray:
    """The tokens that followed the latest earlier occurrence of `tokens`' last n tokens, for the
    largest n in [min_ngram, max_ngram] that occurs earlier; at most `max_draft` of them.

    One pass over the tokens finds the earlier positions of the last token; longer matches are then
    checked at those positions only. It runs every decode step: 26 us for 1,500 tokens of real text
    (3 us for random ids), against 119 us (190 us) for sliding windows of every length."""
    n_tokens = tokens.shape[0]
    ends = np.flatnonzero(tokens[: n_tokens - 1] == tokens[n_tokens - 1]) if n_tokens > 1 else tokens[:0]
    if ends.shape[0] == 0:
        return tokens[:0]
    lengths = np.ones(ends.shape[0], dtype=np.int64)  # how many tokens before each end match the suffix
    alive = np.ones(ends.shape[0], dtype=bool)
    for j in range(1, min(max_ngram, n_tokens - 1)):
        before = ends - j
        alive &= before >= 0
        alive[alive] = tokens[before[alive]] == tokens[n_tokens - 1 - j]
        lengths += alive
    n = int(lengths.max())
    if n < min_ngram:
        return tokens[:0]
    follow = int(ends[lengths >= n].max()) + 1
    return tokens[follow : follow + max_draft]


class DraftState:
    """One request's drafting: the tokens so far as an array (grown in place), counts, and either
    the kept lengths of its recent drafts (adaptive) or its back-off."""

    def __init__(
        self, config: SpeculativeConfig, tokens: list[int], step_costs: tuple[float, ...] | None = None
    ):
        self.config = config
        self.step_costs = step_costs if step_costs is not None else config.step_costs
        self._buf = np.empty(max(64, 2 * len(tokens)), dtype=np.int64)
        self._n = 0
        self._shadow: tuple[int, list[int]] | None = None  # a draft not sent: (where it starts, tokens)
        self.extend(tokens)
        self.drafted = 0
        self.accepted = 0
        self.kept: deque[int] = deque(maxlen=config.window)  # tokens each recent draft kept (or would have)
        self._pause = 0  # steps left without drafting (not adaptive)
        self._backoff = config.backoff

    def extend(self, tokens: list[int]) -> None:
        need = self._n + len(tokens)
        if need > self._buf.shape[0]:
            self._buf = np.concatenate([self._buf[: self._n], np.empty(need, dtype=np.int64)])
        self._buf[self._n : need] = tokens
        self._n = need
        if self._shadow is not None:
            self._settle_shadow()

    def propose(self, limit: int) -> list[int]:
        """Up to `limit` drafted tokens to verify this step (none when it does not pay, or paused)."""
        if limit <= 0:
            return []
        c = self.config
        if not c.adaptive and self._pause > 0:
            self._pause -= 1
            return []
        if c.adaptive and self._shadow is not None:
            return []  # the last draft not sent is still being compared with the output
        draft = lookup_draft(self._buf[: self._n], min(limit, c.max_draft), c.max_ngram, c.min_ngram).tolist()
        if not c.adaptive or not draft:
            return draft
        k = self.best_length(len(draft))
        if k == 0:
            self._shadow = (self._n, draft)  # not sent: see what the output does
        return draft[:k]

    def best_length(self, available: int) -> int:
        """The draft length with the most expected tokens per unit of time, or 0 when none beats a
        one-token step by `min_gain` (or nothing is known yet)."""
        costs = self.step_costs
        if not self.kept or costs is None:
            return 0
        # One pseudo-draft that kept nothing: a single lucky match is not yet a reason to draft
        # (SmolLM2's chat answers drafted 33 tokens to keep 12 without it).
        kept = np.asarray(self.kept)
        best, best_gain = 0, self.config.min_gain
        for k in range(1, min(available, len(costs) - 1) + 1):
            gain = (1.0 + np.minimum(kept, k).sum() / (kept.shape[0] + 1)) / costs[k]
            if gain > best_gain:
                best, best_gain = k, gain
        return best

    def record(self, drafted: int, accepted: int) -> None:
        """A verified draft: `accepted` of its `drafted` tokens were kept."""
        self.drafted += drafted
        self.accepted += accepted
        self.kept.append(accepted)
        if self.config.adaptive:
            return  # the kept lengths decide; the back-off is for drafting without them
        if drafted and not accepted:
            self._pause = self._backoff
            self._backoff = min(2 * self._backoff, self.config.max_backoff)
        elif accepted:
            self._backoff = self.config.backoff

    def _settle_shadow(self) -> None:
        # The draft not sent kept as many tokens as the output shares with it from where it starts.
        start, draft = self._shadow  # type: ignore[misc]
        produced = self._buf[start : min(self._n, start + len(draft))]
        match = produced == np.asarray(draft[: produced.shape[0]])
        if not match.all():
            self.kept.append(int(np.argmin(match)))
        elif produced.shape[0] == len(draft):
            self.kept.append(len(draft))
        else:
            return  # still matching: wait for more output
        self._shadow = None


# Measured step costs per backend object (weakly held: a closed model's entry goes with it).
_COSTS: weakref.WeakKeyDictionary[Any, tuple[float, ...]] = weakref.WeakKeyDictionary()


def step_costs(backend: Any, slot: int, max_draft: int) -> tuple[float, ...]:
    """The backend's measured verification costs for up to `max_draft` drafted tokens (cached)."""
    cached = _COSTS.get(backend)
    if cached is None or len(cached) < max_draft + 1:
        cached = _COSTS[backend] = measure_step_costs(backend, slot, max_draft)
        log.info(
            "speculative decoding: a call of 1..%d tokens costs %s one-token calls", max_draft + 1, cached
        )
    return cached[: max_draft + 1]


def measure_step_costs(backend: Any, slot: int, max_draft: int, reps: int = 3) -> tuple[float, ...]:
    """Time calls of 1 .. 1 + max_draft tokens with all-position logits after a 64-token context, in
    sequence `slot` (freed before and after), fastest of `reps` each; costs relative to 1 token, and
    never decreasing with more tokens (timing noise aside, more tokens never cost less)."""
    n_vocab = backend.n_vocab
    context = [(17 * i + 11) % n_vocab for i in range(64)]  # any tokens: only the time matters
    extra = [(31 * i + 7) % n_vocab for i in range(max_draft + 1)]
    backend.free(slot)
    try:
        backend.decode([SequenceInput(slot, context)])
        best = [float("inf")] * (max_draft + 1)
        for _ in range(reps):
            for k in range(max_draft + 1):
                start = time.perf_counter()
                backend.decode([SequenceInput(slot, extra[: k + 1], all_logits=k > 0)])
                best[k] = min(best[k], time.perf_counter() - start)
                backend.truncate(slot, len(context))
    finally:
        backend.free(slot)
    costs = [1.0]
    for k in range(1, max_draft + 1):
        costs.append(max(costs[-1], best[k] / best[0]))
    return tuple(round(c, 3) for c in costs)
