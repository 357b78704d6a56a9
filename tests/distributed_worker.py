"""A training job for tests/test_train_distributed.py, run alone or as each rank of torchrun:

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py CASE OUT

CASE "lora": LoRA (peft) on a tiny random llama, the loss module wrapped in DDP as
hallmark.train.finetune wraps it. CASE "full": every weight of a tiny random llama with tied
embeddings, sharded with FSDP2 by hallmark.train.pretrain's wrapper; it also runs the same job
again, stops it with an error at step 4 (after the checkpoint of step 2), keeps that checkpoint as
OUT/step2.pt and resumes the job from it. Rank 0 saves each job's history and final trainable
weights to OUT/results.pt. `train` is also called in the test process itself, without torchrun,
for the single-process runs the results are compared with.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from hallmark.train.config import TrainConfig
from hallmark.train.data import Example
from hallmark.train.distributed import Dist
from hallmark.train.loop import TrainLoop

VOCAB = 96
CRASH_STEP = 4


class Crash(Exception):
    """The stop a test puts into a job to have something to resume."""


def config(resume: bool = False) -> TrainConfig:
    # 8 sequences per step in micro-batches of 2: 4 micro-batches alone, 2 on each of 2 ranks, so
    # the per-rank gradient accumulation and the cross-rank averaging are both exercised.
    return TrainConfig(
        max_steps=6,
        batch_size=8,
        micro_batch_size=2,
        lr=1e-2,
        warmup_ratio=0.2,
        weight_decay=0.01,
        eval_every=2,
        seed=3,
        resume=resume,
        bf16=False,  # float32: the comparison is about the arithmetic, not bfloat16's rounding
    )


def examples(n: int, seed: int) -> list[Example]:
    """Random token sequences of 6-20 tokens that learn all but a random prefix (a 'prompt')."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(6, 21, (1,), generator=g))
        prompt = int(torch.randint(1, length - 1, (1,), generator=g))
        ids = torch.randint(1, VOCAB, (length,), generator=g).tolist()
        out.append(Example(ids, [False] * prompt + [True] * (length - prompt), i + 1))
    return out


TRAIN = examples(40, seed=1)
EVAL = examples(5, seed=2)  # odd: under 2 ranks one scores 3 and the other 2 (padded to as many forwards)


def tiny_llama(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            tie_word_embeddings=tied,
        )
    )


def build(case: str, dist: Dist) -> tuple[nn.Module, Any]:
    """The model to train and the wrapper TrainLoop applies under torchrun."""
    if case == "lora":
        from peft import LoraConfig, get_peft_model
        from torch.nn.parallel import DistributedDataParallel

        torch.manual_seed(1)  # LoRA's A matrices; B starts at zero
        targets = ["q_proj", "v_proj", "down_proj"]
        model = get_peft_model(tiny_llama(tied=False), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
        return model, lambda module: DistributedDataParallel(module)  # as hallmark.train.finetune does
    from hallmark.train.pretrain import fsdp2_wrap

    return tiny_llama(tied=True), fsdp2_wrap(dist)


def train(case: str, out: Path, dist: Dist, resume: bool = False, crash: bool = False) -> dict[str, Any]:
    """One job: its history and final trainable weights (rank 0's; {} on the other ranks when sharded)."""
    model, wrap = build(case, dist)
    loop = TrainLoop(
        model, TRAIN, config(resume), out, dist=dist, wrap=wrap, run_id=case, show_progress=False
    )

    def evaluate(step: int) -> dict[str, float]:
        if crash and step == CRASH_STEP:
            raise Crash(f"stopped at step {step}")
        return {"eval_loss": loop.eval_loss(EVAL)}

    loop.evaluate = evaluate
    history = loop.run()
    return {"history": history, "state": loop.trainable_state()}


def main(case: str, out: Path) -> None:
    dist = Dist.from_env()
    torch.set_num_threads(1)
    results = {"straight": train(case, out / "straight", dist)}
    if case == "full":
        with contextlib.suppress(Crash):
            train(case, out / "stopped", dist, crash=True)
        if dist.is_main:
            shutil.copy(out / "stopped" / "checkpoints" / "last.pt", out / "step2.pt")
        dist.barrier()
        results["resumed"] = train(case, out / "stopped", dist, resume=True)
    if dist.is_main:
        torch.save(results, out / "results.pt")
    dist.close()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
