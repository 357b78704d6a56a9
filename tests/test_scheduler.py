"""Continuous batching: requests join a running batch, long prompts prefill in chunks, cancelled
requests free their slot, and a shared prompt prefix is reused from the KV cache. Greedy outputs
must equal those of the same request run alone."""

from __future__ import annotations

import threading
import time

from hallmark.engine.request import Request
from hallmark.engine.sampling import SamplingParams
from hallmark.engine.scheduler import QueueFullError, Scheduler

GREEDY = SamplingParams(temperature=0, max_tokens=12)


def _run(sched: Scheduler, subs: list) -> dict:
    """Step until the given submissions finish; their final results by submission."""
    finals: dict = {}
    while any(s not in finals for s in subs):
        for sub, chunk in sched.step():
            if chunk.final is not None:
                finals[sub] = chunk.final
    return finals


def _solo(model, prompt_ids: list[int], params: SamplingParams = GREEDY):
    return model.generate(prompt_ids, params=params)


def test_request_joins_a_running_batch_and_matches_solo(smollm2):
    a = smollm2.tokenize("The history of the printing press")
    b = smollm2.tokenize("Ten facts about the ocean:")
    sched = Scheduler(smollm2.backend, smollm2.name, slots=[0, 1])
    sa = sched.submit(Request(a, GREEDY))
    for _ in range(4):  # A is decoding when B arrives
        sched.step()
    sb = sched.submit(Request(b, GREEDY))
    finals = _run(sched, [sa, sb])
    assert finals[sa].token_ids == _solo(smollm2, a).token_ids
    assert finals[sb].token_ids == _solo(smollm2, b).token_ids
    assert sorted(sched.free_slots) == [0, 1] and sched.idle


def test_long_prompt_prefills_in_chunks_without_changing_the_answer(smollm2):
    prompt = smollm2.tokenize("A long prompt about rivers, mountains and the sea. " * 6)
    sched = Scheduler(smollm2.backend, smollm2.name, slots=[0], token_budget=16)
    sub = sched.submit(Request(prompt, GREEDY))
    steps_without_output = 0
    while True:
        events = sched.step()
        if events:
            break
        steps_without_output += 1
    assert steps_without_output == (len(prompt) - 1) // 16  # ceil(len / 16) steps to prefill
    finals = _run(sched, [sub]) if not events[0][1].final else {sub: events[0][1].final}
    assert finals[sub].token_ids == _solo(smollm2, prompt).token_ids


def test_cancel_frees_the_slot_and_the_queue_is_bounded(smollm2):
    sched = Scheduler(smollm2.backend, smollm2.name, slots=[0], max_waiting=1)
    long = SamplingParams(temperature=0, max_tokens=200)
    first = sched.submit(Request(smollm2.tokenize("Once upon a time"), long))
    sched.step()
    second = sched.submit(Request(smollm2.tokenize("Hello"), GREEDY))  # waits: the one slot is busy
    try:
        sched.submit(Request(smollm2.tokenize("Hi"), GREEDY))
        raise AssertionError("a third request must not fit")
    except QueueFullError as e:
        assert "at capacity" in str(e)
    sched.cancel(first)
    finals = _run(sched, [second])
    assert first.finished and first.cancelled and finals[second].completion_tokens > 0
    assert smollm2.backend.sequence_length(0) == 0


def test_prefix_reuse_skips_the_shared_prompt_and_keeps_the_answer(smollm2):
    sched = Scheduler(smollm2.backend, smollm2.name, slots=[0, 1], reuse_prefixes=True)
    turn1 = smollm2.chat_prompt_ids([{"role": "user", "content": "Name a colour."}])
    first = _run(sched, [s := sched.submit(Request(turn1, GREEDY))])[s]
    assert first.timings.cache_n == 0
    turn2 = smollm2.chat_prompt_ids(
        [
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": first.text},
            {"role": "user", "content": "And another one?"},
        ]
    )
    second = _run(sched, [s := sched.submit(Request(turn2, GREEDY))])[s]
    assert second.timings.cache_n >= len(turn1)  # the whole first turn came from the cache
    assert second.timings.prompt_n == len(turn2) - second.timings.cache_n
    assert second.token_ids == _solo(smollm2, turn2).token_ids
    sched.abort_all()
    for slot in (0, 1):
        smollm2.backend.free(slot)


def _burst(sched: Scheduler, prompts: list[list[int]], gap: float) -> threading.Thread:
    """Submit the first prompt now and the others from another thread, `gap` seconds apart."""

    def arrive() -> None:
        for p in prompts[1:]:
            time.sleep(gap)
            sched.submit(Request(p, GREEDY))

    sched.submit(Request(prompts[0], GREEDY))
    thread = threading.Thread(target=arrive)
    thread.start()
    return thread


def test_a_burst_of_arrivals_is_admitted_in_one_step(smollm2):
    prompts = [smollm2.tokenize(t) for t in ("Rivers are", "Mountains are", "Oceans are")]
    # Without settling, the first step admits only what has arrived: the first request.
    eager = Scheduler(smollm2.backend, smollm2.name, slots=[0, 1, 2])
    thread = _burst(eager, prompts, gap=0.1)
    eager.step()
    assert eager.n_running == 1
    thread.join()
    eager.abort_all()

    settled = Scheduler(smollm2.backend, smollm2.name, slots=[0, 1, 2])
    thread = _burst(settled, prompts, gap=0.1)
    t0 = time.monotonic()
    settled.settle_arrivals(quiet=0.5, limit=10.0)
    waited = time.monotonic() - t0
    thread.join()
    settled.step()
    assert settled.n_running == 3 and settled.n_waiting == 0
    assert waited < 0.5  # the third arrival filled the free slots: no quiet period to wait out
    settled.abort_all()
    assert smollm2.backend.sequence_length(0) == 0


def test_settling_waits_out_the_quiet_period_but_never_past_the_limit(smollm2):
    sched = Scheduler(smollm2.backend, smollm2.name, slots=[0, 1])
    sched.submit(Request(smollm2.tokenize("Hello"), GREEDY))
    t0 = time.monotonic()
    sched.settle_arrivals(quiet=0.2, limit=0.05)
    assert time.monotonic() - t0 < 0.2  # the limit cut the wait short
    sched.settle_arrivals(quiet=0.0, limit=1.0)  # quiet 0: returns at once
    sched.step()
    assert sched.n_running == 1
    sched.abort_all()
