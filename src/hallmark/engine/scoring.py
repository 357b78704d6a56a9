"""Teacher-forced scoring: the log-probability of each token of a text given the tokens before it.

Uses the backend's all-position logits (one decode call per chunk of the text), the same call
speculative decoding verifies drafts with; perplexity and zero-shot detection build on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hallmark.backends.base import Backend, SequenceInput

# Tokens per decode call. The logits of a chunk are held at once: 256 x 262k floats is 268 MB for
# gemma-3's vocabulary, so chunks stay well below the backend's n_batch.
SCORE_CHUNK = 256
_ROWS = 16


def token_logprobs(backend: Backend, seq_id: int, tokens: Sequence[int]) -> np.ndarray:
    """log p(tokens[i] | tokens[:i]) for i = 1 .. n-1, evaluated in the (cleared) sequence `seq_id`."""
    if len(tokens) > backend.n_ctx:
        raise ValueError(f"{len(tokens)} tokens exceed the context of {backend.n_ctx}")
    out = np.empty(max(0, len(tokens) - 1), dtype=np.float64)
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
