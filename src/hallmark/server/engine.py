"""One engine thread per served model, driving its Scheduler; asyncio handlers await its chunks.

A backend is single-threaded, so all of a model's decoding happens on its engine thread.
Handlers submit requests and read chunks from an asyncio queue that the engine thread fills with
`call_soon_threadsafe`; leaving the stream early (a disconnect, a cancelled task) cancels the
request, and the scheduler frees its KV-cache slot at the next step.

Served names that share one loaded model (a base and its LoRA adapters, hallmark.model's
`with_adapters`) share its engine: an engine built with `shares=` submits to the other's scheduler
and thread, so their requests run in one continuous batch (the backend evaluates each adapter set
in its own llama.cpp call within a step).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from hallmark import __version__
from hallmark.engine.request import Request
from hallmark.engine.results import StreamChunk
from hallmark.engine.scheduler import Scheduler, StepError
from hallmark.errors import EngineStopped, TooManySequencesError
from hallmark.model import Model

log = logging.getLogger("hallmark.server")


@dataclass(frozen=True)
class Sink:
    """Where a submission's chunks go: an asyncio queue on an event loop, tagged with an index."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    index: int


def _put_all(items: list[tuple[asyncio.Queue, Any]]) -> None:
    for queue, item in items:
        queue.put_nowait(item)


def deliver(pairs: list[tuple[Sink, Any]]) -> None:
    """Hand items to their event loops: one thread-safe call per loop per step, not one per token."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, Any]]] = {}
    for sink, item in pairs:
        by_loop.setdefault(sink.loop, []).append((sink.queue, (sink.index, item)))
    for loop, items in by_loop.items():
        if not loop.is_closed():
            loop.call_soon_threadsafe(_put_all, items)


class SequenceGroup:
    """The requests of one HTTP request (n choices, several prompts); iterate for (index, chunk)
    as they are made.

    Each request's last chunk carries `.final`; iteration ends when all have one. `close()`
    (also run when iteration stops early) cancels the unfinished ones.
    """

    def __init__(self, engine: ModelEngine, requests: list[Request]):
        self.engine = engine
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, StreamChunk | BaseException]] = asyncio.Queue()
        self.requests: list[Request] = []
        try:
            for i, request in enumerate(requests):
                self.requests.append(engine.submit(request, Sink(loop, self.queue, i)))
        except BaseException:
            self.close()
            raise

    async def __aiter__(self) -> AsyncIterator[tuple[int, StreamChunk]]:
        try:
            remaining = len(self.requests)
            while remaining:
                i, item = await self.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield i, item
                if item.final is not None:
                    remaining -= 1
        finally:
            self.close()

    def close(self) -> None:
        for request in self.requests:
            if not request.finished:
                self.engine.scheduler.cancel(request)


class ModelEngine:
    def __init__(
        self,
        model: Model,
        max_waiting: int,
        token_budget: int,
        reuse_prefixes: bool,
        batch_wait: float,
        shares: ModelEngine | None = None,
    ):
        """An engine thread for `model`; with `shares`, none: `model` runs on that engine's
        scheduler and thread (it must hold the same backend)."""
        self.model = model
        self.batch_wait = batch_wait  # seconds of quiet that end a burst of arrivals (0 = admit at once)
        self._stopping = False
        if shares is not None:
            if shares.model.backend is not model.backend:
                raise ValueError("an engine can be shared only by models on the same backend")
            self.owner: ModelEngine = shares.owner
            self.scheduler = self.owner.scheduler
            return
        self.owner = self
        self.scheduler = Scheduler(
            model.backend,
            model.name,
            max_waiting=max_waiting,
            token_budget=token_budget,
            reuse_prefixes=reuse_prefixes,
            speculative=model.speculative,
        )
        self._thread = threading.Thread(target=self._run, name=f"hallmark-engine-{model.name}", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def fingerprint(self) -> str:
        """OpenAI's system_fingerprint: which build and which tokenizer answered."""
        return f"hallmark-{__version__}-{self.model.fingerprint[:10]}"

    def open(self, requests: list[Request]) -> SequenceGroup:
        """Submit the sequences of one HTTP request now (errors such as a full queue raise here)."""
        capacity = self.scheduler.n_slots + (self.scheduler.max_waiting or 0)
        if self.scheduler.max_waiting is not None and len(requests) > capacity:
            # It could never be admitted whole: a 503 "retry later" would be retried forever.
            raise TooManySequencesError(
                f"this request needs {len(requests)} sequences (prompts x n), more than this server can "
                f"hold at once ({self.scheduler.n_slots} running + {self.scheduler.max_waiting} waiting); "
                "lower n or send fewer prompts per request"
            )
        return SequenceGroup(self, requests)

    def submit(self, request: Request, sink: Sink) -> Request:
        if self.owner._stopping:
            raise EngineStopped("the server is shutting down")
        return self.scheduler.submit(request, sink)

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel whatever is still queued or running and end the engine thread (the shared one's:
        stopping any name of a shared engine stops them all)."""
        owner = self.owner
        owner._stopping = True
        owner.scheduler.wakeup.set()
        owner._thread.join(timeout)

    def _run(self) -> None:
        sched = self.scheduler
        while not self._stopping:
            if sched.idle:
                sched.wakeup.wait(0.5)
                sched.wakeup.clear()
                continue
            if self.batch_wait > 0:
                sched.settle_arrivals(self.batch_wait, 5 * self.batch_wait)
            try:
                events = sched.step()
            except StepError as e:  # the step's requests were released; tell their handlers
                log.error("%s", e)
                deliver([(r.sink, e) for r in e.failed])
                continue
            except Exception as e:  # a bug: fail what runs now rather than end the thread (and hang)
                log.exception("engine step failed")
                stopped = sched.abort_all()
                deliver([(r.sink, StepError(stopped, e)) for r in stopped])
                continue
            deliver([(r.sink, chunk) for r, chunk in events])
        stopped = sched.abort_all()
        deliver(
            [(r.sink, EngineStopped("the server shut down before this request finished")) for r in stopped]
        )
