"""The training loop that fine-tuning and pretraining share: plain PyTorch, one file, no Trainer.

    loop = TrainLoop(model, examples, config, out_dir=..., dist=Dist.from_env())
    loop.run()        # resumes from out_dir/checkpoints/last.pt when config.resume is set

What it does, in order, each optimizer step:
1. takes the next global batch (`batch_size` sequences) of a seeded per-epoch permutation of the
   examples; under torchrun rank r takes every world_size-th sequence of it, so the global batch
   (and so the result) is the same for any number of processes;
2. runs it in micro-batches (length-sorted, right-padded) through `CausalLMLoss`, which applies
   the output layer only at the positions whose next token is learned: for gemma-3-270m the
   262k-row output layer is 63% of the weights, and a translation pair learns ~15 of ~25 tokens;
3. scales each micro-batch's summed cross-entropy by the global batch's learned-token count (known
   on every rank from the data), so the gradient is the token-mean over the global batch whatever
   the micro-batching and the world size;
4. clips the gradient norm, steps AdamW and the warm-up + cosine schedule.

Every `eval_every` steps (and at the end) it calls the caller's `evaluate(step)` and writes a
checkpoint atomically (trainable weights, optimizer, schedule, RNG states, step; the data order is
a function of the seed and the step, so resuming continues with the very next batch). Rank 0 shows a
progress bar (loss, tokens/s), and keeps the history (history.jsonl, loss.png).

Under FSDP2 (`wrap` calls `fully_shard`, as hallmark.train.pretrain does) each rank holds a shard
of every weight and optimizer state. Then every rank must run the same number of forward passes
(each one gathers the weights in a collective): the batch size must be a multiple of the world
size, and `eval_loss` pads the ranks with fewer examples with forwards whose loss it drops. A
checkpoint holds whole tensors all the same (gathered to rank 0, optimizer state keyed by parameter
name), so a run can be resumed with any number of processes, sharded or not.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hallmark.errors import HallmarkError
from hallmark.progress import progress_bar
from hallmark.train.config import TrainConfig
from hallmark.train.data import Example
from hallmark.train.distributed import Dist


class CheckpointError(HallmarkError):
    """A checkpoint that cannot be resumed from (missing, damaged, or from another run)."""


@dataclass
class Micro:
    """One micro-batch, padded: where the learned tokens are and what they are."""

    input_ids: torch.Tensor  # [b, t]
    attention_mask: torch.Tensor  # [b, t]
    rows: torch.Tensor  # [n] batch index of each learned token's predecessor
    cols: torch.Tensor  # [n] position of each learned token's predecessor
    targets: torch.Tensor  # [n] the learned tokens
    tokens: int  # real (unpadded) tokens

    def to(self, device: str) -> Micro:
        """The same micro-batch on `device`, the model's (a GPU under NCCL; a no-op on the CPU)."""
        tensors = (self.input_ids, self.attention_mask, self.rows, self.cols, self.targets)
        return Micro(*(t.to(device) for t in tensors), self.tokens)


def make_micro(examples: Sequence[Example], pad_id: int = 0) -> Micro:
    length = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    rows, cols, targets = [], [], []
    for b, e in enumerate(examples):
        ids[b, : len(e.ids)] = torch.tensor(e.ids)
        mask[b, : len(e.ids)] = 1
        for i in range(1, len(e.ids)):
            if e.learn[i]:
                rows.append(b)
                cols.append(i - 1)
                targets.append(e.ids[i])
    return Micro(
        ids,
        mask,
        torch.tensor(rows),
        torch.tensor(cols),
        torch.tensor(targets),
        sum(len(e.ids) for e in examples),
    )


class CausalLMLoss(nn.Module):
    """Summed next-token cross-entropy at the learned positions only.

    Takes a transformers causal LM (or a peft model around one): runs its decoder for the hidden
    states, then its output layer on the learned positions' rows alone. This module is what DDP
    wraps, so that its forward is the one DDP sees.
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        self.lm = lm  # registered so that the trainable parameters are this module's
        self.decoder = base.get_decoder()
        self.head = base.get_output_embeddings()
        self.softcap = getattr(base.config, "final_logit_softcapping", None)

    def forward(self, micro: Micro) -> torch.Tensor:
        hidden = self.decoder(
            input_ids=micro.input_ids, attention_mask=micro.attention_mask
        ).last_hidden_state
        logits = self.head(hidden[micro.rows, micro.cols]).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return nn.functional.cross_entropy(logits, micro.targets, reduction="sum")


@dataclass
class TrainLoop:
    model: nn.Module  # trainable parameters have requires_grad set
    examples: list[Example]
    config: TrainConfig
    out_dir: Path
    dist: Dist = field(default_factory=Dist)
    evaluate: Callable[[int], dict[str, float]] | None = None  # step -> metrics, on every rank
    wrap: Callable[[nn.Module], nn.Module] | None = None  # DDP / FSDP2 wrapper under torchrun
    run_id: str = ""  # what a checkpoint must match to be resumed (config + data + model)
    show_progress: bool = True
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.examples) < max(1, self.dist.world_size):
            raise HallmarkError(f"{len(self.examples)} training examples are too few to train on")
        c = self.config
        self.batch_size = min(c.batch_size, len(self.examples))
        self.steps_per_epoch = max(1, len(self.examples) // self.batch_size)
        self.total_steps = c.max_steps or max(1, math.ceil(self.steps_per_epoch * c.epochs))
        self.eval_every = c.eval_every or max(1, math.ceil(self.total_steps / 5))
        self.loss_module: nn.Module = CausalLMLoss(self.model)
        self.sharded = False  # FSDP2: weights and optimizer state are split over the ranks
        if self.dist.enabled and self.wrap is not None:
            self.loss_module = self.wrap(self.loss_module)
            self.sharded = _is_fsdp2(self.loss_module)
        if self.sharded and self.batch_size % self.dist.world_size:
            raise HallmarkError(
                f"the batch size ({self.batch_size}) must be a multiple of the number of processes "
                f"({self.dist.world_size}) when the weights are sharded"
            )
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise HallmarkError("the model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        warmup = max(1, round(c.warmup_ratio * self.total_steps))

        def schedule(step: int) -> float:  # linear warm-up, then cosine down to min_lr_ratio
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, self.total_steps - warmup)
            return c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.step = 0

    # -- data order -----------------------------------------------------------------------------
    def global_batch(self, step: int) -> list[Example]:
        """The examples of optimizer step `step`: a function of the seed and the step alone."""
        epoch, k = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.examples), generator=g).tolist()
        return [self.examples[i] for i in order[k * self.batch_size : (k + 1) * self.batch_size]]

    def micro_batches(self, batch: list[Example]) -> list[Micro]:
        mine = sorted(batch[self.dist.rank :: self.dist.world_size], key=lambda e: len(e.ids))
        size = self.config.micro_batch_size
        return [make_micro(mine[i : i + size]) for i in range(0, len(mine), size)]

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        if self.config.resume:
            self.load_checkpoint()
        elif self.dist.is_main:
            _write_jsonl(self.out_dir / "history.jsonl", [])
        self._seed(self.step)
        self.model.train()
        main = self.dist.is_main
        ema: float | None = None
        train_seconds, tokens_seen = 0.0, 0  # evaluation time is not training time
        with progress_bar(self.total_steps, "training", self.show_progress and main, unit="step") as bar:
            bar.update(self.step)
            while self.step < self.total_steps:
                batch = self.global_batch(self.step)
                t0 = time.perf_counter()
                loss, tokens = self.train_step(batch)
                train_seconds += time.perf_counter() - t0
                tokens_seen += tokens
                self.step += 1
                ema = loss if ema is None else 0.9 * ema + 0.1 * loss
                rate = tokens_seen / max(1e-9, train_seconds)  # this rank's tokens per second
                record: dict[str, Any] = {
                    "step": self.step,
                    "epoch": round(self.step / self.steps_per_epoch, 4),
                    "loss": round(loss, 5),
                    "lr": self.scheduler.get_last_lr()[0],
                    "tokens_per_s": round(rate, 1),
                }
                bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{rate:.0f}")
                bar.update(1)
                evaluating = self.step % self.eval_every == 0 or self.step == self.total_steps
                if evaluating and self.evaluate is not None:
                    self.model.eval()
                    record.update(self.evaluate(self.step))
                    self.model.train()
                self.history.append(record)  # before the checkpoint, which keeps the history
                if main:
                    _append_jsonl(self.out_dir / "history.jsonl", record)
                if evaluating:
                    self.save_checkpoint()
                    if main and self.show_progress:
                        bar.write(_describe(record), file=sys.stderr)  # stdout is for results (--json)
        return self.history

    def train_step(self, batch: list[Example]) -> tuple[float, int]:
        """One optimizer step on a global batch; returns its token-mean loss and this rank's tokens."""
        learned = sum(e.n_learned for e in batch)  # over the global batch: the same on every rank
        scale = self.dist.world_size / learned  # DDP averages gradients over ranks
        micros = self.micro_batches(batch)
        total, tokens = 0.0, 0
        self.optimizer.zero_grad(set_to_none=True)
        for i, micro in enumerate(micros):
            last = i == len(micros) - 1
            sync = getattr(self.loss_module, "no_sync", None)
            context = sync() if (sync is not None and not last) else _nullcontext()
            with context, torch.autocast(self.dist.device.split(":")[0], torch.bfloat16, self.config.bf16):
                loss_sum = self.loss_module(micro.to(self.dist.device))
                (loss_sum * scale).backward()
            total += float(loss_sum.detach())
            tokens += micro.tokens
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return self.dist.all_reduce_sum(total) / learned, tokens

    @torch.no_grad()
    def eval_loss(self, examples: Sequence[Example]) -> float:
        """Token-mean loss over `examples` (each rank scores its share; the sum is all-reduced)."""
        mine = sorted(examples[self.dist.rank :: self.dist.world_size], key=lambda e: len(e.ids))
        size = self.config.micro_batch_size
        runs = math.ceil(len(mine) / size)
        if self.sharded:  # as many forwards as rank 0, which has the most examples (see the docstring)
            runs = math.ceil(math.ceil(len(examples) / self.dist.world_size) / size)
        total = 0.0
        loss = self.loss_module.module if hasattr(self.loss_module, "module") else self.loss_module
        for i in range(runs):
            chunk = mine[i * size : (i + 1) * size]
            value = loss(make_micro(chunk or examples[:1]).to(self.dist.device))
            total += float(value) if chunk else 0.0
        learned = sum(e.n_learned for e in examples)
        return self.dist.all_reduce_sum(total) / max(1, learned)

    # -- checkpoints ----------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoints" / "last.pt"

    def trainable_names(self) -> list[str]:
        """The trainable parameters' names, in the optimizer's order."""
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trainable weights by name, whole. Sharded, every rank must call it (the shards are
        gathered in collectives) and only rank 0 gets the weights, on the CPU; the others get {}."""
        if not self.sharded:
            return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        full = get_model_state_dict(self.model, options=_full_state_options())
        return {n: full[n] for n in self.trainable_names() if n in full}

    def save_checkpoint(self) -> None:
        """Rank 0 writes the checkpoint to a temporary file and renames it over the last one, so a
        crash mid-write leaves the previous checkpoint whole. Sharded, every rank first takes part
        in gathering the weights and optimizer state to rank 0."""
        trainable: dict[str, torch.Tensor] = {}
        optimizer: dict[str, Any] = {}
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            trainable = self.trainable_state()
            optimizer = get_optimizer_state_dict(self.model, self.optimizer, options=_full_state_options())
        elif self.dist.is_main:
            trainable, optimizer = self.trainable_state(), self.optimizer.state_dict()
        if not self.dist.is_main:
            self.dist.barrier()
            return
        state = {
            "run_id": self.run_id,
            "step": self.step,
            "trainable": trainable,
            "optimizer": optimizer,
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(),
            "history": self.history,
            "config": asdict(self.config),
        }
        path = self.checkpoint_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        self.dist.barrier()

    def load_checkpoint(self) -> None:
        path = self.checkpoint_path
        if not path.exists():
            raise CheckpointError(f"nothing to resume: no checkpoint at {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # torch raises many types for a damaged file
            raise CheckpointError(f"cannot read the checkpoint {path}: {e}") from None
        if state.get("run_id") != self.run_id:
            raise CheckpointError(
                f"the checkpoint at {path} is from another run (different model, data or settings); "
                "use another --out, or start again without --resume"
            )
        names = self.trainable_names()
        if sorted(state["trainable"]) != sorted(names):
            raise CheckpointError(f"the checkpoint at {path} holds other weights than this model trains")
        optimizer = state["optimizer"]
        if self.sharded:  # every rank read the whole checkpoint; each keeps its own shard of it
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            whole = StateDictOptions(full_state_dict=True, strict=False)  # a tied output layer has no entry
            set_model_state_dict(self.model, state["trainable"], options=whole)
            named = optimizer if _keyed_by_name(optimizer) else _optimizer_by_name(optimizer, names)
            set_optimizer_state_dict(self.model, self.optimizer, named, options=whole)
        else:
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, value in state["trainable"].items():
                    params[name].copy_(value)
            if _keyed_by_name(optimizer):  # written by a sharded run
                optimizer = _optimizer_by_index(optimizer, names)
            self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        if self.dist.is_main:  # steps logged after this checkpoint are done again: log them again
            _write_jsonl(self.out_dir / "history.jsonl", self.history)
        _set_rng_state(state["rng"])

    def _seed(self, step: int) -> None:
        if not self.config.resume or step == 0:
            seed = self.config.seed + self.dist.rank
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)


def _is_fsdp2(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def _full_state_options() -> Any:
    """Whole tensors gathered to rank 0's CPU (the other ranks get empty dicts)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _keyed_by_name(optimizer: dict[str, Any]) -> bool:
    """Whether an optimizer state dict names its parameters (torch.distributed.checkpoint's form)
    rather than numbering them (torch.optim's)."""
    return any(isinstance(p, str) for group in optimizer["param_groups"] for p in group["params"])


def _optimizer_by_name(optimizer: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """torch.optim's state dict (parameters numbered in the optimizer's order) keyed by name."""
    return {
        "state": {names[i]: s for i, s in optimizer["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in optimizer["param_groups"]],
    }


def _optimizer_by_index(optimizer: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The inverse of `_optimizer_by_name`."""
    index = {n: i for i, n in enumerate(names)}
    return {
        "state": {index[n]: s for n, s in optimizer["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in optimizer["param_groups"]],
    }


def run_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings that decide a run's result (not `resume`, which only says where to start): what
    a checkpoint's run id and the recipe record."""
    d = asdict(config)
    d.pop("resume")
    return d


def result_dict(result: Any) -> dict[str, Any]:
    """A training result dataclass as JSON-ready data (`--json`, result.json): paths as strings,
    without the step-by-step history (history.jsonl has it)."""
    d = asdict(result)
    d.pop("history")
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _describe(record: dict[str, Any]) -> str:
    parts = [f"step {record['step']}", f"loss {record['loss']:.4f}"]
    parts += [f"{k} {v:.4g}" for k, v in record.items() if k.startswith("eval_") and isinstance(v, float)]
    return ", ".join(parts)


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def plot_history(history: Sequence[dict[str, Any]], out: Path, title: str) -> Path | None:
    """The loss curve (training loss, smoothed, and evaluation loss) as a PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps = [r["step"] for r in history]
    losses = [r["loss"] for r in history]
    smooth, ema = [], None
    for x in losses:
        ema = x if ema is None else 0.9 * ema + 0.1 * x
        smooth.append(ema)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.plot(steps, losses, color="#9ecae1", linewidth=0.8, label="training loss")
    ax.plot(steps, smooth, color="#3182bd", linewidth=1.6, label="training loss (smoothed)")
    evals = [(r["step"], r["eval_loss"]) for r in history if "eval_loss" in r]
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", color="#e6550d", label="evaluation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
