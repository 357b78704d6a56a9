"""The backend seam: both backends (the deterministic fake and llama.cpp on SmolLM2) keep the
Backend protocol's promises, and a real LoRA adapter changes only the sequences that run with it."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hallmark.backends import Backend, BackendConfig, SequenceInput, adapter_set, open_backend
from hallmark.backends.fake import FakeBackend
from hallmark.errors import BackendError
from tests.lora_files import write_lora

SRC = Path(__file__).resolve().parents[1] / "src" / "hallmark"


@pytest.fixture(params=["fake", "llamacpp"])
def backend(request, smollm2_path):
    b: Backend = (
        FakeBackend(n_ctx=128, max_sequences=2)
        if request.param == "fake"
        else open_backend(smollm2_path, BackendConfig(n_ctx=128, max_sequences=2))
    )
    yield b
    b.close()


def _tokens(b: Backend, text: str) -> list[int]:
    return b.tokenize(text, add_special=True)


def test_all_logits_rows_equal_the_last_logits_of_each_prefix(backend):
    tokens = _tokens(backend, "Rivers run to the sea")
    (rows,) = backend.decode([SequenceInput(0, tokens, all_logits=True)])
    assert rows.shape == (len(tokens), backend.n_vocab)
    assert backend.sequence_length(0) == len(tokens)
    for n in (1, 3, len(tokens)):  # the same prefix decoded with only its last logits
        backend.free(1)
        (last,) = backend.decode([SequenceInput(1, tokens[:n])])
        assert last.shape == (1, backend.n_vocab)
        np.testing.assert_allclose(rows[n - 1], last[0], atol=1e-3)
        assert int(np.argmax(rows[n - 1])) == int(np.argmax(last[0]))


def test_sequences_in_one_call_equal_each_alone(backend):
    a, b = _tokens(backend, "Mountains are"), _tokens(backend, "The ocean")
    together = backend.decode([SequenceInput(1, b), SequenceInput(0, a)])  # out of id order on purpose
    backend.free(0)
    backend.free(1)
    (alone_a,) = backend.decode([SequenceInput(0, a)])
    (alone_b,) = backend.decode([SequenceInput(1, b)])
    np.testing.assert_allclose(together[1], alone_a, atol=1e-3)
    np.testing.assert_allclose(together[0], alone_b, atol=1e-3)


def test_a_failed_decode_appends_nothing(backend):
    tokens = _tokens(backend, "Hello there")
    backend.decode([SequenceInput(0, tokens)])
    before = backend.decode([SequenceInput(1, tokens)])[0].copy()
    backend.free(1)
    with pytest.raises(BackendError):
        # A token id outside the vocabulary: llama_decode refuses the whole batch.
        backend.decode([SequenceInput(0, [tokens[-1], backend.n_vocab + 7])])
    # Before the fix the backend counted these 2 tokens as in the KV cache (and prefix reuse
    # would then have reused them).
    assert backend.sequence_length(0) == len(tokens)
    # The sequence continues exactly as if the failed call never happened.
    backend.free(1)
    backend.decode([SequenceInput(1, tokens[:-1])])
    np.testing.assert_allclose(backend.decode([SequenceInput(1, tokens[-1:])])[0], before, atol=1e-3)


def test_truncate_keeps_a_prefix_that_continues_like_the_original(backend):
    tokens = _tokens(backend, "One two three four five six")
    (full,) = backend.decode([SequenceInput(0, tokens)])
    full = full.copy()
    backend.decode([SequenceInput(0, tokens[:2])])  # some other continuation
    assert backend.truncate(0, len(tokens) - 1)
    assert backend.sequence_length(0) == len(tokens) - 1
    (again,) = backend.decode([SequenceInput(0, tokens[-1:])])
    np.testing.assert_allclose(again, full, atol=1e-3)


def test_decode_refuses_bad_inputs(backend):
    with pytest.raises(ValueError, match="outside"):
        backend.decode([SequenceInput(backend.max_sequences, [1])])
    with pytest.raises(ValueError, match="no tokens"):
        backend.decode([SequenceInput(0, [])])
    with pytest.raises(ValueError, match="exceed its context"):
        backend.decode([SequenceInput(0, [1] * (backend.n_ctx + 1))])


def test_tokenizer_reads_control_tokens_only_when_asked(backend):
    eos_text = backend.token_text(backend.eos_token)
    assert eos_text
    assert backend.tokenize(eos_text, add_special=False, parse_special=True) == [backend.eos_token]
    plain = backend.tokenize(eos_text, add_special=False, parse_special=False)
    assert backend.eos_token not in plain and len(plain) > 1
    assert backend.token_bytes(backend.eos_token) == b""
    assert backend.is_eog(backend.eos_token)
    assert backend.detokenize(backend.tokenize("naïve café", add_special=False)) == "naïve café"
    assert len(backend.fingerprint()) == 16


def test_nothing_outside_backends_imports_llama_cpp():
    offenders = []
    for path in SRC.rglob("*.py"):
        if "backends" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "llama_cpp"]
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            if module.startswith("hallmark.backends.") and module != "hallmark.backends.base":
                offenders.append(f"{path.name}: {module}")  # concrete backends only via the factories
    assert offenders == []
    out = subprocess.run(["grep", "-rn", "llama_cpp", str(SRC)], capture_output=True, text=True).stdout
    assert [line for line in out.splitlines() if "/backends/" not in line] == []


# -- LoRA adapters --------------------------------------------------------------------------------
def test_a_lora_adapter_changes_only_the_sequences_that_run_with_it(smollm2_path, tmp_path):
    lora = write_lora(tmp_path / "q-lora.gguf", smollm2_path)
    b = open_backend(smollm2_path, BackendConfig(n_ctx=64, max_sequences=2))
    try:
        tokens = b.tokenize("The capital of France is")
        (base,) = b.decode([SequenceInput(0, tokens)])
        base = base.copy()
        b.free(0)
        adapter = b.load_adapter(str(lora))
        assert b.load_adapter(str(lora)) == adapter  # loaded once
        b.set_adapters(1, adapter_set({adapter: 1.0}))
        assert b.sequence_adapters(1) == ((adapter, 1.0),) and b.sequence_adapters(0) == ()
        # One call, two adapter sets: sequence 0 runs the base model, sequence 1 the adapter.
        plain, tuned = b.decode([SequenceInput(0, tokens), SequenceInput(1, tokens)])
        np.testing.assert_allclose(plain, base, atol=1e-3)
        assert np.abs(tuned - base).max() > 0.1
        # Changing a sequence's adapters drops the KV cache computed with the old ones.
        b.set_adapters(1, ())
        assert b.sequence_length(1) == 0
        (back,) = b.decode([SequenceInput(1, tokens)])
        np.testing.assert_allclose(back, base, atol=1e-3)
        with pytest.raises(Exception, match="not loaded"):
            b.set_adapters(0, (("nope", 1.0),))
    finally:
        b.close()


def test_an_adapter_for_another_model_is_a_clear_error(gemma_path, smollm2_path, tmp_path):
    lora = write_lora(tmp_path / "smollm2-lora.gguf", smollm2_path)
    b = open_backend(gemma_path, BackendConfig(n_ctx=64))
    try:
        with pytest.raises(Exception, match="could not load the LoRA adapter"):
            b.load_adapter(str(lora))
    finally:
        b.close()
