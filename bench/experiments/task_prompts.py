"""Experiment: which prompt style suits each task and model kind, by dev-set scores.

Scores every style in hallmark.tasks.prompts on a selection slice of each dev set (the last `--n`
examples: tatoeba en->fr/de/es, xsum dev300, squad dev300 from ../shared/data), for both shipped
models, greedy. The styles with the best scores became `CHOSEN` in hallmark/tasks/prompts.py; the
report table (bench/tasks.py) is on the first examples of each file.

    python bench/experiments/task_prompts.py --n 50
    python bench/experiments/task_prompts.py --n 10 --tasks qa   # a quick look

Writes bench/results/task_prompts.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmark_tables import task_prompts_table  # noqa: E402

import hallmark  # noqa: E402
from hallmark.tasks.evaluate import load_examples, predict, score  # noqa: E402
from hallmark.tasks.prompts import QA_STYLES, SUMMARY_STYLES, TRANSLATION_STYLES  # noqa: E402

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parents[1] / "results"
MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
SETS = {
    "translation": [DATA / "translation" / f"tatoeba.en-{lang}.jsonl" for lang in ("fr", "de", "es")],
    "summarization": [DATA / "summarization" / "xsum.dev300.jsonl"],
    "qa": [DATA / "qa" / "squad.dev300.jsonl"],
}
STYLES = {"translation": TRANSLATION_STYLES, "summarization": SUMMARY_STYLES, "qa": QA_STYLES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="selection examples per dev file (taken from the end)")
    ap.add_argument("--tasks", nargs="+", default=list(SETS))
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    args = ap.parse_args()
    rows = []
    for name in args.models:
        model = hallmark.load(name, n_ctx=4096, max_sequences=8, show_progress=False)
        for task in args.tasks:
            for style in STYLES[task]:
                scores: dict[str, list[float]] = {}
                t0 = time.perf_counter()
                for path in SETS[task]:
                    examples = load_examples(task, path)[-args.n :]
                    preds = predict(task, examples, model, style, progress=False)
                    for k, v in score(task, examples, preds).items():
                        scores.setdefault(k, []).append(v)
                row = {
                    "model": name,
                    "task": task,
                    "style": style,
                    "n": args.n * len(SETS[task]),
                    **{k: sum(v) / len(v) for k, v in scores.items()},
                    "seconds": round(time.perf_counter() - t0, 1),
                }
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        model.close()
    RESULTS.mkdir(exist_ok=True)
    out = {
        "experiment": "task_prompts",
        "date": time.strftime("%Y-%m-%d"),
        "n_per_file": args.n,
        "rows": rows,
    }
    (RESULTS / "task_prompts.json").write_text(json.dumps(out, indent=2) + "\n")
    table = task_prompts_table(rows)
    (RESULTS / "task_prompts.md").write_text(table)
    print(table, end="")


if __name__ == "__main__":
    main()
