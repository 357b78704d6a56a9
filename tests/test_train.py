"""Fine-tuning: data rendering, the training loop's numerics, checkpoints, and the whole loop on the
shipped SmolLM2 model (data in, adapter out, run back in llama.cpp under a registered name).

Oracles: the learned tokens are exactly the answer; a task record's prompt tokens are exactly the
ones the task runner sends; the loop's loss equals transformers' own masked loss; a resumed run
ends with the same weights as an uninterrupted one; the adapter changes llama.cpp's logits as it
changes PyTorch's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import hallmark
from hallmark.tasks.prompts import qa_prompt, translation_prompt
from hallmark.tasks.runner import request_for
from hallmark.train.config import LORA_TARGETS, TrainConfig
from hallmark.train.data import DataError, Example, load_examples
from hallmark.train.loop import CausalLMLoss, TrainLoop, make_micro
from tests.conftest import run_cli


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def learned_text(model: hallmark.Model, ex: Example) -> str:
    return model.detokenize([t for t, learn in zip(ex.ids, ex.learn, strict=True) if learn])


# -- data -----------------------------------------------------------------------------------------
def test_chat_records_learn_only_the_assistant_turns(smollm2: hallmark.Model, tmp_path: Path) -> None:
    convo = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "Green."},
    ]
    (ex,), fmt = load_examples(write_jsonl(tmp_path / "c.jsonl", [{"messages": convo}]), smollm2, 512)
    assert fmt == "chat"
    assert learned_text(smollm2, ex).split() == ["Blue.", "Green."]
    # The prompt is what serving renders: the disclosure instruction and the conversation so far.
    prompt = smollm2.chat_prompt_ids(smollm2.disclosure.apply(convo[:1]))
    assert ex.ids[: len(prompt)] == prompt and not any(ex.learn[: len(prompt)])
    # The answer ends with the template's end of turn, so the tuned model learns to stop.
    end = ex.ids[len(prompt) :][: ex.learn[len(prompt) :].index(False)]
    assert any(smollm2.backend.is_eog(t) for t in end)


def test_task_records_use_the_task_commands_prompts(smollm2: hallmark.Model, gemma: hallmark.Model, tmp_path):
    pair = {
        "source_lang": "en",
        "target_lang": "fr",
        "source": "Where is the cat?",
        "reference": "Où est le chat ?",
    }
    qa = {
        "context": "Paris is the capital of France.",
        "question": "What is the capital?",
        "answers": ["Paris"],
    }
    params = hallmark.SamplingParams(temperature=0)
    for model in (smollm2, gemma):  # a chat model (template) and a base model (text prompt)
        (ex,), fmt = load_examples(write_jsonl(tmp_path / "t.jsonl", [pair]), model, 512)
        assert fmt == "translation"
        sent = request_for(model, translation_prompt("Where is the cat?", "en", "fr", "zeroshot"), params, 64)
        assert ex.ids[: len(sent.prompt_ids)] == sent.prompt_ids
        assert not any(ex.learn[: len(sent.prompt_ids)])
        assert learned_text(model, ex).strip() == "Où est le chat ?"
        (ex,), fmt = load_examples(write_jsonl(tmp_path / "q.jsonl", [qa]), model, 512)
        sent = request_for(model, qa_prompt(qa["question"], qa["context"], "zeroshot"), params, 64)
        assert fmt == "qa" and ex.ids[: len(sent.prompt_ids)] == sent.prompt_ids
        assert learned_text(model, ex).strip() == "Paris"


def test_prompt_completion_and_text(smollm2: hallmark.Model, tmp_path: Path) -> None:
    (ex,), fmt = load_examples(
        write_jsonl(tmp_path / "p.jsonl", [{"prompt": "2+2=", "completion": " 4"}]), smollm2, 64
    )
    assert fmt == "prompt_completion" and learned_text(smollm2, ex) == " 4"
    assert ex.ids[-1] == smollm2.backend.eos_token and ex.learn[-1]
    long_text = " ".join(f"word{i}" for i in range(300))
    windows, fmt = load_examples(write_jsonl(tmp_path / "x.jsonl", [{"text": long_text}]), smollm2, 64)
    assert fmt == "text" and len(windows) > 2 and all(len(w.ids) <= 64 for w in windows)
    assert sum(len(w.ids) for w in windows) == len(smollm2.tokenize(long_text)) + 1  # nothing dropped


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a", "completion": "b"}\n{"foo": 1}\n', "x.jsonl:2: unknown record format"),
        ("", "has no records"),
        ('{"text": "a"}\nnot json\n', "x.jsonl:2: not valid JSON"),
        ('{"text": "a"}\n{"prompt": "a", "completion": "b"}\n', "x.jsonl:2: a prompt_completion record"),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', "must end with an assistant message"),
        ('{"prompt": "' + "word " * 200 + '", "completion": "b"}\n', "longer than the maximum length of 64"),
    ],
)
def test_bad_data_names_the_line(smollm2: hallmark.Model, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_examples(path, smollm2, 64)


# -- the loop's numerics --------------------------------------------------------------------------
def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def synthetic_examples(n: int, seed: int = 0) -> list[Example]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(6, 20))
        ids = rng.integers(1, 64, size=length).tolist()
        prompt = int(rng.integers(1, length - 2))
        out.append(Example(ids, [False] * prompt + [True] * (length - prompt), i + 1))
    return out


def test_loss_equals_transformers_masked_loss() -> None:
    model = tiny_llama()
    examples = synthetic_examples(5)
    micro = make_micro(examples)
    ours = CausalLMLoss(model)(micro) / sum(e.n_learned for e in examples)
    labels = micro.input_ids.clone()
    learn = torch.zeros_like(labels, dtype=torch.bool)
    for b, e in enumerate(examples):
        learn[b, : len(e.ids)] = torch.tensor(e.learn)
    labels[~learn] = -100
    reference = model(input_ids=micro.input_ids, attention_mask=micro.attention_mask, labels=labels).loss
    assert torch.allclose(ours, reference, atol=1e-6), (ours, reference)


def run_loop(out: Path, steps: int, resume: bool = False, micro: int = 3, seed: int = 0) -> TrainLoop:
    model = tiny_llama()
    config = TrainConfig(
        max_steps=steps, batch_size=6, micro_batch_size=micro, lr=1e-2, seed=seed, resume=resume, eval_every=2
    )
    loop = TrainLoop(model, synthetic_examples(40), config, out, run_id="test", show_progress=False)
    loop.run()
    return loop


def weights(loop: TrainLoop) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in loop.model.state_dict().items()}


def test_micro_batching_does_not_change_the_step(tmp_path: Path) -> None:
    whole = run_loop(tmp_path / "a", steps=2, micro=6)
    split = run_loop(tmp_path / "b", steps=2, micro=2)
    for name, value in weights(whole).items():
        assert torch.allclose(value, weights(split)[name], atol=1e-5), name


class Crash(Exception):
    pass


class CrashingLoop(TrainLoop):
    """Dies before its fifth step, after the checkpoint of step 4 (as a killed run would)."""

    def train_step(self, batch: list[Example]) -> tuple[float, int]:
        if self.step == 4:
            raise Crash
        return super().train_step(batch)


def test_resume_continues_exactly_and_runs_are_reproducible(tmp_path: Path) -> None:
    straight = run_loop(tmp_path / "a", steps=6)
    again = run_loop(tmp_path / "b", steps=6)
    config = TrainConfig(max_steps=6, batch_size=6, micro_batch_size=3, lr=1e-2, eval_every=2)
    crashed = CrashingLoop(
        tiny_llama(), synthetic_examples(40), config, tmp_path / "c", run_id="test", show_progress=False
    )
    with pytest.raises(Crash):
        crashed.run()
    config.resume = True  # a fresh process: other initial weights, restored from the checkpoint
    resumed = TrainLoop(
        tiny_llama(seed=1), synthetic_examples(40), config, tmp_path / "c", run_id="test", show_progress=False
    )
    resumed.run()
    for name, value in weights(straight).items():
        assert torch.equal(value, weights(again)[name]), f"{name} differs between two seeded runs"
        assert torch.allclose(value, weights(resumed)[name], atol=1e-6), f"{name} differs after resume"
    assert [r["loss"] for r in resumed.history] == pytest.approx(
        [r["loss"] for r in straight.history], abs=1e-5
    )
    history = [json.loads(line) for line in (tmp_path / "c" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == list(range(1, 7))  # each step logged once, across the crash
    other = TrainLoop(
        tiny_llama(),
        synthetic_examples(40),
        config,
        tmp_path / "c",
        run_id="another run",
        show_progress=False,
    )
    with pytest.raises(hallmark.HallmarkError, match="from another run"):
        other.run()


# -- the whole loop on a shipped model ------------------------------------------------------------
@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """`hallmark finetune` on SmolLM2 for a few steps: a registered model in a private data dir."""
    tmp = tmp_path_factory.mktemp("finetune")
    records = [{"prompt": f"Colour number {i}:", "completion": " chartreuse"} for i in range(24)]
    data = write_jsonl(tmp / "train.jsonl", records)
    env = {"HALLMARK_DATA_DIR": str(tmp / "data")}
    proc = run_cli(
        "finetune",
        "smollm2",
        "--data",
        str(data),
        "--eval",
        str(data),
        "--out",
        "smol-test",
        "--max-steps",
        "3",
        "--learning-rate",
        "3e-3",
        "--batch-size",
        "8",
        "--json",
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return tmp, data, {**json.loads(proc.stdout), "env": env}


def test_finetune_registers_a_model_that_runs_in_the_engine(tuned, smollm2_path: Path) -> None:
    tmp, _, result = tuned
    adapter = Path(result["adapter"])
    assert adapter.is_file() and Path(result["loss_plot"]).read_bytes()[:4] == b"\x89PNG"
    listing = run_cli("models", "--json", env=result["env"])
    assert "smol-test" in listing.stdout
    gen = run_cli(
        "generate",
        "-m",
        "smol-test",
        "Colour number 99:",
        "--temperature",
        "0",
        "--max-tokens",
        "4",
        env=result["env"],
    )
    assert gen.returncode == 0, gen.stderr
    assert "chartreuse" in gen.stdout  # learned in 3 steps at a high learning rate
    base = run_cli("generate", "Colour number 99:", "--temperature", "0", "--max-tokens", "4")
    assert "chartreuse" not in base.stdout


def test_the_adapter_changes_llamacpp_as_it_changes_pytorch(tuned, smollm2_path: Path) -> None:
    """The exported adapter on llama.cpp moves the logits as the trained LoRA moves PyTorch's."""
    from peft import LoraConfig, get_peft_model

    from hallmark.train.hf import load_torch_model

    tmp, _, result = tuned
    state = torch.load(Path(result["out_dir"]) / "checkpoints" / "last.pt", weights_only=False)["trainable"]
    lm = load_torch_model(smollm2_path, show_progress=False)
    prompt = "Colour number 7:"
    base_model = hallmark.load(smollm2_path, watermark=None, policy="off", show_progress=False)
    tuned_model = hallmark.load(
        smollm2_path, lora=[result["adapter"]], watermark=None, policy="off", show_progress=False
    )
    ids = base_model.tokenize(prompt)
    with torch.no_grad():
        torch_base = lm(torch.tensor([ids])).logits[0].numpy()
        peft_model = get_peft_model(
            lm,
            LoraConfig(r=16, lora_alpha=32, target_modules=list(LORA_TARGETS)),
        )
        missing = peft_model.load_state_dict(state, strict=False)
        assert not missing.unexpected_keys  # every trained tensor found its place
        torch_tuned = peft_model(torch.tensor([ids])).logits[0].numpy()
    cpp_base, cpp_tuned = cpp_logits(base_model, ids), cpp_logits(tuned_model, ids)
    delta_torch, delta_cpp = (torch_tuned - torch_base).ravel(), (cpp_tuned - cpp_base).ravel()
    assert np.abs(delta_torch).max() > 1.0  # the adapter moved the logits, by more than the noise below
    # The base in llama.cpp is Q4_1 (PyTorch has its dequantised weights), so compare the changes.
    assert np.corrcoef(delta_torch, delta_cpp)[0, 1] > 0.95  # 8-bit activations in llama.cpp: noise


def cpp_logits(model: hallmark.Model, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits at every position of `ids`, in one decode call (with the model's adapters)."""
    from hallmark.backends.base import SequenceInput

    model.backend.set_adapters(0, model.adapter_set)
    model.backend.free(0)
    (rows,) = model.backend.decode([SequenceInput(0, list(ids), all_logits=True)])
    return np.array(rows, dtype=np.float64)


def test_finetune_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"colour": "red"}\n')
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    env = {"HALLMARK_DATA_DIR": str(tmp_path / "data")}
    cases = [
        (["--data", str(bad)], "bad.jsonl:2: unknown record format"),
        (["--data", str(tmp_path / "missing.jsonl")], "no such file"),
        (["--data", str(bad), "--output-dir", str(a_file / "x")], "cannot write to"),
        (["--data", str(bad), "--max-length", "99999999999"], "longer than smollm2-135m-instruct's context"),
    ]
    for args, message in cases:
        proc = run_cli("finetune", "smollm2", "--out", "x", *args, env=env)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


# -- tuned models in the task commands --------------------------------------------------------------
def test_a_tuned_model_runs_tasks_in_the_style_it_was_trained_in(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from hallmark.registry import RegistryEntry
    from hallmark.tasks import defaults
    from hallmark.tasks.prompts import CHOSEN, chosen_style

    entry = RegistryEntry(name="t", base="gemma-3-270m", adapter="a.gguf", task="qa", style="zeroshot")
    tuned = SimpleNamespace(chat_template=None, registry=entry)
    assert chosen_style("qa", tuned) == "zeroshot"
    assert chosen_style("qa", tuned, "fewshot-3") == "fewshot-3"  # an explicit style wins
    assert chosen_style("translation", tuned) == CHOSEN[("translation", "base")]  # not its task
    # The task default: the first installed candidate (a name that is not installed is skipped).
    monkeypatch.setitem(defaults.TASK_MODELS, "qa", ("no-such-model", "gemma-3-270m"))
    assert defaults.default_model("qa") == "gemma-3-270m"
    monkeypatch.setitem(defaults.TASK_MODELS, "qa", ("no-such-model",))
    assert defaults.default_model("qa") == defaults.DEFAULT_MODEL
