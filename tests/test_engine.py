"""The engine on the deterministic fake backend (milliseconds, no model file): continuous batching,
chunked prefill, prefix reuse, cancellation, failed steps, the request's life cycle, sampling and
stopping, and the Python API above it.

The fake's logits are a function of each sequence's own KV-cache contents, so "the same output as
the request run alone" is an exact oracle: a scheduling bug that feeds a sequence the wrong tokens
or positions changes its output.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from hallmark.backends import SequenceInput
from hallmark.backends.fake import EOS, FakeBackend
from hallmark.engine.generate import in_order
from hallmark.engine.request import Request, RequestStatus
from hallmark.engine.results import StopReason
from hallmark.engine.sampler import log_softmax
from hallmark.engine.sampling import SamplingParams
from hallmark.engine.scheduler import QueueFullError, Scheduler, StepError
from hallmark.errors import ContextLengthError, HallmarkError
from hallmark.model import Model

GREEDY = SamplingParams(temperature=0, max_tokens=12)


def _ids(text: str) -> list[int]:
    return FakeBackend().tokenize(text)


def _run(sched: Scheduler, requests: list[Request]) -> dict[int, object]:
    """Step until the given requests finish; their final results by id(request)."""
    finals: dict[int, object] = {}
    for _ in range(10_000):
        if all(id(r) in finals for r in requests):
            return finals
        for r, chunk in sched.step():
            if chunk.final is not None:
                finals[id(r)] = chunk.final
    raise AssertionError("the requests did not finish")


def _solo(prompt: list[int], params: SamplingParams = GREEDY, **backend_kw) -> list[int]:
    backend = FakeBackend(**backend_kw)
    sched = Scheduler(backend, "fake", slots=[0])
    r = sched.submit(Request(prompt, params))
    return _run(sched, [r])[id(r)].token_ids


# -- scheduler ------------------------------------------------------------------------------------
def test_a_request_joins_a_running_batch_and_matches_its_solo_run():
    backend = FakeBackend()
    sched = Scheduler(backend, "fake", slots=[0, 1])
    a, b = _ids("The history of printing"), _ids("Ten facts about the ocean:")
    ra = sched.submit(Request(a, GREEDY))
    for _ in range(4):  # A is decoding when B arrives
        sched.step()
    assert ra.status is RequestStatus.DECODING and len(ra.output_ids) == 4
    rb = sched.submit(Request(b, GREEDY))
    finals = _run(sched, [ra, rb])
    assert finals[id(ra)].token_ids == _solo(a)
    assert finals[id(rb)].token_ids == _solo(b)
    assert sorted(sched.free_slots) == [0, 1] and sched.idle
    assert ra.status is rb.status is RequestStatus.FINISHED


def test_a_long_prompt_prefills_in_chunks_while_others_keep_decoding():
    backend = FakeBackend(n_ctx=512)
    sched = Scheduler(backend, "fake", slots=[0, 1], token_budget=16)
    short = sched.submit(Request(_ids("Hi"), SamplingParams(temperature=0, max_tokens=40)))
    sched.step()  # the short prompt is prefilled and decoding
    long_prompt = _ids("A long prompt about rivers and mountains. " * 4)
    long = sched.submit(Request(long_prompt, GREEDY))
    backend.calls.clear()
    steps_prefilling = 0
    while True:
        events = sched.step()
        steps_prefilling += 1
        if long.prefilling:  # the decoding request got its token every step
            assert [r for r, _ in events] == [short] and long.output_ids == []
        else:  # the step that completed the prompt also sampled its first token
            assert [r for r, _ in events] == [short, long] and len(long.output_ids) == 1
            break
    assert steps_prefilling == -(-len(long_prompt) // 15)  # 15 prompt tokens per step next to 1 decode
    for call in backend.calls:
        assert sum(n for _, n, _ in call) <= 16  # never beyond the budget
        assert call[0] == (short.slot, 1, False)  # decoders first
    finals = _run(sched, [short, long])
    assert finals[id(long)].token_ids == _solo(long_prompt, n_ctx=512)
    assert finals[id(short)].token_ids == _solo(_ids("Hi"), SamplingParams(temperature=0, max_tokens=40))


def test_cancelling_frees_the_slot_and_the_queue_is_bounded():
    backend = FakeBackend()
    sched = Scheduler(backend, "fake", slots=[0], max_waiting=1)
    first = sched.submit(Request(_ids("Once upon a time"), SamplingParams(temperature=0, max_tokens=200)))
    sched.step()
    second = sched.submit(Request(_ids("Hello"), GREEDY))  # waits: the one slot is busy
    with pytest.raises(QueueFullError, match="at capacity"):
        sched.submit(Request(_ids("Hi"), GREEDY))
    sched.cancel(first)
    finals = _run(sched, [second])
    assert first.status is RequestStatus.CANCELLED and first.finished
    assert finals[id(second)].completion_tokens == 12
    assert backend.sequence_length(0) == 0  # freed, not left for reuse (no prefix cache here)


def test_a_request_cancelled_while_waiting_never_starts():
    backend = FakeBackend()
    sched = Scheduler(backend, "fake", slots=[0])
    running = sched.submit(Request(_ids("abc"), GREEDY))
    waiting = sched.submit(Request(_ids("def"), GREEDY))
    sched.cancel(waiting)
    _run(sched, [running])
    assert waiting.status is RequestStatus.CANCELLED and sched.idle
    assert all(seq != -1 for call in backend.calls for seq, _, _ in call)
    assert waiting.slot == -1  # never admitted


def test_prefix_reuse_skips_the_shared_prompt_and_keeps_the_answer():
    backend = FakeBackend()
    sched = Scheduler(backend, "fake", slots=[0, 1], reuse_prefixes=True)
    turn1 = _ids("User: name a colour.\nAssistant:")
    first = _run(sched, [r := sched.submit(Request(turn1, GREEDY))])[id(r)]
    assert first.timings.cache_n == 0
    turn2 = turn1 + first.token_ids + list(b"\nUser: and another?\nAssistant:")
    backend.calls.clear()
    second = _run(sched, [r := sched.submit(Request(turn2, GREEDY))])[id(r)]
    assert second.timings.cache_n >= len(turn1)  # the whole first turn came from the cache
    assert second.timings.prompt_n == len(turn2) - second.timings.cache_n
    assert backend.calls[0][0][1] == second.timings.prompt_n  # only the new tokens were evaluated
    assert second.token_ids == _solo(turn2)


def test_prefix_reuse_never_crosses_adapter_sets():
    backend = FakeBackend()
    adapter = backend.load_adapter("tuned")
    sched = Scheduler(backend, "fake", slots=[0], reuse_prefixes=True)
    prompt = _ids("The same prompt twice")
    plain = sched.submit(Request(prompt, GREEDY))
    _run(sched, [plain])
    tuned = Request(prompt, GREEDY, adapters=((adapter, 1.0),))
    result = _run(sched, [sched.submit(tuned)])[id(tuned)]
    assert result.timings.cache_n == 0  # that KV cache was computed with other weights
    again = Request(prompt, GREEDY, adapters=((adapter, 1.0),))
    assert _run(sched, [sched.submit(again)])[id(again)].timings.cache_n == len(prompt) - 1
    base = _solo(prompt)
    assert result.token_ids != base  # the adapter changes the output...
    reference = FakeBackend()
    reference.load_adapter("tuned")
    solo = Scheduler(reference, "fake", slots=[0])
    alone = Request(prompt, GREEDY, adapters=((adapter, 1.0),))
    assert _run(solo, [solo.submit(alone)])[id(alone)].token_ids == result.token_ids  # ...exactly


def test_a_failed_step_fails_its_requests_and_the_scheduler_goes_on():
    backend = FakeBackend()
    sched = Scheduler(backend, "fake", slots=[0, 1], reuse_prefixes=True)
    a = sched.submit(Request(_ids("first prompt"), GREEDY))
    b = sched.submit(Request(_ids("second prompt"), GREEDY))
    sched.step()
    backend.fail_next_decode()
    with pytest.raises(StepError) as e:
        sched.step()
    assert set(map(id, e.value.failed)) == {id(a), id(b)}
    assert a.status is b.status is RequestStatus.FAILED
    assert sched.idle and sorted(sched.free_slots) == [0, 1]
    # A failed request's KV cache is not offered for reuse: the same prompt starts from scratch.
    c = sched.submit(Request(_ids("first prompt"), GREEDY))
    result = _run(sched, [c])[id(c)]
    assert result.timings.cache_n == 0
    assert result.token_ids == _solo(_ids("first prompt"))


def test_abort_all_cancels_waiting_and_running_requests():
    sched = Scheduler(FakeBackend(), "fake", slots=[0])
    running = sched.submit(Request(_ids("a"), GREEDY))
    sched.step()
    waiting = sched.submit(Request(_ids("b"), GREEDY))
    stopped = sched.abort_all()
    assert {id(r) for r in stopped} == {id(running), id(waiting)}
    assert running.status is waiting.status is RequestStatus.CANCELLED and sched.idle


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


def test_a_burst_of_arrivals_is_admitted_in_one_step():
    prompts = [_ids(t) for t in ("Rivers are", "Mountains are", "Oceans are")]
    eager = Scheduler(FakeBackend(), "fake", slots=[0, 1, 2])
    thread = _burst(eager, prompts, gap=0.1)
    eager.step()  # without settling, the first step admits only what has arrived
    assert eager.n_running == 1
    thread.join()
    eager.abort_all()

    settled = Scheduler(FakeBackend(), "fake", slots=[0, 1, 2])
    thread = _burst(settled, prompts, gap=0.1)
    t0 = time.monotonic()
    settled.settle_arrivals(quiet=0.5, limit=10.0)
    waited = time.monotonic() - t0
    thread.join()
    settled.step()
    assert settled.n_running == 3 and settled.n_waiting == 0
    assert waited < 0.5  # the third arrival filled the free slots: no quiet period to wait out


def test_settling_waits_out_the_quiet_period_but_never_past_the_limit():
    sched = Scheduler(FakeBackend(), "fake", slots=[0, 1])
    sched.submit(Request(_ids("Hello"), GREEDY))
    t0 = time.monotonic()
    sched.settle_arrivals(quiet=0.2, limit=0.05)
    assert time.monotonic() - t0 < 0.2  # the limit cut the wait short
    sched.settle_arrivals(quiet=0.0, limit=1.0)  # quiet 0: returns at once
    sched.step()
    assert sched.n_running == 1


def test_requests_that_cannot_run_are_refused_at_submission():
    sched = Scheduler(FakeBackend(n_ctx=32), "fake", slots=[0])
    with pytest.raises(ContextLengthError, match="32 tokens"):
        sched.submit(Request(_ids("x" * 40), GREEDY))
    with pytest.raises(HallmarkError, match="empty"):
        sched.submit(Request([], GREEDY))
    with pytest.raises(HallmarkError, match="outside the vocabulary"):
        sched.submit(Request(_ids("x"), SamplingParams(logit_bias={999: 5.0})))
    assert sched.idle


# -- one request: sampling, stopping, logprobs ------------------------------------------------------
def _generate(params: SamplingParams, prompt: str = "Once upon a time", **backend_kw):
    backend = FakeBackend(**backend_kw)
    sched = Scheduler(backend, "fake", slots=[0])
    r = sched.submit(Request(_ids(prompt), params))
    chunks = []
    while not r.finished:
        chunks += [c for req, c in sched.step() if req is r]
    return r, chunks


def test_status_moves_from_waiting_to_finished_and_reasons_are_typed():
    r, chunks = _generate(SamplingParams(temperature=0, max_tokens=5))
    assert r.status is RequestStatus.FINISHED
    final = chunks[-1].final
    assert final.stop_reason is StopReason.MAX_TOKENS and final.finish_reason == "length"
    assert final.stop_reason == "max_tokens"  # a StrEnum: the JSON value is the same string
    assert "".join(c.text for c in chunks) == final.text and len(final.token_ids) == 5


def test_end_of_sequence_stops_unless_ignored():
    eos_after = len(_ids("Once upon a time")) + 8
    r, chunks = _generate(SamplingParams(temperature=0, max_tokens=50), eos_after=eos_after)
    final = chunks[-1].final
    assert final.stop_reason is StopReason.EOS and final.finish_reason == "stop"
    assert final.completion_tokens == 8 and EOS not in final.token_ids  # EOS itself is not output
    r, chunks = _generate(SamplingParams(temperature=0, max_tokens=50, ignore_eos=True), eos_after=eos_after)
    assert chunks[-1].final.completion_tokens == 50 and EOS in chunks[-1].final.token_ids


def test_a_full_context_ends_the_generation():
    r, chunks = _generate(SamplingParams(temperature=0, max_tokens=None), n_ctx=40)
    final = chunks[-1].final
    assert final.stop_reason is StopReason.CONTEXT_FULL and final.finish_reason == "length"
    assert len(r.prompt_ids) + final.completion_tokens == 40


def test_a_stop_string_ends_the_text_before_it():
    _, chunks = _generate(SamplingParams(temperature=0, max_tokens=60))
    full = chunks[-1].final.text
    stop = full[20:23]
    _, chunks = _generate(SamplingParams(temperature=0, max_tokens=60, stop=(stop,)))
    final = chunks[-1].final
    assert final.stop_reason is StopReason.STOP_STRING and final.stop_string == stop
    assert final.text == full[: full.index(stop)]
    assert "".join(c.text for c in chunks) == final.text  # nothing past the stop string was streamed


def test_logprobs_are_the_log_softmax_of_the_backends_logits():
    r, chunks = _generate(SamplingParams(temperature=1.0, seed=3, max_tokens=6, logprobs=3))
    reference = FakeBackend()
    history = list(r.prompt_ids)
    for lp in chunks[-1].final.logprobs:
        (logits,) = reference.decode([SequenceInput(0, history)])
        reference.free(0)
        expected = log_softmax(logits[0])
        assert lp.logprob == pytest.approx(float(expected[lp.token]), abs=1e-6)
        assert [t.token for t in lp.top] == list(np.argsort(-expected)[:3])
        history.append(lp.token)


def test_sampling_is_reproducible_by_seed_and_independent_of_the_batch():
    params = SamplingParams(temperature=1.0, seed=7, max_tokens=20)
    alone = _solo(_ids("Seeded"), params)
    assert alone == _solo(_ids("Seeded"), params)
    assert alone != _solo(_ids("Seeded"), params.with_overrides(seed=8))
    sched = Scheduler(FakeBackend(), "fake", slots=[0, 1, 2])
    others = [sched.submit(Request(_ids(t), SamplingParams(temperature=1.0, max_tokens=20))) for t in "ab"]
    mine = sched.submit(Request(_ids("Seeded"), params))
    assert _run(sched, [*others, mine])[id(mine)].token_ids == alone


def test_logit_bias_forces_a_token():
    _, chunks = _generate(SamplingParams(temperature=1.0, max_tokens=8, logit_bias={ord("z"): 100.0}))
    assert chunks[-1].final.text == "z" * 8


# -- the Python API on the fake backend -------------------------------------------------------------
@pytest.fixture
def fake_model():
    model = Model(FakeBackend(max_sequences=2), "fake", watermark=None)
    yield model
    model.close()


def test_generate_batch_queues_prompts_beyond_the_slots_and_keeps_their_order(fake_model):
    prompts = [f"prompt number {i}" for i in range(5)]
    batch = fake_model.generate_batch(prompts, temperature=0, max_tokens=6)
    assert [r.token_ids for r in batch] == [
        fake_model.generate(p, temperature=0, max_tokens=6).token_ids for p in prompts
    ]


def test_a_missing_result_is_an_error_not_a_shorter_list(fake_model, monkeypatch):
    real = fake_model.generate_requests

    def lose_one(requests):
        yield from ((i, r) for i, r in real(requests) if i != 1)

    monkeypatch.setattr(fake_model, "generate_requests", lose_one)
    # Before the fix this returned 2 results for 3 prompts, the third in the second's place.
    with pytest.raises(RuntimeError, match="without a result for request 1"):
        fake_model.generate_batch(["a", "b", "c"], temperature=0, max_tokens=3)
    assert in_order(["x", "y"]) == ["x", "y"]


def test_chat_uses_the_template_and_streams_the_same_text(fake_model):
    messages = [{"role": "user", "content": "hi"}]
    assert fake_model.render_chat(messages) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    whole = fake_model.chat(messages, temperature=0, max_tokens=10)
    pieces = list(fake_model.chat(messages, temperature=0, max_tokens=10, stream=True))
    assert "".join(p.text for p in pieces) == whole.text and pieces[-1].final.token_ids == whole.token_ids


def test_token_logprobs_use_all_position_logits(fake_model):
    text = "scoring text"
    got = fake_model.token_logprobs(text)
    ids = fake_model.tokenize(text)
    reference = FakeBackend()
    expected = []
    for i in range(1, len(ids)):
        (logits,) = reference.decode([SequenceInput(0, ids[:i])])
        reference.free(0)
        expected.append(log_softmax(logits[0])[ids[i]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert fake_model.perplexity(text) == pytest.approx(float(np.exp(-np.mean(expected))), rel=1e-5)


def test_a_request_whose_sampling_fails_fails_alone(monkeypatch):
    backend = FakeBackend()
    sched = Scheduler(backend, "fake", slots=[0, 1])
    good = sched.submit(Request(_ids("good"), GREEDY))
    bad = sched.submit(Request(_ids("bad"), SamplingParams(temperature=1.0, max_tokens=12)))

    def broken(*args, **kwargs):
        raise IndexError("index -1 is out of bounds")  # what infinite logits once did in the sampler

    monkeypatch.setattr(bad.sampler, "sample", broken)
    events = sched.step()
    failures = [(r, e) for r, e in events if isinstance(e, StepError)]
    assert [r for r, _ in failures] == [bad] and bad.status is RequestStatus.FAILED
    assert _run(sched, [good])[id(good)].token_ids == _solo(_ids("good"))  # the other one goes on
    assert sched.idle and sorted(sched.free_slots) == [0, 1]
