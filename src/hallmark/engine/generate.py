"""Synchronous generation: run a fixed set of requests to completion on the caller's thread.

The same scheduler as the server's continuous batching does the work: every step is a single
backend call holding one new token per live request, so adding requests costs far less than
running them one after another.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from hallmark.backends.base import Backend
from hallmark.engine.request import Request
from hallmark.engine.results import StreamChunk
from hallmark.engine.scheduler import Scheduler
from hallmark.engine.speculative import SpeculativeConfig


def generate_stream(
    backend: Backend,
    requests: list[Request],
    model_name: str,
    slots: list[int],
    speculative: SpeculativeConfig | None = None,
) -> Iterator[tuple[int, StreamChunk]]:
    """Run requests to completion together in the given KV-cache slots (sequence ids).

    Yields (request index, chunk) as text is released; each request's last chunk carries its
    final result. At most len(slots) requests run at once; the others wait in the scheduler's
    queue and start as soon as one finishes. The slots' KV caches are cleared before use and
    freed when the generator ends or is closed. `speculative`: verify prompt-lookup drafts
    (engine/speculative.py).
    """
    if not slots:
        raise ValueError("at least one slot is needed")
    scheduler = Scheduler(backend, model_name, slots=slots, token_budget=1 << 30, speculative=speculative)
    index = {id(scheduler.submit(r)): i for i, r in enumerate(requests)}
    try:
        while not scheduler.idle:
            for request, chunk in scheduler.step():
                if isinstance(chunk, BaseException):
                    raise chunk
                yield index[id(request)], chunk
    finally:
        scheduler.abort_all()


T = TypeVar("T")


def in_order(results: Sequence[T | None]) -> list[T]:
    """Every result, in request order. A missing one is a bug, reported as one: dropping it would
    silently shift the results after it onto the wrong inputs."""
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"generation ended without a result for request {missing[0]} of {len(results)}")
    return [r for r in results if r is not None]
