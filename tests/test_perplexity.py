"""Perplexity: teacher-forced scoring with a sliding window (hallmark.engine.scoring), the data
files of `hallmark eval perplexity`, the Python API and the command. Real SmolLM2 for the numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import hallmark
from hallmark.engine.scoring import windows
from hallmark.errors import PromptError
from hallmark.tasks.perplexity import PerplexityDataError, evaluate_perplexity, load_texts
from tests.conftest import run_cli
from tests.human_text import human_passages


@pytest.fixture(scope="module")
def long_text(smollm2) -> str:
    """Human prose of 520-1000 SmolLM2 tokens: one window of the session's 1024, several of 256."""
    text = ""
    for passage in human_passages():
        text += passage + "\n\n"
        if len(smollm2.tokenize(text)) > 520:
            break
    assert 520 < len(smollm2.tokenize(text)) < 1000
    return text


def test_sliding_windows_score_every_token_once_with_enough_context():
    for n, window, stride in [(10, 4, 2), (1000, 256, 128), (1000, 256, 1), (300, 256, 200), (3, 8, 4)]:
        spans = windows(n, window, stride)
        scored = [i for _, end, first in spans for i in range(first, end)]
        assert scored == list(range(1, n))  # each token but the first, once, in order
        for begin, end, first in spans:
            assert end - begin <= window and begin < first
            # The first token a window scores has its `window - stride` tokens of context (or all before it).
            assert first - begin >= min(window - stride, first)
    assert windows(1, 8, 4) == []
    for window, stride in [(8, 8), (8, 0), (1, 1)]:
        with pytest.raises(ValueError):
            windows(100, window, stride)


def test_one_window_is_exp_of_the_mean_token_logprob(smollm2):
    text = "Rivers carry water from the mountains to the sea, and the sea sends it back as rain."
    lp = smollm2.token_logprobs(text)
    result = evaluate_perplexity([text], smollm2)
    assert result.perplexity == pytest.approx(math.exp(-lp.mean()), rel=1e-9)
    assert result.perplexity == pytest.approx(smollm2.perplexity(text), rel=1e-9)
    assert result.mean_nll == pytest.approx(-lp.mean(), rel=1e-9)
    ids = smollm2.tokenize(text)
    assert result.tokens == len(ids) - 1 == lp.size and result.windows == 1 and result.texts == 1
    scored_bytes = sum(len(smollm2.tokenizer.token_bytes(t)) for t in ids[1:])
    assert result.bytes == scored_bytes
    assert result.bits_per_byte == pytest.approx(-lp.sum() / math.log(2) / scored_bytes)
    assert 1 < result.perplexity < 1000


def test_a_long_text_is_scored_in_sliding_windows_close_to_one_window(smollm2, long_text):
    n = len(smollm2.tokenize(long_text))
    whole = smollm2.token_logprobs(long_text)  # fits the session's 1024-token context
    scored: list[int] = []  # tokens each window scored
    slid = smollm2.token_logprobs(long_text, window=256, stride=128, on_window=scored.append)
    assert whole.shape == slid.shape == (n - 1,)
    # The first window sees exactly what the whole text does; later tokens lose context beyond 128-255 tokens.
    np.testing.assert_allclose(slid[:255], whole[:255], atol=2e-3)
    assert not np.allclose(slid[255:], whole[255:], atol=2e-3)
    ppl_whole, ppl_slid = math.exp(-whole.mean()), math.exp(-slid.mean())
    assert abs(ppl_slid - ppl_whole) / ppl_whole < 0.1, (ppl_whole, ppl_slid)
    assert scored == [end - first for _, end, first in windows(n, 256, 128)] and sum(scored) == n - 1
    # The stride trades context for speed: at 255, each window's first new tokens have next to none.
    fast = evaluate_perplexity([long_text], smollm2, window=256, stride=255)
    assert fast.windows == len(windows(n, 256, 255)) < len(scored) and fast.perplexity > ppl_slid
    with pytest.raises(PromptError, match="stride must be 1 to 255"):
        smollm2.token_logprobs(long_text, window=256, stride=256)
    with pytest.raises(PromptError, match="window must be 2 to 1024"):
        smollm2.token_logprobs(long_text, window=2048)


def test_data_files_and_their_one_line_errors(tmp_path):
    (tmp_path / "a.txt").write_text("One text.\n\nStill the same text.\n")
    assert load_texts(tmp_path / "a.txt") == ["One text.\n\nStill the same text.\n"]
    lines = [json.dumps({"text": t, "id": i}) for i, t in enumerate(["first", "second", "third"])]
    (tmp_path / "b.jsonl").write_text("\n".join(lines[:2]) + "\n\n" + lines[2] + "\n")
    assert load_texts(tmp_path / "b.jsonl") == ["first", "second", "third"]
    assert load_texts(tmp_path / "b.jsonl", limit=2) == ["first", "second"]
    bad = {
        "json.jsonl": ('{"text": "ok"}\n{"text": ', "json.jsonl:2: not valid JSON"),
        "field.jsonl": (
            '{"text": "ok"}\n{"body": "x"}\n',
            'field.jsonl:2: each line must be a JSON object {"text"',
        ),
        "list.jsonl": ('["x"]\n', "list.jsonl:1: each line must be"),
        "empty.jsonl": ('{"text": "  "}\n', "empty.jsonl:1: the text is empty"),
        "blank.txt": ("\n\n", "blank.txt holds no text"),
        "none.jsonl": ("\n", "none.jsonl holds no texts"),
    }
    for name, (content, message) in bad.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(PerplexityDataError) as e:
            load_texts(tmp_path / name)
        assert message in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    for path, message in ((tmp_path / "nope.txt", "no such file"), (tmp_path / "latin1.txt", "not UTF-8")):
        with pytest.raises(PerplexityDataError, match=message):
            load_texts(path)
    with pytest.raises(PerplexityDataError, match="is a directory"):
        load_texts(tmp_path)


def test_hallmark_eval_perplexity_with_and_without_an_adapter(smollm2, smollm2_lora, tmp_path):
    texts = ["Water boils at one hundred degrees Celsius at sea level.", "The cat sat on the mat."]
    data = tmp_path / "held-out.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    args = ("eval", "perplexity", "--data", str(data), "--ctx-size", "256", "--json")
    base = run_cli(*args, "--out", str(tmp_path / "base"))
    assert base.returncode == 0, base.stderr
    out = json.loads(base.stdout)
    expected = evaluate_perplexity(texts, smollm2)
    assert out["perplexity"] == pytest.approx(expected.perplexity, rel=1e-4)
    assert (out["tokens"], out["texts"], out["window"], out["stride"]) == (expected.tokens, 2, 256, 128)
    assert out["model"] == "smollm2-135m-instruct" and out["bits_per_byte"] > 0
    assert json.loads((tmp_path / "base.summary.json").read_text())["perplexity"] == out["perplexity"]
    tuned = json.loads(run_cli(*args, "--out", str(tmp_path / "tuned"), "--lora", str(smollm2_lora)).stdout)
    assert tuned["model"] == "smollm2-135m-instruct+smol-tuned" and tuned["perplexity"] != out["perplexity"]
    with hallmark.load(smollm2.path, lora=smollm2_lora, n_ctx=256, show_progress=False) as m:
        assert tuned["perplexity"] == pytest.approx(evaluate_perplexity(texts, m).perplexity, rel=1e-4)
    text = run_cli(
        "eval", "perplexity", "--data", str(data), "--ctx-size", "256", "--out", str(tmp_path / "t")
    )
    assert (
        text.stdout.startswith(f"perplexity {out['perplexity']:.3f} (mean NLL") and "bits/byte" in text.stdout
    )


@pytest.mark.parametrize(
    ("extra", "content", "message"),
    [
        ((), '{"text": 1}\n', "data.jsonl:1: each line must be a JSON object"),
        (("--style", "chat"), '{"text": "x"}\n', "--style does not apply to perplexity"),
    ],
)
def test_eval_perplexity_refuses_bad_input_in_one_line(extra, content, message, tmp_path):
    (tmp_path / "data.jsonl").write_text(content)
    proc = run_cli("eval", "perplexity", "--data", str(tmp_path / "data.jsonl"), *extra)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
    stride = run_cli("eval", "qa", "--data", str(tmp_path / "data.jsonl"), "--stride", "8")
    assert stride.returncode == 2 and "--stride applies to perplexity only" in stride.stderr
