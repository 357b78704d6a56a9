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

import numpy as np

from hallmark.backends.base import AdapterSet, Backend, SequenceInput

# Tokens per decode call. The logits of a chunk are held at once: 256 x 262k floats is 268 MB for
# gemma-3's vocabulary, so chunks stay well below the backend's n_batch.
SCORE_CHUNK = 256
_ROWS = 16


def token_logprobs(
    backend: Backend, seq_id: int, tokens: Sequence[int], adapters: AdapterSet = ()
) -> np.ndarray:
    """log p(tokens[i] | tokens[:i]) for i = 1 .. n-1, evaluated in the (cleared) sequence `seq_id`
    with the LoRA adapter set `adapters` (() = the base model)."""
    if len(tokens) > backend.n_ctx:
        raise ValueError(f"{len(tokens)} tokens exceed the context of {backend.n_ctx}")
    out = np.empty(max(0, len(tokens) - 1), dtype=np.float64)
    backend.set_adapters(seq_id, adapters)
    backend.free(seq_id)
    try:
        for start in range(0, len(tokens), SCORE_CHUNK):
            chunk = list(tokens[start : start + SCORE_CHUNK])
            (rows,) = backend.decode([SequenceInput(seq_id, chunk, all_logits=True)])
            # Row i predicts token start + i + 1; the last row of the last chunk predicts nothing.
            targets = np.asarray(tokens[start + 1 : start + 1 + len(chunk)], dtype=np.int64)
            for i in range(0, targets.shape[0], _ROWS):  # float64 in small blocks: 16 x 262k is 34 MB
                block = rows[i : i + _ROWS][: targets.shape[0] - i].astype(np.float64)
                peak = block.max(axis=1, keepdims=True)
                log_norm = peak[:, 0] + np.log(np.exp(block - peak).sum(axis=1))
                picked = block[np.arange(block.shape[0]), targets[i : i + block.shape[0]]]
                out[start + i : start + i + block.shape[0]] = picked - log_norm
    finally:
        backend.free(seq_id)
    return out


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
    if window > backend.n_ctx:
        raise ValueError(f"a window of {window} tokens exceeds the context of {backend.n_ctx}")
    out = np.empty(max(0, len(tokens) - 1), dtype=np.float64)
    for begin, end, first in windows(len(tokens), window, stride):
        scores = token_logprobs(backend, seq_id, tokens[begin:end], adapters)
        # scores[j] is the log-probability of token begin + j + 1.
        out[first - 1 : end - 1] = scores[first - begin - 1 :]
        if on_window is not None:
            on_window(end - first)
    return out
