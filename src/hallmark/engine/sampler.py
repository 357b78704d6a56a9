"""Turn next-token logits into a token: logit bias, penalties, grammar mask, temperature, top-k,
top-p, min-p.

Order of the chain (as in Hugging Face and vLLM): bias and penalties on the raw logits, then the
grammar's mask (tokens that cannot continue a valid output get -inf; engine/grammar.py), then
temperature, then the top-k / top-p / min-p filters, then a draw (a uniform of the request's seed and the
token's position) or the watermark's choice; so both only ever see tokens the grammar allows.
Log-probabilities reported to the user are those of the raw model distribution (vLLM's
"raw_logprobs"), so they do not depend on the sampling settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hallmark.engine.sampling import SamplingParams
from hallmark.watermark.schemes import SequenceWatermarker


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - float(np.max(logits))
    return shifted - np.log(np.sum(np.exp(shifted)))


def token_logprob(logits: np.ndarray, token: int, n_top: int) -> tuple[float, list[tuple[int, float]]]:
    """The token's log-probability and the `n_top` most likely (token, logprob) pairs, best first."""
    lp = log_softmax(logits)
    top: list[tuple[int, float]] = []
    if n_top > 0:
        idx = np.argpartition(-lp, n_top - 1)[:n_top]
        idx = idx[np.argsort(-lp[idx], kind="stable")]
        top = [(int(i), float(lp[i])) for i in idx]
    return float(lp[token]), top


_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64's finalizer: a bijection of 64-bit integers that scatters nearby inputs."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def position_uniform(seed: int, position: int) -> float:
    """A uniform in [0, 1) that depends only on (seed, position): counter-based, so the draw for a
    token never depends on how many draws came before it (speculative decoding, batching)."""
    x = _mix64((_mix64(seed & _MASK64) + 0x9E3779B97F4A7C15 * (position + 1)) & _MASK64)
    return (x >> 11) * (1.0 / (1 << 53))


class Sampler:
    """Per-sequence sampler: each position's random draw is a function of (seed, position) only, so
    batching and speculative decoding never change a draw."""

    def __init__(self, params: SamplingParams, seed: int):
        self.params = params
        self.seed = seed
        self._bias_ids: np.ndarray | None = None
        self._bias_vals: np.ndarray | None = None
        if params.logit_bias:
            self._bias_ids = np.fromiter(params.logit_bias.keys(), dtype=np.int64)
            self._bias_vals = np.fromiter(params.logit_bias.values(), dtype=np.float32)

    def _needs_processing(self) -> bool:
        p = self.params
        return (
            self._bias_ids is not None
            or p.repetition_penalty != 1.0
            or p.presence_penalty != 0.0
            or p.frequency_penalty != 0.0
        )

    def process(self, logits: np.ndarray, context: Sequence[int], n_generated: int) -> np.ndarray:
        """Apply logit bias and penalties. Returns a new array; `logits` is never modified."""
        p = self.params
        x = np.array(logits, dtype=np.float32, copy=True)
        if self._bias_ids is not None:
            if int(self._bias_ids.max()) >= x.shape[0]:
                # Validated against the vocabulary by the caller; guard against silent wrap-around.
                raise IndexError("logit_bias token id out of vocabulary range")
            x[self._bias_ids] += self._bias_vals
        if p.repetition_penalty != 1.0 and p.repeat_last_n > 0 and context:
            recent = np.unique(np.asarray(context[-p.repeat_last_n :], dtype=np.int64))
            vals = x[recent]
            x[recent] = np.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if (p.presence_penalty != 0.0 or p.frequency_penalty != 0.0) and n_generated > 0:
            # OpenAI semantics: only the tokens generated so far count.
            ids, counts = np.unique(np.asarray(context[-n_generated:], dtype=np.int64), return_counts=True)
            x[ids] -= p.presence_penalty + p.frequency_penalty * counts.astype(np.float32)
        return x

    def sample(
        self,
        logits: np.ndarray,
        context: Sequence[int],
        n_generated: int,
        watermarker: SequenceWatermarker | None = None,
        allowed: TokenMask | None = None,
    ) -> int:
        """Choose the next token. `logits` may be a read-only view into the backend's buffer.

        With a watermarker, a biasing scheme (kgw) shifts the candidates' logits before the top-p
        and min-p filters; a choosing scheme (gumbel) makes the draw from the filtered distribution.
        `allowed`: the only tokens that may be chosen (a grammar's mask), or None for all.
        """
        x = self.process(logits, context, n_generated) if self._needs_processing() else logits
        p = self.params
        support = None
        if allowed is not None:
            k = 1 if p.greedy else p.top_k if 0 < p.top_k < x.shape[0] else None
            x, support = restrict(x, allowed, k)
        if p.greedy:
            return int(np.argmax(x))
        bias = None
        if watermarker is not None and watermarker.scheme.biases_logits:
            bias = lambda cand: watermarker.bias(cand, context, n_generated)  # noqa: E731
        candidates, probs = self.filtered_distribution(x, bias, support)
        if watermarker is not None and bias is None:
            token = watermarker.pick(candidates, probs, context, n_generated)
            if token is not None:
                return token
        return int(candidates[self._draw(probs, n_generated)])

    def filtered_distribution(
        self,
        x: np.ndarray,
        bias: Callable[[np.ndarray], np.ndarray | None] | None = None,
        support: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (most likely first) and renormalised probabilities after temperature and filters.

        `bias` gives additive offsets for the top-k candidates' temperature-scaled logits (a logit
        watermark); it acts after top-k and before top-p and min-p, so a boosted token can enter the
        nucleus, as in KGW, while the cost stays at k candidates per token. `support`: the only ids
        with finite logits (a grammar's mask, from `restrict`), among which the top k are chosen.
        """
        p = self.params
        n_vocab = x.shape[0]
        if 0 < p.top_k < n_vocab or bias is not None:
            # Only the k candidates are converted and exponentiated: the full vocabulary (49k-262k
            # logits) is touched once, by the partial sort. Temperature keeps the order.
            k = p.top_k if 0 < p.top_k < n_vocab else n_vocab
            if support is not None:  # a masked vocabulary: partitioning all of it cost 3.5 ms a token
                cand = support if support.size <= k else support[_k_largest(x[support], k)]
                cand = cand[np.argsort(-x[cand], kind="stable")]
            else:
                cand = self._top_k_ids(x, k)
            zc = x[cand].astype(np.float64) / p.temperature
            offsets = bias(cand) if bias is not None else None
            if offsets is not None:
                zc = zc + offsets
                order = np.argsort(-zc, kind="stable")
                cand, zc = cand[order], zc[order]
            cand_weights = np.exp(zc - zc[0])
            base_mass = cand_weights.sum()  # top-p then acts on the renormalised top-k distribution
        else:
            z = x.astype(np.float64) / p.temperature
            weights = np.exp(z - z.max())
            base_mass = weights.sum()
            k = n_vocab
            if p.top_p < 1.0:
                # Nucleus over the full vocabulary without sorting all of it: grow a partial sort until
                # it holds top_p of the mass. Exact, and avoids a 262k-element argsort per token.
                k = min(64, n_vocab)
                while k < n_vocab and weights[self._top_k_ids(z, k)].sum() < p.top_p * base_mass:
                    k = min(k * 4, n_vocab)
            cand = self._top_k_ids(z, k)
            cand_weights = weights[cand]
        if p.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(cand_weights), p.top_p * base_mass, side="left")) + 1
            cand, cand_weights = cand[:keep], cand_weights[:keep]
        probs = cand_weights / cand_weights.sum()
        if p.min_p > 0.0:
            mask = probs >= p.min_p * probs[0]
            cand, probs = cand[mask], probs[mask]
        elif probs[-1] == 0.0:  # masked (-inf) tokens among the top k: never candidates
            keep = probs > 0.0
            cand, probs = cand[keep], probs[keep]
        return cand, probs / probs.sum()

    @staticmethod
    def _top_k_ids(x: np.ndarray, k: int) -> np.ndarray:
        """Ids of the k largest entries of x, largest first."""
        ids = np.arange(x.shape[0]) if k >= x.shape[0] else _k_largest(x, k)
        return ids[np.argsort(-x[ids], kind="stable")]

    def _draw(self, probs: np.ndarray, position: int) -> int:
        r = position_uniform(self.seed, position)
        idx = int(np.searchsorted(np.cumsum(probs), r, side="right"))
        return min(idx, probs.shape[0] - 1)


# Set bits per byte value: counting a 262k-token mask's allowed tokens reads 32 KB.
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)
# Below this many allowed tokens a mask is applied whole (the ids are found from the set words
# alone); above, only the top-k allowed tokens are looked for (see restrict).
SPARSE_MASK = 2048


class TokenMask:
    """The tokens a grammar allows next, as llguidance writes them: one bit per token id, in
    little-endian 32-bit words."""

    def __init__(self, words: np.ndarray, n_vocab: int):
        self.words = words
        self.n_vocab = n_vocab
        self.count = int(_POPCOUNT[words.view(np.uint8)].sum())

    @classmethod
    def from_ids(cls, ids: np.ndarray | list[int], n_vocab: int) -> TokenMask:
        bits = np.zeros(((n_vocab + 31) // 32) * 32, dtype=np.uint8)
        bits[np.asarray(ids, dtype=np.int64)] = 1
        return cls(np.packbits(bits, bitorder="little").view(np.int32), n_vocab)

    def allows(self, ids: np.ndarray) -> np.ndarray:
        """Whether each of `ids` is allowed (a boolean array)."""
        return ((self.words[ids >> 5] >> (ids & 31)) & 1).astype(bool)

    def ids(self) -> np.ndarray:
        """Every allowed id, ascending; reads only the words with a bit set."""
        nz = np.flatnonzero(self.words)
        bits = np.unpackbits(self.words[nz].view(np.uint8), bitorder="little").reshape(-1, 32)
        rows, cols = np.nonzero(bits)
        ids = nz[rows] * 32 + cols
        return ids[ids < self.n_vocab]


def restrict(x: np.ndarray, mask: TokenMask, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A copy of the logits with -inf for every token the mask forbids, and the ids left finite;
    with `k`, only the k most likely allowed tokens stay finite (all the sampler looks at when it
    keeps the top k).

    Applying a 262k-token mask whole costs 0.4-2 ms a token, most of a JSON string's vocabulary
    being allowed; the top-k allowed tokens are found among the top 4k (growing when too few are
    allowed), and exactly: every token outside the top m is less likely than every one inside."""
    n = x.shape[0]
    out = np.full(n, -np.inf, dtype=np.float32)
    if mask.count <= SPARSE_MASK or k is None or k >= n:
        ids = mask.ids()
    else:
        m = min(4 * k, n)
        while True:
            top = _k_largest(x, m) if m < n else np.arange(n)
            ids = top[mask.allows(top)]
            if ids.size >= k or m >= n:
                break
            m = min(m * 8, n)
        if ids.size > k:
            ids = ids[np.argpartition(-x[ids], k - 1)[:k]]
    out[ids] = x[ids]
    return out, ids


def _k_largest(x: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest entries of x, in no particular order (0 < k < len(x)).

    Next-token logits have a few high values and a long tail: the k largest nearly always lie within
    a few units of the maximum. So only the entries above `max - margin` are partitioned (about 200
    of 49k, measured on SmolLM2 logits), which is 5-7x faster than partitioning the vocabulary.
    Exact: if at least k entries clear the threshold, the k-th largest does too.
    """
    top = x.max()
    for margin in (6.0, 12.0):
        ids = np.flatnonzero(x >= top - margin)
        if ids.size > k:
            return ids[np.argpartition(x[ids], ids.size - k)[ids.size - k :]]
        if ids.size == k:
            return ids
    n = x.shape[0]
    return np.argpartition(x, n - k)[n - k :]  # a flat distribution: partition all (no negated copy)
