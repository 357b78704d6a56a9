"""Watermark: spec, keys, schemes, detector. Real models; human text from the stdlib's docstrings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

import hallmark
from hallmark.engine.sampler import Sampler
from hallmark.engine.sampling import SamplingParams
from hallmark.errors import DetectionError, WatermarkKeyError, WatermarkSpecError
from hallmark.watermark import Detector, SequenceWatermarker, WatermarkKey, WatermarkSpec, make_scheme
from hallmark.watermark.keys import find_key, list_keys, new_key
from hallmark.watermark.spec import SCHEMES
from tests.conftest import run_cli
from tests.human_text import human_passages

PROMPTS = [
    "The history of the printing press begins",
    "Breaking news: the city council voted",
    "Dear diary, today I finally",
    "The recipe calls for two cups of flour and",
]


def _key(i: int) -> WatermarkKey:
    return WatermarkKey(name=f"k{i}", secret=f"test-secret-{i}".encode() * 2, created="", path=None)


def _detector(model, scheme: str, key: WatermarkKey) -> Detector:
    spec = WatermarkSpec.create(scheme, key.key_id, model.fingerprint)
    return Detector(model.tokenizer, spec, key.secret)


@pytest.fixture(scope="module")
def generations(smollm2):
    """Watermarked generations (temperature 1.0, 150 tokens) under key 0, for both schemes."""
    out = {}
    try:
        for scheme in ("gumbel", "kgw"):
            model = hallmark.load(
                smollm2.path, n_ctx=512, max_sequences=4, show_progress=False, watermark=scheme
            )
            model._watermark = make_scheme(
                WatermarkSpec.create(scheme, _key(0).key_id, model.fingerprint), _key(0).secret
            )
            results = model.generate_batch(PROMPTS, temperature=1.0, max_tokens=150, seed=11, ignore_eos=True)
            out[scheme] = (model, results)
        yield out
    finally:
        for model, _ in out.values():
            model.close()


# -- spec ---------------------------------------------------------------------------------------
def test_spec_round_trips_through_json_and_id():
    for scheme in ("gumbel", "kgw"):
        spec = WatermarkSpec.create(scheme, "0e92caa512ae", "ade6dc1a204a04a9")
        assert WatermarkSpec.from_json(spec.to_json()) == spec
        assert WatermarkSpec.from_id(spec.spec_id) == spec
        assert WatermarkSpec.parse(spec.to_json()) == WatermarkSpec.parse(spec.spec_id) == spec
        assert json.loads(spec.to_json())["spec_id"] == spec.spec_id
    assert WatermarkSpec.create("kgw", "0e92caa512ae", "ade6dc1a204a04a9").spec_id == (
        "hm1-kgw-w3-g0.25-d2-k0e92caa512ae-tade6dc1a204a04a9"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hm1-rot13-w4-kabcdef-tabcdef", "not a watermark spec id"),
        ("hm9-gumbel-w4-kabcdef12-tabcdef12", "version 9 is not supported"),
        ('{"scheme": "gumbel"}', "malformed watermark spec JSON"),
        ("hm1-kgw-w3-g1.5-d2-kabcdef-tabcdef", "gamma must be in (0, 1)"),
    ],
)
def test_malformed_specs_are_refused(text, message):
    with pytest.raises(WatermarkSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        WatermarkSpec.parse(text)


def test_spec_from_another_tokenizer_is_refused(smollm2, gemma):
    spec = WatermarkSpec.create("gumbel", _key(0).key_id, smollm2.fingerprint)
    assert smollm2.fingerprint != gemma.fingerprint
    with pytest.raises(WatermarkSpecError, match="was made for tokenizer"):
        spec.check_tokenizer(gemma.fingerprint, "gemma-3-270m")
    proc = run_cli("detect", "-", "--spec", spec.spec_id, "-m", "gemma-3-270m", stdin="some text " * 20)
    assert proc.returncode == 1 and "was made for tokenizer" in proc.stderr and "Traceback" not in proc.stderr


# -- keys ---------------------------------------------------------------------------------------
def test_keys_are_created_listed_found_and_never_overwritten(tmp_path, monkeypatch):
    monkeypatch.setenv("HALLMARK_CONFIG_DIR", str(tmp_path))
    key = new_key("alpha")
    assert (tmp_path / "keys" / "alpha.json").stat().st_mode & 0o777 == 0o600
    assert [k.name for k in list_keys()] == ["alpha"]
    assert find_key("alpha") == key and find_key(key.key_id[:8]) == key
    with pytest.raises(WatermarkKeyError, match="already exists"):
        new_key("alpha")
    with pytest.raises(WatermarkKeyError, match="no watermark key 'beta'"):
        find_key("beta")
    assert new_key("beta").key_id != key.key_id


def test_env_key_wins_over_the_store(tmp_path, monkeypatch):
    from hallmark.watermark.keys import default_key

    monkeypatch.setenv("HALLMARK_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("HALLMARK_WATERMARK_KEY", "ab" * 32)
    assert default_key().secret == bytes.fromhex("ab" * 32)
    assert not (tmp_path / "keys").exists()  # nothing was written
    monkeypatch.setenv("HALLMARK_WATERMARK_KEY", "short")
    with pytest.raises(WatermarkKeyError, match="too short"):
        default_key()


def test_keys_cli(tmp_path):
    env = {"HALLMARK_CONFIG_DIR": str(tmp_path)}
    created = run_cli("keys", "new", "desk", "--json", env=env)
    assert created.returncode == 0, created.stderr
    key_id = json.loads(created.stdout)["key_id"]
    listed = json.loads(run_cli("keys", "list", "--json", env=env).stdout)
    assert [k["key_id"] for k in listed] == [key_id] and "secret" not in listed[0]
    assert key_id in run_cli("keys", "show", "desk", env=env).stdout
    again = run_cli("keys", "new", "desk", env=env)
    assert again.returncode == 1 and "already exists" in again.stderr


# -- schemes ------------------------------------------------------------------------------------
def test_gumbel_choice_is_distributed_as_the_model_distribution():
    """Distortion-free: over many contexts, the watermarked choice follows p exactly."""
    spec = WatermarkSpec.create("gumbel", _key(0).key_id, "ade6dc1a204a04a9")
    scheme = make_scheme(spec, _key(0).secret)
    cand = np.array([5, 17, 99, 1234])
    probs = np.array([0.5, 0.25, 0.15, 0.10])
    rng = np.random.default_rng(0)
    n = 20_000
    contexts = rng.integers(0, 50_000, size=(n, 4))
    picks = [scheme.choose(cand, probs, ctx) for ctx in contexts]
    counts = np.array([picks.count(int(c)) for c in cand])
    assert stats.chisquare(counts, probs * n).pvalue > 0.001


def test_kgw_biases_towards_green_tokens():
    spec = WatermarkSpec.create("kgw", _key(0).key_id, "ade6dc1a204a04a9")
    scheme = make_scheme(spec, _key(0).secret)
    rng = np.random.default_rng(1)
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=40, top_p=1.0, min_p=0.0), seed=3)
    logits = np.zeros(1000, dtype=np.float32)
    logits[100:140] = 10.0  # a flat top-40
    greens = []
    for i in range(2000):
        ctx = rng.integers(0, 50_000, size=3).tolist()
        token = sampler.sample(logits, ctx, n_generated=10 + i, watermarker=SequenceWatermarker(scheme))
        assert 100 <= token < 140
        greens.append(scheme.score(np.append(ctx, token)).scores[-1])
    # With delta=2 and gamma=0.25 on a flat distribution: P(green) = 0.25e^2 / (0.25e^2 + 0.75) = 0.71.
    assert 0.66 < np.mean(greens) < 0.76


def test_kgw_bias_acts_before_min_p():
    """A green token that min-p would drop is boosted first and can be sampled (as in KGW)."""
    spec = WatermarkSpec.create("kgw", _key(0).key_id, "ade6dc1a204a04a9")
    scheme = make_scheme(spec, _key(0).secret)
    ctx = [11, 12, 13]
    cand = np.arange(40)
    green = scheme.logit_bias(cand, np.asarray(ctx)) > 0
    weak_green = int(cand[green][0])
    logits = np.full(40, -50.0, dtype=np.float32)
    logits[int(cand[~green][0])] = 0.0  # the top token, not green
    logits[weak_green] = -1.5  # p ratio e^-1.5 = 0.22 to the top token: below min_p 0.3
    params = SamplingParams(temperature=1.0, top_k=40, top_p=1.0, min_p=0.3)
    plain, _ = Sampler(params, seed=0).filtered_distribution(logits)
    assert weak_green not in plain.tolist()
    wm = SequenceWatermarker(scheme)
    biased, _ = Sampler(params, seed=0).filtered_distribution(logits, lambda c: wm.bias(c, ctx, 10))
    assert weak_green in biased.tolist()
    assert wm.marked == 1


def test_repeated_contexts_are_not_watermarked_twice_by_gumbel():
    spec = WatermarkSpec.create("gumbel", _key(0).key_id, "ade6dc1a204a04a9")
    assert spec.context_width == 2
    wm = SequenceWatermarker(make_scheme(spec, _key(0).secret))
    cand, probs = np.array([1, 2, 3]), np.array([0.5, 0.3, 0.2])
    for i in range(SequenceWatermarker.RANDOM_START):  # the random start: the first choices are drawn
        assert wm.pick(cand, probs, [0, 1, 2, i], n_generated=i) is None
    assert wm.pick(cand, probs, [7, 8, 9, 10], n_generated=4) is not None
    assert wm.pick(cand, probs, [6, 7, 9, 10], n_generated=5) is None  # same last-2 context
    assert wm.pick(cand, probs, [8, 9, 10, 11], n_generated=6) is not None
    assert wm.pick(cand, probs, [1, 2, 3, 4], n_generated=1) is None  # context not yet generated
    assert (wm.marked, wm.unmarked) == (2, 4 + 1 + 1)


def test_random_start_counts_choices_not_forced_tokens():
    """A grammar's forced tokens ('{"story": "') are no choice: the seeded random start begins at
    the first tokens with two or more candidates, so different seeds give different texts."""
    spec = WatermarkSpec.create("gumbel", _key(0).key_id, "ade6dc1a204a04a9")
    wm = SequenceWatermarker(make_scheme(spec, _key(0).secret))
    for n in range(6):
        assert wm.pick(np.array([5]), np.array([1.0]), [1, 2, 3, n], n_generated=n) is None
    cand, probs = np.array([1, 2, 3]), np.array([0.5, 0.3, 0.2])
    picks = [wm.pick(cand, probs, [9, 9, 9, 20 + n], n_generated=6 + n) for n in range(6)]
    assert picks[: SequenceWatermarker.RANDOM_START] == [None] * SequenceWatermarker.RANDOM_START
    assert None not in picks[SequenceWatermarker.RANDOM_START :]


def test_kgw_keeps_biasing_repeated_contexts():
    """KGW's bias is soft, so a repeated context keeps its green list (as in the paper)."""
    spec = WatermarkSpec.create("kgw", _key(0).key_id, "ade6dc1a204a04a9")
    wm = SequenceWatermarker(make_scheme(spec, _key(0).secret))
    cand, probs = np.array([1, 2, 3]), np.array([0.5, 0.3, 0.2])
    for _ in range(3):
        assert wm.bias(cand, [7, 8, 9, 10], n_generated=4) is not None
    assert wm.pick(cand, probs, [7, 8, 9, 10], n_generated=4) is None  # kgw never picks
    assert (wm.marked, wm.unmarked) == (3, 0)


# -- detection ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["gumbel", "kgw"])
def test_generated_text_is_detected_with_its_key_and_not_another(generations, scheme):
    model, results = generations[scheme]
    right = _detector(model, scheme, _key(0))
    wrong = _detector(model, scheme, _key(1))
    # KGW only tilts the distribution, so on this small model's low-entropy text (after the default
    # top-k/top-p/min-p filters) it needs more tokens than Gumbel for the same p-value.
    fpr = 1e-3 if scheme == "gumbel" else 1e-2
    for r in results:
        assert r.watermark.applied and r.watermark.spec_id == right.spec.spec_id
        found = right.detect(r.text, fpr=fpr)
        assert found.watermarked, found.message
        assert not wrong.detect(r.text, fpr=fpr).watermarked


def test_p_values_are_uniform_on_human_text(smollm2):
    texts = human_passages()
    assert len(texts) >= 200
    for scheme in ("gumbel", "kgw"):
        det = _detector(smollm2, scheme, _key(0))
        p = np.array([det.detect(t).p_value for t in texts])
        _assert_valid_p_values(p, scheme)


def test_p_values_are_uniform_under_other_keys(generations):
    for scheme, (model, results) in generations.items():
        p = np.array(
            [_detector(model, scheme, _key(i)).detect(r.text).p_value for i in range(1, 61) for r in results]
        )
        _assert_valid_p_values(p, scheme)


def _assert_valid_p_values(p: np.ndarray, scheme: str) -> None:
    if scheme == "gumbel":
        # Continuous statistic: the exact Gamma p-value is uniform under the null.
        assert stats.kstest(p, "uniform").pvalue > 0.01
    else:
        # Binomial: p-values are discrete, hence conservative (P(p <= a) <= a), not uniform.
        for alpha in (0.01, 0.05, 0.1, 0.25, 0.5):
            assert np.mean(p <= alpha) <= alpha + 2.5 * np.sqrt(alpha * (1 - alpha) / p.size)


def test_windowed_detection_finds_a_pasted_passage(generations):
    model, results = generations["gumbel"]
    det = _detector(model, "gumbel", _key(0))
    human = human_passages()
    before, after = human[3] + "\n\n" + human[10] + "\n\n", "\n\n" + human[20] + "\n\n" + human[30]
    passage = results[1].text
    text = before + passage + after
    result = det.detect(text, windowed=True)
    assert result.spans, result.message
    start, end = len(before), len(before) + len(passage)
    best = max(result.spans, key=lambda s: min(s.end, end) - max(s.start, start))
    overlap = min(best.end, end) - max(best.start, start)
    # The passage's ends can be unscorable or unwatermarked (its first tokens are a random start,
    # low-entropy tokens carry little signal), so the found span may be somewhat shorter.
    assert overlap >= 0.7 * len(passage)
    assert best.end - best.start <= 1.3 * len(passage)
    assert not det.detect(before + after, windowed=True).spans


def test_short_text_gets_no_verdict(smollm2):
    det = _detector(smollm2, "gumbel", _key(0))
    r = det.detect("Too short to tell.")
    assert r.verdict == "too_short" and "too short" in r.message


def test_greedy_output_is_reported_unwatermarked(smollm2):
    r = smollm2.generate("Hello", temperature=0, max_tokens=8)
    assert r.watermark.applied is False and "greedy" in r.watermark.reason
    off = smollm2.generate("Hello", temperature=0.8, max_tokens=8, watermark=False)
    assert off.watermark.applied is False and "turned off" in off.watermark.reason


def test_sampled_output_is_watermarked_by_default_and_detected_from_cli(tmp_path):
    gen = run_cli(
        "generate",
        "Breaking news: the city council voted",
        "--temperature",
        "1",
        "--max-tokens",
        "200",  # the session's key is random: 120 once fell short of fpr 0.001 in a full run
        "--ignore-eos",
        "--seed",
        "5",
        "--json",
        "--ctx-size",
        "512",
    )
    assert gen.returncode == 0, gen.stderr
    out = json.loads(gen.stdout)
    assert out["watermark"]["applied"] and out["watermark"]["spec_id"].startswith("hm1-gumbel-w2-")
    path = tmp_path / "answer.txt"
    path.write_text(out["text"])
    from_file = json.loads(run_cli("detect", str(path), "--json").stdout)
    from_stdin = json.loads(
        run_cli("detect", "-", "--spec", out["watermark"]["spec_id"], "--json", stdin=out["text"]).stdout
    )
    for result in (from_file, from_stdin):
        # The whole result and text on failure: this failed once in a full run and never alone.
        assert result["verdict"] == "watermarked" and result["p_value"] < 1e-3, (result, out["text"])
        assert result["spec_id"] == out["watermark"]["spec_id"]
    human = run_cli("detect", "-", stdin=human_passages()[0])
    assert human.returncode == 0 and "no watermark found" in human.stdout


def test_bad_detection_input_is_a_hallmark_error(smollm2, monkeypatch):
    monkeypatch.setenv("HALLMARK_WATERMARK_KEY", "0123456789abcdef0123456789abcdef")
    # Before the fix: a plain ValueError (fpr) and an AttributeError (not a string), which the CLI
    # and the server turned into a traceback and a 500.
    for kwargs, message in (({"fpr": 2}, "fpr must be a number in"), ({"fpr": float("nan")}, "fpr")):
        with pytest.raises(DetectionError, match=message):
            hallmark.detect("some text to test", **kwargs)
    with pytest.raises(DetectionError, match="must be a string"):
        hallmark.detect(123)  # type: ignore[arg-type]
    with pytest.raises(DetectionError, match="lone surrogate at character 2"):
        hallmark.detect("a \ud800 b")
    detector = _detector(smollm2, "gumbel", _key(0))
    with pytest.raises(DetectionError):
        detector.detect_tokens([1, 2, 3], fpr=0)
    assert issubclass(DetectionError, hallmark.HallmarkError)


# -- malformed specs from outside (detect --spec, /v1/detect) ---------------------------------------
_GOOD = {"scheme": "gumbel", "key_id": "0e92caa512ae", "tokenizer": "ade6dc1a204a04a9", "context_width": 2}
_KGW = {**_GOOD, "scheme": "kgw", "context_width": 3, "gamma": 0.25, "delta": 2.0}


def _spec_json(base: dict, **changes) -> str:
    return json.dumps({**base, **changes})


@pytest.mark.parametrize(
    "text",
    [
        _spec_json(_GOOD, context_width=2.5),
        _spec_json(_GOOD, context_width="2"),
        _spec_json(_GOOD, context_width=True),
        _spec_json(_GOOD, context_width=10**400),
        _spec_json(_GOOD).replace('"context_width": 2', '"context_width": 1e999'),
        _spec_json(_GOOD, key_id=5),
        _spec_json(_GOOD, tokenizer=["ade6dc1a204a04a9"]),
        _spec_json(_GOOD, scheme={"name": "gumbel"}),
        _spec_json(_GOOD, version="1"),
        _spec_json(_GOOD, spec_id=7),
        _spec_json(_GOOD, colour="blue"),
        _spec_json(_KGW, gamma="0.25"),
        _spec_json(_KGW, delta=float("inf")),
        _spec_json(_KGW, delta=float("nan")),
        _spec_json(_KGW, gamma=None),
        _spec_json(_GOOD, gamma=0.25),  # not in a gumbel spec's id: the id and the spec would disagree
        "true",
        "[]",
        "[" + json.dumps(_GOOD) + "]",
        '{"scheme": "gumbel", "key_id": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"scheme": ' + "[" * 1500 + "]" * 1500 + "}",  # short, but nested past Python's recursion limit
        "{" + "x" * 100_000,
        "hm1-gumbel-w" + "9" * 100_000 + "-k0e92caa512ae-tade6dc1a204a04a9",
        "hm1-kgw-w3-g0.25-d1e999-k0e92caa512ae-tade6dc1a204a04a9",
        "hm1-kgw-w3-g0.25-dnan-k0e92caa512ae-tade6dc1a204a04a9",
        "",
    ],
)
def test_every_malformed_spec_is_a_one_line_spec_error(text):
    # Before: context_width 2.5 passed the range check and failed later in detection (a TypeError),
    # deep nesting raised RecursionError, inf was accepted: a 500 on /v1/detect, a traceback in the CLI.
    with pytest.raises(WatermarkSpecError) as e:
        WatermarkSpec.parse(text)
    message = str(e.value)
    assert "\n" not in message and len(message) < 300, message


def test_a_spec_that_is_not_a_string_is_a_spec_error():
    for value in (None, 5, b"hm1-gumbel", {"scheme": "gumbel"}):
        with pytest.raises(WatermarkSpecError, match="must be a string"):
            WatermarkSpec.parse(value)  # type: ignore[arg-type]


def test_well_formed_specs_still_parse():
    assert WatermarkSpec.parse(_spec_json(_GOOD)).context_width == 2
    assert WatermarkSpec.parse(_spec_json(_KGW, gamma=0.5, delta=1)).delta == 1
    spec = WatermarkSpec.create("kgw", "0e92caa512ae", "ade6dc1a204a04a9", gamma=0.5)
    assert WatermarkSpec.parse(" " + spec.to_json()) == WatermarkSpec.parse(spec.spec_id + "\n") == spec


# -- detection without the model's name (every hypothesis), and boilerplate -------------------------
def _env_secret(i: int) -> str:
    """$HALLMARK_WATERMARK_KEY whose secret is _key(i)'s (a passphrase is used as its bytes)."""
    return _key(i).secret.decode()


@pytest.fixture()
def only_key0(tmp_path, monkeypatch):
    """An empty key store and $HALLMARK_WATERMARK_KEY = key 0: the local keys are key 0 alone."""
    monkeypatch.setenv("HALLMARK_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("HALLMARK_WATERMARK_KEY", _env_secret(0))
    from hallmark.watermark.keys import env_key

    assert env_key().key_id == _key(0).key_id


@pytest.fixture(scope="module")
def gemma_text(gemma):
    """A gumbel-watermarked gemma-3-270m text under key 0 (temperature 1.0, 120 tokens)."""
    saved = gemma._watermark
    gemma._watermark = make_scheme(
        WatermarkSpec.create("gumbel", _key(0).key_id, gemma.fingerprint), _key(0).secret
    )
    try:
        result = gemma.generate(PROMPTS[1], temperature=1.0, max_tokens=120, seed=3, ignore_eos=True)
    finally:
        gemma._watermark = saved
    assert result.watermark.applied
    return result.text, result.watermark.spec_id


def test_gemma_text_is_detected_without_naming_the_model(gemma_text, only_key0):
    text, spec_id = gemma_text
    # Before: detection used the default model's tokenizer (smollm2's) and found nothing.
    assert not hallmark.detect(text, model="smollm2-135m-instruct", scheme="gumbel").watermarked
    found = hallmark.detect(text)
    # 2 installed tokenizers x 1 key x 2 schemes, the best match corrected for all 4.
    assert found.hypotheses == 4 and len(found.tested) == 4
    assert found.watermarked and found.model == "gemma-3-270m" and found.spec_id == spec_id, found.message
    assert found.p_value == pytest.approx(min(1.0, 4 * found.raw_p_value)) and found.p_value < 1e-6
    assert found.raw_p_value == min(t.p_value for t in found.tested)
    assert "best of 4 hypotheses" in found.message and "gemma-3-270m" in found.message
    assert json.loads(json.dumps(found.to_dict()))["tested"][0]["spec_id"].startswith("hm1-")
    # Naming the model, the key or the scheme narrows the hypotheses; a spec names one.
    assert hallmark.detect(text, model="gemma-3-270m").hypotheses == 2
    assert hallmark.detect(text, scheme="gumbel").hypotheses == 2
    by_spec = hallmark.detect(text, spec=spec_id)
    assert by_spec.hypotheses == 1 and by_spec.tested == [] and by_spec.p_value == by_spec.raw_p_value
    assert by_spec.raw_p_value == found.raw_p_value  # the old spec id detects as it always did
    # The CLI says the same, and which model matched.
    proc = run_cli("detect", "-", stdin=text, env={"HALLMARK_WATERMARK_KEY": _env_secret(0)})
    assert proc.returncode == 0, proc.stderr
    assert "watermarked" in proc.stdout and "gemma-3-270m" in proc.stdout and "x 4 hypotheses" in proc.stdout


@pytest.mark.parametrize("scheme", ["gumbel", "kgw"])
def test_smollm2_text_is_detected_without_naming_the_model(generations, scheme, only_key0):
    model, results = generations[scheme]
    fpr = 1e-3 if scheme == "gumbel" else 2e-2  # kgw needs more tokens for the same p (see above)
    for r in results:
        found = hallmark.detect(r.text, fpr=fpr)
        assert found.watermarked, found.message
        assert found.model == "smollm2-135m-instruct" and found.spec_id == r.watermark.spec_id


def test_human_p_values_under_every_hypothesis_are_at_least_uniform(smollm2, gemma):
    """m = 2 tokenizers x 2 keys x 2 schemes: the corrected best p-value is conservative."""
    from hallmark.watermark.detect import MultiDetector

    multi = MultiDetector(
        [
            _detector(model, scheme, _key(i))
            for model in (smollm2, gemma)
            for i in (1, 2)
            for scheme in SCHEMES
        ]
    )
    p = np.array([multi.detect(t, windowed=False).p_value for t in human_passages()])
    assert p.size >= 200
    for alpha in (0.01, 0.05, 0.1, 0.25, 0.5):
        assert np.mean(p <= alpha) <= alpha + 2.5 * np.sqrt(alpha * (1 - alpha) / p.size), alpha


LETTER = (
    "Dear Sir or Madam,\n\nI am writing to you regarding the following matter.\n\n",
    "\n\nYours faithfully,\nJ. Smith",
)


def _letters(n: int = 200) -> list[str]:
    """Human texts in one template: a letter head and foot around 80 words of a docstring."""
    head, foot = LETTER
    return [head + " ".join(t.split()[:80]) + foot for t in human_passages()[:n]]


def test_templated_human_texts_are_flagged_at_the_nominal_rate_when_tested_as_a_batch(smollm2):
    """For one key, texts that share boilerplate share its scores: one at a time, a family of
    letters is flagged far above the nominal rate for some keys; tested together (the pairs two
    or more of them share left out) every key stays within binomial noise of nominal."""
    from hallmark.watermark.detect import MultiDetector

    letters = _letters()
    tokens = [_detector(smollm2, "gumbel", _key(0)).tokenize(t) for t in letters]
    alone_worst = {0.01: 0.0, 0.05: 0.0}
    for i in range(12):
        det = _detector(smollm2, "gumbel", _key(i))
        alone = np.array(
            [det.scheme.p_value(float(s.sum()), s.size) for _, s, _ in map(det.scored_tokens, tokens)]
        )
        batch = MultiDetector([det]).detect_many(letters, windowed=False)
        assert all(r.excluded > 0 for r in batch)  # the head and foot at least
        together = np.array([r.p_value for r in batch])
        for alpha in alone_worst:
            bound = stats.binom.isf(0.001, len(letters), alpha) / len(letters)  # P(rate > bound) <= 0.1%
            assert np.mean(together < alpha) <= bound, (i, alpha)
            alone_worst[alpha] = max(alone_worst[alpha], float(np.mean(alone < alpha)))
    # One at a time (the old detector): key 5 flags 5% of the letters at 1% and 20% at 5%.
    for alpha, worst in alone_worst.items():
        assert worst > stats.binom.isf(0.001, len(letters), alpha) / len(letters), (alpha, worst)


def test_reference_text_leaves_its_pairs_out(smollm2):
    from hallmark.watermark.detect import MultiDetector

    det = MultiDetector([_detector(smollm2, "gumbel", _key(5))])
    head, foot = LETTER
    letter = _letters(1)[0]
    plain = det.detect(letter)
    with_reference = det.detect(letter, reference=[head + foot])
    assert plain.excluded == 0 and with_reference.excluded >= 10
    assert with_reference.scored == plain.scored - with_reference.excluded


def test_watermarked_text_keeps_its_detection_inside_a_template_batch(generations):
    """A watermarked body inside the template, tested with the family's human letters."""
    from hallmark.watermark.detect import MultiDetector

    head, foot = LETTER
    for model, results in generations.values():
        det = MultiDetector([_detector(model, s, _key(k)) for s in SCHEMES for k in (0, 1)])
        marked = [head + r.text + foot for r in results]
        found = det.detect_many(marked + _letters(60), windowed=False, fpr=1e-2)
        assert all(r.watermarked and r.spec_id == results[0].watermark.spec_id for r in found[: len(marked)])
        assert sum(r.watermarked for r in found[len(marked) :]) <= 2


def test_detect_cli_tests_several_files_as_a_batch(tmp_path, only_key0):
    paths = []
    for i, letter in enumerate(_letters(3)):
        paths.append(tmp_path / f"letter{i}.txt")
        paths[-1].write_text(letter)
    head, foot = LETTER
    (tmp_path / "template.txt").write_text(head + foot)
    env = {"HALLMARK_WATERMARK_KEY": _env_secret(0)}
    proc = run_cli("detect", *map(str, paths), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["file"] for r in rows] == list(map(str, paths))
    assert all(r["hypotheses"] == 4 and r["excluded"] > 0 and r["verdict"] != "watermarked" for r in rows)
    kept = run_cli("detect", str(paths[0]), "--json", "--scheme", "gumbel", env=env)
    ref = run_cli(
        "detect",
        str(paths[0]),
        "--json",
        "--scheme",
        "gumbel",
        "--reference",
        str(tmp_path / "template.txt"),
        env=env,
    )
    assert json.loads(kept.stdout)["excluded"] == 0 and json.loads(ref.stdout)["excluded"] > 0
    text = run_cli("detect", *map(str, paths[:2]), env=env)
    assert f"{paths[1]}:" in text.stdout and "left out as boilerplate" in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--spec", "hm1-gumbel-w2.5-kabc-tabc"), "not a watermark spec id"),
        (("--reference", "/nonexistent/template.txt"), "cannot read /nonexistent/template.txt"),
        (("--model", "no-such-model"), "no-such-model"),
    ],
)
def test_bad_detect_input_is_one_line(args, message, only_key0):
    proc = run_cli(
        "detect", "-", *args, stdin="Some text to test.", env={"HALLMARK_WATERMARK_KEY": _env_secret(0)}
    )
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_no_local_key_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HALLMARK_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("HALLMARK_WATERMARK_KEY", raising=False)
    with pytest.raises(WatermarkKeyError, match="no watermark key here"):
        hallmark.detect("Some text to test for a watermark.")
    with pytest.raises(WatermarkSpecError, match="unknown watermark scheme"):
        hallmark.detect("Some text to test.", scheme="rot13")


def test_server_detect_tests_every_served_tokenizer(smollm2, gemma, gemma_text, only_key0):
    """/v1/detect with neither model nor spec: each served tokenizer x each served (scheme, key)."""
    from types import SimpleNamespace

    from hallmark.server.app import _detect
    from hallmark.server.protocol import DetectRequest
    from hallmark.watermark.keys import env_key

    def engine(name, model, scheme):
        spec = WatermarkSpec.create(scheme, env_key().key_id, model.fingerprint)
        served = SimpleNamespace(
            tokenizer=model.tokenizer, fingerprint=model.fingerprint, watermark_spec=spec
        )
        return SimpleNamespace(name=name, model=served)

    engines = {"small": engine("small", smollm2, "gumbel"), "gemma": engine("gemma", gemma, "gumbel")}
    state = SimpleNamespace(engines=engines, engine=engines.__getitem__, zero_shot=False)
    text, spec_id = gemma_text
    found = _detect(state, DetectRequest(text=text))
    assert found["hypotheses"] == 2 and found["model"] == "gemma" and found["spec_id"] == spec_id
    assert found["verdict"] == "watermarked" and found["p_value"] == pytest.approx(2 * found["raw_p_value"])
    named = _detect(state, DetectRequest(text=text, model="gemma"))
    assert named["hypotheses"] == 1 and named["p_value"] == found["raw_p_value"]
    engines["gemma"] = engine("gemma", gemma, "kgw")  # two served schemes: 2 tokenizers x 2 schemes
    assert _detect(state, DetectRequest(text=text))["hypotheses"] == 4
