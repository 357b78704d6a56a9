"""Teacher-forced scoring: the log-probability of each token of a text given the tokens before it.

Uses the backend's all-position logits (one decode call per chunk of the text), the same call
speculative decoding verifies drafts with; perplexity and zero-shot detection build on it.

A text longer than the context window is scored with a sliding window (`sliding_token_logprobs`),
as Hugging Face's perplexity guide and llama.cpp's llama-perplexity do: windows of `window` tokens
start every `stride` tokens, and each window scores only the tokens the previous one did not, so
every token is scored once, with at least `window - stride` tokens of context (but the first
window's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hallmark.backends.base import AdapterSet, Backend, SequenceInput

# Tokens per decode call. The logits of a chunk are held at once: 256 x 262k floats is 268 MB for
# gemma-3's vocabulary, so chunks stay well below the backend's n_batch.
SCORE_CHUNK = 256
_ROWS = 16


@dataclass(frozen=True)
class TokenStatistics:
    """Per-token statistics of a text under a model, for tokens 1 .. n-1 (token 0 has no context).

    `logprob` is log p(token | tokens before it); `log_rank` the log of its 1-based rank among the
    vocabulary by probability; `entropy` the entropy of the predictive distribution (nats);
    `logprob_var` the variance of log p(x) for x drawn from that distribution, which with -entropy
    as its mean is what Fast-DetectGPT's analytic criterion standardizes by (Bao et al. 2024).
    """

    logprob: np.ndarray
    log_rank: np.ndarray
    entropy: np.ndarray
    logprob_var: np.ndarray

    def __len__(self) -> int:
        return int(self.logprob.shape[0])

    def __getitem__(self, index: slice) -> TokenStatistics:
        return TokenStatistics(
            self.logprob[index], self.log_rank[index], self.entropy[index], self.logprob_var[index]
        )

    @staticmethod
    def empty(n: int) -> TokenStatistics:
        return TokenStatistics(*(np.empty(n, dtype=np.float64) for _ in range(4)))


def _block_statistics(block: np.ndarray, targets: np.ndarray, full: bool) -> tuple[np.ndarray, ...]:
    """(logprob,) or (logprob, log_rank, entropy, logprob_var) of `targets` under logit rows `block`."""
    rows = np.arange(block.shape[0])
    if not full:  # perplexity: float64, as it always was
        block = block.astype(np.float64)
        peak = block.max(axis=1, keepdims=True)
        log_norm = peak[:, 0] + np.log(np.exp(block - peak).sum(axis=1))
        return (block[rows, targets] - log_norm,)
    # float32 throughout (numpy's float32 sums are pairwise): 0.7 ms a token at 262k entries,
    # against 6 ms in float64. With s = z - max z and T = sum exp(s), log p = s - log T, so
    # E[log p] = E[s] - log T and Var[log p] = Var[s].
    block = np.asarray(block, dtype=np.float32)
    shifted = block - block.max(axis=1, keepdims=True)
    weight = np.exp(shifted)
    total = weight.sum(axis=1).astype(np.float64)
    first = np.einsum("ij,ij->i", weight, shifted).astype(np.float64) / total  # E[s]
    np.square(shifted, out=shifted)
    second = np.einsum("ij,ij->i", weight, shifted).astype(np.float64) / total  # E[s^2]
    log_total = np.log(total)
    target_logits = block[rows, targets]
    picked = (target_logits - block.max(axis=1)).astype(np.float64) - log_total
    # Ties count in the token's favour: rank 1 means no token is more likely.
    rank = (block > target_logits[:, None]).sum(axis=1) + 1
    entropy = log_total - first
    return picked, np.log(rank), entropy, np.maximum(second - np.square(first), 0.0)


def _score(
    backend: Backend, seq_id: int, tokens: Sequence[int], adapters: AdapterSet, full: bool
) -> list[np.ndarray]:
    if len(tokens) > backend.n_ctx:
        raise ValueError(f"{len(tokens)} tokens exceed the context of {backend.n_ctx}")
    n_out = max(0, len(tokens) - 1)
    out = [np.empty(n_out, dtype=np.float64) for _ in range(4 if full else 1)]
    backend.set_adapters(seq_id, adapters)
    backend.free(seq_id)
    try:
        for start in range(0, len(tokens), SCORE_CHUNK):
            chunk = list(tokens[start : start + SCORE_CHUNK])
            (rows,) = backend.decode([SequenceInput(seq_id, chunk, all_logits=True)])
            # Row i predicts token start + i + 1; the last row of the last chunk predicts nothing.
            targets = np.asarray(tokens[start + 1 : start + 1 + len(chunk)], dtype=np.int64)
            for i in range(0, targets.shape[0], _ROWS):  # float64 in small blocks: 16 x 262k is 34 MB
                block = rows[i : i + _ROWS][: targets.shape[0] - i]
                stats = _block_statistics(block, targets[i : i + block.shape[0]], full)
                for column, values in zip(out, stats, strict=True):
                    column[start + i : start + i + block.shape[0]] = values
    finally:
        backend.free(seq_id)
    return out


def token_logprobs(
    backend: Backend, seq_id: int, tokens: Sequence[int], adapters: AdapterSet = ()
) -> np.ndarray:
    """log p(tokens[i] | tokens[:i]) for i = 1 .. n-1, evaluated in the (cleared) sequence `seq_id`
    with the LoRA adapter set `adapters` (() = the base model)."""
    return _score(backend, seq_id, tokens, adapters, full=False)[0]


def token_statistics(
    backend: Backend, seq_id: int, tokens: Sequence[int], adapters: AdapterSet = ()
) -> TokenStatistics:
    """`TokenStatistics` of tokens 1 .. n-1, from the same single pass as `token_logprobs`."""
    return TokenStatistics(*_score(backend, seq_id, tokens, adapters, full=True))


def windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """The sliding windows over a text of n_tokens: (begin, end, first scored token) each.

    Window k covers tokens [begin, end) and scores tokens [first, end): the ones after the previous
    window's end (token 0 has no context and is never scored). The last window ends at the text's end.
    """
    if window < 2:
        raise ValueError(f"the window must hold at least 2 tokens, got {window}")
    # stride < window: each window must start before the first token it scores, which needs context.
    if not 0 < stride < window:
        raise ValueError(f"the stride must be in [1, window - 1 = {window - 1}], got {stride}")
    out: list[tuple[int, int, int]] = []
    prev_end = 1  # token 0 has no context
    begin = 0
    while prev_end < n_tokens:
        end = min(begin + window, n_tokens)
        if end > prev_end:
            out.append((begin, end, prev_end))
            prev_end = end
        begin += stride
    return out


def sliding_token_logprobs(
    backend: Backend,
    seq_id: int,
    tokens: Sequence[int],
    window: int,
    stride: int,
    adapters: AdapterSet = (),
    on_window: Callable[[int], None] | None = None,
) -> np.ndarray:
    """log p(tokens[i] | up to `window` - 1 tokens before it) for i = 1 .. n-1, with sliding windows.

    Equal to `token_logprobs` when the text fits one window. `on_window(n)` is called after each
    window with the number of tokens it scored (for a progress bar).
    """
    return _slide(backend, seq_id, tokens, window, stride, adapters, on_window, full=False)[0]


def sliding_token_statistics(
    backend: Backend,
    seq_id: int,
    tokens: Sequence[int],
    window: int,
    stride: int,
    adapters: AdapterSet = (),
    on_window: Callable[[int], None] | None = None,
) -> TokenStatistics:
    """`token_statistics` with the sliding windows of `sliding_token_logprobs`."""
    return TokenStatistics(*_slide(backend, seq_id, tokens, window, stride, adapters, on_window, full=True))


def _slide(
    backend: Backend,
    seq_id: int,
    tokens: Sequence[int],
    window: int,
    stride: int,
    adapters: AdapterSet,
    on_window: Callable[[int], None] | None,
    full: bool,
) -> list[np.ndarray]:
    if window > backend.n_ctx:
        raise ValueError(f"a window of {window} tokens exceeds the context of {backend.n_ctx}")
    out = [np.empty(max(0, len(tokens) - 1), dtype=np.float64) for _ in range(4 if full else 1)]
    for begin, end, first in windows(len(tokens), window, stride):
        scores = _score(backend, seq_id, tokens[begin:end], adapters, full)
        # scores[j] is the statistic of token begin + j + 1.
        for column, values in zip(out, scores, strict=True):
            column[first - 1 : end - 1] = values[first - begin - 1 :]
        if on_window is not None:
            on_window(end - first)
    return out
