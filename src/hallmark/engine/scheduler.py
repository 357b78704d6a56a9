"""Continuous batching: requests join and leave a running batch between steps.

A step is three phases, as in nano-vllm: `schedule()` decides which requests run and with which
tokens (a plan), the backend evaluates the plan in one `decode` call, and `postprocess` samples a
token for every request whose prompt is complete. Decoding requests each get one token; waiting
prompt tokens fill the rest of the token budget (the backend's n_batch by default), so a new
request starts at the next step instead of waiting for others to finish, and a long prompt is
prefilled in chunks without stalling the requests already decoding. A finished or cancelled
request frees its KV-cache slot at once.

With `speculative`, a decoding request may also carry drafted tokens (engine/speculative.py): the
step verifies them, and the request advances by every accepted token plus one. Requests with and
without drafts share a step; drafts only use budget the other requests' next tokens do not need.

With `reuse_prefixes`, a finished request's KV cache stays in its slot; a new request takes the
free slot that shares the longest prefix with its prompt (under the same adapters) and prefills
only the rest (what llama-server calls prompt caching: a conversation's next turn re-evaluates
only the new messages).

`submit()` and `cancel()` may be called from any thread; everything else from one thread only
(the engine thread in the server, the caller's thread in `generate_stream`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hallmark.backends.base import AdapterSet, Backend, SequenceInput
from hallmark.engine.request import Request, RequestStatus
from hallmark.engine.results import StreamChunk
from hallmark.engine.speculative import DraftState, SpeculativeConfig, step_costs
from hallmark.errors import HallmarkError

log = logging.getLogger("hallmark.engine")


class QueueFullError(HallmarkError):
    """More requests are waiting than the scheduler accepts."""


class StepError(HallmarkError):
    """A decode step failed; the requests in it were released and cannot continue."""

    def __init__(self, failed: list[Request], cause: Exception):
        super().__init__(f"decode step failed: {cause}")
        self.failed = failed


# What a step yields per request: its next chunk, or the error that ended it.
Event = tuple[Request, "StreamChunk | StepError"]


@dataclass(frozen=True)
class ScheduledChunk:
    """One request's part of a step: its next token (decoding) or a piece of its prompt (prefill)."""

    request: Request
    tokens: list[int]
    n_draft: int = 0  # of `tokens`, the drafted ones after the last sampled token


class Scheduler:
    def __init__(
        self,
        backend: Backend,
        model_name: str,
        slots: Iterable[int] | None = None,
        max_waiting: int | None = None,
        token_budget: int | None = None,
        reuse_prefixes: bool = False,
        speculative: SpeculativeConfig | None = None,
    ):
        self.backend = backend
        self.speculative = speculative
        self.model_name = model_name
        self.free_slots = list(slots if slots is not None else range(backend.max_sequences))
        self.n_slots = len(self.free_slots)
        self.max_waiting = max_waiting
        self.token_budget = token_budget or backend.n_batch
        self.reuse_prefixes = reuse_prefixes
        # What each free slot's KV cache holds, for prefix reuse: its adapters and tokens.
        self.slot_contents: dict[int, tuple[AdapterSet, list[int]]] = {}
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []
        self._lock = threading.Lock()
        self._last_submit = 0.0  # time.monotonic() of the latest submission
        self.wakeup = threading.Event()  # set when there is work; the engine thread waits on it
        # What verifying 1 + k tokens costs here, for deciding when drafts pay (engine/speculative.py).
        self.step_costs: tuple[float, ...] | None = None
        if speculative is not None and speculative.adaptive:
            self.step_costs = speculative.step_costs
            if self.step_costs is None and self.free_slots:
                self.step_costs = step_costs(backend, self.free_slots[0], speculative.max_draft)

    # -- any thread -----------------------------------------------------------------------------
    def submit(self, request: Request, sink: Any = None) -> Request:
        request.validate(self.backend.n_ctx, self.backend.n_vocab)
        request.sink = sink
        with self._lock:
            # The queue bound counts only what must wait: an idle slot takes a request even with
            # max_waiting 0.
            if self.max_waiting is not None and len(self._waiting) >= self.max_waiting + len(self.free_slots):
                raise QueueFullError(
                    f"the server is at capacity: {len(self._waiting)} requests are already waiting "
                    f"for {self.n_slots} sequence slots; retry shortly"
                )
            self._waiting.append(request)
            self._last_submit = time.monotonic()
        self.wakeup.set()
        return request

    def cancel(self, request: Request) -> None:
        """Stop a request; its slot is freed at the next step (or it never starts)."""
        request.cancel_requested = True
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

    def step(self) -> list[Event]:
        """Run one step; return the chunks it produced (or a request's failure), in scheduling order."""
        self._drop_cancelled()
        self._admit()
        plan = self.schedule()
        if not plan:
            return []
        try:
            logits = self.backend.decode(
                [SequenceInput(c.request.slot, c.tokens, all_logits=c.n_draft > 0) for c in plan]
            )
        except Exception as e:  # a failed step fails the requests in it, not the scheduler
            for c in plan:
                self._release(c.request, RequestStatus.FAILED)
            raise StepError([c.request for c in plan], e) from e
        return self.postprocess(plan, logits)

    def schedule(self) -> list[ScheduledChunk]:
        """This step's plan: one token per decoding request first (that keeps their latency low),
        then as much waiting prompt as the token budget allows."""
        plan: list[ScheduledChunk] = []
        budget = self.token_budget
        decoding = [r for r in self._running if r.status is RequestStatus.DECODING]
        for i, r in enumerate(decoding):
            if budget <= 0:
                break
            # Drafts only from budget the other decoding requests' next tokens do not need.
            draft = self._draft(r, budget - (len(decoding) - i))
            plan.append(ScheduledChunk(r, [r.last_token, *draft], len(draft)))
            budget -= 1 + len(draft)
        for r in self._running:
            if r.status is RequestStatus.PREFILLING and budget > 0:
                take = r.next_prompt_tokens[:budget]
                plan.append(ScheduledChunk(r, take))
                budget -= len(take)
        return plan

    def postprocess(self, plan: list[ScheduledChunk], logits: list[np.ndarray]) -> list[Event]:
        """Advance each request by its chunk; sample where a prompt is complete or a token decoded.

        A request whose sampling raises (a bug, or a value the checks let through) fails alone,
        with a StepError as its event: the step's other requests and the scheduler go on.
        """
        events: list[Event] = []
        now = time.perf_counter()
        for c, rows in zip(plan, logits, strict=True):
            r = c.request
            try:
                if r.status is RequestStatus.PREFILLING:
                    r.num_prefilled += len(c.tokens)
                    if r.prefilling:
                        continue  # a chunk of a long prompt: no token to sample yet
                    r.start_decoding(now)
                    if self.speculative is not None:
                        r.drafts = DraftState(self.speculative, r.prompt_ids, self.step_costs)
                if c.n_draft:
                    chunk = r.accept_draft(
                        rows, c.tokens[1:], self.backend, self.backend.n_ctx, self.model_name
                    )
                    # Drop the rejected drafts' KV entries (also before a finished request's cache
                    # is kept for prefix reuse, which must hold only the tokens it claims).
                    self.backend.truncate(r.slot, len(r.prompt_ids) + len(r.output_ids) - 1)
                else:
                    chunk = r.accept(rows[-1], self.backend, self.backend.n_ctx, self.model_name)
                if r.drafts is not None:
                    r.drafts.extend(chunk.token_ids)
            except Exception as e:
                log.exception("sampling failed for one request")
                self._release(r, RequestStatus.FAILED)
                events.append((r, StepError([r], e)))
                continue
            events.append((r, chunk))
            if chunk.final is not None:
                self._release(r, RequestStatus.FINISHED)
        return events

    def _draft(self, r: Request, budget: int) -> list[int]:
        """Tokens to verify after `r`'s last token: none without speculation, and never more than
        the request may still generate, the context can hold, or `budget` allows."""
        if r.drafts is None or budget <= 0:
            return []
        room = min(budget, self.backend.n_ctx - (len(r.prompt_ids) + len(r.output_ids)) - 1)
        if r.params.max_tokens is not None:
            room = min(room, r.params.max_tokens - len(r.output_ids) - 1)
        return r.drafts.propose(room)

    def abort_all(self) -> list[Request]:
        """Cancel everything, waiting or running, and free every slot; return what was cancelled."""
        with self._lock:
            stopped = list(self._waiting)
            self._waiting.clear()
        for r in stopped:
            r.status = RequestStatus.CANCELLED
        for r in list(self._running):
            stopped.append(r)
            self._release(r, RequestStatus.CANCELLED)
        return stopped

    def _drop_cancelled(self) -> None:
        for r in [r for r in self._running if r.cancel_requested]:
            self._release(r, RequestStatus.CANCELLED)
        with self._lock:
            if any(r.cancel_requested for r in self._waiting):
                for r in self._waiting:
                    if r.cancel_requested:
                        r.status = RequestStatus.CANCELLED
                self._waiting = deque(r for r in self._waiting if not r.cancel_requested)

    def _admit(self) -> None:
        while self.free_slots:
            with self._lock:
                if not self._waiting:
                    return
                r = self._waiting.popleft()
            r.slot, r.num_cached = self._pick_slot(r)
            r.num_prefilled = r.num_cached
            r.status = RequestStatus.PREFILLING
            self._running.append(r)

    def _pick_slot(self, r: Request) -> tuple[int, int]:
        """A free slot for `r` and how many of its prompt tokens that slot's KV cache already holds."""
        best, best_len = self.free_slots[-1], 0
        if self.reuse_prefixes:
            for slot in self.free_slots:
                adapters, tokens = self.slot_contents.get(slot, ((), []))
                n = common_prefix(tokens, r.prompt_ids) if adapters == r.adapters else 0
                if n > best_len:
                    best, best_len = slot, n
        self.free_slots.remove(best)
        self.slot_contents.pop(best, None)
        self.backend.set_adapters(best, r.adapters)  # frees the cache if it was computed with others
        # The last prompt token is always evaluated again: its logits give the first new token.
        keep = min(best_len, len(r.prompt_ids) - 1)
        if not self.backend.truncate(best, keep):
            keep = 0
        return best, keep

    def _release(self, r: Request, status: RequestStatus) -> None:
        r.status = status
        self._running.remove(r)
        slot = r.slot
        if self.reuse_prefixes and status is not RequestStatus.FAILED:
            in_cache = self.backend.sequence_length(slot)
            self.slot_contents[slot] = (r.adapters, (r.prompt_ids + r.output_ids)[:in_cache])
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
