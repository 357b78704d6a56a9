"""Zero-shot detection's parts: the statistics against reference implementations, and the
calibration's false-positive guarantee on synthetic human texts (tests/test_zeroshot_models.py
runs the shipped detector on real text)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from hallmark.backends.fake import FakeBackend
from hallmark.engine.scoring import token_logprobs, token_statistics
from hallmark.errors import DetectionError
from hallmark.zeroshot.calibration import LENGTHS, Calibration, Scorer
from hallmark.zeroshot.detector import count_words, word_prefix
from hallmark.zeroshot.statistics import STATISTICS, text_statistics


# -- statistics ---------------------------------------------------------------------------------------
def _reference_statistics(logits: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-token statistics in float64, written out the textbook way."""
    log_p = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
    log_p -= logits.max(1, keepdims=True)
    p = np.exp(log_p)
    picked = log_p[np.arange(len(targets)), targets]
    rank = np.array([1 + np.sum(row > row[t]) for row, t in zip(logits, targets, strict=True)])
    mean = (p * log_p).sum(1)
    return {
        "logprob": picked,
        "log_rank": np.log(rank),
        "entropy": -mean,
        "logprob_var": (p * log_p**2).sum(1) - mean**2,
    }


def _fast_detectgpt_reference(logits: np.ndarray, targets: np.ndarray) -> float:
    """Fast-DetectGPT's get_sampling_discrepancy_analytic (Bao et al., fast_detect_gpt.py) with the
    same logits as reference and scoring model, ported from torch to numpy line by line."""
    lprobs_score = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    probs_ref = np.exp(lprobs_score)
    log_likelihood = lprobs_score[np.arange(len(targets)), targets]
    mean_ref = (probs_ref * lprobs_score).sum(-1)
    var_ref = (probs_ref * np.square(lprobs_score)).sum(-1) - np.square(mean_ref)
    return float((log_likelihood.sum() - mean_ref.sum()) / np.sqrt(var_ref.sum()))


def _binoculars_reference(observer: np.ndarray, performer: np.ndarray, targets: np.ndarray) -> float:
    """Binoculars' score (Hans et al. 2024, binoculars/metrics.py: perplexity / entropy) for one text:
    the performer's log-perplexity over the observer-performer cross-perplexity."""
    log_perf = performer - np.log(np.exp(performer).sum(-1, keepdims=True))
    ppl = -log_perf[np.arange(len(targets)), targets].mean()
    p_obs = np.exp(observer - np.log(np.exp(observer).sum(-1, keepdims=True)))
    x_ppl = -(p_obs * log_perf).sum(-1).mean()
    return float(ppl / x_ppl)


def test_token_statistics_match_the_textbook_formulas_on_a_backend():
    backend = FakeBackend(n_ctx=512)
    tokens = [256] + list(b"The quick brown fox jumps over the lazy dog, twice over, and then sleeps.")
    stats = token_statistics(backend, 0, tokens)
    # The logits the backend gives at every position, one decode call, as the reference sees them.
    backend.free(0)
    from hallmark.backends.base import SequenceInput

    (rows,) = backend.decode([SequenceInput(0, tokens, all_logits=True)])
    backend.free(0)
    expected = _reference_statistics(rows[:-1].astype(np.float64), np.array(tokens[1:]))
    for name, values in expected.items():
        np.testing.assert_allclose(getattr(stats, name), values, rtol=1e-4, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(stats.logprob, token_logprobs(backend, 0, tokens), atol=1e-5)
    assert len(stats) == len(tokens) - 1 and stats[:5].logprob.shape == (5,)


def test_fast_detectgpt_and_binoculars_are_the_reference_criteria():
    rng = np.random.default_rng(3)
    for n, vocab in ((1, 7), (40, 300), (200, 5000)):
        logits = rng.standard_normal((n, vocab)) * rng.uniform(0.5, 4)
        targets = rng.integers(0, vocab, n)
        ref = _reference_statistics(logits, targets)
        from hallmark.engine.scoring import TokenStatistics

        stats = TokenStatistics(ref["logprob"], ref["log_rank"], ref["entropy"], ref["logprob_var"])
        got = text_statistics(stats)
        assert got["fast_detectgpt"] * np.sqrt(n) == pytest.approx(_fast_detectgpt_reference(logits, targets))
        # One model as observer and performer; higher means more machine-like, so the score negated.
        assert got["binoculars"] == pytest.approx(-_binoculars_reference(logits, logits, targets))
        assert got["log_likelihood"] == pytest.approx(ref["logprob"].mean())
        assert got["log_rank"] == pytest.approx(-ref["log_rank"].mean())
        assert got["entropy"] == pytest.approx(-ref["entropy"].mean())
        assert list(got) == list(STATISTICS)


def test_words_are_cut_where_the_detector_says():
    text = "  One two\tthree\n\nfour, five.  "
    assert count_words(text) == 5
    assert word_prefix(text, 3) == "One two\tthree"
    assert word_prefix(text, 99) == text.strip() and word_prefix("  ", 3) == ""


# -- calibration ------------------------------------------------------------------------------------------
SCORERS = [Scorer("a", "fp-a", 1), Scorer("b", "fp-b", 2)]
FEATURES = ["a:log_likelihood", "a:fast_detectgpt", "b:log_likelihood"]


def _human(rng: np.random.Generator, n: int, shift: float = 0.0) -> list[tuple[str, dict]]:
    """Synthetic human texts: correlated features, spread shrinking with length, as real ones do."""
    rows = []
    for i in range(n):
        words = int(rng.integers(LENGTHS[0], 500))
        base = rng.standard_normal()
        by_length = {}
        for b in LENGTHS:
            if b > words:
                break
            noise = rng.standard_normal(3) / np.sqrt(b / 48)
            values = shift + np.array([-3.0, 0.5, -2.5]) + 0.6 * base + noise * np.array([0.4, 1.0, 0.3])
            by_length[b] = dict(zip(FEATURES, values, strict=True))
        rows.append((f"text {i} {shift}", by_length))
    return rows


def test_the_conformal_decision_keeps_its_false_positive_rate_on_new_human_text(tmp_path):
    # The guarantee is over draws of the calibration set as well as of the text (one calibration of a
    # few hundred texts per length misses by about a point either way), so five are pooled.
    flagged = {0.01: 0, 0.05: 0}
    total = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        cal = Calibration.build(SCORERS, FEATURES, _human(rng, 2000), {"source": "synthetic"})
        assert cal.lengths[0] == LENGTHS[0] and cal.lengths == sorted(cal.lengths)
        for _, by_length in _human(rng, 2000):
            index = cal.length_index(max(by_length))
            p = cal.p_value(cal.combined(by_length[cal.lengths[index]], index), index)
            total += 1
            for fpr in flagged:
                flagged[fpr] += p <= fpr
    for fpr, count in flagged.items():
        # At or below the stated rate, up to sampling error (one-sided binomial test at 1%).
        assert binomtest(count, total, fpr, alternative="greater").pvalue > 0.01, (fpr, count, total)
        assert count > total * fpr / 2  # and not vacuously: the decision does flag the tail
    # Machine-like text (every feature shifted up) is flagged far more often.
    machine = _human(rng, 300, shift=2.0)
    index = cal.length_index(200)
    hits = [
        cal.p_value(cal.combined(r[cal.lengths[index]], index), index) <= 0.01
        for _, r in machine
        if cal.lengths[index] in r
    ]
    assert np.mean(hits) > 0.5
    cal.save(tmp_path / "c.npz")
    again = Calibration.load(tmp_path / "c.npz")
    assert (
        again.features == FEATURES and again.scorers == SCORERS and again.calibration_id == cal.calibration_id
    )
    np.testing.assert_array_equal(again.nulls[-1], cal.nulls[-1])


def test_p_values_and_the_decision_rate_follow_the_null_sample():
    cal = Calibration(SCORERS[:1], ["a:x"], [48], np.zeros((1, 1)), np.ones((1, 1)), [np.arange(99.0)], {})
    assert cal.p_value(1000.0, 0) == 1 / 100  # above every human text
    assert cal.p_value(98.0, 0) == 2 / 100  # ties count against the text
    assert cal.p_value(-1.0, 0) == 1.0
    assert cal.decision_fpr(0.01, 0) == 0.01 and cal.decision_fpr(0.005, 0) == 0.0
    assert cal.length_index(47) is None and cal.length_index(48) == 0 and cal.length_index(10_000) == 0


def test_too_few_human_texts_is_a_clear_error(tmp_path):
    with pytest.raises(DetectionError, match="too few human texts"):
        Calibration.build(SCORERS, FEATURES, _human(np.random.default_rng(1), 50), {})
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a calibration")
    with pytest.raises(DetectionError, match="cannot read the zero-shot calibration"):
        Calibration.load(bad)
