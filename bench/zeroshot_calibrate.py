"""Build the zero-shot detector's shipped calibration, src/hallmark/zeroshot/calibration.npz.

Scores human texts of four domains (bench/zeroshot_data.calibration_texts: BBC news, Wikipedia,
19th-century novels, people's answers to instructions) with both shipped models, computes every
statistic at every calibrated length each text reaches, and builds the `Calibration`
(hallmark.zeroshot.calibration): per length, half the texts fix each feature's center and scale,
the other half is the null sample of the combined score. No machine text is used.

    python bench/zeroshot_calibrate.py                 # about 25 minutes on 2 cores from an empty cache
    python bench/zeroshot_calibrate.py --per-domain 200 --out /tmp/c.npz    # a quick one
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
from pathlib import Path

import zeroshot_data as data
from zeroshot_scores import MAX_TOKENS, ScoreCache, features_by_length

import hallmark
from hallmark.zeroshot.calibration import LENGTHS, SHIPPED, Calibration, Scorer
from hallmark.zeroshot.statistics import STATISTICS

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
ALL_FEATURES = [f"{m}:{s}" for m in MODELS for s in STATISTICS]
# The features the shipped detector averages, chosen by bench/experiments/zeroshot_combinations.py
# as the equal-weight subset with the best worst-file AUROC on half of each detection file's pairs
# (0.909), then checked on the other half (0.872) and leave-one-file-out: SmolLM2's log-likelihood
# (AUROC 0.99 on gpt-3.5 text, 0.78 on GPT-2's) and gemma's single-model Binoculars ratio (0.98 on
# GPT-2 stories, 0.85 on gpt-4's). Over all pairs its worst file is 0.886, against 0.888 with gemma's
# Fast-DetectGPT instead (a tie), 0.864 for all ten features and 0.860 for Fast-DetectGPT alone.
FEATURES = ["smollm2-135m-instruct:log_likelihood", "gemma-3-270m:binoculars"]


def scorers_and_caches(threads: int | None = None) -> tuple[list[Scorer], dict[str, ScoreCache]]:
    scorers, caches = [], {}
    for name in MODELS:
        model = hallmark.load(name, n_threads=threads, watermark=None, policy="off")
        scorers.append(Scorer(name, model.fingerprint, Path(model.path).stat().st_size))
        caches[name] = ScoreCache(model, MAX_TOKENS)
    return scorers, caches


def build(
    scorers: list[Scorer], caches: dict[str, ScoreCache], features: list[str], per_domain: int
) -> Calibration:
    """The calibration of `features` on `per_domain` human texts of each calibration domain."""
    texts = data.calibration_texts(per_domain)
    for cache in caches.values():
        for domain, items in texts.items():
            cache.score_all(items, f"calibration {domain}")
    human = [(t, features_by_length(t, caches, LENGTHS)) for items in texts.values() for t in items]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True
    ).stdout.strip()
    info = {
        "built": datetime.date.today().isoformat(),
        "commit": commit,
        "command": f"python bench/zeroshot_calibrate.py --per-domain {per_domain}",
        "domains": {domain: len(items) for domain, items in texts.items()},
        "sources": "shared/data: detection/human_news_bbc.jsonl, finetune/qa/squad.train10k.jsonl contexts, "
        "finetune/pretrain/gutenberg_en.train.txt, finetune/chat/dolly.sample5k.jsonl answers",
    }
    return Calibration.build(scorers, features, human, info)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-domain", type=int, default=250, help="human texts per domain")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(SHIPPED))
    args = ap.parse_args()
    scorers, caches = scorers_and_caches(args.threads)
    cal = build(scorers, caches, FEATURES, args.per_domain)
    cal.save(args.out)
    print(f"calibration {cal.calibration_id}: lengths {cal.lengths}; {cal.info['texts_per_length']}")


if __name__ == "__main__":
    main()
