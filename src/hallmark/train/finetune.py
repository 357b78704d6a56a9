"""`hallmark finetune`: LoRA on your own data, and the result back in the engine under a name.

    finetune("gemma-3-270m", "pairs.jsonl", out="gemma-fr")   # -> FinetuneResult

1. The base GGUF is loaded twice: in the engine (its llama.cpp tokenizer and chat template render
   the data exactly as serving will) and in PyTorch (hallmark.train.hf: dequantised once, cached).
2. peft adds LoRA to every attention and MLP projection; hallmark.train.loop trains it.
3. Rank 0 writes the adapter as a llama.cpp LoRA GGUF (hallmark.train.export), optionally a merged
   and quantised model, the loss curve, and registers the result (hallmark.registry), so the name
   works wherever a model name does: `hallmark generate -m gemma-fr`, `serve`, `translate`, ...

The defaults (rank 16, alpha 32, learning rate 2e-4 with warm-up and cosine decay, one epoch, 16
sequences per step) are the common LoRA ones; docs/finetune.md has what they gave on both shipped
models. bfloat16 autocast is on where the CPU or GPU has bfloat16 arithmetic (2.5x the float32
speed for gemma-3-270m on 2 cores, with the same losses to 2 decimals over 6 steps).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hallmark.backends import read_header
from hallmark.catalog import resolve
from hallmark.errors import HallmarkError
from hallmark.model import Model, load
from hallmark.provenance import model_sha256
from hallmark.registry import RegistryEntry, check_name, find, models_dir, register
from hallmark.train.config import LoraSettings, TrainConfig
from hallmark.train.data import TASK_FORMATS, Example, file_sha256, load_examples
from hallmark.train.distributed import Dist, has_bf16
from hallmark.train.loop import TrainLoop, plot_history, result_dict, run_settings

MERGE_QUANTS = ("f16", "q8_0", "q4_k_m")


@dataclass
class FinetuneResult:
    name: str
    out_dir: Path
    adapter: Path | None
    merged: Path | None
    loss_plot: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    train_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def output_dir(name: str) -> Path:
    return models_dir() / name


def finetune(
    model: str,
    data: str | os.PathLike[str] | list[str | os.PathLike[str]],
    *,
    out: str,
    eval_data: str | os.PathLike[str] | None = None,
    output_dir_: str | os.PathLike[str] | None = None,
    style: str | None = None,
    source_lang: str | None = None,
    target_lang: str | None = None,
    lora: LoraSettings | None = None,
    config: TrainConfig | None = None,
    max_length: int = 1024,
    limit: int | None = None,
    eval_limit: int = 200,
    eval_sample: int = 40,
    merge: str | None = None,
    overwrite: bool = False,
    n_threads: int | None = None,
    show_progress: bool = True,
) -> FinetuneResult:
    """Fine-tune `model` (a catalog name or GGUF path) with LoRA on `data`; register it as `out`.

    `eval_data` is scored during training (loss; for task data also the task metric on
    `eval_sample` examples, through the engine with the adapter as it is at that step). `merge`
    ("f16", "q8_0", "q4_k_m") also writes a merged model. `config.resume` continues the last run
    of the same name from its checkpoint.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    lora = lora or LoraSettings()
    config = config or TrainConfig()
    check_name(out)
    if merge is not None and merge not in MERGE_QUANTS:
        raise HallmarkError(f"unknown merge quantisation {merge!r}; known: {', '.join(MERGE_QUANTS)}")
    if find(out) is not None and find(out).source == "user" and not (overwrite or config.resume):  # type: ignore[union-attr]
        raise HallmarkError(f"a model named {out!r} is registered already; pass --overwrite or another --out")
    dist = Dist.from_env()
    torch.set_num_threads(n_threads or len(os.sched_getaffinity(0)))
    config.bf16 = config.bf16 or has_bf16(dist.device)
    out_dir = Path(output_dir_) if output_dir_ else output_dir(out)
    _check_writable(out_dir)
    t0 = time.perf_counter()

    base = resolve(model, show_progress=show_progress and dist.is_main)
    # Checked against the file's header before a context of that size is allocated.
    trained_ctx = read_header(base.path).n_ctx_train
    if trained_ctx and max_length > trained_ctx:
        raise HallmarkError(
            f"--max-length {max_length} is longer than {base.name}'s context of {trained_ctx}"
        )
    engine = load(base.path, n_ctx=max_length, watermark=None, show_progress=False)
    render = {"style": style, "source_lang": source_lang, "target_lang": target_lang}
    files = [data] if isinstance(data, str | os.PathLike) else list(data)
    if not files:
        raise HallmarkError("no training data: give at least one --data file")
    examples, fmt = [], None
    for f in files:  # `limit` records of each file
        file_examples, file_fmt = load_examples(f, engine, max_length, limit=limit, **render)
        if fmt is not None and file_fmt != fmt:
            raise HallmarkError(f"{f} holds {file_fmt} records and {files[0]} {fmt} records; use one format")
        examples, fmt = examples + file_examples, file_fmt
    assert fmt is not None
    eval_examples: list[Example] = []
    if eval_data is not None:
        eval_examples, eval_fmt = load_examples(eval_data, engine, max_length, limit=eval_limit, **render)
        if eval_fmt != fmt:
            raise HallmarkError(f"--eval holds {eval_fmt} records and --data {fmt} records; use one format")
    task = fmt if fmt in TASK_FORMATS else None
    used_style = (
        (style or {"translation": "zeroshot", "summarization": "tldr", "qa": "zeroshot"}[fmt])
        if task
        else None
    )

    data_sha = _files_sha256(files)
    base_sha = model_sha256(base.path)
    run_id = hashlib.sha256(
        json.dumps(
            [base_sha, data_sha, asdict(lora), run_settings(config), max_length, limit, render]
        ).encode()
    ).hexdigest()

    from hallmark.train.hf import load_torch_model

    torch.manual_seed(config.seed)
    lm = load_torch_model(base.path, show_progress=show_progress and dist.is_main)
    peft_config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(lm, peft_config).to(dist.device)

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[dist.local_rank] if dist.device != "cpu" else None)

    loop = TrainLoop(
        peft_model,
        examples,
        config,
        out_dir,
        dist=dist,
        wrap=wrap,
        run_id=run_id,
        show_progress=show_progress,
    )
    sample = _eval_sample(eval_data, eval_sample, config.seed) if task and eval_data else []

    def evaluate(step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if eval_examples:
            metrics["eval_loss"] = round(loop.eval_loss(eval_examples), 5)
        if sample and dist.is_main:
            metrics.update(_task_metrics(peft_model, base, task, used_style, sample, out_dir, render))
        return metrics

    loop.evaluate = evaluate
    history = loop.run()
    result = FinetuneResult(out, out_dir, None, None, None, history, seconds=0.0)
    result.train_tokens = sum(len(e.ids) for e in examples)
    if dist.is_main:
        meta = {
            "hallmark.base.sha256": base_sha,
            "hallmark.base.name": base.name,
            "hallmark.data.sha256": data_sha,
        }
        result.adapter = _export_adapter(peft_model, base.path, out_dir / "adapter.gguf", meta)
        if merge:
            from hallmark.train.export import lora_weights, write_merged_model

            weights, alpha, rank = lora_weights(peft_model)
            result.merged = write_merged_model(
                base.path,
                weights,
                alpha=alpha,
                rank=rank,
                out=out_dir / f"merged-{merge}.gguf",
                quant=merge,
                metadata=meta,
                progress=show_progress,
            )
        result.loss_plot = plot_history(history, out_dir / "loss.png", f"{out}: LoRA on {base.name}")
        result.metrics = {k: v for k, v in history[-1].items() if k.startswith("eval_")}
        result.seconds = round(time.perf_counter() - t0, 1)
        recipe = {
            "base": base.name,
            "data": [str(f) for f in files],
            "eval": str(eval_data) if eval_data else None,
            "lora": asdict(lora),
            "train": run_settings(config),
            "max_length": max_length,
            "limit": limit,
            **render,
        }
        register(
            RegistryEntry(
                name=out,
                base=base.name if base.entry else str(base.path),
                adapter=str(result.adapter),
                merged=str(result.merged) if result.merged else None,
                data_sha256=data_sha,
                task=task,
                style=used_style,
                recipe=recipe,
                metrics={**result.metrics, "seconds": result.seconds},
            ),
            overwrite=True,
        )
        (out_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    engine.close()
    dist.barrier()
    dist.close()
    return result


def _files_sha256(files: list[Any]) -> str:
    """One file's sha256, or the sha256 of the files' hashes in order."""
    hashes = [file_sha256(f) for f in files]
    return hashes[0] if len(hashes) == 1 else hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise HallmarkError(f"cannot write to {out_dir}: {e.strerror}") from None


def _export_adapter(peft_model: Any, base_path: Path, out: Path, meta: dict[str, str]) -> Path:
    from hallmark.train.export import lora_weights, write_lora_adapter

    weights, alpha, _ = lora_weights(peft_model)
    return write_lora_adapter(weights, alpha=alpha, base_gguf=base_path, out=out, metadata=meta)


def _eval_sample(path: Any, n: int, seed: int) -> list[dict[str, Any]]:
    from hallmark.train.data import read_records

    records = [r for _, r in read_records(path)]
    random.Random(seed).shuffle(records)
    return records[:n]


def _task_metrics(
    peft_model: Any,
    base: Any,
    task: str,
    style: str | None,
    sample: list[dict[str, Any]],
    out_dir: Path,
    render: dict[str, Any],
) -> dict[str, float]:
    """The task metric on a sample, through the engine with the adapter as it is now (what serving
    would answer), with the same prompt style the data was rendered in."""
    from hallmark.tasks.evaluate import predict, score

    tmp = out_dir / "checkpoints" / "eval-adapter.gguf"
    _export_adapter(peft_model, base.path, tmp, {})
    m: Model = load(
        base.path, lora=[str(tmp)], n_ctx=2048, max_sequences=4, watermark=None, show_progress=False
    )
    try:
        predictions = predict(
            task, sample, m, style, render.get("source_lang"), render.get("target_lang"), False, temperature=0
        )
        return {f"eval_{k}": round(float(v), 2) for k, v in score(task, sample, predictions).items()}
    finally:
        m.close()
        tmp.unlink(missing_ok=True)
