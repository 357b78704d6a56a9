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


def test_lookup_equals_the_sliding_window_definition_on_random_token_strings():
    """The fast lookup (earlier positions of the last token, longer matches checked there) against
    the definition written plainly: every n-gram window, longest n first, latest occurrence."""
    from numpy.lib.stride_tricks import sliding_window_view

    def by_definition(tokens, max_draft, max_ngram, min_ngram):
        for n in range(min(max_ngram, tokens.shape[0] - 1), min_ngram - 1, -1):
            windows = sliding_window_view(tokens[:-1], n)
            starts = np.flatnonzero((windows == tokens[-n:]).all(axis=1))
            if starts.shape[0]:
                return tokens[starts[-1] + n : starts[-1] + n + max_draft].tolist()
        return []

    rng = np.random.default_rng(0)
    for _ in range(3000):
        tokens = rng.integers(0, int(rng.integers(1, 6)), int(rng.integers(0, 40))).astype(np.int64)
        max_ngram = int(rng.integers(1, 5))
        args = (int(rng.integers(1, 6)), max_ngram, int(rng.integers(1, max_ngram + 1)))
        assert lookup_draft(tokens, *args).tolist() == by_definition(tokens, *args), (tokens.tolist(), args)


def test_a_wholly_rejected_draft_pauses_drafting_with_growing_backoff():
    state = DraftState(SpeculativeConfig(adaptive=False, backoff=1, max_backoff=4), [1, 2, 3, 1, 2])
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


# Verification costs like these CPUs' (a 5-token call costs 3.4 one-token calls) and like a GPU's.
CPU_COSTS = (1.0, 1.75, 2.3, 2.9, 3.4)
CHEAP_COSTS = (1.0, 1.02, 1.04, 1.06, 1.08)


def test_adaptive_drafting_first_watches_what_a_draft_would_have_kept():
    """A draft not sent is compared with the tokens that follow: no cost, and the same count a
    verified draft would give (the tokens are the same either way)."""
    state = DraftState(SpeculativeConfig(step_costs=CHEAP_COSTS), [1, 2, 3, 4, 9, 1, 2])
    assert state.propose(4) == []  # nothing known yet: the draft [3, 4, 9, 1] is only watched
    assert state.propose(4) == []  # still watched
    state.extend([3, 4])
    assert list(state.kept) == []  # matching so far: not settled
    state.extend([9, 1])
    assert list(state.kept) == [4] and (state.drafted, state.accepted) == (0, 0)
    # All four kept and verification nearly free: now the draft is sent, whole.
    assert state.propose(4) == [2, 3, 4, 9]
    state.record(4, 1)
    assert list(state.kept) == [4, 1] and (state.drafted, state.accepted) == (4, 1)

    other = DraftState(SpeculativeConfig(step_costs=CHEAP_COSTS), [1, 2, 3, 4, 9, 1, 2])
    assert other.propose(4) == []
    other.extend([3, 4, 7])  # differs from the watched draft's third token
    assert list(other.kept) == [2]
    # Verification as dear as on these CPUs: one draft that kept two tokens is not yet a reason to
    # draft (it counts with a pseudo-draft that kept none); two more that kept four each are.
    dear = DraftState(SpeculativeConfig(step_costs=CPU_COSTS), [1, 2, 3, 4, 9, 1, 2])
    dear.propose(4)
    dear.extend([3, 4, 7, 1, 2])
    assert list(dear.kept) == [2] and dear.propose(4) == [] and dear.drafted == 0
    dear.kept.extend([4, 4])
    # Kept [2, 4, 4] and the pseudo 0: two tokens give (1 + 6 / 4) / 2.3 = 1.09 one-token steps' worth
    # per unit of time, four (1 + 10 / 4) / 3.4 = 1.03.
    assert dear.best_length(4) == 2


def test_adaptive_draft_length_follows_the_kept_lengths_and_the_costs():
    def decide(kept: list[int], costs: tuple[float, ...], available: int = 4) -> int:
        state = DraftState(SpeculativeConfig(step_costs=costs), [1])
        state.kept.extend(kept)
        return state.best_length(available)

    # Copying verbatim: every draft kept whole. On these CPUs 4 tokens pay (5 / 3.4 = 1.47x).
    assert decide([4, 4, 4, 4], CPU_COSTS) == 4
    assert decide([4, 4, 4, 4], CPU_COSTS, available=2) == 2  # 3 / 2.3 = 1.30x beats 2 / 1.75
    # Drafts kept about one token in two: one-token steps are faster here, and worth it on a GPU.
    assert decide([1, 0, 1, 0, 2, 0, 1, 0], CPU_COSTS) == 0
    assert decide([1, 0, 1, 0, 2, 0, 1, 0], CHEAP_COSTS) > 0
    assert decide([0, 0, 0, 0], CHEAP_COSTS) == 0  # nothing kept: never worth it
    assert decide([], CHEAP_COSTS) == 0  # nothing known


def test_bad_speculative_settings_are_refused(smollm2_path):
    from hallmark.errors import HallmarkError, InvalidSamplingError

    for bad in (
        {"max_draft": 0},
        {"max_draft": 10**9},
        {"max_ngram": "3"},
        {"min_ngram": 3, "max_ngram": 2},
        {"adaptive": "yes"},
        {"min_gain": 0},
        {"min_gain": float("nan")},
        {"window": 0},
        {"step_costs": (1.0, 2.0)},  # not max_draft + 1 of them
        {"step_costs": (1.0, 2.0, -1.0, 3.0, 4.0)},
        {"step_costs": [1.0, 1.1, 1.2, 1.3, 1.4]},  # a list, not a tuple
    ):
        with pytest.raises(InvalidSamplingError, match="speculative"):
            SpeculativeConfig(**bad)
    with pytest.raises(HallmarkError, match="speculative must be"):
        hallmark.load(str(smollm2_path), speculative="yes", policy="off")


# -- the fake backend --------------------------------------------------------------------------
SCRIPT = "The committee met on Tuesday. The committee met again on Friday and the committee agreed."


def fake(speculative: bool, **backend) -> Model:
    model = Model(FakeBackend(n_ctx=512, max_sequences=4, **backend), "fake", watermark=None)
    model.speculative = SpeculativeConfig(adaptive=False) if speculative else None  # every draft verified
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


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_adaptive_drafting_changes_no_token_and_drafts_where_it_pays(temperature):
    """Copying a script: with nearly free verification the adaptive mode drafts and keeps most
    drafts; with these CPUs' costs it drafts less. Neither changes a token."""
    messages = [{"role": "user", "content": f"Repeat after me: {SCRIPT}"}]
    kwargs = dict(temperature=temperature, seed=5, max_tokens=120)
    plain = fake(False, script=SCRIPT).chat(messages, **kwargs)
    drafted = {}
    for costs in (CHEAP_COSTS, CPU_COSTS):
        model = fake(False, script=SCRIPT)
        model.speculative = SpeculativeConfig(step_costs=costs)
        result = model.chat(messages, **kwargs)
        assert result.token_ids == plain.token_ids
        drafted[costs] = result.timings.draft_n
        assert result.timings.draft_n_accepted <= result.timings.draft_n
    assert drafted[CHEAP_COSTS] > 0 and drafted[CPU_COSTS] <= drafted[CHEAP_COSTS]


def test_adaptive_drafting_on_text_that_copies_nothing_drafts_little():
    prompts = ["abcabcabcabc abc", "xyzxy xyzxy xyz", "hello hello hello", "1212121212"]
    kwargs = dict(temperature=1.0, seed=11, max_tokens=60)
    always = fake(True, window=4)
    plain = fake(False, window=4).generate_batch(prompts, **kwargs)
    every = always.generate_batch(prompts, **kwargs)
    adaptive = fake(False, window=4)
    adaptive.speculative = SpeculativeConfig(step_costs=CPU_COSTS)
    chosen = adaptive.generate_batch(prompts, **kwargs)
    assert [r.token_ids for r in chosen] == [r.token_ids for r in plain] == [r.token_ids for r in every]
    wasted = lambda results: sum(r.timings.draft_n - r.timings.draft_n_accepted for r in results)  # noqa: E731
    assert wasted(chosen) < wasted(every)


def test_step_costs_are_measured_once_per_backend_in_a_freed_slot():
    from hallmark.engine import speculative

    model = fake(False, script=SCRIPT)
    model.speculative = SpeculativeConfig()  # adaptive, costs measured on first use
    assert model.backend not in speculative._COSTS
    model.chat([{"role": "user", "content": "Repeat after me: " + SCRIPT}], max_tokens=20, temperature=0)
    costs = speculative._COSTS[model.backend]
    assert len(costs) == 5 and costs[0] == 1.0 and list(costs) == sorted(costs)
    calls = len(model.backend.calls)
    model.chat([{"role": "user", "content": "Again: " + SCRIPT}], max_tokens=5, temperature=0)
    assert speculative._COSTS[model.backend] is costs  # not measured again
    assert len(model.backend.calls) - calls < 10  # the second call decodes its prompt and 5 tokens only
    measured = speculative.measure_step_costs(model.backend, slot=3, max_draft=2, reps=1)
    assert len(measured) == 3 and model.backend.sequence_length(3) == 0


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
        model.speculative = SpeculativeConfig(adaptive=False) if on else None  # every draft verified
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
        flags = ("--draft-max", str(draft), "--draft-mode", "always", "--parallel", "4")
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
