"""The CLI as a user runs it: real subprocesses, real models."""

import json

import pytest

from tests.conftest import run_cli

FAST = ["--ctx-size", "512"]


def _one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_generate_json():
    proc = run_cli(
        "generate", "The capital of France is", "--temperature", "0", "--max-tokens", "12", "--json", *FAST
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["model"] == "smollm2-135m-instruct"
    assert out["usage"]["completion_tokens"] == len(out["tokens"]) == 12
    assert out["finish_reason"] == "length"
    assert out["timings"]["predicted_per_second"] > 0
    assert out["text"]


def test_generate_streams_plain_text_and_reads_stdin():
    proc = run_cli("generate", "--temperature", "0", "--max-tokens", "8", *FAST, stdin="Water boils at")
    assert proc.returncode == 0, proc.stderr
    again = run_cli("generate", "Water boils at", "--temperature", "0", "--max-tokens", "8", "--json", *FAST)
    assert proc.stdout.rstrip("\n") == json.loads(again.stdout)["text"]


def test_environment_variables_set_flags():
    env = {
        "HALLMARK_TEMPERATURE": "1.0",
        "HALLMARK_SEED": "11",
        "HALLMARK_MAX_TOKENS": "10",
        "HALLMARK_MODEL": "gemma-3-270m",
    }
    a = json.loads(run_cli("generate", "Hello", "--json", *FAST, env=env).stdout)
    b = json.loads(
        run_cli(
            "generate",
            "Hello",
            "--json",
            "--seed",
            "11",
            "--temperature",
            "1.0",
            "--max-tokens",
            "10",
            "-m",
            "gemma-3-270m",
            *FAST,
        ).stdout
    )
    assert a["model"] == "gemma-3-270m" and a["seed"] == 11
    assert a["tokens"] == b["tokens"]
    bad = run_cli("generate", "Hello", *FAST, env={"HALLMARK_TEMPERATURE": "-2"})
    _one_line_error(bad, "temperature must be >= 0")


def test_chat_one_shot_and_piped_repl():
    proc = run_cli("chat", "What is 2+2?", "--temperature", "0", "--json", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "4" in json.loads(proc.stdout)["text"]
    piped = run_cli(
        "chat",
        "--temperature",
        "0",
        "--max-tokens",
        "30",
        *FAST,
        stdin="Hi!\n/reset\nWhat is 2+2?\n/exit\nnever read\n",
    )
    assert piped.returncode == 0, piped.stderr
    assert "(conversation cleared)" in piped.stderr
    assert "4" in piped.stdout
    assert piped.stdout.count("\n") >= 2


@pytest.mark.parametrize("command", ["generate", "chat", "models", "info"])
def test_every_command_has_help_with_examples(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0
    assert "Examples:" in proc.stdout
    assert "hallmark " + command in proc.stdout


def test_sampling_flags_are_all_exposed_with_env_vars():
    out = run_cli("generate", "--help").stdout
    for flag in [
        "--temperature",
        "--top-k",
        "--top-p",
        "--min-p",
        "--repetition-penalty",
        "--presence-penalty",
        "--frequency-penalty",
        "--logit-bias",
        "--seed",
        "--max-tokens",
        "--stop",
        "--logprobs",
        "--json",
    ]:
        assert flag in out
    assert "HALLMARK_TOP_P" in out and "HALLMARK_MODEL" in out


def test_models_lists_both_shipped_models():
    proc = run_cli("models", "--json")
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["smollm2-135m-instruct"]["has_chat_template"] is True
    assert rows["smollm2-135m-instruct"]["default"] is True
    assert rows["gemma-3-270m"]["has_chat_template"] is False
    assert rows["gemma-3-270m"]["license"] == "Gemma Terms of Use"
    table = run_cli("models").stdout
    assert "smollm2-135m-instruct (default)" in table and "135M" in table and "268M" in table


def test_info_shows_metadata():
    proc = run_cli("info", "gemma-3-270m", "--json")
    data = json.loads(proc.stdout)
    assert data["architecture"] == "gemma3"
    assert data["metadata"]["gemma3.block_count"] == "18"
    assert "general.architecture" in run_cli("info", "smollm2").stdout


def test_unknown_model():
    _one_line_error(
        run_cli("generate", "hi", "-m", "llama-9000"), "unknown model 'llama-9000'", "smollm2-135m-instruct"
    )


def test_missing_model_file(tmp_path):
    _one_line_error(run_cli("generate", "hi", "-m", str(tmp_path / "missing.gguf")), "model file not found")


def test_not_a_gguf_file(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a model" * 100)
    _one_line_error(run_cli("generate", "hi", "-m", str(bogus)), "not a GGUF file")


def test_truncated_gguf_file(tmp_path, smollm2_path):
    truncated = tmp_path / "truncated.gguf"
    with smollm2_path.open("rb") as f:
        truncated.write_bytes(f.read(5_000_000))
    _one_line_error(run_cli("generate", "hi", "-m", str(truncated)), "could not load", "truncated or corrupt")
    _one_line_error(run_cli("info", str(truncated)), "could not read")


def test_prompt_too_long_for_context(smollm2):
    prompt = "word " * 600
    proc = run_cli("generate", prompt, "--ctx-size", "256")
    _one_line_error(proc, f"prompt is {len(smollm2.tokenize(prompt))} tokens", "context window is 256 tokens")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["--top-k", "-3"], "top_k must be an integer >= 0"),
        (["--logprobs", "50"], "logprobs must be an integer in [0, 20]"),
        (["--logit-bias", "abc"], "expected TOKEN_ID=BIAS"),
    ],
)
def test_invalid_sampling_flags(flags, message):
    proc = run_cli("generate", "hi", *flags)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
