"""Continuous batching: sequences join and leave a running batch between decode steps.

Each `step()` makes one backend call that holds one new token for every decoding sequence plus
as much waiting prompt as the batch budget (the backend's n_batch) allows, so a new request starts
at the next step instead of waiting for others to finish, and a long prompt is prefilled in
chunks without stalling the sequences already decoding. A finished or cancelled sequence frees
its KV-cache slot at once.

With `reuse_prefixes`, a finished sequence's KV cache stays in its slot; a new request takes the
free slot that shares the longest prefix with its prompt and prefills only the rest (what
llama-server calls prompt caching: a conversation's next turn re-evaluates only the new messages).

`submit()` and `cancel()` may be called from any thread; `step()` from one thread only (the
engine thread in the server, the caller's thread in `generate_stream`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hallmark.backends.base import Backend
from hallmark.engine.request import Request, new_seed
from hallmark.engine.results import StreamChunk
from hallmark.engine.sequence import Sequence
from hallmark.errors import HallmarkError


class QueueFullError(HallmarkError):
    """More requests are waiting than the scheduler accepts."""


class StepError(HallmarkError):
    """A decode step failed; the submissions in it were released and cannot continue."""

    def __init__(self, failed: list[Submission], cause: Exception):
        super().__init__(f"decode step failed: {cause}")
        self.failed = failed


@dataclass(eq=False)
class Submission:
    """One sequence handed to the scheduler; the caller keeps it to cancel or identify events."""

    request: Request
    sink: Any = None  # the submitter's delivery address for this submission's chunks
    submitted_at: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    finished: bool = False


@dataclass(eq=False)
class _Running:
    sub: Submission
    seq: Sequence
    prefilled: int = 0  # prompt tokens already in the KV cache
    cached: int = 0  # of those, reused from the slot's previous occupant

    @property
    def prefilling(self) -> bool:
        return self.prefilled < len(self.seq.prompt_ids)


class Scheduler:
    def __init__(
        self,
        backend: Backend,
        model_name: str,
        slots: Iterable[int] | None = None,
        max_waiting: int | None = None,
        token_budget: int | None = None,
        reuse_prefixes: bool = False,
    ):
        self.backend = backend
        self.model_name = model_name
        self.free_slots = list(slots if slots is not None else range(backend.max_sequences))
        self.n_slots = len(self.free_slots)
        self.max_waiting = max_waiting
        self.token_budget = token_budget or getattr(backend, "n_batch", 2048)
        self.reuse_prefixes = reuse_prefixes
        self.slot_tokens: dict[int, list[int]] = {}  # tokens in each free slot's KV cache
        self._waiting: deque[Submission] = deque()
        self._running: list[_Running] = []
        self._lock = threading.Lock()
        self._last_submit = 0.0  # time.monotonic() of the latest submission
        self.wakeup = threading.Event()  # set when there is work; the engine thread waits on it

    # -- any thread -----------------------------------------------------------------------------
    def submit(self, request: Request, sink: Any = None) -> Submission:
        request.validate(self.backend)
        sub = Submission(request, sink)
        with self._lock:
            if self.max_waiting is not None and len(self._waiting) >= self.max_waiting:
                raise QueueFullError(
                    f"the server is at capacity: {len(self._waiting)} requests are already waiting "
                    f"for {self.n_slots} sequence slots; retry shortly"
                )
            self._waiting.append(sub)
            self._last_submit = time.monotonic()
        self.wakeup.set()
        return sub

    def cancel(self, sub: Submission) -> None:
        """Stop a submission; its slot is freed at the next step (or it never starts)."""
        sub.cancelled = True
        self.wakeup.set()

    @property
    def n_waiting(self) -> int:
        return len(self._waiting)

    @property
    def n_running(self) -> int:
        return len(self._running)

    @property
    def idle(self) -> bool:
        return not self._waiting and not self._running

    # -- the stepping thread --------------------------------------------------------------------
    def settle_arrivals(self, quiet: float, limit: float) -> None:
        """Before admitting, wait while requests keep arriving less than `quiet` seconds apart
        (at most `limit` seconds, and only while they all fit in the free slots).

        Clients often send requests together. Admitted the moment the first one lands, that one is
        prefilled alone and the rest a step later; waiting a moment lets them prefill in one step and
        decode in lockstep, so they also finish together and the next burst lines up again.
        """
        deadline = time.monotonic() + limit
        while 0 < len(self._waiting) < len(self.free_slots):
            now = time.monotonic()
            since = now - self._last_submit
            if since >= quiet or now >= deadline:
                return
            self.wakeup.clear()
            self.wakeup.wait(min(quiet - since, deadline - now))

    def step(self) -> list[tuple[Submission, StreamChunk]]:
        """Run one decode step; return the chunks it produced, in submission order."""
        self._drop_cancelled()
        self._admit()
        if not self._running:
            return []
        batch: list[tuple[int, list[int]]] = []
        stepped: list[_Running] = []
        budget = self.token_budget
        for r in self._running:  # decoding sequences first: one token each keeps their latency low
            if not r.prefilling and budget > 0:
                batch.append((r.seq.slot, [r.seq.last_token]))
                stepped.append(r)
                budget -= 1
        for r in self._running:  # then as much waiting prompt as the budget allows
            if r.prefilling and budget > 0:
                take = r.seq.prompt_ids[r.prefilled : r.prefilled + budget]
                batch.append((r.seq.slot, take))
                stepped.append(r)
                budget -= len(take)
        try:
            logits = self.backend.decode(batch)
        except Exception as e:  # a failed step fails the sequences in it, not the scheduler
            for r in stepped:
                self._release(r)
            raise StepError([r.sub for r in stepped], e) from e
        events: list[tuple[Submission, StreamChunk]] = []
        now = time.perf_counter()
        for r, (_, tokens), lg in zip(stepped, batch, logits, strict=True):
            if r.prefilling:
                r.prefilled += len(tokens)
                if r.prefilling:
                    continue  # a chunk of a long prompt: no token to sample yet
                r.seq.start_decoding((now - r.sub.submitted_at) * 1e3, r.cached)
            chunk = r.seq.accept(lg)
            events.append((r.sub, chunk))
            if chunk.final is not None:
                self._release(r)
        return events

    def abort_all(self) -> list[Submission]:
        """Cancel everything, waiting or running, and free every slot; return what was cancelled."""
        with self._lock:
            stopped = list(self._waiting)
            self._waiting.clear()
        for r in list(self._running):
            stopped.append(r.sub)
            self._release(r)
        for sub in stopped:
            sub.cancelled = True
        return stopped

    def _drop_cancelled(self) -> None:
        for r in [r for r in self._running if r.sub.cancelled]:
            self._release(r)
        with self._lock:
            if any(s.cancelled for s in self._waiting):
                self._waiting = deque(s for s in self._waiting if not s.cancelled)

    def _admit(self) -> None:
        while self.free_slots:
            with self._lock:
                if not self._waiting:
                    return
                sub = self._waiting.popleft()
            req = sub.request
            slot, keep = self._pick_slot(req.prompt_ids)
            seq = Sequence(
                slot=slot,
                prompt_ids=req.prompt_ids,
                params=req.params,
                backend=self.backend,
                model_name=self.model_name,
                seed=req.params.seed if req.params.seed is not None else new_seed(),
                watermark=req.watermark,
            )
            self._running.append(_Running(sub, seq, prefilled=keep, cached=keep))

    def _pick_slot(self, prompt: list[int]) -> tuple[int, int]:
        """A free slot for `prompt` and how many of its tokens that slot's KV cache already holds."""
        best, best_len = self.free_slots[-1], 0
        if self.reuse_prefixes:
            for slot in self.free_slots:
                n = common_prefix(self.slot_tokens.get(slot, ()), prompt)
                if n > best_len:
                    best, best_len = slot, n
        self.free_slots.remove(best)
        self.slot_tokens.pop(best, None)
        # The last prompt token is always evaluated again: its logits give the first new token.
        keep = min(best_len, len(prompt) - 1)
        if not self.backend.truncate(best, keep):
            keep = 0
        return best, keep

    def _release(self, r: _Running) -> None:
        r.sub.finished = True
        self._running.remove(r)
        slot = r.seq.slot
        if self.reuse_prefixes:
            in_cache = self.backend.sequence_length(slot)
            self.slot_tokens[slot] = (r.seq.prompt_ids + r.seq.output_ids)[:in_cache]
        else:
            self.backend.free(slot)
        self.free_slots.insert(0, slot)  # least recently used first: reuse favours other slots


def common_prefix(a: Iterable[int], b: Iterable[int]) -> int:
    """How many leading items a and b share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
