"""llama.cpp backend, through llama-cpp-python's low-level (ctypes) API.

The only module of hallmark that imports llama_cpp. One llama context holds up to
`max_sequences` independent sequences, each with its own KV cache of `n_ctx` tokens; `decode`
evaluates new tokens of any number of them in one llama_decode call (per adapter set: LoRA
adapters apply to a whole context, so sequences with different sets are evaluated in turn).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path

import llama_cpp
import numpy as np

from hallmark.backends import default_threads
from hallmark.backends.base import AdapterSet, BackendConfig, GGUFHeader, SequenceAdapters, SequenceInput
from hallmark.errors import BackendError, HallmarkError, ModelFileError

_DEFAULT_MAX_CTX = 8192


def _silence_llama_logs() -> None:
    # llama.cpp logs every tensor at load time to stderr; keep the terminal readable.
    # HALLMARK_LLAMA_LOGS=1 brings the logs back for debugging.
    if os.environ.get("HALLMARK_LLAMA_LOGS"):
        return

    @llama_cpp.llama_log_callback
    def _discard(level, text, user_data):  # noqa: ARG001
        return None

    global _LOG_CALLBACK  # must outlive every llama.cpp call that might log
    _LOG_CALLBACK = _discard
    llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


_LOG_CALLBACK = None
_INITIALISED = False


def _init_llama() -> None:
    global _INITIALISED
    if not _INITIALISED:
        _silence_llama_logs()
        llama_cpp.llama_backend_init()
        _INITIALISED = True


def check_gguf_file(path: Path) -> None:
    """Fail with a clear message before llama.cpp sees a file that is not a GGUF model."""
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelFileError(f"model path is not a file: {path}")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelFileError(f"cannot read model file {path}: {e.strerror}") from e
    if magic != b"GGUF":
        raise ModelFileError(f"not a GGUF file (bad magic bytes {magic!r}): {path}")


def _model_metadata(model: llama_cpp.llama_model_p) -> dict[str, str]:
    """GGUF key/value metadata as llama.cpp renders it (arrays such as the token list are omitted)."""
    out: dict[str, str] = {}
    buf = ctypes.create_string_buffer(1 << 16)
    for i in range(llama_cpp.llama_model_meta_count(model)):
        llama_cpp.llama_model_meta_key_by_index(model, i, buf, len(buf))
        key = buf.value.decode("utf-8", errors="replace")
        n = llama_cpp.llama_model_meta_val_str_by_index(model, i, buf, len(buf))
        if n >= len(buf):
            big = ctypes.create_string_buffer(n + 1)
            llama_cpp.llama_model_meta_val_str_by_index(model, i, big, len(big))
            out[key] = big.value.decode("utf-8", errors="replace")
        else:
            out[key] = buf.value.decode("utf-8", errors="replace")
    return out


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Metadata, parameter count and vocabulary size, without loading the weights (fast)."""
    tokenizer = LlamaCppTokenizer(path)
    try:
        meta = _model_metadata(tokenizer._model)
        # A vocab-only load skips the hyper-parameters, so the context length comes from the metadata.
        n_ctx_train = meta.get(f"{meta.get('general.architecture', '')}.context_length", "0")
        return GGUFHeader(
            metadata=meta,
            n_params=int(llama_cpp.llama_model_n_params(tokenizer._model)),
            n_vocab=tokenizer.n_vocab,
            n_ctx_train=int(n_ctx_train) if n_ctx_train.isdigit() else 0,
        )
    finally:
        tokenizer.close()


def _load_model(path: Path, params: llama_cpp.llama_model_params, verb: str) -> llama_cpp.llama_model_p:
    check_gguf_file(path)
    _init_llama()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ModelFileError(
            f"llama.cpp could not {verb} {path} (truncated or corrupt file, or an unsupported "
            "architecture); set HALLMARK_LLAMA_LOGS=1 to see why"
        )
    return model


_QUANT_FTYPES = {
    "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
}


def quantize_gguf(src: Path, dst: Path, ftype: str, n_threads: int | None = None) -> None:
    """Write `src` (an F32/F16 GGUF model) to `dst` as `ftype` ("f16", "q8_0" or "q4_k_m").

    llama.cpp's own quantiser (llama-quantize's), with its default choices: for q4_k_m some tensors
    get more bits, and tensors whose rows K-quants cannot take (not a multiple of 256 wide) get a
    fallback type such as q5_0 or q8_0. Every key/value of `src` is kept.
    """
    if ftype not in _QUANT_FTYPES:
        raise ValueError(f"unknown quantisation type {ftype!r} (choose from {', '.join(_QUANT_FTYPES)})")
    src, dst = Path(src), Path(dst)
    check_gguf_file(src)
    _init_llama()
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = n_threads or default_threads()
    params.ftype = _QUANT_FTYPES[ftype]
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        raise ModelFileError(
            f"llama.cpp could not quantise {src} to {ftype}; set HALLMARK_LLAMA_LOGS=1 to see why"
        )


class _Vocabulary:
    """The Tokenizer protocol on a llama.cpp vocabulary (for the tokenizer-only view and the backend)."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p):
        self._vocab = vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self._piece_buf = ctypes.create_string_buffer(256)
        self._piece_cache: dict[int, bytes] = {}
        self._fingerprint: str | None = None

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:  # buffer too small; -n is the size needed
            n_max = -n
            buf = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        return list(buf[:n])

    def token_bytes(self, token: int) -> bytes:
        cached = self._piece_cache.get(token)
        if cached is not None:
            return cached
        n = llama_cpp.llama_token_to_piece(
            self._vocab, token, self._piece_buf, len(self._piece_buf), 0, False
        )
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            piece = buf.raw[:n]
        else:
            piece = self._piece_buf.raw[:n]
        self._piece_cache[token] = piece
        return piece

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def is_special(self, token: int) -> bool:
        # Control tokens are what parse_special turns on; user-defined ones (gemma's whitespace runs)
        # come out of plain text as well.
        attr = llama_cpp.llama_vocab_get_attr(self._vocab, token) if 0 <= token < self.n_vocab else 0
        return bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL)

    @property
    def bos_token(self) -> int:
        return llama_cpp.llama_vocab_bos(self._vocab)

    @property
    def eos_token(self) -> int:
        return llama_cpp.llama_vocab_eos(self._vocab)

    def token_text(self, token: int) -> str:
        if not 0 <= token < self.n_vocab:
            return ""
        raw = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256(b"hallmark-tokenizer-v1\0")
            get = llama_cpp.llama_vocab_get_text
            for token in range(self.n_vocab):
                h.update(get(self._vocab, token) or b"")
                h.update(b"\0")
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


class LlamaCppTokenizer(_Vocabulary):
    """A model's tokenizer alone, loaded from its GGUF without the weights (fast, little memory)."""

    def __init__(self, model_path: str | Path):
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self._model = _load_model(Path(model_path), params, "read")
        super().__init__(llama_cpp.llama_model_get_vocab(self._model))

    def close(self) -> None:
        if getattr(self, "_model", None):
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        # At interpreter exit the modules this needs may be gone (contextlib included).
        try:  # noqa: SIM105 (not contextlib.suppress: contextlib may be gone at interpreter exit)
            self.close()
        except Exception:
            pass


class LlamaCppBackend(_Vocabulary, SequenceAdapters):
    def __init__(self, model_path: str | Path, config: BackendConfig | None = None):
        config = config or BackendConfig()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = config.n_gpu_layers if config.n_gpu_layers >= 0 else 2**31 - 1
        self._model = _load_model(Path(model_path), model_params, "load")
        _Vocabulary.__init__(self, llama_cpp.llama_model_get_vocab(self._model))
        SequenceAdapters.__init__(self)
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
        self.n_ctx = config.n_ctx or min(self.n_ctx_train, _DEFAULT_MAX_CTX)
        self.max_sequences = config.max_sequences
        self.n_threads = config.n_threads or default_threads()
        self.flash_attn = config.flash_attn
        if self.n_ctx < 8:
            self.close()
            raise HallmarkError(f"context size must be at least 8 tokens, got {self.n_ctx}")

        ctx_params = llama_cpp.llama_context_default_params()
        # Non-unified KV cache: each sequence gets its own n_ctx cells, so one long sequence can
        # never starve the others, and the attention of one never looks at another's cells.
        ctx_params.n_ctx = self.n_ctx * self.max_sequences
        ctx_params.n_seq_max = self.max_sequences
        ctx_params.kv_unified = False
        self.n_batch = min(config.n_batch, ctx_params.n_ctx)
        ctx_params.n_batch = self.n_batch
        ctx_params.n_ubatch = min(512, self.n_batch)
        ctx_params.n_threads = self.n_threads
        ctx_params.n_threads_batch = self.n_threads
        ctx_params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if config.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        ctx_params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            self._model = None
            raise HallmarkError(
                f"llama.cpp could not create a context of {self.n_ctx} tokens x {self.max_sequences} "
                "sequences (out of memory?); lower --ctx-size"
            )
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._positions: dict[int, int] = {}  # tokens of each sequence in the KV cache
        self._adapters: dict[str, llama_cpp.llama_adapter_lora_p] = {}  # id -> loaded adapter
        self._active_adapters: AdapterSet = ()  # what the context runs with now

    def metadata(self) -> dict[str, str]:
        return _model_metadata(self._model)

    # -- evaluation -------------------------------------------------------------------------
    def sequence_length(self, seq_id: int) -> int:
        return self._positions.get(seq_id, 0)

    def decode(self, batch: Sequence[SequenceInput]) -> list[np.ndarray]:
        for entry in batch:
            if not 0 <= entry.seq_id < self.max_sequences:
                raise ValueError(f"sequence id {entry.seq_id} outside [0, {self.max_sequences})")
            if not entry.tokens:
                raise ValueError(f"sequence {entry.seq_id}: no tokens to decode")
            if self._positions.get(entry.seq_id, 0) + len(entry.tokens) > self.n_ctx:
                raise ValueError(f"sequence {entry.seq_id} would exceed its context of {self.n_ctx} tokens")
        # Sequence-id order within each adapter set: llama.cpp splits a batch whose sequences are
        # out of order into more micro-batches, which measured 2x slower for 8 decoding sequences.
        ordered = sorted(batch, key=lambda e: (self.sequence_adapters(e.seq_id), e.seq_id))
        results: dict[int, list[np.ndarray]] = {}
        groups = [list(g) for _, g in groupby(ordered, key=lambda e: self.sequence_adapters(e.seq_id))]
        for i, group in enumerate(groups):
            if i > 0:  # the next llama_decode overwrites the logits buffer the earlier views point into
                for entry in groups[i - 1]:
                    results[entry.seq_id] = [block.copy() for block in results[entry.seq_id]]
            self._activate(self.sequence_adapters(group[0].seq_id))
            self._decode_group(group, results)
        return [
            blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
            for blocks in (results[entry.seq_id] for entry in batch)
        ]

    def _decode_group(self, group: list[SequenceInput], results: dict[int, list[np.ndarray]]) -> None:
        """Evaluate inputs that share an adapter set, in chunks of n_batch rows."""
        # Flatten into (seq_id, token, wants_logits) rows.
        rows = [
            (entry.seq_id, tok, entry.all_logits or i == len(entry.tokens) - 1)
            for entry in group
            for i, tok in enumerate(entry.tokens)
        ]
        n_chunks = (len(rows) + self.n_batch - 1) // self.n_batch
        for c in range(n_chunks):
            chunk = rows[c * self.n_batch : (c + 1) * self.n_batch]
            b = self._batch
            b.n_tokens = len(chunk)
            positions = dict(self._positions)  # committed only once llama_decode succeeds
            out_seqs: list[int] = []  # the sequence of each logits row this chunk returns, in batch order
            for i, (seq_id, tok, wants) in enumerate(chunk):
                pos = positions.get(seq_id, 0)
                b.token[i] = tok
                b.pos[i] = pos
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq_id
                b.logits[i] = wants
                positions[seq_id] = pos + 1
                if wants:
                    out_seqs.append(seq_id)
            rc = llama_cpp.llama_decode(self._ctx, b)
            if rc != 0:
                # llama.cpp leaves no trace of a failed batch in the KV cache; make sure of it, so
                # that no token that never reached the cache is counted (and reused) as if it had.
                for seq_id in {row[0] for row in chunk}:
                    llama_cpp.llama_memory_seq_rm(self._memory, seq_id, self._positions.get(seq_id, 0), -1)
                raise BackendError(f"llama_decode failed with code {rc}")
            self._positions = positions
            if not out_seqs:
                continue
            # llama.cpp stores the requested rows' logits contiguously, in batch order: one view of
            # them all costs less than a ctypes round trip per row.
            block = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits(self._ctx), shape=(len(out_seqs), self.n_vocab)
            )
            # The next llama_decode overwrites the logits buffer: only the last one may hand out views.
            if c < n_chunks - 1:
                block = block.copy()
            start = 0
            for seq_id, rows_of_seq in groupby(out_seqs):
                n = sum(1 for _ in rows_of_seq)
                results.setdefault(seq_id, []).append(block[start : start + n])
                start += n

    def free(self, seq_id: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
        self._positions.pop(seq_id, None)

    def truncate(self, seq_id: int, n_keep: int) -> bool:
        """Keep only the first n_keep tokens of a sequence's KV cache (for prefix reuse).

        False if the cache cannot drop a suffix (sliding-window caches may not); the sequence is
        then freed entirely.
        """
        if n_keep >= self._positions.get(seq_id, 0):
            return True
        if n_keep > 0 and llama_cpp.llama_memory_seq_rm(self._memory, seq_id, n_keep, -1):
            self._positions[seq_id] = n_keep
            return True
        self.free(seq_id)
        return n_keep == 0

    # -- LoRA adapters ----------------------------------------------------------------------
    def load_adapter(self, path: str) -> str:
        resolved = Path(path).expanduser().resolve()
        adapter_id = str(resolved)
        if adapter_id in self._adapters:
            return adapter_id
        check_gguf_file(resolved)
        adapter = llama_cpp.llama_adapter_lora_init(self._model, str(resolved).encode())
        if not adapter:
            raise ModelFileError(
                f"llama.cpp could not load the LoRA adapter {resolved} (not an adapter for this "
                "model's architecture and shapes?); set HALLMARK_LLAMA_LOGS=1 to see why"
            )
        self._adapters[adapter_id] = adapter
        return adapter_id

    def loaded_adapters(self) -> dict[str, llama_cpp.llama_adapter_lora_p]:
        return self._adapters

    def _activate(self, adapters: AdapterSet) -> None:
        if adapters == self._active_adapters:
            return
        n = len(adapters)
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * max(n, 1))(
            *(self._adapters[name] for name, _ in adapters)
        )
        scales = (ctypes.c_float * max(n, 1))(*(scale for _, scale in adapters))
        if llama_cpp.llama_set_adapters_lora(self._ctx, handles if n else None, n, scales if n else None):
            raise BackendError("llama.cpp could not apply the LoRA adapters")
        self._active_adapters = adapters

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            # Adapters are freed with their model.
            self._adapters.clear()
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        # At interpreter exit llama_cpp may already be torn down; nothing useful to report then.
        try:  # noqa: SIM105 (not contextlib.suppress: contextlib may be gone at interpreter exit)
            self.close()
        except Exception:
            pass
