"""Speculative decoding by prompt lookup (engine/speculative.py): the drafts, and that turning it on
changes no token. The oracle is the same request decoded one token per step.

On the fake backend (whose logits are a function of the tokens in the KV cache, so a cache left
holding a rejected draft changes the output) and on SmolLM2, whose multi-token logits in llama.cpp
equal its one-token logits exactly: greedy, gumbel, kgw and unwatermarked sampling, single and
batched.
"""

from __future__ import annotations

import numpy as np
import pytest

import hallmark
from hallmark.backends.fake import FakeBackend
from hallmark.engine.speculative import DraftState, SpeculativeConfig, lookup_draft
from hallmark.model import Model


def arr(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


# -- drafts ---------------------------------------------------------------------------------------
def test_lookup_takes_the_longest_suffix_that_occurred_and_its_latest_occurrence():
    # "5 6" occurs twice; the latest occurrence is followed by 9 9.
    tokens = arr(5, 6, 7, 8, 1, 5, 6, 9, 9, 2, 5, 6)
    assert lookup_draft(tokens, 4, max_ngram=2).tolist() == [9, 9, 2, 5]
    assert lookup_draft(tokens, 2, max_ngram=2).tolist() == [9, 9]
    # The 3-gram "2 5 6" never occurred before: falls back to 2-grams.
    assert lookup_draft(tokens, 4, max_ngram=3).tolist() == [9, 9, 2, 5]
    # A 3-gram match wins over the latest 1-gram match.
    tokens = arr(1, 2, 3, 40, 41, 9, 3, 50, 1, 2, 3)
    assert lookup_draft(tokens, 2, max_ngram=3).tolist() == [40, 41]
    assert lookup_draft(tokens, 2, max_ngram=1).tolist() == [50, 1]
    assert lookup_draft(arr(1, 2, 3, 4), 4).tolist() == []  # nothing repeats
    assert lookup_draft(arr(7), 4).tolist() == []
    assert lookup_draft(arr(7, 7), 4).tolist() == [7]  # the match is followed by the suffix itself


def test_a_wholly_rejected_draft_pauses_drafting_with_growing_backoff():
    state = DraftState(SpeculativeConfig(backoff=1, max_backoff=4), [1, 2, 3, 1, 2])
    assert state.propose(4) == [3, 1, 2]
    state.record(3, 0)
    assert state.propose(4) == []  # paused one step
    assert state.propose(4) == [3, 1, 2]
    state.record(3, 0)
    assert [state.propose(4) for _ in range(3)] == [[], [], [3, 1, 2]]  # paused two steps
    state.record(3, 2)  # an acceptance resets the back-off
    state.record(3, 0)
    assert [state.propose(4) for _ in range(2)] == [[], [3, 1, 2]]
    assert (state.drafted, state.accepted) == (12, 2)
    state.extend([3])
    assert state.propose(1) == [1] and state.propose(0) == []


def test_bad_speculative_settings_are_refused(smollm2_path):
    from hallmark.errors import HallmarkError, InvalidSamplingError

    for bad in ({"max_draft": 0}, {"max_draft": 10**9}, {"max_ngram": "3"}, {"min_ngram": 3, "max_ngram": 2}):
        with pytest.raises(InvalidSamplingError, match="speculative"):
            SpeculativeConfig(**bad)
    with pytest.raises(HallmarkError, match="speculative must be"):
        hallmark.load(str(smollm2_path), speculative="yes", policy="off")


# -- the fake backend --------------------------------------------------------------------------
SCRIPT = "The committee met on Tuesday. The committee met again on Friday and the committee agreed."


def fake(speculative: bool, **backend) -> Model:
    model = Model(FakeBackend(n_ctx=512, max_sequences=4, **backend), "fake", watermark=None)
    model.speculative = SpeculativeConfig() if speculative else None
    return model


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_fake_backend_output_is_unchanged_and_drafts_are_accepted(temperature):
    messages = [{"role": "user", "content": f"Repeat after me: {SCRIPT}"}]
    kwargs = dict(temperature=temperature, seed=3, max_tokens=120)
    plain = fake(False, script=SCRIPT).chat(messages, **kwargs)
    backend_kw = dict(script=SCRIPT)
    model = fake(True, **backend_kw)
    spec = model.chat(messages, **kwargs)
    assert spec.token_ids == plain.token_ids and spec.text == SCRIPT
    assert spec.timings.draft_n_accepted > 0.5 * len(spec.token_ids)
    # Fewer decode calls than tokens: several tokens were verified per call.
    decode_calls = sum(1 for call in model.backend.calls if call[0][2])
    assert decode_calls > 0
    assert plain.timings.draft_n == 0


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_fake_backend_random_text_with_rejections_is_unchanged_batched(temperature):
    """Random text (few drafts accepted, many rejected): the KV cache must lose every rejected draft,
    or the fake backend's logits, which hash the cached tokens, would change the output."""
    prompts = ["abcabcabcabc abc", "xyzxy xyzxy xyz", "hello hello hello", "1212121212"]
    kwargs = dict(temperature=temperature, seed=11, max_tokens=60)
    plain = fake(False, window=4).generate_batch(prompts, **kwargs)
    model = fake(True, window=4)
    spec = model.generate_batch(prompts, **kwargs)
    assert [r.token_ids for r in spec] == [r.token_ids for r in plain]
    assert sum(r.timings.draft_n for r in spec) > 0
    assert all(r.timings.draft_n_accepted <= r.timings.draft_n for r in spec)


# -- SmolLM2 ------------------------------------------------------------------------------------------
ARTICLE = (
    "The Springfield city council voted on Tuesday to give the public library a budget of 12 million "
    "dollars, the largest in its history. The library will open a second branch, in the north of "
    "Springfield, next year. Mayor Jane Smith said the second branch would serve 40,000 residents."
)


@pytest.mark.parametrize(
    ("scheme", "temperature"),
    [(None, 0.0), ("gumbel", 0.9), ("kgw", 0.9), (None, 0.9)],
    ids=["greedy", "gumbel", "kgw", "unwatermarked"],
)
def test_smollm2_output_is_token_for_token_unchanged(smollm2_path, scheme, temperature):
    model = hallmark.load(str(smollm2_path), n_threads=2, max_sequences=4, policy="off", watermark=scheme)
    messages = [{"role": "user", "content": f"Summarize in two sentences:\n\n{ARTICLE}"}]
    single = dict(temperature=temperature, seed=7, max_tokens=80)
    prompts = [
        f"{ARTICLE}\n\nIn short, the Springfield",
        f"{ARTICLE}\n\nQuestion: Who is the mayor?\nAnswer:",
    ]
    outputs = {}
    for on in (False, True):
        model.speculative = SpeculativeConfig() if on else None
        chat = model.chat(messages, **single)
        batch = model.generate_batch(prompts, **single)
        outputs[on] = ([chat.token_ids] + [r.token_ids for r in batch], chat, batch)
    model.close()
    assert outputs[True][0] == outputs[False][0]
    chat, batch = outputs[True][1], outputs[True][2]
    assert chat.watermark.applied == (scheme is not None)
    assert sum(r.timings.draft_n_accepted for r in [chat, *batch]) > 0  # the article was copied from


# -- the server: continuous batching with and without drafts in one step ------------------------------
def test_server_with_draft_max_gives_the_same_answers_and_reports_drafts(tmp_path):
    """One request at a time, a server with drafts answers exactly as one without. Then the same
    requests together, in one continuous batch with and without drafts in a step: all complete, with
    the drafts counted. (Concurrent answers are not compared token for token: which prompts llama.cpp
    evaluates in one call depends on arrival times, and that alone can move a logit, drafts or not:
    docs/benchmarks.md#batched-vs-alone-greedy. That failed 1 run in 9.)"""
    import concurrent.futures

    from tests.server_process import start_server

    messages = [
        [{"role": "user", "content": f"Summarize in two sentences:\n\n{ARTICLE}"}],
        [{"role": "user", "content": "Write a poem about the sea."}],  # little to copy
        [{"role": "user", "content": f"{ARTICLE}\n\nWho is the mayor of Springfield?"}],
    ]
    answers, together = {}, []
    for draft in (0, 4):
        flags = ("--draft-max", str(draft), "--parallel", "4")
        srv = start_server("smollm2-135m-instruct", *flags, log_db=tmp_path / f"{draft}.db")
        try:
            client = srv.client()

            def ask(m, client=client):
                return client.chat.completions.create(
                    model="smollm2-135m-instruct", messages=m, max_tokens=60, temperature=0.9, seed=4
                )

            answers[draft] = [ask(m) for m in messages]
            if draft:
                with concurrent.futures.ThreadPoolExecutor(3) as pool:  # one continuous batch
                    together = list(pool.map(ask, messages))
        finally:
            srv.stop()
    assert [a.choices[0].message.content for a in answers[4]] == [
        a.choices[0].message.content for a in answers[0]
    ]
    assert all(a.model_extra["timings"]["draft_n"] == 0 for a in answers[0])
    for served in (answers[4], together):
        timings = [a.model_extra["timings"] for a in served]
        assert all(t["draft_n_accepted"] <= t["draft_n"] for t in timings)
        assert sum(t["draft_n_accepted"] for t in timings) > 0
        assert all(a.choices[0].message.content and a.choices[0].finish_reason for a in served)
