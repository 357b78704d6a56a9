"""Train the request policy's classifier head and write it into the package.

Data: ../shared/data/policy/train.jsonl (MAPPING.md there has the label rules) plus, with --extra
(the default), bench/data/policy_extra.jsonl: 317 requests written for hallmark in other phrasings
(benign writing in one's own voice, questions about misinformation and phishing, labelled fiction and
satire, role-play, disinformation and impersonation requests that follow no template). The dev split
is never read here; bench/policy.py reports it once.

Model (hallmark.policy.classifier): multinomial logistic regression over [all-MiniLM-L6-v2 sentence
vector x EMB_WEIGHT, unigram+bigram TF-IDF], four classes (benign, other_harm, disinformation,
impersonation), classes weighted inversely to their frequency, L2 penalty 1/C. Fitted with scipy's
L-BFGS from zeros: deterministic, no random state at all. The folds of the cross-validation are
seeded (--seed).

Thresholds: 5-fold cross-validation grouped by `group` (a template's claim never straddles folds);
each category's threshold is the one with the best out-of-fold F2 among those that keep the
category's false alarms on benign training rows within --target-frr / 2. Also printed: the same CV
restricted to the public rows, and a CV grouped by template family (every row of one template in one
fold), which measures how much the head leans on template wording.

    python bench/train_policy.py                  # ~10 minutes on 2 cores (the encoder dominates)
    python bench/train_policy.py --no-extra       # the shared training split alone (ablation)
    python bench/train_policy.py --cache /tmp/policy-emb   # keep the sentence vectors between runs

Writes src/hallmark/policy/head.npz and bench/results/policy_train.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from build_policy_encoder import write_npz  # the same byte-for-byte reproducible .npz writer
from scipy.optimize import minimize
from scipy.special import logsumexp

from hallmark.policy.classifier import HEAD_PATH, LABELS
from hallmark.policy.encoder import MINILM_DIR, SentenceEncoder
from hallmark.policy.features import NgramVectorizer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "policy"
EXTRA = ROOT / "bench" / "data" / "policy_extra.jsonl"
RESULTS = ROOT / "bench" / "results"
CATS = ("disinformation", "impersonation")
C_DEFAULT = 4.0
# The sentence vector is unit length, as is the TF-IDF vector; weighting the sentence vector up lets
# the L2 penalty treat its 384 dense dimensions on a par with the n-grams (chosen by grouped CV).
EMB_WEIGHT = 2.0


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def labels_of(rows: list[dict]) -> np.ndarray:
    return np.array([LABELS.index(r["label"]) for r in rows])


def embed(texts: list[str], cache: Path | None) -> np.ndarray:
    """Sentence vectors from the shipped encoder (the very code that screens requests)."""
    key = hashlib.sha256("\0".join(texts).encode() + (MINILM_DIR / "encoder.npz").read_bytes()).hexdigest()[
        :16
    ]
    if cache is not None and (cache / f"{key}.npy").exists():
        return np.load(cache / f"{key}.npy")
    t = time.time()
    out = SentenceEncoder().encode(texts)
    print(f"  encoded {len(texts)} texts in {time.time() - t:.0f} s", file=sys.stderr)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"{key}.npy", out)
    return out


# -- the model ---------------------------------------------------------------------------------------
def features(vec: NgramVectorizer, texts: list[str], emb: np.ndarray) -> np.ndarray:
    return np.hstack([emb * EMB_WEIGHT, vec.transform(texts)])


def fit_softmax(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression, balanced class weights, penalty 0.5*|W|^2, loss C*sum(w*CE):
    scikit-learn's LogisticRegression(C, class_weight='balanced') objective, by L-BFGS from zeros."""
    n, d = x.shape
    k = len(LABELS)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    sample_w = (n / (k * np.maximum(counts, 1)))[y]
    onehot = np.eye(k)[y]
    x64 = x.astype(np.float64)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: d * k].reshape(d, k), theta[d * k :]
        z = x64 @ w + b
        lse = logsumexp(z, axis=1)
        loss = c * float(sample_w @ (lse - (z * onehot).sum(1))) + 0.5 * float((w * w).sum())
        g = (np.exp(z - lse[:, None]) - onehot) * (c * sample_w)[:, None]
        return loss, np.concatenate([(x64.T @ g + w).ravel(), g.sum(0)])

    res = minimize(objective, np.zeros(d * k + k), jac=True, method="L-BFGS-B", options={"maxiter": 5000})
    return res.x[: d * k].reshape(d, k).astype(np.float32), res.x[d * k :].astype(np.float32)


def predict(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    z = x @ w + b
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


def fold_ids(groups: list[str], k: int, seed: int) -> np.ndarray:
    unique = sorted(set(groups))
    rng = np.random.default_rng(seed)
    rng.shuffle(unique)
    fold_of = {g: i % k for i, g in enumerate(unique)}
    return np.array([fold_of[g] for g in groups])


def cross_val(
    rows: list[dict], emb: np.ndarray, groups: list[str], c: float, k: int, seed: int
) -> np.ndarray:
    y = labels_of(rows)
    folds = fold_ids(groups, k, seed)
    texts = [r["text"] for r in rows]
    out = np.zeros((len(rows), len(LABELS)), dtype=np.float32)
    for f in range(k):
        tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        vec = NgramVectorizer.fit([texts[i] for i in tr])
        w, b = fit_softmax(features(vec, [texts[i] for i in tr], emb[tr]), y[tr], c)
        out[te] = predict(w, b, features(vec, [texts[i] for i in te], emb[te]))
    return out


# -- decisions and metrics (as the policy decides: a category fires at its threshold) ---------------
def decide(probs: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """Predicted label index per row: the fired category with the higher score, else benign (0)."""
    cols = [LABELS.index(c) for c in CATS]
    s = probs[:, cols]
    fire = s >= np.array([thresholds[c] for c in CATS])
    best = np.argmax(np.where(fire, s, -1.0), axis=1)
    return np.where(fire.any(1), np.array(cols)[best], 0)


def prf(tp: int, fp: int, fn: int) -> dict:
    """Precision, recall and F1 of one category (0 where undefined), and its count of positives."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
        "n": tp + fn,
    }


def metrics(pred: np.ndarray, y: np.ndarray) -> dict:
    out: dict = {}
    for cat in CATS:
        c = LABELS.index(cat)
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        out[cat] = prf(tp, fp, fn)
    benign = y == 0
    out["false_refusal_rate"] = round(float((pred[benign] > 0).mean()) if benign.any() else 0.0, 4)
    out["n_benign"] = int(benign.sum())
    return out


def choose_thresholds(probs: np.ndarray, y: np.ndarray, target: float) -> dict[str, float]:
    """Per category, the threshold (0.05 steps) with the best out-of-fold F2 among those whose false
    alarms on benign rows stay within target/2 (the two categories share the false-refusal budget).

    F2 rather than F1: the goal is recall (at least 0.90) within a false-refusal budget, and F1 chose
    thresholds of 0.65 that left impersonation recall at 0.85 with false refusals at 0.8%, far inside
    the budget; F2 still weighs precision, so a category does not fire on every harmful request."""
    out = {}
    for cat in CATS:
        c = LABELS.index(cat)
        best = (-1.0, 0.95)
        for t in np.round(np.arange(0.05, 0.96, 0.05), 2):
            fired = probs[:, c] >= t
            if fired[y == 0].mean() > target / 2:
                continue
            tp = float((fired & (y == c)).sum())
            f1 = 5 * tp / (fired.sum() + 4 * (y == c).sum()) if tp else 0.0  # F2 = 5tp / (5tp+4fn+fp)
            if f1 > best[0]:
                best = (f1, float(t))
        out[cat] = best[1]
    return out


def template_family(r: dict) -> str:
    return "T:" + r["source_category"].split(" (")[0] if r.get("origin") == "template" else r["group"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--extra", action=argparse.BooleanOptionalAction, default=True, help="add policy_extra.jsonl"
    )
    ap.add_argument("--c", type=float, default=C_DEFAULT, help="inverse L2 strength")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    ap.add_argument("--target-frr", type=float, default=0.02, help="CV false refusals allowed on benign rows")
    ap.add_argument("--cache", type=Path, help="a directory to keep sentence vectors in between runs")
    ap.add_argument("--out", type=Path, default=HEAD_PATH)
    ap.add_argument("--dry-run", action="store_true", help="print the CV results; write nothing")
    args = ap.parse_args()

    train = read_jsonl(DATA / "train.jsonl")
    extra = read_jsonl(EXTRA) if args.extra else []
    rows = train + extra
    n_train = len(train)
    texts = [r["text"] for r in rows]
    y = labels_of(rows)
    print(f"training rows: {n_train} (train split) + {len(extra)} (extra)", file=sys.stderr)
    emb = embed(texts, args.cache)

    report: dict = {
        "settings": {
            "c": args.c,
            "emb_weight": EMB_WEIGHT,
            "folds": args.folds,
            "seed": args.seed,
            "target_frr": args.target_frr,
            "extra_rows": len(extra),
            "train_rows": n_train,
        }
    }
    cv = cross_val(rows, emb, [r["group"] for r in rows], args.c, args.folds, args.seed)
    thresholds = choose_thresholds(cv[:n_train], y[:n_train], args.target_frr)
    tcv = cross_val(rows, emb, [template_family(r) for r in rows], args.c, args.folds, args.seed)
    public = np.array([r.get("origin") == "public" for r in train])
    yt = y[:n_train]
    report["thresholds"] = thresholds
    report["cv"] = {
        "grouped": metrics(decide(cv[:n_train], thresholds), yt),
        "grouped_public_rows": metrics(decide(cv[:n_train][public], thresholds), yt[public]),
        "template_family": metrics(decide(tcv[:n_train], thresholds), yt),
    }
    for name, m in report["cv"].items():
        cells = "  ".join(
            f"{c[:5]} P {m[c]['precision']:.2f} R {m[c]['recall']:.2f} F1 {m[c]['f1']:.2f}" for c in CATS
        )
        print(f"{name:20s} {cells}  false refusals {m['false_refusal_rate']:.3f}")
    print(f"thresholds: {thresholds}")
    if args.dry_run:
        return

    vec = NgramVectorizer.fit(texts)
    w, b = fit_softmax(features(vec, texts, emb), y, args.c)
    encoder_sha = hashlib.sha256((MINILM_DIR / "encoder.npz").read_bytes()).hexdigest()
    meta = {
        "labels": list(LABELS),
        "model": "softmax regression over [MiniLM-L6 sentence vector, word 1-2-gram TF-IDF]",
        "emb_weight": EMB_WEIGHT,
        "thresholds": thresholds,
        "encoder_sha256": encoder_sha,
        "trained_on": {"train_split": n_train, "extra": len(extra)},
        "settings": report["settings"],
    }
    dim = emb.shape[1]
    write_npz(
        args.out,
        {
            "meta": np.array(json.dumps(meta, sort_keys=True)),
            "vocabulary": np.array(vec.vocabulary),
            "idf": vec.idf,
            "w_emb": w[:dim],
            "w_ngram": w[dim:],
            "bias": b,
        },
    )
    head_sha = hashlib.sha256(args.out.read_bytes()).hexdigest()
    report["head"] = {
        "path": str(args.out.relative_to(ROOT)),
        "sha256": head_sha,
        "bytes": args.out.stat().st_size,
        "vocabulary": len(vec.vocabulary),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "policy_train.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB, sha256 {head_sha[:12]})")


if __name__ == "__main__":
    main()
