"""LoRA adapters above the backend: `hallmark.load(lora=...)`, `Model.with_adapters`, the `--lora`
flag, provenance that names the adapters, the base's watermark, and one-line errors for an adapter
made for another base. Real llama.cpp on SmolLM2 with small random adapters (tests/lora_files.py)."""

from __future__ import annotations

import json
import math

import pytest

import hallmark
from hallmark.cli import main
from hallmark.errors import HallmarkError, ModelFileError
from hallmark.model import lora_list, parse_lora_arg
from hallmark.provenance import ProvenanceError, model_sha256, sign_manifest, verify_manifest
from hallmark.tasks.prompts import translation_prompt
from hallmark.tasks.runner import request_for
from tests.conftest import TEST_CTX, run_cli
from tests.lora_files import write_lora

PROMPT = "The capital of France is"
GREEDY = dict(temperature=0, max_tokens=16)


@pytest.fixture(scope="module")
def tuned(smollm2_path, smollm2_lora):
    model = hallmark.load(
        smollm2_path, lora=smollm2_lora, n_ctx=TEST_CTX, max_sequences=4, show_progress=False
    )
    yield model
    model.close()


def test_every_request_of_a_model_loaded_with_lora_runs_with_it(tuned, smollm2, smollm2_lora):
    assert tuned.name.endswith("+smol-tuned") and tuned.base_name == tuned.name.removesuffix("+smol-tuned")
    (adapter,) = tuned.adapters
    assert adapter.path == smollm2_lora.resolve() and adapter.scale == 1.0
    assert tuned.adapter_set == ((adapter.id, 1.0),)
    params = hallmark.SamplingParams(temperature=0)
    assert tuned.prompt_request("Hi", params).adapters == tuned.adapter_set
    assert tuned.chat_request([{"role": "user", "content": "Hi"}], params).adapters == tuned.adapter_set
    task = request_for(tuned, translation_prompt("Good morning", "en", "fr", "chat"), params, 16)
    assert task.adapters == tuned.adapter_set  # the task runner's requests too
    assert smollm2.prompt_request("Hi", params).adapters == ()
    # The adapter changes what the model says; the base says what it always did.
    assert tuned.generate(PROMPT, **GREEDY).text != smollm2.generate(PROMPT, **GREEDY).text


def test_a_view_with_adapters_shares_the_weights_and_batches_with_its_base(tuned, smollm2, smollm2_lora):
    view = smollm2.with_adapters(smollm2_lora, name="tuned-view")
    assert view.backend is smollm2.backend and view.name == "tuned-view" and smollm2.adapters == ()
    alone_tuned = tuned.generate(PROMPT, **GREEDY).text
    alone_base = smollm2.generate(PROMPT, **GREEDY).text
    assert view.generate(PROMPT, **GREEDY).text == alone_tuned
    # Requests of the base and of the view in one run: one scheduler, both adapter sets per step.
    params = hallmark.SamplingParams(**GREEDY)
    requests = [m.prompt_request(PROMPT, params) for m in (smollm2, view, smollm2, view)]
    texts = {i: r.text for i, r in smollm2.generate_requests(requests)}
    assert [texts[i] for i in range(4)] == [alone_base, alone_tuned] * 2
    # Scoring runs with the model's adapters too.
    assert abs(view.token_logprobs(PROMPT).sum() - tuned.token_logprobs(PROMPT).sum()) < 1e-3
    assert abs(view.token_logprobs(PROMPT).sum() - smollm2.token_logprobs(PROMPT).sum()) > 0.01


def test_lora_arguments_and_the_command_line_form():
    assert lora_list("a.gguf")[0][1] == 1.0
    assert [s for _, s in lora_list([("a.gguf", 0.5), "b.gguf", ["c.gguf", 2]])] == [0.5, 1.0, 2.0]
    assert len(lora_list(["a.gguf", "b.gguf"])) == 2  # two paths, not a (path, scale) pair
    with pytest.raises(HallmarkError, match="expected a path or a"):
        lora_list([3])
    with pytest.raises(HallmarkError, match="finite"):
        lora_list(("a.gguf", math.nan))
    assert parse_lora_arg("a.gguf") == ("a.gguf", 1.0)
    assert parse_lora_arg("dir/a.gguf:0.25") == ("dir/a.gguf", 0.25)
    assert parse_lora_arg("C:\\models\\a.gguf") == ("C:\\models\\a.gguf", 1.0)  # a drive, not a scale
    assert parse_lora_arg("odd:name.gguf") == ("odd:name.gguf", 1.0)


def test_provenance_names_the_adapters_and_old_manifests_still_verify(tuned, smollm2, smollm2_lora):
    result = tuned.generate(PROMPT, max_tokens=8, seed=3)
    manifest = result.provenance
    assert manifest["model"]["name"] == tuned.name
    assert manifest["model"]["sha256"] == smollm2.sha256  # the base file's
    assert manifest["model"]["adapters"] == [
        {"name": "smol-tuned", "sha256": model_sha256(smollm2_lora), "scale": "1"}
    ]
    assert verify_manifest(result.text, manifest).ok
    forged = json.loads(json.dumps(manifest))
    del forged["model"]["adapters"]  # hiding the adapter breaks the signature...
    assert verify_manifest(result.text, forged).failed == "signature"
    forged["model"]["adapters"] = [{"name": "x", "sha256": "nope", "scale": "1"}]
    with pytest.raises(ProvenanceError, match=r"model.adapters\[0\].sha256"):  # ...and a bad entry is refused
        verify_manifest(result.text, sign_manifest(forged))
    base = smollm2.generate(PROMPT, max_tokens=8, seed=3)  # no adapters: the manifest is as before
    assert "adapters" not in base.provenance["model"] and verify_manifest(base.text, base.provenance).ok
    half = hallmark.load(
        smollm2.path, lora=[(smollm2_lora, 0.5)], n_ctx=256, show_progress=False, watermark=None
    )
    try:
        assert half.generate(PROMPT, max_tokens=2).provenance["model"]["adapters"][0]["scale"] == "0.5"
    finally:
        half.close()


def test_text_from_an_adapter_is_detected_as_the_base_models(tuned, smollm2):
    assert tuned.watermark_spec.spec_id == smollm2.watermark_spec.spec_id  # same tokenizer, same key
    # The session's key is random, so the p-value of a given text varies with it: 300 tokens keep it
    # far below the bound (a 160-token text once scored 3e-6 against a 1e-6 bound).
    sampled = dict(temperature=1.0, max_tokens=300, seed=11, ignore_eos=True)
    texts = {
        name: m.generate("Write about the sea.", **sampled)
        for name, m in (("tuned", tuned), ("base", smollm2))
    }
    assert texts["tuned"].text != texts["base"].text
    for result in texts.values():
        assert result.watermark.applied and result.watermark.spec_id == smollm2.watermark_spec.spec_id
        found = hallmark.detect(result.text)
        assert found.watermarked and found.model == "smollm2-135m-instruct", found.message
        assert found.spec_id == smollm2.watermark_spec.spec_id
        by_spec = hallmark.detect(result.text, spec=found.spec_id)
        assert by_spec.watermarked and by_spec.p_value < 1e-4


def _one_line(error: BaseException, *fragments: str) -> None:
    text = str(error)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text, text


def test_an_adapter_for_another_base_fails_at_load_naming_both(
    smollm2_path, gemma_path, smollm2_lora, gemma_lora, tmp_path
):
    def load(lora):
        return hallmark.load(smollm2_path, lora=lora, n_ctx=64, show_progress=False)

    with pytest.raises(ModelFileError) as e:
        load(gemma_lora)  # another architecture
    _one_line(e.value, "gemma-tuned.gguf", "is for gemma3", "SmolLM2-135M-Instruct.Q4_1 is llama")
    other_base = write_lora(tmp_path / "other-base.gguf", smollm2_path, base_sha256="0" * 64)
    with pytest.raises(ModelFileError) as e:
        load(other_base)  # the same architecture, but trained on another file
    _one_line(
        e.value,
        "other-base.gguf",
        "another base model (sha256 000000000000...)",
        model_sha256(smollm2_path)[:12],
    )
    # Claims llama but has gemma's shapes, and no base hash: only llama.cpp can tell.
    shapes = write_lora(tmp_path / "wrong-shapes.gguf", gemma_path, architecture="llama")
    with pytest.raises(ModelFileError) as e:
        load(shapes)
    _one_line(e.value, "llama.cpp could not load the LoRA adapter", "wrong-shapes.gguf")
    with pytest.raises(ModelFileError) as e:
        load(tmp_path / "missing.gguf")
    _one_line(e.value, "LoRA adapter not found", "missing.gguf")
    (tmp_path / "notes.gguf").write_text("not a model")
    with pytest.raises(ModelFileError) as e:
        load(tmp_path / "notes.gguf")
    _one_line(e.value, "is not a GGUF file", "notes.gguf")
    with pytest.raises(ModelFileError) as e:
        load(smollm2_path)  # a model, not an adapter
    _one_line(e.value, "is not a LoRA adapter", "general.type is 'model'")
    with pytest.raises(ModelFileError, match="given twice"):
        load([smollm2_lora, smollm2_lora])


def test_every_model_loading_command_takes_lora():
    for command in ("generate", "chat", "translate", "summarize", "ask", "eval"):
        option = next(p for p in main.commands[command].params if p.name == "lora")
        assert option.multiple and option.envvar == "HALLMARK_LORA", command


def test_the_lora_flag_and_its_variable(smollm2_lora, tmp_path):
    args = ("generate", PROMPT, "--temperature", "0", "--max-tokens", "8", "--json", "--ctx-size", "256")
    flag = run_cli(*args, "--lora", f"{smollm2_lora}:0.5", "--provenance", str(tmp_path / "m.json"))
    assert flag.returncode == 0, flag.stderr
    out = json.loads(flag.stdout)
    assert out["model"] == "smollm2-135m-instruct+smol-tuned"
    assert json.loads((tmp_path / "m.json").read_text())["model"]["adapters"][0]["scale"] == "0.5"
    env = run_cli(*args, env={"HALLMARK_LORA": f"{smollm2_lora}:0.5"})
    assert json.loads(env.stdout)["text"] == out["text"] and json.loads(env.stdout)["model"] == out["model"]
    chat = run_cli(
        "chat", "Say hi.", "--max-tokens", "4", "--json", "--ctx-size", "256", "--lora", str(smollm2_lora)
    )
    assert chat.returncode == 0 and json.loads(chat.stdout)["model"].endswith("+smol-tuned"), chat.stderr


@pytest.mark.parametrize(
    ("model", "lora", "fragment"),
    [
        ("gemma-3-270m", "smollm2", "is for llama, but gemma-3-270m is gemma3"),
        ("smollm2", "missing", "LoRA adapter not found"),
        ("smollm2", "text", "is not a GGUF file"),
    ],
)
def test_lora_errors_on_the_command_line_are_one_line(model, lora, fragment, smollm2_lora, tmp_path):
    (tmp_path / "text.gguf").write_text("hello")
    path = {"smollm2": smollm2_lora, "missing": tmp_path / "nope.gguf", "text": tmp_path / "text.gguf"}[lora]
    proc = run_cli(
        "generate", "-m", model, "--lora", str(path), "Hi", "--max-tokens", "2", "--ctx-size", "64"
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
