"""A small deterministic backend for the engine's unit tests: no weights, logits from token ids.

It implements the whole Backend protocol, so the scheduler, the sampler integration, streaming,
the Python API and the server's serving code run on it in milliseconds; what needs a real model
(parity with llama.cpp, chat templates, watermark statistics) is tested on the shipped models.

- Vocabulary: the 256 byte values (token id = byte), then four control tokens: <s>, </s>,
  <|im_start|> and <|im_end|>. `tokenize` is byte-level; control-token markup becomes a control
  token only with parse_special (as llama.cpp's tokenizer does).
- Logits: a pseudorandom function of a sequence's tokens in the KV cache (the last `window` of
  them and their count) and of its adapter set. So the same history gives the same logits whatever
  else is in the batch, and a KV cache holding the wrong tokens (a stale prefix, a position counted
  twice) shows up as different output. Printable ASCII is favoured, so outputs are readable text;
  the end-of-sequence token stays unlikely until a sequence holds `eos_after` tokens.
- Faults: `fail_next_decode()` makes the next decode call raise BackendError, appending nothing;
  `pause()` holds decode calls until `resume()`, so requests stay in flight.
- `script`: a fixed answer for every chat (with byte-level tokens), to test what the engine does with
  a known output.
- `calls` records every decode call's inputs as (seq_id, n_tokens, all_logits), for assertions.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence

import numpy as np

from hallmark.backends.base import AdapterSet, SequenceAdapters, SequenceInput
from hallmark.errors import BackendError

BOS, EOS, IM_START, IM_END = 256, 257, 258, 259
SPECIALS = {"<s>": BOS, "</s>": EOS, "<|im_start|>": IM_START, "<|im_end|>": IM_END}
_SPECIAL_RE = re.compile("|".join(re.escape(s) for s in SPECIALS))

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


_ANSWER_START = [IM_START, *b"assistant\n"]


def _after_answer_start(history: list[int]) -> int | None:
    """Tokens written since the last "<|im_start|>assistant\n" in a history (None if there is none)."""
    n = len(_ANSWER_START)
    for at in range(len(history) - n, -1, -1):
        if history[at : at + n] == _ANSWER_START:
            return len(history) - (at + n)
    return None


class FakeBackend(SequenceAdapters):
    def __init__(
        self,
        n_ctx: int = 256,
        max_sequences: int = 4,
        n_batch: int = 64,
        chat_template: str | None = CHATML_TEMPLATE,
        eos_after: int | None = None,
        window: int = 4,
        script: str | None = None,
    ):
        super().__init__()
        self.n_vocab = 260
        self.n_ctx = n_ctx
        self.max_sequences = max_sequences
        self.n_batch = n_batch
        self.chat_template = chat_template
        self.eos_after = eos_after
        self.window = window
        # The answer every chat gets (after ChatML's "<|im_start|>assistant\n"), then EOS: for testing
        # what the engine does with a known output, such as the human-claim rail.
        self.script = script.encode("utf-8") if script is not None else None
        self.calls: list[list[tuple[int, int, bool]]] = []
        self.adapter_files: dict[str, float] = {}  # adapter id -> its logit shift
        self._cache: dict[int, list[int]] = {}  # the "KV cache": tokens of each sequence
        self._fail_next = False
        self._running = threading.Event()
        self._running.set()
        self._adapter_direction = np.sin(np.arange(self.n_vocab, dtype=np.float32))

    # -- Tokenizer --------------------------------------------------------------------------
    @property
    def bos_token(self) -> int:
        return BOS

    @property
    def eos_token(self) -> int:
        return EOS

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        ids = [BOS] if add_special else []
        pieces = _SPECIAL_RE.split(text) if parse_special else [text]
        specials = _SPECIAL_RE.findall(text) if parse_special else []
        for i, piece in enumerate(pieces):
            ids += list(piece.encode("utf-8"))
            if i < len(specials):
                ids.append(SPECIALS[specials[i]])
        return ids

    def token_bytes(self, token: int) -> bytes:
        return bytes([token]) if 0 <= token < 256 else b""

    def token_text(self, token: int) -> str:
        if 0 <= token < 256:
            return bytes([token]).decode("latin-1")
        return next((s for s, t in SPECIALS.items() if t == token), "")

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return token in (EOS, IM_END)

    def is_special(self, token: int) -> bool:
        return token in SPECIALS.values()

    def fingerprint(self) -> str:
        vocab = "\0".join(self.token_text(t) for t in range(self.n_vocab))
        return hashlib.sha256(b"hallmark-fake-v1\0" + vocab.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    # -- Backend ----------------------------------------------------------------------------
    def metadata(self) -> dict[str, str]:
        meta = {"general.architecture": "fake", "general.name": "fake"}
        if self.chat_template:
            meta["tokenizer.chat_template"] = self.chat_template
        return meta

    def fail_next_decode(self) -> None:
        self._fail_next = True

    def pause(self) -> None:
        """Make decode calls wait (up to 30 s) until `resume()`: requests then stay in flight."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def decode(self, batch: Sequence[SequenceInput]) -> list[np.ndarray]:
        for entry in batch:
            if not 0 <= entry.seq_id < self.max_sequences:
                raise ValueError(f"sequence id {entry.seq_id} outside [0, {self.max_sequences})")
            if not entry.tokens:
                raise ValueError(f"sequence {entry.seq_id}: no tokens to decode")
            if self.sequence_length(entry.seq_id) + len(entry.tokens) > self.n_ctx:
                raise ValueError(f"sequence {entry.seq_id} would exceed its context of {self.n_ctx} tokens")
            if any(not 0 <= t < self.n_vocab for t in entry.tokens):
                raise BackendError(f"sequence {entry.seq_id}: token id outside the vocabulary")
        if len({e.seq_id for e in batch}) != len(batch):
            raise ValueError("a sequence id appears twice in one decode call")
        self._running.wait(30)
        self.calls.append([(e.seq_id, len(e.tokens), e.all_logits) for e in batch])
        if self._fail_next:
            self._fail_next = False
            raise BackendError("decode failed (injected fault)")
        out = []
        for entry in batch:
            history = self._cache.setdefault(entry.seq_id, [])
            rows = []
            for i, token in enumerate(entry.tokens):
                history.append(int(token))
                if entry.all_logits or i == len(entry.tokens) - 1:
                    rows.append(self._logits(history, self.sequence_adapters(entry.seq_id)))
            out.append(np.stack(rows))
        return out

    def _logits(self, history: list[int], adapters: AdapterSet) -> np.ndarray:
        key = repr((history[-self.window :], len(history), adapters)).encode()
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        logits = np.random.default_rng(seed).normal(0.0, 2.0, self.n_vocab).astype(np.float32)
        logits[32:127] += 4.0  # printable ASCII
        logits[BOS] = logits[IM_START] = -30.0
        ending = self.eos_after is not None and len(history) >= self.eos_after
        logits[EOS] = 30.0 if ending else -30.0
        if self.script is not None and (written := _after_answer_start(history)) is not None:
            logits[self.script[written] if written < len(self.script) else EOS] = 60.0
        logits[IM_END] = -30.0
        for name, scale in adapters:
            logits += np.float32(self.adapter_files[name] * scale) * self._adapter_direction
        return logits

    def sequence_length(self, seq_id: int) -> int:
        return len(self._cache.get(seq_id, ()))

    def free(self, seq_id: int) -> None:
        self._cache.pop(seq_id, None)

    def truncate(self, seq_id: int, n_keep: int) -> bool:
        if seq_id in self._cache:
            del self._cache[seq_id][n_keep:]
        return True

    def load_adapter(self, path: str) -> str:
        """Any name is an adapter; its logit shift is derived from the name."""
        if path not in self.adapter_files:
            self.adapter_files[path] = 1.0 + len(self.adapter_files)
        return path

    def loaded_adapters(self) -> dict[str, float]:
        return self.adapter_files

    def close(self) -> None:
        self._cache.clear()
