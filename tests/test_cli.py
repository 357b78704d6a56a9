"""The CLI as a user runs it: real subprocesses, real models; and the shape of the hallmark.cli package."""

import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import click
import pytest

import hallmark
from hallmark.cli import main
from hallmark.cli.options import config_from_options, dataclass_options
from hallmark.errors import UnknownStyleError
from hallmark.requestlog import LogRecord, RequestLog
from hallmark.server.config import ServerConfig
from hallmark.settings import env_name, flag_name, setting
from hallmark.tasks.prompts import qa_prompt, summary_prompt, translation_prompt
from hallmark.watermark.spec import DEFAULT_FPR
from tests.conftest import run_cli

CLI_DIR = Path(hallmark.__file__).parent / "cli"

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


# Every command and subcommand; test_the_help_test_covers_every_command keeps the list complete.
COMMANDS = [
    "generate",
    "chat",
    "models",
    "models rm",
    "info",
    "detect",
    "keys",
    "keys new",
    "keys list",
    "keys show",
    "verify",
    "provenance",
    "provenance key",
    "policy",
    "policy show",
    "policy check",
    "serve",
    "ui",
    "logs",
    "translate",
    "summarize",
    "ask",
    "eval",
    "finetune",
    "pretrain",
]


def _all_commands(group: click.Group, prefix: str = "") -> list[str]:
    found = []
    for name, command in group.commands.items():
        found.append(prefix + name)
        if isinstance(command, click.Group):
            found += _all_commands(command, prefix + name + " ")
    return found


def test_the_help_test_covers_every_command():
    assert sorted(_all_commands(main)) == sorted(COMMANDS)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_every_command_has_help_with_examples(command):
    proc = run_cli(*command.split(), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Examples:" in proc.stdout
    examples = proc.stdout.split("Examples:", 1)[1]
    assert f"hallmark {command}".strip() in examples


def test_short_help_flag_and_width_reach_subcommands():
    # context_settings are set once, on the group; click passes them down to every subcommand.
    widths = {}
    for command in ("generate", "keys new", "serve"):
        proc = run_cli(*command.split(), "-h", env={"COLUMNS": "200"})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"Usage: python -m hallmark {command} [OPTIONS]")
        widths[command] = max(len(line) for line in proc.stdout.splitlines())
    # A wide terminal gets the 100 columns of max_content_width, not click's default 80.
    assert 90 <= widths["generate"] <= 100 and 90 <= widths["serve"] <= 100, widths


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"hallmark, version {version('hallmark-llm')}"
    assert hallmark.__version__ == version("hallmark-llm")


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


# -- hallmark serve: flags derived from ServerConfig -------------------------------------------------
SERVE_FLAGS = {  # today's flags and variables; renaming one breaks users' scripts
    "--host": "HALLMARK_HOST",
    "--port": "HALLMARK_PORT",
    "--api-key": "HALLMARK_API_KEY",
    "--api-key-file": "HALLMARK_API_KEY_FILE",
    "--ctx-size": "HALLMARK_CTX_SIZE",
    "--parallel": "HALLMARK_PARALLEL",
    "--max-queue": "HALLMARK_MAX_QUEUE",
    "--prefill-chunk": "HALLMARK_PREFILL_CHUNK",
    "--batch-wait": "HALLMARK_BATCH_WAIT",
    "--no-prefix-cache": "HALLMARK_NO_PREFIX_CACHE",
    "--threads": "HALLMARK_THREADS",
    "--gpu-layers": "HALLMARK_GPU_LAYERS",
    "--metrics": "HALLMARK_METRICS",
    "--no-log": "HALLMARK_NO_LOG",
    "--log-db": "HALLMARK_LOG_DB",
    "--watermark-scheme": "HALLMARK_WATERMARK_SCHEME",
    "--watermark-key": "HALLMARK_WATERMARK_KEY_NAME",
    "--shutdown-timeout": "HALLMARK_SHUTDOWN_TIMEOUT",
    # added with the server's hardening
    "--allowed-host": "HALLMARK_ALLOWED_HOST",
    "--max-body-size": "HALLMARK_MAX_BODY_SIZE",
    # added with the request policy
    "--policy": "HALLMARK_POLICY",
    # added with LoRA serving: models as flags too, and adapters served beside their base
    "--model": "HALLMARK_SERVE_MODEL",
    "--lora": "HALLMARK_SERVE_LORA",
    # added with zero-shot detection at /v1/detect
    "--zero-shot": "HALLMARK_ZERO_SHOT",
    # added with speculative decoding
    "--draft-max": "HALLMARK_DRAFT_MAX",
    "--draft-mode": "HALLMARK_DRAFT_MODE",
}


def _option_blocks(help_text: str) -> dict[str, str]:
    """`--flag` -> that option's help entry with its lines joined, from click's help output."""
    blocks: dict[str, str] = {}
    current = None
    for line in help_text.split("Options:", 1)[1].splitlines():
        m = re.match(r"^  (?:-\w, )?(--[\w-]+)", line)
        if m:
            current = m.group(1)
            blocks[current] = line
        elif current and line.strip():
            blocks[current] += " " + line.strip()
    return blocks


def _shown(block: str) -> tuple[str, str | None]:
    """The env var and the default that click shows at the end of an option's entry."""
    m = re.search(r"\[env var: (\w+)(?:; default: ([^;\]]+))?[^\]]*\]$", block)
    assert m, block
    return m.group(1), m.group(2)


def test_ui_takes_serves_flags_and_no_browser():
    blocks = _option_blocks(run_cli("ui", "--help", env={"COLUMNS": "200"}).stdout)
    shown = {flag: _shown(block)[0] for flag, block in blocks.items() if flag != "--help"}
    assert shown == {**SERVE_FLAGS, "--no-browser": "HALLMARK_NO_BROWSER"}


def test_serve_help_shows_every_server_config_field_with_its_env_var_and_default():
    blocks = _option_blocks(run_cli("serve", "--help", env={"COLUMNS": "200"}).stdout)
    assert {flag: _shown(block)[0] for flag, block in blocks.items() if flag != "--help"} == SERVE_FLAGS
    for f in fields(ServerConfig):
        if f.name == "models":
            assert "--models" not in blocks  # MODELS is the argument
            continue
        env, default = _shown(blocks[flag_name(f)])
        assert env == env_name(f)
        # A bool flag shows no default (--x off, or --no-x for an on-by-default setting), except an
        # on/off pair (--x/--no-x), which shows the on name; None and () mean "not set".
        if isinstance(f.default, bool):
            on_off_pair = f.default and not flag_name(f).startswith("--no-")
            expected = flag_name(f).removeprefix("--") if on_off_pair else None
        else:
            expected = None if f.default in (None, ()) else str(f.default)
        assert default == expected, f.name


def test_server_config_round_trips_through_its_options(monkeypatch):
    @click.command()
    @dataclass_options(ServerConfig, exclude=("models",))
    def probe(**options):
        return config_from_options(ServerConfig, {**options, "models": ["m"]})

    for name in list(os.environ):
        if name.startswith("HALLMARK_"):
            monkeypatch.delenv(name)
    assert probe.main([], standalone_mode=False) == ServerConfig(models=["m"])
    monkeypatch.setenv("HALLMARK_PARALLEL", "16")
    monkeypatch.setenv("HALLMARK_NO_PREFIX_CACHE", "1")
    monkeypatch.setenv("HALLMARK_API_KEY", "k1 k2")
    config = probe.main(
        ["--no-log", "--batch-wait", "2.5", "--watermark-key", "desk", "--threads", "3"],
        standalone_mode=False,
    )
    assert config == ServerConfig(
        models=["m"],
        max_sequences=16,
        prefix_cache=False,
        api_keys=("k1", "k2"),
        log_requests=False,
        batch_wait_ms=2.5,
        watermark_key="desk",
        n_threads=3,
    )


@dataclass
class _Probe:
    fast: bool = setting(True, help="Go fast.")
    verbose: bool = setting(False, help="Say more.")
    cache: bool = setting(True, flag="--no-cache", negated=True, help="Recompute.")
    ratio: float = setting(0.5, min=0, max=1, help="A ratio.")
    count: int | None = setting(None, min=1, help="A count.")
    mode: str = setting("a", choices=("a", "b"), help="A mode.")
    tags: tuple[str, ...] = setting((), flag="--tag", multiple=True, help="Tags.")


def test_dataclass_options_derive_types_ranges_choices_and_switches(monkeypatch):
    @click.command()
    @dataclass_options(_Probe)
    def probe(**options):
        return config_from_options(_Probe, options)

    assert probe.main([], standalone_mode=False) == _Probe()
    args = ["--no-fast", "--verbose", "--no-cache", "--ratio", "0.25", "--count", "3", "--mode", "b"]
    assert probe.main([*args, "--tag", "x", "--tag", "y"], standalone_mode=False) == _Probe(
        fast=False, verbose=True, cache=False, ratio=0.25, count=3, mode="b", tags=("x", "y")
    )
    for bad in (["--ratio", "1.5"], ["--count", "0"], ["--mode", "c"], ["--count", "2.5"]):
        with pytest.raises(click.BadParameter):
            probe.main(bad, standalone_mode=False)
    monkeypatch.setenv("HALLMARK_NO_CACHE", "1")
    monkeypatch.setenv("HALLMARK_RATIO", "0.75")
    assert probe.main([], standalone_mode=False) == _Probe(cache=False, ratio=0.75)


def test_serve_reads_its_flags_from_environment_variables():
    proc = run_cli("serve", env={"HALLMARK_PORT": "99999"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "HALLMARK_PORT" in proc.stderr and "99999 is not in the range 0<=x<=65535" in proc.stderr


def test_detect_fpr_default_is_the_spec_default():
    blocks = _option_blocks(run_cli("detect", "--help", env={"COLUMNS": "200"}).stdout)
    assert f"default: {DEFAULT_FPR}" in blocks["--fpr"]


# -- the package: no import cycle, nothing heavy for --help -----------------------------------------
def _cli_imports(path: Path) -> set[str]:
    """The hallmark.cli modules that a module imports, anywhere in it (functions included)."""
    submodules = {p.stem for p in CLI_DIR.glob("*.py")} - {"__init__"}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("hallmark.cli.") and name.split(".")[2] in submodules:
                found.add("hallmark.cli." + name.split(".")[2])
    return found


def test_cli_modules_have_no_import_cycle():
    graph = {f"hallmark.cli.{p.stem}": _cli_imports(p) for p in CLI_DIR.glob("*.py")}
    commands = {"generate", "models", "watermark", "server", "tasks", "provenance", "policy", "train"}
    assert {f"hallmark.cli.{c}" for c in commands | {"main", "options", "__init__"}} == set(graph)
    for command in commands:
        assert graph[f"hallmark.cli.{command}"] <= {"hallmark.cli.options"}, command
    assert graph["hallmark.cli.options"] == set()
    assert graph["hallmark.cli.main"] == set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        for target in graph.get(module, ()):
            visit(target, (*path, module))

    for module in graph:
        visit(module, ())


def test_importing_the_cli_does_not_load_llama_cpp():
    code = "import sys, hallmark.cli; print([m for m in ('llama_cpp', 'hallmark.model') if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_the_top_level_api_is_lazy_but_complete():
    assert set(hallmark.__all__) <= set(dir(hallmark))
    for name in hallmark.__all__:
        assert getattr(hallmark, name) is not None
    from hallmark.model import load

    assert hallmark.load is load
    with pytest.raises(AttributeError, match="no_such_name"):
        hallmark.no_such_name  # noqa: B018


# -- defects ------------------------------------------------------------------------------------------
def test_logs_shows_a_refused_request_that_has_no_duration(tmp_path):
    # The server logs a request refused before it ran (bad input, auth, overload) with NULL
    # duration and token counts; `hallmark logs ID` printed it with f"{None:.0f}" and crashed.
    db = tmp_path / "logs.db"
    log = RequestLog(db)
    log.write(
        LogRecord(
            id="rejected-7f3a",
            endpoint="/v1/chat/completions",
            client="127.0.0.1",
            status="error",
            http_status=401,
            prompt='{"messages": []}',
            response={"error": {"message": "missing API key"}},
            duration_ms=None,
            error="missing API key",
        )
    )
    log.close()
    proc = run_cli("logs", "rejected-7f3a", "--log-db", str(db))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.startswith("rejected-7f3a  /v1/chat/completions")
    assert "status     error (HTTP 401): missing API key" in proc.stdout
    assert "duration   -" in proc.stdout
    listed = run_cli("logs", "--log-db", str(db))
    assert listed.returncode == 0 and "rejected-7f3a" in listed.stdout


@pytest.mark.parametrize(
    ("command", "task"),
    [
        (["translate", "--to", "fr", "hello"], "translation"),
        (["summarize", "A short text to summarize."], "summarization"),
        (["ask", "Who?"], "question-answering"),
        (["eval", "qa", "--data", "/nonexistent/squad.jsonl"], "question-answering"),
    ],
)
def test_an_unknown_style_fails_before_the_model_loads(command, task):
    proc = run_cli(*command, "--style", "fewshot-banana", "-m", "/nonexistent/model.gguf")
    # One line naming the style, not the missing model (or data file): it failed before loading.
    _one_line_error(proc, f"unknown {task} style 'fewshot-banana'", "known: naive, ")


def test_the_python_api_rejects_an_unknown_style_before_loading():
    with pytest.raises(UnknownStyleError, match="fewshot-banana"):
        hallmark.translate("hi", "fr", style="fewshot-banana", model="/nonexistent.gguf")
    with pytest.raises(UnknownStyleError, match="known: naive, tldr"):
        hallmark.summarize("Some text.", style="chat-fewshot-3", model="/nonexistent.gguf")
    with pytest.raises(UnknownStyleError):
        hallmark.answer("Who?", style="fewshot", model="/nonexistent.gguf")
    # The prompt builders matched style prefixes and took 'fewshot-banana' as a 0-shot prompt.
    for build in (
        lambda: translation_prompt("hi", "en", "fr", "fewshot-banana"),
        lambda: summary_prompt("Some text.", "fewshot-banana"),
        lambda: qa_prompt("Who?", "Ann.", "chat-banana"),
    ):
        with pytest.raises(UnknownStyleError):
            build()


def test_logs_with_a_huge_request_id_is_one_line(tmp_path):
    # Before: sqlite3.OperationalError "LIKE or GLOB pattern too complex" and a traceback.
    db = tmp_path / "logs.db"
    log = RequestLog(db)
    log.write(LogRecord(id="chatcmpl-1", endpoint="/v1/completions"))
    log.close()
    _one_line_error(run_cli("logs", "a" * 100_000, "--log-db", str(db)), "at most 200 characters")
    _one_line_error(run_cli("logs", "chatcmpl-%", "--log-db", str(db)), "no logged request")


@pytest.mark.parametrize(
    "spec",
    [
        '{{"scheme": "gumbel", "key_id": "{key_id}", "tokenizer": "{tokenizer}", "context_width": 2.5}}',
        '{{"scheme": "kgw", "key_id": "{key_id}", "tokenizer": "{tokenizer}", "context_width": 3, '
        '"gamma": 0.25, "delta": 1e999}}',
        "true",
        "[]",
        '{{"scheme": ' + "[" * 1500 + "]" * 1500 + "}}",
    ],
)
def test_detect_with_a_malformed_spec_is_one_line(spec):
    # Before: with the spec's key and tokenizer in reach, context_width 2.5 reached the scheme and
    # gave a TypeError traceback; an infinite delta was accepted; deep nesting gave RecursionError.
    from hallmark.watermark.api import load_tokenizer
    from hallmark.watermark.keys import WatermarkKey

    secret = "0123456789abcdef0123456789abcdef"  # $HALLMARK_WATERMARK_KEY in the subprocess
    key_id = WatermarkKey("env", bytes.fromhex(secret), "", None).key_id
    tokenizer = load_tokenizer("smollm2-135m-instruct")[1].fingerprint()
    proc = run_cli(
        "detect",
        "-",
        "--spec",
        spec.format(key_id=key_id, tokenizer=tokenizer),
        stdin="Some text to test for the watermark, long enough to score a few tokens.",
        env={"HALLMARK_WATERMARK_KEY": secret},
    )
    assert proc.returncode == 1
    _one_line_error(proc, "error: ")


def test_detect_with_a_spec_file_that_is_not_text_is_one_line(tmp_path):
    # Before: a UnicodeDecodeError traceback (only OSError was caught).
    spec_file = tmp_path / "spec.bin"
    spec_file.write_bytes(b"\xff\xfe\x00binary")
    proc = run_cli("detect", "-", "--spec", f"@{spec_file}", stdin="Some text to test.")
    _one_line_error(proc, f"cannot read spec file {spec_file}", "not UTF-8")


def test_logs_with_a_log_path_that_cannot_be_checked_is_one_line(tmp_path):
    # Before: Path.exists() raised (here ENAMETOOLONG; EACCES for a 0700 directory of another
    # user's, which is what the server now creates) and the CLI printed a traceback.
    proc = run_cli("logs", "--log-db", str(tmp_path / ("a" * 300) / "logs.db"))
    _one_line_error(proc, "cannot read the request log", "File name too long")


def test_generate_writes_a_manifest_that_verify_accepts(tmp_path):
    manifest = tmp_path / "m.json"
    out = run_cli(
        "generate",
        "The sea is",
        "--temperature",
        "1",
        # No early end and a seed; 200 tokens because the session's key is random: at 80, one CI run
        # in several got a repetitive text with 67 pairs scored and p = 0.006, short of fpr 0.001.
        "--max-tokens",
        "200",
        "--ignore-eos",
        "--seed",
        "3",
        "--ctx-size",
        "512",
        "--provenance",
        str(manifest),
    )
    assert out.returncode == 0, out.stderr
    (tmp_path / "t.txt").write_text(out.stdout.removesuffix("\n"))
    check = run_cli("verify", str(tmp_path / "t.txt"), "--manifest", str(manifest))
    assert check.returncode == 0, check.stdout + check.stderr
