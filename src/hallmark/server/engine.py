"""One engine thread per served model, driving its Scheduler; asyncio handlers await its chunks.

llama.cpp contexts are single-threaded, so all of a model's decoding happens on its engine thread.
Handlers submit requests and read chunks from an asyncio queue that the engine thread fills with
`call_soon_threadsafe`; leaving the stream early (a disconnect, a cancelled task) cancels the
submission, and the scheduler frees its KV-cache slot at the next step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from hallmark import __version__
from hallmark.engine.request import Request
from hallmark.engine.results import StreamChunk
from hallmark.engine.scheduler import Scheduler, StepError, Submission
from hallmark.model import Model

log = logging.getLogger("hallmark.server")


class SequenceGroup:
    """The sequences of one HTTP request (n choices); iterate for (index, chunk) as they are made.

    Each sequence's last chunk carries `.final`; iteration ends when all have one. `close()`
    (also run when iteration stops early) cancels the unfinished ones.
    """

    def __init__(self, engine: ModelEngine, requests: list[Request]):
        self.engine = engine
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, StreamChunk | BaseException]] = asyncio.Queue()
        self.subs: list[Submission] = []
        try:
            for i, request in enumerate(requests):
                self.subs.append(engine.submit(request, self._sink(loop, i)))
        except BaseException:
            self.close()
            raise

    def _sink(self, loop: asyncio.AbstractEventLoop, index: int) -> Callable[[Any], None]:
        return lambda item: loop.call_soon_threadsafe(self.queue.put_nowait, (index, item))

    async def __aiter__(self) -> AsyncIterator[tuple[int, StreamChunk]]:
        try:
            remaining = len(self.subs)
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
        for sub in self.subs:
            self.engine._sinks.pop(id(sub), None)
            if not sub.finished:
                self.engine.scheduler.cancel(sub)


class ModelEngine:
    def __init__(self, model: Model, max_waiting: int, token_budget: int):
        self.model = model
        self.scheduler = Scheduler(
            model.backend, model.name, max_waiting=max_waiting, token_budget=token_budget
        )
        self._sinks: dict[int, Callable[[Any], None]] = {}  # id(submission) -> delivery callback
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"hallmark-engine-{model.name}", daemon=True)
        self.steps = 0
        self._thread.start()

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def fingerprint(self) -> str:
        """OpenAI's system_fingerprint: which build and which tokenizer answered."""
        return f"hallmark-{__version__}-{self.model.backend.fingerprint()[:10]}"

    def open(self, requests: list[Request]) -> SequenceGroup:
        """Submit the sequences of one HTTP request now (errors such as a full queue raise here)."""
        return SequenceGroup(self, requests)

    def submit(self, request: Request, sink: Callable[[Any], None]) -> Submission:
        if self._stopping:
            raise RuntimeError("the server is shutting down")
        sub = self.scheduler.submit(request)
        self._sinks[id(sub)] = sink
        return sub

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel whatever is still queued or running and end the engine thread."""
        self._stopping = True
        self.scheduler.wakeup.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        sched = self.scheduler
        while not self._stopping:
            if sched.idle:
                sched.wakeup.wait(0.5)
                sched.wakeup.clear()
                continue
            try:
                events = sched.step()
            except StepError as e:  # the step's sequences were released; tell their handlers
                log.error("%s", e)
                for sub in e.failed:
                    if sink := self._sinks.get(id(sub)):
                        sink(e)
                continue
            self.steps += 1
            for sub, chunk in events:
                sink = self._sinks.get(id(sub))
                if sink is not None:
                    sink(chunk)
        sched.abort_all()
        for sink in list(self._sinks.values()):
            sink(RuntimeError("the server shut down before this request finished"))
