"""Watermark schemes: how a sampled token is chosen (generation) and scored (detection).

Both schemes score token i from its context (the `context_width` tokens before it) and the token
itself, through the keyed PRF in prf.py, so detection needs the text, the tokenizer and the key.

- gumbel (Aaronson 2022; as shipped in vLLM): token = argmax_i r_i^(1/p_i) with r_i uniform from
  (key, context, i). Distortion-free: each token is still distributed exactly as p. Score per
  token -log(1 - r); on unwatermarked text the sum over n tokens is Gamma(n, 1).
- kgw (Kirchenbauer et al. 2023, "selfhash"): a keyed gamma fraction of candidates is "green"
  and gets +delta on its (temperature-scaled) logit before the top-p and min-p filters, so a green
  token can enter the nucleus. Score per token: green or not; unwatermarked, Binomial(n, gamma).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hallmark.watermark.prf import context_seeds, derive_keys, minhash_seeds, mix64, pair_uniforms
from hallmark.watermark.spec import WatermarkSpec


@dataclass
class TokenScores:
    """Per-position scores of a token sequence (positions with a full context only)."""

    positions: np.ndarray  # index into the token sequence of each scored token
    scores: np.ndarray  # the per-token statistic
    keys: np.ndarray  # uint64 identity of each (context, token) pair, for de-duplication


class Scheme:
    name: str
    # Whether a context seen before in the same text is left unwatermarked (and unscored).
    skip_repeated_contexts: bool
    # Biasing schemes shift logits (logit_bias) and the sampler draws; others choose the token.
    biases_logits: bool = False

    def __init__(self, spec: WatermarkSpec, secret: bytes):
        self.spec = spec
        self.width = spec.context_width
        self.k_ctx, self.k_tok = derive_keys(secret, spec.scheme)

    def choose(self, cand: np.ndarray, probs: np.ndarray, context: np.ndarray) -> int:
        raise NotImplementedError

    def logit_bias(self, cand: np.ndarray, context: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score(self, tokens: np.ndarray) -> TokenScores:
        raise NotImplementedError

    def p_value(self, total: float | np.ndarray, n: int) -> float | np.ndarray:
        """P(score sum >= total | n unwatermarked tokens); element-wise for an array of totals."""
        raise NotImplementedError

    def null_mean_var(self) -> tuple[float, float]:
        """Mean and variance of one token's score on unwatermarked text (for z-scores)."""
        raise NotImplementedError


class GumbelScheme(Scheme):
    name = "gumbel"
    # Gumbel-max is deterministic given the context: a repeated context would repeat its choice.
    skip_repeated_contexts = True

    def choose(self, cand: np.ndarray, probs: np.ndarray, context: np.ndarray) -> int:
        seed = context_seeds(context[None, :], self.k_ctx)
        r = pair_uniforms(np.repeat(seed, cand.shape[0]), cand, self.k_tok)
        return int(cand[np.argmax(np.log(r) / probs)])

    def score(self, tokens: np.ndarray) -> TokenScores:
        w = self.width
        if tokens.shape[0] <= w:
            return TokenScores(np.empty(0, np.int64), np.empty(0), np.empty(0, np.uint64))
        seeds = context_seeds(sliding_window_view(tokens[:-1], w), self.k_ctx)
        targets = tokens[w:]
        u = pair_uniforms(seeds, targets, self.k_tok)
        # The pair's identity. Within a text the detector keeps each context's first occurrence
        # only (so these are as distinct as the contexts); across texts (a batch, reference texts)
        # the same context with another token is another pair, scored independently.
        pairs = mix64(seeds ^ mix64(targets.astype(np.uint64)))
        return TokenScores(np.arange(w, tokens.shape[0]), -np.log1p(-u), pairs)

    def p_value(self, total: float | np.ndarray, n: int) -> float | np.ndarray:
        if n <= 0:
            return 1.0
        from scipy import special  # imported on first detection: it slows every CLI start otherwise

        p = special.gammaincc(n, total)
        return float(p) if np.ndim(p) == 0 else p

    def null_mean_var(self) -> tuple[float, float]:
        return 1.0, 1.0


class KGWScheme(Scheme):
    name = "kgw"
    # A soft bias that still samples: repeated contexts keep their green list, as in the paper, and
    # the detector counts each distinct (seed, token) pair once.
    skip_repeated_contexts = False
    biases_logits = True

    def __init__(self, spec: WatermarkSpec, secret: bytes):
        super().__init__(spec, secret)
        assert spec.gamma is not None and spec.delta is not None
        self.gamma = spec.gamma
        self.delta = spec.delta

    def _green(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Green flag of the last token of each window (which includes the token itself)."""
        seeds = minhash_seeds(windows, self.k_ctx)
        return pair_uniforms(seeds, windows[:, -1], self.k_tok) < self.gamma, seeds

    def logit_bias(self, cand: np.ndarray, context: np.ndarray) -> np.ndarray:
        """+delta for each green candidate, 0 for the others."""
        windows = np.column_stack([np.broadcast_to(context, (cand.shape[0], context.shape[0])), cand])
        green, _ = self._green(windows)
        return self.delta * green

    def score(self, tokens: np.ndarray) -> TokenScores:
        w = self.width
        if tokens.shape[0] <= w:
            return TokenScores(np.empty(0, np.int64), np.empty(0), np.empty(0, np.uint64))
        green, seeds = self._green(sliding_window_view(tokens, w + 1))
        # The min-hash seed can repeat across different contexts; the pair's identity is (seed, token).
        keys = mix64(seeds ^ mix64(tokens[w:].astype(np.uint64)))
        return TokenScores(np.arange(w, tokens.shape[0]), green.astype(np.float64), keys)

    def p_value(self, total: float | np.ndarray, n: int) -> float | np.ndarray:
        if n <= 0:
            return 1.0
        from scipy import stats

        p = stats.binom.sf(np.round(total) - 1, n, self.gamma)
        return float(p) if np.ndim(p) == 0 else p

    def null_mean_var(self) -> tuple[float, float]:
        return self.gamma, self.gamma * (1 - self.gamma)


def make_scheme(spec: WatermarkSpec, secret: bytes) -> Scheme:
    return {"gumbel": GumbelScheme, "kgw": KGWScheme}[spec.scheme](spec, secret)


class SequenceWatermarker:
    """Watermarks one generation: gumbel picks each sampled token whose context is new; kgw biases
    the logits of every sampled token (`bias`) and the sampler draws.

    For schemes that are deterministic given the context (gumbel), a context seen before in the
    same generation would make the scheme repeat its previous choice, which feeds repetition loops;
    such tokens are sampled normally instead, and the detector skips repeated contexts in the same way.

    The first RANDOM_START tokens (at least `context_width`) of a generation are also sampled
    normally, from the request's seeded draw: Gumbel-max is a deterministic function of
    (key, context), so without this the same prompt would always give the same text whatever the
    seed. With a 2-token context, 2 random tokens were often the same for different seeds (a
    peaked start such as " with the"), so the random start is 4 tokens; about 2% of a 200-token text.
    They are the first 4 tokens that had a choice (two or more candidates): a JSON schema's output
    starts with forced tokens ('{"story": "'), and counting those, every seed gave the same text.
    """

    RANDOM_START = 4

    def __init__(self, scheme: Scheme):
        self.scheme = scheme
        self.seen: set[tuple[int, ...]] = set()
        self.marked = 0
        self.unmarked = 0
        self.choices = 0  # tokens sampled from two or more candidates so far

    def pick(
        self,
        cand: np.ndarray,
        probs: np.ndarray,
        context: Sequence[int],
        n_generated: int,
    ) -> int | None:
        """The watermarked choice, or None to let the sampler draw normally."""
        w = self.scheme.width
        if self.scheme.biases_logits:
            return None  # the watermark is already in the distribution the sampler draws from
        if cand.shape[0] < 2:  # a forced token (a peaked distribution, or a grammar) is no choice
            self.unmarked += 1
            return None
        self.choices += 1
        if self.choices <= self.RANDOM_START or n_generated < w:
            self.unmarked += 1
            return None
        ctx = tuple(context[-w:])
        if self.scheme.skip_repeated_contexts:
            if ctx in self.seen:
                self.unmarked += 1
                return None
            self.seen.add(ctx)
        self.marked += 1
        return self.scheme.choose(cand, probs, np.asarray(ctx, dtype=np.int64))

    def bias(self, cand: np.ndarray, context: Sequence[int], n_generated: int) -> np.ndarray | None:
        """Logit offsets for the top-k candidates (biasing schemes), or None to leave them as they are."""
        w = self.scheme.width
        if not self.scheme.biases_logits:
            return None
        if n_generated < max(w, self.RANDOM_START):
            self.unmarked += 1
            return None
        self.marked += 1
        return self.scheme.logit_bias(cand, np.asarray(context[-w:], dtype=np.int64))
