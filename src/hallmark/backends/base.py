"""The backend seam: the small interface every inference backend implements.

A backend owns the weights and the KV cache. It tokenizes, detokenizes, and evaluates new tokens
for one or many independent sequences in a single call, returning each sequence's next-token
logits. Sampling, stop strings, streaming, batching policy and watermarking live above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class BackendConfig:
    n_ctx: int | None = None  # tokens per sequence; None = min(model's training context, 8192)
    max_sequences: int = 1  # independent sequences that can be live at once
    n_threads: int | None = None  # None = every CPU this process may use
    n_batch: int = 2048  # most tokens evaluated in one llama_decode call
    n_gpu_layers: int = 0  # layers to offload where a GPU build of llama.cpp is installed; -1 = all
    # Flash attention: measured ~10% faster decode on CPU here, and llama.cpp's own default ('auto').
    flash_attn: bool = True


class Backend(Protocol):
    n_ctx: int  # context window of each sequence, in tokens
    n_vocab: int
    max_sequences: int

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]: ...

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes of one token (may be part of a UTF-8 character); control tokens give b''."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, EOT, <|im_end|>, ...)."""
        ...

    def decode(self, batch: Sequence[tuple[int, Sequence[int]]]) -> list[np.ndarray]:
        """Append tokens to sequences and return each sequence's next-token logits.

        `batch` holds (sequence id, new tokens) pairs; a sequence id appears at most once. The
        returned arrays may be views into the backend's buffer, valid until the next call.
        """
        ...

    def token_logprobs(self, seq_id: int, tokens: Sequence[int]) -> np.ndarray:
        """log p(tokens[i] | tokens[:i]) for i >= 1 (teacher forcing); for perplexity and scoring."""
        ...

    def sequence_length(self, seq_id: int) -> int: ...

    def free(self, seq_id: int) -> None:
        """Forget a sequence's KV cache so that its id can be reused."""
        ...

    def truncate(self, seq_id: int, n_keep: int) -> bool:
        """Keep the first n_keep tokens of a sequence's KV cache; False if it had to free it all."""
        ...

    def close(self) -> None: ...
