"""Backends turn token ids into logits; everything above them is shared (see base.py).

The factories here are the only way the rest of hallmark opens a model file: a backend (weights
and KV cache), a tokenizer alone (for detection, which never needs the weights), or the file's
header (metadata, for `hallmark models` and `info`); `quantize_gguf` rewrites a model file in a
smaller type (for training's exports). The backend library is imported on first use, so importing
this package stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

from hallmark.backends.base import (
    AdapterSet,
    Backend,
    BackendConfig,
    GGUFHeader,
    SequenceInput,
    Tokenizer,
    adapter_set,
)

__all__ = [
    "AdapterSet",
    "Backend",
    "BackendConfig",
    "GGUFHeader",
    "SequenceInput",
    "Tokenizer",
    "adapter_set",
    "default_threads",
    "open_backend",
    "open_tokenizer",
    "quantize_gguf",
    "read_header",
]


def open_backend(path: str | os.PathLike[str], config: BackendConfig | None = None) -> Backend:
    """Load a model file (GGUF, through llama.cpp) with a KV cache for `config.max_sequences` sequences."""
    from hallmark.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(path, config)


def open_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """A model file's tokenizer without its weights (fast, little memory)."""
    from hallmark.backends.llamacpp import LlamaCppTokenizer

    return LlamaCppTokenizer(path)


def read_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """A model file's metadata, parameter count, vocabulary size and training context."""
    from hallmark.backends.llamacpp import read_gguf_header

    return read_gguf_header(path)


def quantize_gguf(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], ftype: str, n_threads: int | None = None
) -> None:
    """Quantise a GGUF model file with llama.cpp ("f16", "q8_0" or "q4_k_m"; see llamacpp.quantize_gguf)."""
    from hallmark.backends.llamacpp import quantize_gguf as quantize

    quantize(Path(src), Path(dst), ftype, n_threads)


def default_threads() -> int:
    """Every CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
