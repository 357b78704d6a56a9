"""Fine-tuning throughput: hallmark's loop against transformers + peft's Trainer, in one run.

    python bench/finetune.py                      # both shipped models -> bench/results/finetune.json

Same model (the shipped GGUF, dequantised), same LoRA (rank 16, alpha 32, all projections), same
examples (the first translation pairs of ../shared/data/finetune, rendered by hallmark.train.data,
prompt masked for both), same batch (16 sequences in micro-batches of 8), same threads, same
precision (bfloat16 autocast where the CPU has it, as hallmark's default), in separate processes so
that each one's peak memory is its own. The Trainer gets the examples as input_ids/labels (-100 on
the prompt) with its padding collator: the standard recipe, which computes the output layer at
every position. Reported: training tokens/s (unpadded tokens over the timed steps, the first steps
excluded as warm-up), peak RSS, and the ratio hallmark / Trainer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "finetune" / "translation" / "tatoeba_anki.train.en-fr.jsonl"
RESULTS = ROOT / "bench" / "results" / "finetune.json"
MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
WARMUP, TIMED = 1, 4  # optimizer steps
BATCH, MICRO = 16, 8


def worker(engine: str, model_name: str, threads: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    import hallmark
    from hallmark.catalog import resolve
    from hallmark.train.config import LORA_TARGETS, TrainConfig
    from hallmark.train.data import load_examples
    from hallmark.train.distributed import has_bf16
    from hallmark.train.hf import load_torch_model
    from hallmark.train.loop import TrainLoop

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    path = resolve(model_name).path
    engine_model = hallmark.load(path, n_ctx=512, watermark=None, show_progress=False)
    examples, _ = load_examples(DATA, engine_model, 512, limit=BATCH * (WARMUP + TIMED))
    lm = load_torch_model(path, show_progress=False)
    lora = LoraConfig(
        r=16, lora_alpha=32, target_modules=list(LORA_TARGETS), lora_dropout=0.0, task_type="CAUSAL_LM"
    )
    model = get_peft_model(lm, lora)
    bf16 = has_bf16("cpu")
    steps = WARMUP + TIMED
    times: list[float] = []
    tokens_per_step = [sum(len(e.ids) for e in examples[i * BATCH : (i + 1) * BATCH]) for i in range(steps)]
    if engine == "hallmark":
        config = TrainConfig(
            max_steps=steps, batch_size=BATCH, micro_batch_size=MICRO, bf16=bf16, eval_every=10**9
        )
        loop = TrainLoop(
            model, examples, config, Path("/tmp/bench-finetune"), run_id="bench", show_progress=False
        )
        loop.global_batch = lambda step: examples[step * BATCH : (step + 1) * BATCH]  # type: ignore[method-assign]
        loop.save_checkpoint = lambda: None  # type: ignore[method-assign]
        for step in range(steps):
            t0 = time.perf_counter()
            loop.train_step(loop.global_batch(step))
            times.append(time.perf_counter() - t0)
    else:
        from transformers import Trainer, TrainerCallback, TrainingArguments

        rows = [
            {
                "input_ids": e.ids,
                "labels": [t if learn else -100 for t, learn in zip(e.ids, e.learn, strict=True)],
            }
            for e in examples
        ]

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN003
                self.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN003
                times.append(time.perf_counter() - self.t0)

        args = TrainingArguments(
            output_dir="/tmp/bench-finetune-trainer",
            per_device_train_batch_size=MICRO,
            gradient_accumulation_steps=BATCH // MICRO,
            max_steps=steps,
            learning_rate=2e-4,
            bf16=bf16,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=0,
            remove_unused_columns=False,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=pad, callbacks=[Clock()])
        trainer.train()
    timed = sum(times[WARMUP:])
    return {
        "engine": engine,
        "model": model_name,
        "threads": threads,
        "bf16": bf16,
        "timed_steps": TIMED,
        "seconds": round(timed, 2),
        "tokens_per_s": round(sum(tokens_per_step[WARMUP:]) / timed, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def pad(features: list[dict]) -> dict:
    """Right-pad a batch: input_ids with 0 (masked out), labels with -100 (not learned)."""
    import torch

    length = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros((len(features), length), dtype=torch.long)
    mask = torch.zeros((len(features), length), dtype=torch.long)
    labels = torch.full((len(features), length), -100, dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(f["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.threads)))
        return
    rows = []
    for model in args.models:
        for engine in ("hallmark", "trainer"):
            cmd = [sys.executable, __file__, "--worker", engine, model, "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            print(row, file=sys.stderr)
            rows.append(row)
    ratios = {}
    for model in args.models:
        ours, peer = (
            next(r for r in rows if r["model"] == model and r["engine"] == e) for e in ("hallmark", "trainer")
        )
        ratios[model] = {
            "tokens_per_s": round(ours["tokens_per_s"] / peer["tokens_per_s"], 2),
            "peak_rss": round(ours["peak_rss_mb"] / peer["peak_rss_mb"], 2),
        }
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "data": DATA.name,
        "batch": BATCH,
        "micro_batch": MICRO,
        "warmup_steps": WARMUP,
        "timed_steps": TIMED,
        "runs": rows,
        "ratios": ratios,
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
