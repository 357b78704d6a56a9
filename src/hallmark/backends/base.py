"""The backend seam: the small interfaces every inference backend implements.

A `Tokenizer` turns text into token ids and back. A `Backend` is a tokenizer that also owns the
weights and a KV cache per sequence: `decode` appends new tokens to any number of independent
sequences in one call and returns their logits (of the last new token, or of every new token
for scoring and for verifying drafted tokens). Sampling, stop strings, streaming, batching
policy, watermarking and chat templates live above this seam and are shared by all backends.

A backend can also hold LoRA adapters: each sequence runs with an adapter set (adapter ids and
their scales), which `set_adapters` chooses; sequences with different sets may share a decode call.

Nothing outside `hallmark.backends` imports a backend's library (llama_cpp, torch): callers use
these protocols and the factories in `hallmark.backends`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hallmark.errors import HallmarkError

# Adapter ids with their scales, sorted by id: () runs the base model.
AdapterSet = tuple[tuple[str, float], ...]


def adapter_set(adapters: dict[str, float] | Sequence[tuple[str, float]] | None) -> AdapterSet:
    """The canonical form of an adapter choice (sorted by id, zero scales dropped)."""
    items = adapters.items() if isinstance(adapters, dict) else (adapters or ())
    return tuple(sorted((str(name), float(scale)) for name, scale in items if scale != 0))


@dataclass(frozen=True)
class BackendConfig:
    n_ctx: int | None = None  # tokens per sequence; None = min(model's training context, 8192)
    max_sequences: int = 1  # independent sequences that can be live at once
    n_threads: int | None = None  # None = every CPU this process may use
    n_batch: int = 2048  # most tokens evaluated in one backend call
    n_gpu_layers: int = 0  # layers to offload where a GPU build is installed; -1 = all
    # Flash attention: measured ~10% faster decode on CPU here, and llama.cpp's own default ('auto').
    flash_attn: bool = True


@dataclass(frozen=True)
class SequenceInput:
    """New tokens for one sequence in a decode call."""

    seq_id: int
    tokens: Sequence[int]
    # False: logits of the last new token only (generation). True: one row per new token
    # (log-likelihood scoring; verifying several drafted tokens in one call).
    all_logits: bool = False


@dataclass(frozen=True)
class GGUFHeader:
    """What a model file says about itself, read without loading the weights."""

    metadata: dict[str, str] = field(default_factory=dict)
    n_params: int = 0
    n_vocab: int = 0
    n_ctx_train: int = 0


class Tokenizer(Protocol):
    n_vocab: int

    @property
    def bos_token(self) -> int:
        """The beginning-of-sequence token id (-1 if the vocabulary has none)."""
        ...

    @property
    def eos_token(self) -> int: ...

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`. add_special: add BOS (and EOS) as the model expects. parse_special:
        read control-token markup such as '<|im_end|>' as the control token; never for user text."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes of one token (may be part of a UTF-8 character); control tokens give b''."""
        ...

    def token_text(self, token: int) -> str:
        """The vocabulary entry of a token, control tokens included (e.g. '<|im_end|>')."""
        ...

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, EOT, <|im_end|>, ...)."""
        ...

    def is_special(self, token: int) -> bool:
        """True for control tokens ('<|im_end|>', '<start_of_turn>'): markup that only a chat template
        may produce. (User-defined tokens are not: tokenizers produce them from plain text too.)"""
        ...

    def fingerprint(self) -> str:
        """A short hash of the whole vocabulary: token ids mean the same text iff it matches."""
        ...

    def close(self) -> None: ...


class Backend(Tokenizer, Protocol):
    n_ctx: int  # context window of each sequence, in tokens
    n_batch: int  # most tokens one decode call evaluates at once (larger batches are split)
    max_sequences: int  # sequence ids are 0 .. max_sequences - 1

    def metadata(self) -> dict[str, str]:
        """The model file's key/value metadata (e.g. 'tokenizer.chat_template')."""
        ...

    def decode(self, batch: Sequence[SequenceInput]) -> list[np.ndarray]:
        """Append tokens to sequences; return each input's logits, in input order.

        Each result is a 2-D float array: one row (the last new token's next-token logits), or one
        row per new token when the input asks for `all_logits`. A sequence id appears at most
        once. The arrays may be views into the backend's buffer, valid until the next call. On
        failure nothing is appended: `sequence_length` still counts only tokens in the KV cache.
        """
        ...

    def sequence_length(self, seq_id: int) -> int:
        """Tokens of the sequence in the KV cache."""
        ...

    def free(self, seq_id: int) -> None:
        """Forget a sequence's KV cache so that its id can be reused."""
        ...

    def truncate(self, seq_id: int, n_keep: int) -> bool:
        """Keep the first n_keep tokens of a sequence's KV cache; False if it had to free it all."""
        ...

    def load_adapter(self, path: str) -> str:
        """Load a LoRA adapter file for this model; returns its id (loading it twice gives the same id)."""
        ...

    def set_adapters(self, seq_id: int, adapters: AdapterSet) -> None:
        """Run the sequence with these adapters from now on. A KV cache computed under another
        adapter set is not valid for this one, so a change frees the sequence's cache."""
        ...

    def sequence_adapters(self, seq_id: int) -> AdapterSet:
        """The adapter set the sequence runs with (() = the base model)."""
        ...


class SequenceAdapters:
    """Which adapter set each sequence runs with, for backends to mix in: the one place of the rule
    that a change of adapters frees the sequence's KV cache (it was computed with other weights).

    The backend provides `loaded_adapters()` (the ids `load_adapter` gave out) and `free`.
    """

    def __init__(self) -> None:
        self._seq_adapters: dict[int, AdapterSet] = {}

    def loaded_adapters(self) -> Collection[str]:
        raise NotImplementedError

    def free(self, seq_id: int) -> None:
        raise NotImplementedError

    def set_adapters(self, seq_id: int, adapters: AdapterSet) -> None:
        loaded = self.loaded_adapters()
        unknown = [name for name, _ in adapters if name not in loaded]
        if unknown:
            raise HallmarkError(f"adapter {unknown[0]!r} is not loaded")
        if adapters != self.sequence_adapters(seq_id):
            self.free(seq_id)
        if adapters:
            self._seq_adapters[seq_id] = adapters
        else:
            self._seq_adapters.pop(seq_id, None)

    def sequence_adapters(self, seq_id: int) -> AdapterSet:
        return self._seq_adapters.get(seq_id, ())
