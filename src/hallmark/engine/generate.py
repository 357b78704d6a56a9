"""The generation loop: prefill, then decode all live sequences together, one token per step.

The same loop serves one sequence (batch of one) and many: every step is a single backend call
holding one new token per live sequence, so adding sequences costs far less than running them
one after another.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

from hallmark.backends.base import Backend
from hallmark.engine.results import StreamChunk
from hallmark.engine.sampling import SamplingParams
from hallmark.engine.sequence import Sequence
from hallmark.errors import ContextLengthError, InvalidSamplingError, PromptError
from hallmark.watermark.schemes import Scheme


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    watermark: Scheme | None = None  # the model's scheme; used when params.watermark and not greedy

    def validate(self, backend: Backend) -> None:
        """Raise the user-facing error for a request that cannot run, before any work is done."""
        if not self.prompt_ids:
            raise PromptError("the prompt is empty (it tokenizes to no tokens)")
        if len(self.prompt_ids) >= backend.n_ctx:
            raise ContextLengthError(len(self.prompt_ids), backend.n_ctx)
        bias = self.params.logit_bias
        if bias and max(bias) >= backend.n_vocab:
            raise InvalidSamplingError(
                f"logit_bias token id {max(bias)} is outside the vocabulary (size {backend.n_vocab})"
            )


def new_seed() -> int:
    return secrets.randbits(63)


def generate_stream(
    backend: Backend, requests: list[Request], model_name: str, slots: list[int]
) -> Iterator[tuple[int, StreamChunk]]:
    """Run requests to completion together in the given KV-cache slots (sequence ids).

    Yields (request index, chunk) as text is released; each request's last chunk carries its
    final result. Sequences that finish early drop out of the batch. The slots' KV caches are
    cleared before use and freed when the generator ends or is closed.
    """
    if len(slots) != len(requests):
        raise ValueError("one slot per request")
    for r in requests:
        r.validate(backend)
    seqs = [
        Sequence(
            slot=slot,
            prompt_ids=r.prompt_ids,
            params=r.params,
            backend=backend,
            model_name=model_name,
            seed=r.params.seed if r.params.seed is not None else new_seed(),
            watermark=r.watermark,
        )
        for slot, r in zip(slots, requests, strict=True)
    ]
    try:
        for s in seqs:
            backend.free(s.slot)
        t0 = time.perf_counter()
        logits = backend.decode([(s.slot, s.prompt_ids) for s in seqs])
        prompt_ms = (time.perf_counter() - t0) * 1e3
        for s in seqs:
            s.start_decoding(prompt_ms)
        for i, (s, lg) in enumerate(zip(seqs, logits, strict=True)):
            yield i, s.accept(lg)
        while True:
            live = [(i, s) for i, s in enumerate(seqs) if not s.finished]
            if not live:
                return
            logits = backend.decode([(s.slot, [s.last_token]) for _, s in live])
            for (i, s), lg in zip(live, logits, strict=True):
                yield i, s.accept(lg)
    finally:
        for s in seqs:
            backend.free(s.slot)
