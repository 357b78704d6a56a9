"""Zero-shot detection benchmark: how well each statistic, each scoring model and the shipped
combination tell machine text from human text, and whether the stated false-positive rate holds.

Sets (bench/zeroshot_data.py): the five machine-text files of ../shared/data/detection with their
human pairs (GPT-2-xl on XSum news and WritingPrompts stories; text-davinci-003, gpt-3.5-turbo and
gpt-4 on the same stories), scored whole as Fast-DetectGPT does (each machine text starts with its
human pair's first ~30 tokens); unwatermarked continuations of XSum dev articles by both shipped
models against the articles' own continuations (prompt words left out of both); and human-only sets
the calibration never saw (XSum dev news, SQuAD dev Wikipedia, two held-out novels, Python's
docstrings).

Per set and method (each statistic of each scoring model, each model's four statistics combined,
and the shipped combination of all eight): AUROC and TPR at 1% FPR (threshold at the 99th
percentile of the set's own human texts), with 95% bootstrap intervals; then the shipped
detector's own decision at --zs-fpr 1% (the calibrated, conformal threshold): the share of each
set's human texts it flags (false positives) and of machine texts (true positives); AUROC of the
combination by length; scoring speed (tokens/s, both models, one thread each... as run).
Texts are compared at the longest calibrated length they reach, as the detector does.

    python bench/zeroshot_scores.py --model smollm2-135m-instruct   # (optional) fill the score cache
    python bench/zeroshot.py          # about 40 minutes on 2 cores from an empty cache

Writes bench/results/zeroshot.json, bench/results/zeroshot.md and bench/results/zeroshot_roc.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zeroshot_data as data
from benchmark_tables import zeroshot_table
from scipy.stats import rankdata
from zeroshot_calibrate import ALL_FEATURES, MODELS, build, scorers_and_caches
from zeroshot_scores import CACHE, ScoreCache, features_by_length

import hallmark
from hallmark.zeroshot.calibration import LENGTHS, SHIPPED, Calibration
from hallmark.zeroshot.detector import word_prefix
from hallmark.zeroshot.statistics import STATISTICS

RESULTS = Path(__file__).parent / "results"
SHORT = {"smollm2-135m-instruct": "smollm2", "gemma-3-270m": "gemma"}
BOOTSTRAP = 1000
PROMPT_WORDS = 30
GENERATED_TOKENS = 224  # about 170 words: most reach the calibration's 160-word length


# -- metrics ----------------------------------------------------------------------------------------
def auroc(human: np.ndarray, machine: np.ndarray) -> float:
    """P(machine score > human score), ties counted half (Mann-Whitney U / (n0 n1))."""
    ranks = rankdata(np.concatenate([human, machine]))
    n0, n1 = len(human), len(machine)
    return float((ranks[n0:].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def tpr_at(human: np.ndarray, machine: np.ndarray, fpr: float = 0.01) -> float:
    """Share of machine texts above the (1 - fpr) quantile of the human scores (strictly above, so
    at most fpr of the human texts are)."""
    threshold = np.quantile(human, 1 - fpr, method="higher")
    return float(np.mean(machine > threshold))


def with_ci(metric: Any, human: np.ndarray, machine: np.ndarray, rng: np.random.Generator) -> dict:
    """The metric and its 95% percentile-bootstrap interval (human and machine resampled apart)."""
    draws = [
        metric(
            human[rng.integers(0, len(human), len(human))],
            machine[rng.integers(0, len(machine), len(machine))],
        )
        for _ in range(BOOTSTRAP)
    ]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"value": round(metric(human, machine), 4), "ci": [round(float(lo), 4), round(float(hi), 4)]}


# -- texts ------------------------------------------------------------------------------------------
def shipped_model_sets(n: int) -> list[data.LabelledSet]:
    """Unwatermarked continuations of XSum dev articles' first words by each shipped model, against
    the articles' own continuations (cached: generating takes a few minutes per model)."""
    docs = [r["document"].strip() for r in data._jsonl(data.DATA / "summarization/xsum.dev300.jsonl")]
    docs = [d for d in docs if len(d.split()) >= PROMPT_WORDS + 100][:n]
    out = []
    for name in MODELS:
        path = CACHE / f"generations-{name}-{n}.json"
        if path.exists():
            generated = json.loads(path.read_text())
        else:
            model = hallmark.load(name, watermark=None, policy="off", max_sequences=16)
            print(
                f"  [{name}] generating {len(docs)} continuations, 16 at a time", file=sys.stderr, flush=True
            )
            prompts = [word_prefix(doc, PROMPT_WORDS) for doc in docs]
            results = model.generate_batch(
                prompts, max_tokens=GENERATED_TOKENS, temperature=0.8, top_p=0.95, seed=1
            )
            generated = [r.text for r in results]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(generated))
            model.close()
        human = [doc[len(word_prefix(doc, PROMPT_WORDS)) :].strip() for doc in docs]
        out.append(data.LabelledSet(f"xsum_{SHORT[name]}", human, generated))
    return out


def docstring_set() -> data.LabelledSet:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.human_text import human_passages

    return data.LabelledSet("python_docstrings", [t.strip() for t in human_passages()], [])


# -- scoring ----------------------------------------------------------------------------------------
def method_scores(
    cal: Calibration, full: Calibration, texts: list[str], caches: dict[str, ScoreCache]
) -> tuple[dict[str, np.ndarray], np.ndarray, list[int]]:
    """Per method, each text's score at its longest calibrated length: every feature's z-score and
    each model's own features averaged (from `full`, the calibration of all features on the same
    human texts), the shipped combination (`cal`) and the shipped combination without each of its
    features in turn ("-feature"); and the shipped detector's p-value of each text and the length
    it was compared at."""
    methods: dict[str, list[float]] = {}
    p_values, lengths = [], []
    for text in texts:
        by_length = features_by_length(text, caches, cal.lengths)
        if not by_length:
            continue
        length = max(by_length)
        z = dict(
            zip(full.features, full.z_scores(by_length[length], full.lengths.index(length)), strict=True)
        )
        for feature, value in z.items():
            methods.setdefault(feature, []).append(value)
        for model in MODELS:
            own = [z[f"{model}:{s}"] for s in STATISTICS]
            methods.setdefault(f"{model}:all", []).append(float(np.mean(own)))
        methods.setdefault("all", []).append(float(np.mean(list(z.values()))))
        index = cal.lengths.index(length)
        score = cal.combined(by_length[length], index)
        methods.setdefault("shipped", []).append(score)
        for left_out in cal.features:
            rest = [z[f] for f in cal.features if f != left_out]
            methods.setdefault(f"shipped -{left_out}", []).append(float(np.mean(rest)))
        p_values.append(cal.p_value(score, index))
        lengths.append(length)
    return {k: np.array(v) for k, v in methods.items()}, np.array(p_values), lengths


def by_length_auroc(cal: Calibration, s: data.LabelledSet, caches: dict[str, ScoreCache]) -> dict[int, float]:
    """AUROC of the shipped combination with every text cut to each length it reaches."""
    out = {}
    for length in (48, 96, 128, 192):
        scores = []
        for texts in (s.human, s.machine):
            values = []
            for text in texts:
                by_length = features_by_length(text, caches, [b for b in cal.lengths if b <= length])
                if length in by_length:
                    values.append(cal.combined(by_length[length], cal.lengths.index(length)))
            scores.append(np.array(values))
        if min(len(scores[0]), len(scores[1])) >= 30:
            out[length] = round(auroc(scores[0], scores[1]), 4)
    return out


def scoring_speed(caches: dict[str, ScoreCache], texts: list[str]) -> dict[str, dict]:
    """Tokens per second of `ZeroShotDetector`-style scoring (one forward pass and the statistics)."""
    out = {}
    for name, cache in caches.items():
        model = cache.model
        ids = [model.tokenize(word_prefix(t, max(LENGTHS))) for t in texts]
        start = time.perf_counter()
        for x in ids:
            model.token_statistics(x)
        seconds = time.perf_counter() - start
        tokens = sum(len(x) for x in ids)
        out[name] = {
            "tokens": tokens,
            "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1),
        }
    return out


def roc_plot(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3.4), sharey=True)
    for ax, (set_name, methods) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        for method, (human, machine) in methods.items():
            thresholds = np.unique(np.concatenate([human, machine]))[::-1]
            fpr = [np.mean(human >= t) for t in thresholds]
            tpr = [np.mean(machine >= t) for t in thresholds]
            ax.plot([0, *fpr, 1], [0, *tpr, 1], label=method, lw=1.2)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls=":")
        ax.set_xscale("log")
        ax.set_xlim(1e-3, 1)
        ax.set_title(set_name, fontsize=9)
        ax.set_xlabel("false-positive rate")
    np.atleast_1d(axes)[0].set_ylabel("true-positive rate")
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-file", type=int, default=150, help="pairs per detection file")
    ap.add_argument("--per-set", type=int, default=100, help="texts per held-back human set")
    ap.add_argument("--generations", type=int, default=80, help="continuations per shipped model")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--calibration", default=str(SHIPPED))
    ap.add_argument("--out", default=str(RESULTS / "zeroshot.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cal = Calibration.load(args.calibration)
    labelled = data.machine_sets(args.per_file) + shipped_model_sets(args.generations)
    human_only = [*data.heldback_human_sets(args.per_set), docstring_set()]
    scorers, caches = scorers_and_caches(args.threads)
    full = build(scorers, caches, ALL_FEATURES, sum(cal.info["domains"].values()) // len(cal.info["domains"]))
    assert full.lengths == cal.lengths, "the shipped calibration was built from other texts: rebuild it"
    for cache in caches.values():
        for s in labelled + human_only:
            cache.score_all(s.human + s.machine, s.name)

    # TPR at 1% FPR needs several hundred human texts: every human text of every set, pooled.
    pool = list(dict.fromkeys(t for s in labelled + human_only for t in s.human))
    pooled, _, _ = method_scores(cal, full, pool, caches)
    pooled_threshold = {m: np.quantile(v, 0.99, method="higher") for m, v in pooled.items()}
    sets, metrics, decisions, lengths, curves = [], {}, {}, {}, {}
    for s in labelled + human_only:
        human, p_human, len_h = method_scores(cal, full, s.human, caches)
        entry = {"name": s.name, "human": len(p_human), "machine": 0, "median_words": int(np.median(len_h))}
        decisions[s.name] = {"human_flagged": int(np.sum(p_human <= 0.01)), "human": len(p_human)}
        if s.machine:
            machine, p_machine, _ = method_scores(cal, full, s.machine, caches)
            entry["machine"] = len(p_machine)
            decisions[s.name].update(machine_flagged=int(np.sum(p_machine <= 0.01)), machine=len(p_machine))
            metrics[s.name] = {
                m: {
                    "auroc": with_ci(auroc, human[m], machine[m], rng),
                    "tpr_1pct": with_ci(tpr_at, human[m], machine[m], rng),
                    "tpr_1pct_pooled": round(float(np.mean(machine[m] > pooled_threshold[m])), 4),
                }
                for m in human
            }
            lengths[s.name] = by_length_auroc(cal, s, caches)
            curves[s.name] = {
                m.replace("-135m-instruct", "").replace("-3-270m", ""): (human[m], machine[m])
                for m in (
                    "shipped",
                    "smollm2-135m-instruct:log_likelihood",
                    "gemma-3-270m:binoculars",
                    "gemma-3-270m:fast_detectgpt",
                )
            }
        sets.append(entry)
    speed = scoring_speed(caches, [t for s in labelled[:2] for t in s.human[:40]])
    results = {
        "recorded": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "settings": {
            "calibration": cal.calibration_id,
            "calibration_info": cal.info,
            "features": cal.features,
            "lengths": cal.lengths,
            "bootstrap": BOOTSTRAP,
            "zs_fpr": 0.01,
            "threads": args.threads,
            "pooled_human_texts": len(pool),
        },
        "sets": sets,
        "metrics": metrics,
        "decisions": decisions,
        "length_auroc": lengths,
        "speed": speed,
    }
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=1) + "\n")
    results = json.loads(out.read_text())  # as the docs will read it (string keys)
    out.with_suffix(".md").write_text(zeroshot_table(results) + "\n")
    roc_plot(curves, out.parent / "zeroshot_roc.png")
    print(zeroshot_table(results))


if __name__ == "__main__":
    main()
