"""Shared fixtures: real models from their PyPI packages, loaded once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import hallmark
from hallmark.catalog import find_entry, model_path

# Small contexts keep the KV caches (and the tests) light; every prompt here is short.
TEST_CTX = 1024

# Watermark keys go to a throw-away config dir, never the user's own; CLI subprocesses inherit it.
os.environ["HALLMARK_CONFIG_DIR"] = tempfile.mkdtemp(prefix="hallmark-test-config-")
os.environ.pop("HALLMARK_WATERMARK_KEY", None)
# Likewise the server's request log, and the registry of fine-tuned models (hallmark.registry).
os.environ["HALLMARK_LOG_DB"] = os.path.join(tempfile.mkdtemp(prefix="hallmark-test-logs-"), "logs.db")
os.environ["HALLMARK_DATA_DIR"] = tempfile.mkdtemp(prefix="hallmark-test-data-")
# Detection without the zero-shot assessment unless a test asks for it (tests/test_zeroshot.py):
# it loads both shipped models and scores every text, which the watermark tests do not need.
os.environ["HALLMARK_ZERO_SHOT"] = "0"
# Environment variables that CLI and server subprocesses keep (every other HALLMARK_* is dropped).
KEPT_ENV = ("HALLMARK_CONFIG_DIR", "HALLMARK_LOG_DB", "HALLMARK_DATA_DIR", "HALLMARK_ZERO_SHOT")


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return model_path(find_entry("smollm2-135m-instruct"), show_progress=False)


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return model_path(find_entry("gemma-3-270m"), show_progress=False)


@pytest.fixture(scope="session")
def smollm2(smollm2_path: Path) -> hallmark.Model:
    model = hallmark.load(smollm2_path, n_ctx=TEST_CTX, max_sequences=8, show_progress=False)
    model.name = "smollm2-135m-instruct"
    yield model
    model.close()


@pytest.fixture(scope="session")
def gemma(gemma_path: Path) -> hallmark.Model:
    model = hallmark.load("gemma-3-270m", n_ctx=TEST_CTX, show_progress=False)
    yield model
    model.close()


@pytest.fixture(scope="session")
def smollm2_lora(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LoRA adapter for SmolLM2 that records SmolLM2's file hash, as hallmark's exporter does."""
    from hallmark.provenance import model_sha256
    from tests.lora_files import write_lora

    path = tmp_path_factory.mktemp("lora") / "smol-tuned.gguf"
    return write_lora(path, smollm2_path, base_sha256=model_sha256(smollm2_path))


@pytest.fixture(scope="session")
def gemma_lora(gemma_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LoRA adapter for gemma-3-270m: another architecture and another base than SmolLM2's."""
    from hallmark.provenance import model_sha256
    from tests.lora_files import write_lora

    path = tmp_path_factory.mktemp("lora") / "gemma-tuned.gguf"
    return write_lora(path, gemma_path, base_sha256=model_sha256(gemma_path))


def run_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 120):
    """Run `python -m hallmark ARGS` as a real subprocess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HALLMARK_") or k in KEPT_ENV}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "hallmark", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
