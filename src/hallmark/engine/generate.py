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
from hallmark.errors import HallmarkError


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams


def new_seed() -> int:
    return secrets.randbits(63)


def generate_stream(
    backend: Backend, requests: list[Request], model_name: str
) -> Iterator[tuple[int, StreamChunk]]:
    """Run requests to completion together; yields (request index, chunk) as text is released.

    Each request's last chunk carries its final result. Sequences that finish early drop out of
    the batch; the KV cache of every sequence is freed when the generator ends or is closed.
    """
    if len(requests) > backend.max_sequences:
        raise HallmarkError(
            f"{len(requests)} sequences requested but the model was loaded for at most "
            f"{backend.max_sequences}; load it with max_sequences={len(requests)}"
        )
    seqs = [
        Sequence(
            slot=i,
            prompt_ids=r.prompt_ids,
            params=r.params,
            backend=backend,
            model_name=model_name,
            seed=r.params.seed if r.params.seed is not None else new_seed(),
        )
        for i, r in enumerate(requests)
    ]
    try:
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
