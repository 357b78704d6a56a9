"""Task quality: both shipped models on the dev sets, naive zero-shot prompt vs the chosen prompting.

Dev sets from ../shared/data: tatoeba en->fr/de/es (the first `--n-translation` pairs of each),
xsum dev300 and squad dev300. Greedy decoding, as `hallmark eval` does by default. Each cell is
`hallmark.tasks.evaluate.evaluate` (the code behind `hallmark eval`).

    python bench/tasks.py                     # the full dev sets: about 95 minutes on 2 cores
    python bench/tasks.py --n-translation 60 --n-summarization 40 --n-qa 100   # about 20 minutes
    python bench/tasks.py --tasks summarization --styles chosen   # re-run some cells, keep the rest

Writes bench/results/tasks.json and bench/results/tasks.md (and predictions under /tmp).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmark_tables import TASK_METRICS
from benchmark_tables import tasks_table as markdown

import hallmark
from hallmark.tasks.evaluate import evaluate
from hallmark.tasks.prompts import chosen_style

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESULTS = Path(__file__).parent / "results"
MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
SETS = [
    ("translation", "tatoeba en-fr", DATA / "translation" / "tatoeba.en-fr.jsonl"),
    ("translation", "tatoeba en-de", DATA / "translation" / "tatoeba.en-de.jsonl"),
    ("translation", "tatoeba en-es", DATA / "translation" / "tatoeba.en-es.jsonl"),
    ("summarization", "xsum dev300", DATA / "summarization" / "xsum.dev300.jsonl"),
    ("qa", "squad dev300", DATA / "qa" / "squad.dev300.jsonl"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-translation", type=int, default=300, help="pairs per tatoeba file")
    ap.add_argument("--n-summarization", type=int, default=300, help="xsum documents")
    ap.add_argument("--n-qa", type=int, default=300, help="squad questions")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--tasks", nargs="+", choices=sorted(TASK_METRICS), default=sorted(TASK_METRICS))
    ap.add_argument(
        "--styles",
        nargs="+",
        choices=("naive", "chosen"),
        default=["naive", "chosen"],
        help="re-run only these cells; the others are kept from bench/results/tasks.json",
    )
    args = ap.parse_args()
    out_dir = Path(tempfile.mkdtemp(prefix="hallmark-tasks-"))
    cells = []
    for name in args.models:
        model = hallmark.load(name, n_ctx=4096, max_sequences=8, show_progress=False)
        for task, label, path in [entry for entry in SETS if entry[0] in args.tasks]:
            limit = {
                "translation": args.n_translation,
                "summarization": args.n_summarization,
                "qa": args.n_qa,
            }[task]
            styles = {"naive": "naive", "chosen": chosen_style(task, model)}
            for style in [styles[s] for s in ("naive", "chosen") if s in args.styles]:
                print(f"{name} {label} {style} ...", file=sys.stderr, flush=True)
                s = evaluate(
                    task, path, model, limit, style, out_dir / f"{name}-{label}-{style}".replace(" ", "_")
                )
                cells.append({"model": name, "set": label, **s})
        model.close()
    cells = merge(cells)
    RESULTS.mkdir(exist_ok=True)
    res = {"benchmark": "tasks", "date": time.strftime("%Y-%m-%d"), "decoding": "greedy", "cells": cells}
    (RESULTS / "tasks.json").write_text(json.dumps(res, indent=2) + "\n")
    table = markdown(cells)
    (RESULTS / "tasks.md").write_text(table)
    print(table)


def merge(new: list[dict]) -> list[dict]:
    """The cells just run, in place of the same (model, set, style) cells of the last full run."""
    path = RESULTS / "tasks.json"
    old = json.loads(path.read_text())["cells"] if path.exists() else []
    fresh = {(c["model"], c["set"], c["style"]): c for c in new}
    kept = [fresh.pop((c["model"], c["set"], c["style"]), c) for c in old]
    return kept + list(fresh.values())


if __name__ == "__main__":
    main()
