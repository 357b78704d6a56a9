"""Which statistics, from which scoring model, the zero-shot detector should combine.

Every candidate is the equal-weight mean of some features' z-scores (each feature centred and scaled
on the human calibration texts, as hallmark.zeroshot.calibration does), so no candidate is fitted to
machine text; what is chosen here is only the subset. To keep that choice honest it is made on one
half of each detection file's pairs (split by a hash of the human text) and reported on the other
half as well, and leave-one-file-out: a subset that wins only on the half or the files it was chosen
on is not a result.

Reads the score cache that `bench/zeroshot_scores.py` fills (texts not in it are skipped).

    python bench/experiments/zeroshot_combinations.py
    python bench/experiments/zeroshot_combinations.py --chat-context "Write a short piece of text."
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import zeroshot_data as data  # noqa: E402
from zeroshot import auroc, tpr_at  # noqa: E402
from zeroshot_scores import MAX_TOKENS, ScoreCache, _key, features_by_length  # noqa: E402

import hallmark  # noqa: E402
from hallmark.zeroshot.calibration import LENGTHS, Calibration, Scorer  # noqa: E402
from hallmark.zeroshot.detector import count_words  # noqa: E402
from hallmark.zeroshot.statistics import STATISTICS  # noqa: E402

MODELS = {"smollm2-135m-instruct": "S", "gemma-3-270m": "G"}
CHAT = "smollm2-135m-instruct@chat"  # SmolLM2 scoring each text as its chat answer (--chat-context)
ABBREV = {
    "log_likelihood": "LL",
    "log_rank": "LR",
    "entropy": "EN",
    "fast_detectgpt": "FDG",
    "binoculars": "BIN",
    "lrr": "LRR",
    "curvature": "CUR",
}


def short(feature: str) -> str:
    model, statistic = feature.split(":")
    return f"{MODELS.get(model, 'Sc')}.{ABBREV[statistic]}"


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chat-context", metavar="REQUEST", help="add SmolLM2 scoring as chat answer (Sc.*)")
    args = ap.parse_args()
    caches = {}
    for name in MODELS:
        model = hallmark.load(name, n_threads=1, watermark=None, policy="off")
        caches[name] = ScoreCache(model, MAX_TOKENS)
    if args.chat_context:
        model = caches["smollm2-135m-instruct"].model
        context = model.chat_prompt_ids([{"role": "user", "content": args.chat_context}])
        caches[CHAT] = ScoreCache(model, MAX_TOKENS, context)

    def cached(texts: list[str]) -> list[str]:
        return [t for t in texts if all(_key(t) in c.stats for c in caches.values())]

    features = [f"{m}:{s}" for m in caches for s in STATISTICS]
    calibration_texts = [t for items in data.calibration_texts(250).values() for t in cached(items)]
    human = [(t, features_by_length(t, caches, LENGTHS)) for t in calibration_texts]
    scorers = [Scorer(n, "", 0) for n in caches]
    cal = Calibration.build(scorers, features, human, {}, min_texts=50)
    print(f"calibration texts {len(calibration_texts)}; lengths {cal.lengths}")

    def z_matrix(texts: list[str], with_index: bool = False):
        rows, indices = [], []
        for text in texts:
            by_length = features_by_length(text, caches, cal.lengths)
            if by_length:
                indices.append(cal.lengths.index(max(by_length)))
                rows.append(cal.z_scores(by_length[max(by_length)], indices[-1]))
        return (np.array(rows), indices) if with_index else np.array(rows)

    sets = {}
    for s in data.machine_sets(150):
        pairs = [
            (h, m)
            for h, m in zip(s.human, s.machine, strict=True)
            if cached([h, m]) == [h, m] and min(count_words(h), count_words(m)) >= LENGTHS[0]
        ]
        if len(pairs) < 40:
            continue  # not scored yet
        half = np.array([hashlib.sha256(h.encode()).digest()[0] & 1 for h, _ in pairs])
        sets[s.name] = (z_matrix([h for h, _ in pairs]), z_matrix([m for _, m in pairs]), half)
        print(f"{s.name}: {len(pairs)} pairs", flush=True)
    heldback = {s.name: z_matrix(cached(s.human), True) for s in data.heldback_human_sets(100)}
    for s in data.machine_sets(150)[:2]:  # news and stories (the chatgpt files share these stories)
        heldback[f"{s.name} human"] = z_matrix(cached(s.human), True)

    candidates = {short(f): [i] for i, f in enumerate(features)}
    names = [short(f) for f in features]
    for r in (2, 3):
        for combo in itertools.combinations(range(len(features)), r):
            if any(names[i].endswith("EN") for i in combo):
                continue
            candidates["+".join(names[i] for i in combo)] = list(combo)
            if r <= 3:  # the largest z-score instead of the mean: whichever statistic fires
                candidates["max(" + ",".join(names[i] for i in combo) + ")"] = [-1, *combo]
    candidates["all"] = list(range(len(features)))
    candidates["all but EN"] = [i for i, n in enumerate(names) if not n.endswith("EN")]

    def score(matrix: np.ndarray, idx: list[int]) -> np.ndarray:
        if idx[0] == -1:
            return matrix[:, idx[1:]].max(axis=1)
        return matrix[:, idx].mean(axis=1)

    rows = []
    for label, idx in candidates.items():
        row = {"label": label}
        for name, (h, m, half) in sets.items():
            for part in (0, 1):
                row[(name, part)] = auroc(score(h[half == part], idx), score(m[half == part], idx))
            row[(name, "all")] = auroc(score(h, idx), score(m, idx))
            row[(name, "tpr")] = tpr_at(score(h, idx), score(m, idx))
        row["min_a"] = min(row[(n, 0)] for n in sets)
        row["min_b"] = min(row[(n, 1)] for n in sets)
        row["min"] = min(row[(n, "all")] for n in sets)
        row["mean_tpr"] = float(np.mean([row[(n, "tpr")] for n in sets]))
        rows.append(row)
    rows.sort(key=lambda r: -r["min_a"])
    print("\nchosen on half A (min AUROC over files), reported on half B and all:")
    header = f"{'candidate':34} {'minA':>5} {'minB':>5} {'min':>5} {'TPR1%':>5} | " + " ".join(
        f"{n[:12]:>12}" for n in sets
    )
    print(header)
    for row in rows[:25] + [r for r in rows if r["label"] in ("all", "all but EN")]:
        print(
            f"{row['label']:34} {row['min_a']:.3f} {row['min_b']:.3f} {row['min']:.3f} "
            f"{row['mean_tpr']:.3f} | "
            + " ".join(f"{row[(n, 'all')]:.3f}/{row[(n, 'tpr')]:.2f}" for n in sets)
        )
    print("\nsingle features:")
    for row in rows:
        if "+" not in row["label"] and row["label"] not in ("all", "all but EN"):
            print(f"{row['label']:34} " + " ".join(f"{row[(n, 'all')]:.3f}" for n in sets))

    print("\nleave one file out: the best subset by min AUROC on the other files, scored on the left-out one")
    for left in sets:
        best = max(rows, key=lambda r: min(r[(n, "all")] for n in sets if n != left))
        print(f"  {left:24} best on others {best['label']:30} -> {best[(left, 'all')]:.3f}")

    print("\nheld-back human sets and the files' human texts: share flagged at p <= 1% (expect <= 1%)")
    for label in ("all", "all but EN", *[r["label"] for r in rows[:8] if not r["label"].startswith("max")]):
        idx = candidates[label]
        # Centres and scales are per feature, so the subset's z-scores are the 8-feature ones.
        sub = Calibration.build(scorers, [features[i] for i in idx], human, {}, min_texts=50)
        shares = []
        for name, (z, indices) in heldback.items():
            p = [sub.p_value(float(row[idx].mean()), i) for row, i in zip(z, indices, strict=True)]
            shares.append(f"{name} {np.mean(np.array(p) <= 0.01):.3f}")
        print(f"  {label:34} " + ", ".join(shares))


if __name__ == "__main__":
    main()
