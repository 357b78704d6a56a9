"""Train, measure and ship hallmark's task adapters: one command per adapter.

    python bench/train_adapters.py translate-gemma        # train, then score base vs tuned on dev
    python bench/train_adapters.py qa-smollm2 --ship      # ... and copy it into the package

Each recipe fine-tunes a shipped model with LoRA (`hallmark.finetune`, the defaults unless the
recipe says otherwise) on the training data in ../shared/data/finetune (disjoint from the dev sets),
keeping the last records of each training file back for the evaluation during training. Then it
scores the base model (its chosen few-shot prompting, and the zero-shot prompt) and the tuned model
(the zero-shot prompt it was trained on) on the dev sets with `hallmark eval`, all greedy, and
records everything in bench/results/adapters.json. `--ship` copies the adapter into
src/hallmark/adapters/ and lists it in index.json with its recipe and dev scores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "adapters.json"
SHIPPED = ROOT / "src" / "hallmark" / "adapters"
WORK = Path("/tmp/hallmark-adapters")
HOLDOUT = 100  # records per training file kept back for evaluation during training

TRANSLATION_TRAIN = [
    DATA / f"finetune/translation/tatoeba_anki.train.en-{t}.jsonl" for t in ("fr", "de", "es")
]
TRANSLATION_DEV = [DATA / f"translation/tatoeba.en-{t}.jsonl" for t in ("fr", "de", "es")]
QA_TRAIN = [DATA / "finetune/qa/squad.train10k.jsonl"]
QA_DEV = [DATA / "qa/squad.dev300.jsonl"]

RECIPES = {
    "translate-gemma": {
        "model": "gemma-3-270m",
        "task": "translation",
        "train": TRANSLATION_TRAIN,
        "dev": TRANSLATION_DEV,
        "limit": 2000,
        "dev_limit": 300,
    },
    "translate-smollm2": {
        "model": "smollm2-135m-instruct",
        "task": "translation",
        "train": TRANSLATION_TRAIN,
        "dev": TRANSLATION_DEV,
        "limit": 1000,
        "dev_limit": 300,
    },
    "qa-smollm2": {
        "model": "smollm2-135m-instruct",
        "task": "qa",
        "train": QA_TRAIN,
        "dev": QA_DEV,
        "limit": 1000,
        "dev_limit": 300,
    },
    "qa-gemma": {
        "model": "gemma-3-270m",
        "task": "qa",
        "train": QA_TRAIN,
        "dev": QA_DEV,
        "limit": 2000,
        "dev_limit": 300,
    },
}


def split(files: list[Path], limit: int) -> tuple[list[Path], Path]:
    """The first `limit` records of each file for training; the last HOLDOUT of each, pooled, to
    evaluate on while training (never the dev sets, which the final scores come from)."""
    WORK.mkdir(parents=True, exist_ok=True)
    train, held = [], []
    for f in files:
        lines = [line for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        assert len(lines) >= limit + HOLDOUT, f"{f} has too few records"
        part = WORK / f"{f.stem}.first{limit}.jsonl"
        part.write_text("\n".join(lines[:limit]) + "\n", encoding="utf-8")
        train.append(part)
        held += lines[-HOLDOUT:]
    holdout = WORK / f"holdout-{files[0].parent.name}.jsonl"
    holdout.write_text("\n".join(held) + "\n", encoding="utf-8")
    return train, holdout


def score(model: object, task: str, dev: list[Path], style: str, limit: int) -> dict[str, dict[str, float]]:
    from hallmark.tasks.evaluate import evaluate

    out = {}
    for f in dev:
        summary = evaluate(task, f, model, limit=limit, style=style, temperature=0, progress=True)  # type: ignore[arg-type]
        out[f.stem] = {k: round(v, 2) for k, v in summary["metrics"].items()}
        print(f"  {f.stem} {style}: {out[f.stem]}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", choices=sorted(RECIPES))
    ap.add_argument("--ship", action="store_true", help="copy the adapter into src/hallmark/adapters/")
    ap.add_argument("--skip-train", action="store_true", help="score the adapter already registered")
    ap.add_argument("--skip-base", action="store_true", help="do not score the base model again")
    ap.add_argument("--ship-only", action="store_true", help="ship the adapter measured last time")
    args = ap.parse_args()
    if args.ship_only:
        ship(args.recipe, RECIPES[args.recipe], json.loads(RESULTS.read_text())[args.recipe])
        return

    import hallmark
    from hallmark.tasks.prompts import chosen_style
    from hallmark.train.finetune import finetune

    r = RECIPES[args.recipe]
    name = args.recipe
    record: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    entry = record.get(name, {})
    if not args.skip_train:
        train, holdout = split(r["train"], r["limit"])
        result = finetune(r["model"], train, out=name, eval_data=holdout, overwrite=True)
        entry["training"] = {
            **result.to_dict(),
            "history_tail": result.history[-3:],
            "date": time.strftime("%Y-%m-%d"),
            "train_files": [str(p.name) for p in r["train"]],
            "records_per_file": r["limit"],
        }
    base = hallmark.load(r["model"], n_ctx=2048, max_sequences=8, watermark=None, show_progress=False)
    if not args.skip_base:
        entry["base"] = {
            chosen_style(r["task"], base): score(
                base, r["task"], r["dev"], chosen_style(r["task"], base), r["dev_limit"]
            ),
            "zeroshot": score(base, r["task"], r["dev"], "zeroshot", r["dev_limit"]),
        }
    base.close()
    tuned = hallmark.load(name, n_ctx=2048, max_sequences=8, watermark=None, show_progress=False)
    entry["tuned"] = {"zeroshot": score(tuned, r["task"], r["dev"], "zeroshot", r["dev_limit"])}
    tuned.close()
    entry["recipe"] = {
        "model": r["model"],
        "task": r["task"],
        "command": f"python bench/train_adapters.py {name}",
    }
    record[name] = entry
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    if args.ship:
        ship(name, r, entry)


def ship(name: str, recipe: dict, entry: dict) -> None:
    """Copy the adapter, as measured (F32), into the package and list it in index.json. (An F16 copy
    would be half the size, but it changed 31 of the first 100 greedy en-fr translations of the
    gemma adapter, so its scores would not be the measured ones.)"""
    from hallmark.registry import find

    found = find(name)
    assert found is not None and found.adapter and found.source == "user"
    SHIPPED.mkdir(exist_ok=True)
    shipped = SHIPPED / f"{name}.gguf"
    shutil.copyfile(found.adapter, shipped)
    shipped.chmod(0o644)  # the registry keeps its files private; a package file is for everyone
    index_file = SHIPPED / "index.json"
    index = (
        [e for e in json.loads(index_file.read_text()) if e["name"] != name] if index_file.exists() else []
    )
    index.append(
        {
            "name": name,
            "base": recipe["model"],
            "adapter": f"{name}.gguf",
            "data_sha256": found.data_sha256,
            "task": recipe["task"],
            "style": "zeroshot",
            "created": found.created,
            "recipe": found.recipe | {"command": entry["recipe"]["command"]},
            "metrics": {"dev": entry["tuned"]["zeroshot"]},
        }
    )
    index_file.write_text(json.dumps(sorted(index, key=lambda e: e["name"]), indent=2) + "\n")


if __name__ == "__main__":
    main()
