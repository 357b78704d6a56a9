"""Training under torchrun gives the single-process result: DDP (LoRA) and FSDP2 (full weights).

Two CPU processes over gloo (torchrun --standalone, OMP_NUM_THREADS=1) train tiny random llama
models on synthetic token sequences (tests/distributed_worker.py) and must match one process
training on the same global batches: the loss of every step, the evaluation loss, and the final
weights. Under FSDP2 a job stopped after its step-2 checkpoint and resumed must end where the
uninterrupted job ends, and that sharded checkpoint must resume in a single process too.

Then `pretrain` itself, at the micro size on a few hundred lines of text: an interrupted run
resumes from its checkpoint, the GGUF it writes runs in llama.cpp under its registered name, and
`hallmark pretrain --nproc-per-node 2` re-launches itself under torchrun and shards the model.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import hallmark
from hallmark.errors import HallmarkError
from hallmark.registry import find
from hallmark.train.config import PretrainConfig
from hallmark.train.distributed import Dist
from hallmark.train.loop import TrainLoop
from hallmark.train.pretrain import pack, pretrain
from tests import distributed_worker as worker

# float32 throughout. One process and two sum the same numbers in other groupings (2 micro-batches
# per rank and an all-reduce vs 4 micro-batches, with other padding), so results differ by
# rounding alone. Measured after 6 AdamW steps at lr 1e-2: training losses equal to the 5 decimals
# the history keeps, evaluation losses within 3e-8 relative, weights within 6e-8 (DDP) and 5e-6
# (FSDP2) absolute, while training moves them by up to 0.04; a resumed FSDP2 job ends bit for bit
# where the uninterrupted one does. A missing gradient average or a rank on the wrong sequences
# changes the weights by lr-sized steps (~1e-2).
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-4
SENTENCES = 300


def _torchrun(case: str, out: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += [str(Path(worker.__file__)), case, str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return torch.load(out / "results.pt", weights_only=False)


def _alone(case: str, out: Path, resume: bool = False) -> dict[str, Any]:
    return worker.train(case, out, Dist(), resume=resume)


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert [r["step"] for r in got["history"]] == [r["step"] for r in want["history"]]
    for key in ("loss", "eval_loss"):
        mine = [r[key] for r in got["history"] if key in r]
        theirs = [r[key] for r in want["history"] if key in r]
        assert mine == pytest.approx(theirs, rel=LOSS_RTOL), key
    assert sorted(got["state"]) == sorted(want["state"])
    for name, value in want["state"].items():
        torch.testing.assert_close(got["state"][name].cpu(), value.cpu(), rtol=0, atol=WEIGHT_ATOL, msg=name)


def test_lora_under_ddp_on_two_processes_matches_one(tmp_path):
    two = _torchrun("lora", tmp_path / "ddp")
    one = _alone("lora", tmp_path / "alone")
    assert one["history"][-1]["loss"] < one["history"][0]["loss"]  # it learns something
    assert all(".lora_" in name for name in one["state"])  # and only the adapter
    _assert_same(two["straight"], one)


def test_full_training_under_fsdp2_on_two_processes_matches_one_and_resumes(tmp_path):
    two = _torchrun("full", tmp_path / "fsdp")
    one = _alone("full", tmp_path / "alone")
    assert "lm_head.weight" not in one["state"]  # tied to the embeddings: one parameter
    _assert_same(two["straight"], one)
    # Stopped after the step-2 checkpoint and resumed under FSDP2: the same end as without a stop.
    resumed = two["resumed"]
    assert [r["step"] for r in resumed["history"]] == list(range(1, 7))
    _assert_same(resumed, two["straight"])
    # The sharded run's checkpoint holds whole weights and named optimizer state: one process
    # resumes it and ends where the single-process job ends.
    (tmp_path / "moved" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "fsdp" / "step2.pt", tmp_path / "moved" / "checkpoints" / "last.pt")
    _assert_same(_alone("full", tmp_path / "moved", resume=True), one)


def test_sharded_training_refuses_a_batch_the_ranks_cannot_split_evenly(monkeypatch):
    monkeypatch.setattr("hallmark.train.loop._is_fsdp2", lambda module: True)
    config = worker.config()
    config.batch_size = 7
    with pytest.raises(HallmarkError, match="multiple of the number of processes"):
        TrainLoop(
            worker.tiny_llama(tied=True),
            worker.TRAIN,
            config,
            Path("unused"),
            dist=Dist(rank=0, world_size=2),
            wrap=lambda module: module,
        )


def test_packing_joins_documents_with_eos_into_full_blocks():
    documents = [(1, [10, 11, 12]), (3, [20, 21]), (4, [30, 31, 32, 33])]
    blocks = pack(documents, eos=2, seq_len=4)
    # stream: 10 11 12 2 | 20 21 2 30 | 31 32 33 2 -> three full blocks, nothing left over
    assert [b.ids for b in blocks] == [[10, 11, 12, 2], [20, 21, 2, 30], [31, 32, 33, 2]]
    assert all(b.learn == [False, True, True, True] for b in blocks)
    assert [b.line for b in blocks] == [1, 3, 4]  # the line of the document each block starts in
    assert len(pack(documents, eos=2, seq_len=5)) == 2  # the last 2 tokens make no full block


# -- pretrain ---------------------------------------------------------------------------------


def _text(path: Path) -> Path:
    """A few hundred lines of simple, repetitive English (something a micro model can learn)."""
    rng = random.Random(0)
    who = ["The old man", "A young girl", "The farmer", "My brother", "The captain", "A small dog"]
    did = ["walked to", "looked at", "ran past", "sat near", "waited by", "came back to"]
    where = ["the river", "the market", "the old house", "the church", "the harbour", "the hill"]
    when = ["in the morning.", "at night.", "after dinner.", "before the rain.", "on Sunday."]
    lines = [" ".join(rng.choice(part) for part in (who, did, where, when)) for _ in range(SENTENCES)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _micro_config(resume: bool = False) -> PretrainConfig:
    return PretrainConfig(max_steps=6, batch_size=8, micro_batch_size=4, eval_every=3, resume=resume)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> dict[str, Any]:
    """A micro pretraining run stopped at step 5 (after the step-3 checkpoint), then resumed."""
    home = tmp_path_factory.mktemp("pretrain")
    data = _text(home / "sentences.txt")
    mp = pytest.MonkeyPatch()
    mp.setenv("HALLMARK_DATA_DIR", str(home / "data"))
    steps: list[int] = []
    real_step = TrainLoop.train_step

    def train_step(self: TrainLoop, batch: list[Any]) -> tuple[float, int]:
        steps.append(self.step + 1)
        if stopping and self.step + 1 == 5:
            raise worker.Crash("stopped")
        return real_step(self, batch)

    mp.setattr(TrainLoop, "train_step", train_step)
    kwargs: dict[str, Any] = {"out": "micro-story", "size": "micro", "seq_len": 32, "quant": "q8_0"}
    stopping = True
    with pytest.raises(worker.Crash):
        pretrain(data, config=_micro_config(), eval_data=data, show_progress=False, **kwargs)
    out_dir = home / "data" / "models" / "micro-story"
    stopped = [json.loads(line) for line in (out_dir / "history.jsonl").read_text().splitlines()]
    stopping, before = False, len(steps)
    result = pretrain(data, config=_micro_config(resume=True), eval_data=data, show_progress=False, **kwargs)
    yield {"result": result, "stopped": stopped, "resumed_steps": steps[before:], "data_dir": home / "data"}
    mp.undo()


def test_pretraining_resumes_from_its_checkpoint(pretrained):
    result = pretrained["result"]
    assert pretrained["resumed_steps"] == [4, 5, 6]  # from the step-3 checkpoint, not from the start
    assert [r["step"] for r in result.history] == [1, 2, 3, 4, 5, 6]
    assert result.history[:3] == pretrained["stopped"][:3]  # the first run's steps, kept
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 0.3  # from ln(49152) = 10.8 down
    assert "eval_loss" in result.history[-1]
    assert result.loss_plot is not None and result.loss_plot.exists()


def test_a_pretrained_model_runs_in_llama_cpp_under_its_name(pretrained, monkeypatch):
    monkeypatch.setenv("HALLMARK_DATA_DIR", str(pretrained["data_dir"]))
    entry = find("micro-story")
    assert entry is not None and entry.kind == "merged" and entry.base == "smollm2-135m-instruct"
    assert Path(entry.merged).resolve() == pretrained["result"].model.resolve()
    model = hallmark.load("micro-story", watermark=None, show_progress=False)
    try:
        assert Path(model.path).resolve() == pretrained["result"].model.resolve()
        assert model.backend.n_vocab == 49152 and model.backend.n_ctx == 32  # trained context
        out = model.generate("The old man", max_tokens=8, temperature=0, ignore_eos=True)
        assert len(out.token_ids) == 8
    finally:
        model.close()


def test_the_cli_relaunches_itself_under_torchrun_with_fsdp2(tmp_path):
    data = _text(tmp_path / "sentences.txt")
    env = {**os.environ, "HALLMARK_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    args = ["pretrain", str(data), "--out", "micro-ddp", "--size", "micro", "--seq-len", "32"]
    args += ["--max-steps", "2", "--batch-size", "4", "--micro-batch-size", "2", "--quant", "f16"]
    args += ["--nproc-per-node", "2", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "hallmark", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-6000:]
    result = json.loads(done.stdout)  # printed once, by rank 0
    assert Path(result["model"]).is_file()
    entry = json.loads((tmp_path / "data" / "models" / "micro-ddp.json").read_text())
    assert entry["recipe"]["processes"] == 2 and entry["merged"] == result["model"]
