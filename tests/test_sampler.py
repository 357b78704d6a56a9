"""The sampler on synthetic logits, checked against distributions computed by hand."""

import numpy as np
import pytest

from hallmark.engine.sampler import Sampler, log_softmax, token_logprob
from hallmark.engine.sampling import SamplingParams


def _probs(logits, temperature=1.0):
    z = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def test_greedy_is_argmax():
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.normal(size=1000).astype(np.float32)
        assert Sampler(SamplingParams(temperature=0), seed=1).sample(logits, [], 0) == int(np.argmax(logits))


def test_top_k_one_is_greedy_at_any_temperature():
    logits = np.random.default_rng(1).normal(size=500).astype(np.float32)
    s = Sampler(SamplingParams(temperature=5.0, top_k=1, top_p=1.0, min_p=0.0), seed=3)
    assert {s.sample(logits, [], 0) for _ in range(50)} == {int(np.argmax(logits))}


def test_top_p_keeps_smallest_set_reaching_mass():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    s = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=0.8, min_p=0.0), seed=0)
    ids, probs = s.filtered_distribution(logits)
    assert ids.tolist() == [0, 1]
    np.testing.assert_allclose(probs, [0.5 / 0.8, 0.3 / 0.8], rtol=1e-6)


def test_top_p_on_large_vocab_matches_full_sort():
    # The partial-sort nucleus must agree with the obvious full-sort implementation.
    rng = np.random.default_rng(2)
    logits = (rng.normal(size=262_144) * 3).astype(np.float32)
    s = Sampler(SamplingParams(temperature=0.7, top_k=0, top_p=0.9, min_p=0.0), seed=0)
    ids, probs = s.filtered_distribution(logits)
    p = _probs(logits, 0.7)
    order = np.argsort(-p, kind="stable")
    keep = int(np.searchsorted(np.cumsum(p[order]), 0.9)) + 1
    assert ids.tolist() == order[:keep].tolist()
    np.testing.assert_allclose(probs, p[order[:keep]] / p[order[:keep]].sum(), rtol=1e-9)


@pytest.mark.parametrize("shape", ["peaked", "flat", "few_near_top", "banned"])
def test_top_k_matches_full_sort(shape):
    # Top-k partitions only the logits near the maximum when enough are there, else all of them;
    # either way the candidates must be exactly the k largest, in order.
    rng = np.random.default_rng(3)
    logits = rng.normal(size=49_152).astype(np.float32)
    if shape == "peaked":  # like real next-token logits: a few far above a long tail
        logits[rng.choice(49_152, 300, replace=False)] += 9.0
    elif shape == "few_near_top":  # fewer than k within any margin of the top: the fallback path
        logits[:5] += 40.0
    elif shape == "banned":  # logit_bias -inf on most of the vocabulary
        logits[100:] = -np.inf
    k = 40
    s = Sampler(SamplingParams(temperature=1.0, top_k=k, top_p=1.0, min_p=0.0), seed=0)
    ids, probs = s.filtered_distribution(logits)
    expected = np.argsort(-logits, kind="stable")[:k]
    assert ids.tolist() == expected.tolist()
    np.testing.assert_allclose(probs, _probs(logits[expected]), rtol=1e-6)


def test_min_p_drops_unlikely_tokens():
    logits = np.log(np.array([0.6, 0.3, 0.06, 0.04], dtype=np.float32))
    s = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.1), seed=0)
    ids, _ = s.filtered_distribution(logits)
    assert ids.tolist() == [0, 1]  # 0.06 and 0.04 are below 0.1 x 0.6


def test_samples_follow_the_distribution():
    logits = np.log(np.array([0.5, 0.25, 0.125, 0.125], dtype=np.float32))
    s = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0), seed=42)
    n = 20_000
    counts = np.bincount([s.sample(logits, [], i) for i in range(n)], minlength=4)
    expected = np.array([0.5, 0.25, 0.125, 0.125]) * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.27  # chi-square, 3 degrees of freedom, p = 0.001


def test_temperature_sharpens():
    logits = np.array([1.0, 0.0], dtype=np.float32)
    cold = Sampler(SamplingParams(temperature=0.25, top_k=0, top_p=1.0, min_p=0.0), seed=0)
    _, probs = cold.filtered_distribution(logits)
    np.testing.assert_allclose(probs, _probs(logits, 0.25), rtol=1e-9)
    assert probs[0] > 0.98


def test_same_seed_same_draws_different_seed_differs():
    logits = np.zeros(1000, dtype=np.float32)
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)

    def draws(seed):
        sampler = Sampler(params, seed=seed)
        return [sampler.sample(logits, [], i) for i in range(30)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_logit_bias_forces_and_bans():
    logits = np.zeros(100, dtype=np.float32)
    logits[3] = 10.0
    forced = Sampler(SamplingParams(temperature=1.0, logit_bias={42: 100.0}), seed=0)
    assert forced.sample(logits, [], 0) == 42
    banned = Sampler(SamplingParams(temperature=0, logit_bias={3: -100.0}), seed=0)
    assert banned.sample(logits, [], 0) != 3
    assert logits[3] == 10.0  # the caller's logits are never modified


def test_repetition_penalty_ctrl_style():
    logits = np.array([2.0, -2.0, 1.0], dtype=np.float32)
    s = Sampler(SamplingParams(repetition_penalty=2.0, repeat_last_n=64), seed=0)
    out = s.process(logits, context=[0, 1, 0], n_generated=0)
    np.testing.assert_allclose(out, [1.0, -4.0, 1.0])


def test_presence_and_frequency_penalties_count_generated_tokens_only():
    logits = np.zeros(4, dtype=np.float32)
    s = Sampler(SamplingParams(presence_penalty=0.5, frequency_penalty=0.25), seed=0)
    # context = prompt [3, 3] + generated [1, 1, 2]
    out = s.process(logits, context=[3, 3, 1, 1, 2], n_generated=3)
    np.testing.assert_allclose(out, [0.0, -1.0, -0.75, 0.0])


def test_token_logprob_and_top_alternatives():
    logits = np.array([3.0, 1.0, 2.0, 0.0], dtype=np.float32)
    lp, top = token_logprob(logits, 2, n_top=3)
    ref = log_softmax(logits)
    assert lp == pytest.approx(ref[2])
    assert [t for t, _ in top] == [0, 2, 1]
    assert np.exp(ref).sum() == pytest.approx(1.0)


def test_position_uniforms_are_uniform_and_depend_only_on_seed_and_position():
    from scipy import stats

    from hallmark.engine.sampler import position_uniform

    u = np.array([position_uniform(seed, pos) for seed in range(40) for pos in range(500)])
    assert stats.kstest(u, "uniform").pvalue > 0.001
    assert u.min() >= 0.0 and u.max() < 1.0
    # Neighbouring positions and neighbouring seeds are uncorrelated (|r| < 4 / sqrt(n)).
    grid = u.reshape(40, 500)
    assert abs(np.corrcoef(grid[:, :-1].ravel(), grid[:, 1:].ravel())[0, 1]) < 4 / np.sqrt(grid.size)
    assert abs(np.corrcoef(grid[:-1].ravel(), grid[1:].ravel())[0, 1]) < 4 / np.sqrt(grid.size)
    # A position's draw does not depend on what was drawn before it (speculative decoding skips none,
    # but batching and verification order must not matter either).
    logits = np.zeros(100, dtype=np.float32)
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    a, b = Sampler(params, seed=5), Sampler(params, seed=5)
    first = [a.sample(logits, [], i) for i in range(20)]
    assert [b.sample(logits, [], i) for i in reversed(range(20))][::-1] == first
