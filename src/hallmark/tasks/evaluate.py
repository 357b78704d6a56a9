"""`hallmark eval translation|summarization|qa`: score a model on a JSONL dev set.

Input: one JSON object per line, with these fields (extra fields are kept in the predictions):

- translation: `source`, `reference`, and `source_lang` / `target_lang` (ISO 639-1; or give
  --from / --to), e.g. ../shared/data/translation/tatoeba.en-fr.jsonl
- summarization: `document`, `summary`, e.g. xsum.dev300.jsonl
- qa: `context`, `question`, `answers` (a list of accepted answers), e.g. squad.dev300.jsonl

Output: the predictions as JSONL (each input object plus `prediction`) and a JSON summary (metrics,
model, prompt style, example count, time).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hallmark.errors import HallmarkError
from hallmark.model import Model
from hallmark.tasks import metrics
from hallmark.tasks.api import answer, summarize, translate
from hallmark.tasks.languages import language_code
from hallmark.tasks.prompts import chosen_style

TASKS = ("translation", "summarization", "qa")
REQUIRED = {
    "translation": ("source", "reference"),
    "summarization": ("document", "summary"),
    "qa": ("context", "question", "answers"),
}


class EvalDataError(HallmarkError, ValueError):
    """An evaluation file that cannot be read or lacks the task's fields."""


def load_examples(task: str, path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The first `limit` examples of a JSONL file, checked for the task's fields."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EvalDataError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EvalDataError(f"cannot read {path}: {e}") from None
    examples = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ex = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalDataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(ex, dict):
            raise EvalDataError(f"{path}:{n}: each line must be a JSON object")
        missing = [f for f in REQUIRED[task] if f not in ex]
        if missing:
            raise EvalDataError(
                f"{path}:{n}: missing field {', '.join(missing)} (a {task} example needs "
                f"{', '.join(REQUIRED[task])})"
            )
        if task == "qa" and not (isinstance(ex["answers"], list) and ex["answers"]):
            raise EvalDataError(f"{path}:{n}: 'answers' must be a non-empty list of strings")
        examples.append(ex)
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise EvalDataError(f"{path} holds no examples")
    return examples


def predict(
    task: str,
    examples: Sequence[dict[str, Any]],
    model: Model,
    style: str | None = None,
    source: str | None = None,
    target: str | None = None,
    progress: bool = True,
    **sampling: Any,
) -> list[str]:
    """The model's output for each example, batched."""
    if task == "translation":
        preds = [""] * len(examples)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, ex in enumerate(examples):
            src = language_code(source or ex.get("source_lang") or _need("source_lang", "--from"))
            tgt = language_code(target or ex.get("target_lang") or _need("target_lang", "--to"))
            groups.setdefault((src, tgt), []).append(i)
        for (src, tgt), idx in groups.items():
            # One source per line: translate() keeps the line alignment.
            text = "\n".join(" ".join(examples[i]["source"].split()) for i in idx)
            out = translate(text, tgt, src, model=model, style=style, progress=progress, **sampling)
            for i, line in zip(idx, out.text.split("\n"), strict=True):
                preds[i] = line
        return preds
    if task == "summarization":
        results = summarize(
            [ex["document"] for ex in examples],
            "short",
            model=model,
            style=style,
            progress=progress,
            **sampling,
        )
    elif task == "qa":
        results = answer(
            [ex["question"] for ex in examples],
            [ex["context"] for ex in examples],
            model=model,
            style=style,
            progress=progress,
            **sampling,
        )
    else:
        raise EvalDataError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    assert isinstance(results, list)
    return [r.text for r in results]


def _need(field: str, flag: str) -> str:
    raise EvalDataError(f"a translation example has no '{field}': add it to the file or pass {flag}")


def score(task: str, examples: Sequence[dict[str, Any]], predictions: Sequence[str]) -> dict[str, float]:
    if task == "translation":
        return metrics.bleu_chrf(predictions, [ex["reference"] for ex in examples])
    if task == "summarization":
        return metrics.rouge(predictions, [ex["summary"] for ex in examples])
    return metrics.squad(predictions, [ex["answers"] for ex in examples])


def evaluate(
    task: str,
    data: str | Path,
    model: Model,
    limit: int | None = None,
    style: str | None = None,
    out: str | Path | None = None,
    source: str | None = None,
    target: str | None = None,
    progress: bool = True,
    **sampling: Any,
) -> dict[str, Any]:
    """Run and score `task` on a JSONL file; write predictions and summary next to `out` (a prefix)."""
    if task not in TASKS:
        raise EvalDataError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    examples = load_examples(task, data, limit)
    style = chosen_style(task, model, style)
    t0 = time.perf_counter()
    predictions = predict(task, examples, model, style, source, target, progress, **sampling)
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "task": task,
        "data": str(data),
        "examples": len(examples),
        "model": model.name,
        "style": style,
        "metrics": score(task, examples, predictions),
        "empty_predictions": sum(1 for p in predictions if not p.strip()),
        "seconds": round(seconds, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    if out is not None:
        prefix = Path(out)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        pred_path = prefix.with_name(prefix.name + ".predictions.jsonl")
        with pred_path.open("w", encoding="utf-8") as f:
            for ex, pred in zip(examples, predictions, strict=True):
                f.write(json.dumps({**ex, "prediction": pred}, ensure_ascii=False) + "\n")
        summary_path = prefix.with_name(prefix.name + ".summary.json")
        summary["predictions_file"] = str(pred_path)
        summary_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        summary["summary_file"] = str(summary_path)
    return summary
