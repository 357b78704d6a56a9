"""Detection without naming the model, and boilerplate: false positives and detection rates.

Measures what `hallmark detect` does when it tests every hypothesis (installed tokenizers x keys x
schemes, Bonferroni-corrected), and what the boilerplate exclusion (exclusion.py) changes:

1. human: the false-positive rate on the human texts of ../shared/data/detection (BBC news, XSum
   and WritingPrompts originals) with all hypotheses, at fpr 0.1%, 1% and 5%;
2. families: human texts inside TEMPLATES (prefix/suffix boilerplate: a Q/A frame, letter and
   e-mail heads, forms, bylines, disclaimers), one family per template, tested under each shipped
   tokenizer, both schemes and several keys, each key on its own (a checker has one key), with no
   exclusion (the old detector), the shipped table, and the batch mode;
3. tpr: watermarked generations (temperature 1.0, 200 tokens) of both models, detected without
   naming the model, with the old spec (no table) and the new one.

    python bench/detect_any.py                 # as recorded (about 30 minutes on 2 busy cores)
    python bench/detect_any.py --quick         # smaller counts, a look
    python bench/detect_any.py --skip-tpr      # no generation: human texts and families only

Writes bench/results/detect_any.json and bench/results/detect_any.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
SCHEMES = ("gumbel", "kgw")
FILL_WORDS = 120  # human text per family member: about 150 tokens, as a short answer or letter
N_TOKENS = 200
ALPHAS = (0.001, 0.01, 0.05)
CONDITIONS = ("none", "table", "reference", "batch")
TABLE_MIN_DOCS = 20  # the corpus table's threshold: 4,900 trigrams, 6.5% of news text's pairs

# (name, prefix, suffix): boilerplate of the kinds a school, newsroom or office checks in bulk.
TEMPLATES: list[tuple[str, str, str]] = [
    ("qa", "Question: {question}\nAnswer: ", ""),
    (
        "letter",
        "Dear Sir or Madam,\n\nI am writing to you regarding the following matter.\n\n",
        "\n\nYours faithfully,\nJ. Smith",
    ),
    (
        "email",
        "From: newsdesk@example.org\nTo: editors@example.org\nSubject: Submission for review\n\n",
        "\n\nBest regards,\nThe News Desk\nSent from my phone",
    ),
    (
        "school_form",
        "Student name: ____________\nCourse: English 101\nAssignment: Essay 3\n"
        "Instructions: answer in your own words, at most 300 words.\n\n",
        "\n\nWord count: ____",
    ),
    (
        "byline",
        "By Staff Reporter | Published 12 March 2019 | Updated 13 March 2019\n\n",
        "\n\nShare this article: Facebook Twitter Email\nRelated Topics",
    ),
    (
        "disclaimer",
        "",
        "\n\nThe views expressed in this article are those of the author and do not necessarily "
        "reflect the official policy or position of the publisher. All rights reserved.",
    ),
    ("report", "## Summary\n\n", "\n\n## Conclusion\n\nFurther work is needed to confirm these findings."),
    (
        "review",
        "Overall rating: 4 out of 5\nReview:\n",
        "\nWould you recommend this product to a friend? Yes",
    ),
    (
        "cover_letter",
        "To whom it may concern,\n\n",
        "\n\nThank you for your time and consideration.\n\nSincerely,\n[Your Name]",
    ),
    (
        "press_release",
        "FOR IMMEDIATE RELEASE\n\n",
        "\n\n###\n\nFor more information, please contact our media office at press@example.com.",
    ),
    (
        "forum",
        "Hi everyone, first time posting here so please be gentle.\n\n",
        "\n\nThanks in advance for any help!\nEdit: fixed formatting",
    ),
    (
        "exam",
        "Answer the following question in your own words. Write in complete sentences.\n\n",
        "\n\nI declare that this work is entirely my own and that I have not used any unauthorised aids.",
    ),
]


# -- data ------------------------------------------------------------------------------------------
def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def human_texts() -> dict[str, list[str]]:
    """The human texts of ../shared/data/detection (as bench/watermark.py reads them)."""
    det = DATA / "detection"
    out = {"bbc_news": [d["text"] for d in _jsonl(det / "human_news_bbc.jsonl")]}
    for name in ("xsum", "writing"):
        out[f"{name}_original"] = json.loads((det / f"{name}_gpt2-xl.raw_data.json").read_text())["original"]
    return out


def _cut(text: str, words: int = FILL_WORDS) -> str:
    return " ".join(text.split()[:words])


def family_texts(per_family: int) -> dict[str, list[str]]:
    """Each template filled with `per_family` human texts (cut to FILL_WORDS words), drawn in turn
    from the pools so that families do not share fillers where the pools allow."""
    human = human_texts()
    pool = [t for texts in zip(*human.values(), strict=False) for t in texts]  # interleaved sources
    squad = list({d["context"]: d for d in _jsonl(DATA / "qa" / "squad.dev300.jsonl")}.values())
    out: dict[str, list[str]] = {}
    at = 0
    for name, prefix, suffix in TEMPLATES:
        texts = []
        for i in range(per_family):
            if name == "qa":  # a question and its answer paragraph, as in PubMed-QA
                row = squad[i % len(squad)]
                texts.append(prefix.format(question=row["question"]) + _cut(row["context"]) + suffix)
            else:
                texts.append(prefix + _cut(pool[at % len(pool)]) + suffix)
                at += 1
        out[name] = texts
    return out


def eval_keys(n: int) -> list:
    from hallmark.watermark.keys import WatermarkKey

    return [
        WatermarkKey(f"eval{i}", f"hallmark-detect-any-eval-key-{i}".encode(), "", None) for i in range(n)
    ]


def corpus_table(tokenizer, min_docs: int = TABLE_MIN_DOCS) -> dict[int, np.ndarray]:
    """The alternative measured and not shipped: a key-independent table of the token n-grams (3 for
    gumbel's 2-token context, 4 for kgw's 3) found in at least `min_docs` of ~9,200 documents of
    public-domain Gutenberg novels (200-word chunks) and Dolly's human-written instructions."""
    docs: list[str] = []
    chunk: list[str] = []
    for line in (DATA / "finetune" / "pretrain" / "gutenberg_en.train.txt").open(encoding="utf-8"):
        if line.strip():
            chunk.append(line.strip())
            if sum(len(c.split()) for c in chunk) >= 200:
                docs.append("\n\n".join(chunk))
                chunk = []
    docs += [
        "\n\n".join(m["content"] for m in d["messages"])
        for d in _jsonl(DATA / "finetune" / "chat" / "dolly.sample5k.jsonl")
    ]
    ids = [np.asarray(tokenizer.tokenize(d, add_special=False, parse_special=False), np.int64) for d in docs]
    table = {}
    for n in (3, 4):
        every = np.concatenate([np.unique(_ngrams(t, n)) for t in ids if t.shape[0] >= n])
        values, counts = np.unique(every, return_counts=True)
        table[n] = values[counts >= min_docs]
    return table


def _ngrams(tokens: np.ndarray, n: int) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    from hallmark.watermark.prf import context_seeds

    return context_seeds(sliding_window_view(tokens, n), np.uint64(0x6E6772616D73))


# -- measurements ------------------------------------------------------------------------------------
def _p(det, tokens: np.ndarray, exclude: np.ndarray) -> float:
    """The detector's p-value for one text (1.0 when too short to decide)."""
    from hallmark.watermark.detect import MIN_TOKENS

    _, scores, _ = det.scored_tokens(tokens, exclude)
    n = scores.shape[0]
    return float(det.scheme.p_value(float(scores.sum()), n)) if n >= MIN_TOKENS else 1.0


def _shared(det, docs: list[np.ndarray]) -> np.ndarray:
    values, counts = np.unique(np.concatenate([det.pair_ids(d) for d in docs]), return_counts=True)
    return values[counts >= 2]


def _table_pairs(det, tokens: np.ndarray, table: dict[int, np.ndarray]) -> np.ndarray:
    """Pair ids of the positions whose (context, token) n-gram is in the table."""
    from hallmark.watermark.detect import contains

    w = det.spec.context_width
    if tokens.shape[0] <= w:
        return np.empty(0, np.uint64)
    frequent = contains(table[w + 1], _ngrams(tokens, w + 1))
    return np.unique(det.scheme.score(tokens).keys[frequent])


def _rates(p: np.ndarray, alphas=ALPHAS) -> dict[str, float]:
    return {str(a): float(np.mean(p < a)) for a in alphas}


def all_detectors(tokenizers, keys) -> list:
    """One detector per hypothesis: every tokenizer x key x scheme (what `detect` tests)."""
    from hallmark.watermark.detect import Detector
    from hallmark.watermark.spec import WatermarkSpec

    return [
        Detector(tok, WatermarkSpec.create(s, k.key_id, tok.fingerprint()), k.secret, model=name)
        for name, tok in tokenizers
        for k in keys
        for s in SCHEMES
    ]


def measure_human(tokenizers, keys) -> dict:
    """FPR on the human texts: one hypothesis (the old default) and all m hypotheses (Bonferroni)."""
    from hallmark.watermark.detect import MultiDetector

    texts = [t for group in human_texts().values() for t in group]
    detectors = all_detectors(tokenizers, keys)
    multi = MultiDetector(detectors)
    t0 = time.perf_counter()
    corrected, raw_best = [], []
    for text in texts:
        r = multi.detect(text, windowed=False)
        corrected.append(r.p_value)
        raw_best.append(r.raw_p_value)
    single = [detectors[0].detect(t).p_value for t in texts]
    return {
        "texts": len(texts),
        "hypotheses": len(detectors),
        "seconds_per_text": (time.perf_counter() - t0) / len(texts),
        "fpr_all_hypotheses": _rates(np.array(corrected)),
        "fpr_all_uncorrected": _rates(np.array(raw_best)),
        "fpr_one_hypothesis": _rates(np.array(single)),
    }


def measure_families(tokenizers, keys, per_family: int) -> dict:
    """Per (family, tokenizer, scheme, key) FPR with each exclusion design; each key on its own."""
    from hallmark.watermark.detect import Detector
    from hallmark.watermark.spec import WatermarkSpec

    families = family_texts(per_family)
    cells = []
    for name, tok in tokenizers:
        t0 = time.perf_counter()
        table = corpus_table(tok)
        print(
            f"  {name}: corpus table {len(table[3])} + {len(table[4])} n-grams", file=sys.stderr, flush=True
        )
        docs = {
            fam: [
                np.asarray(tok.tokenize(t, add_special=False, parse_special=False), np.int64) for t in texts
            ]
            for fam, texts in families.items()
        }
        refs = {
            fam: np.asarray(
                tok.tokenize(pre.replace("{question}", "") + suf, add_special=False, parse_special=False),
                np.int64,
            )
            for fam, pre, suf in TEMPLATES
        }
        for scheme in SCHEMES:
            for k in keys:
                det = Detector(tok, WatermarkSpec.create(scheme, k.key_id, tok.fingerprint()), k.secret)
                for fam, toks in docs.items():
                    shared = _shared(det, toks)
                    ref = det.pair_ids(refs[fam])
                    p = {c: [] for c in CONDITIONS}
                    for t in toks:
                        tab = _table_pairs(det, t, table)
                        p["none"].append(_p(det, t, np.empty(0, np.uint64)))
                        p["table"].append(_p(det, t, tab))
                        p["reference"].append(_p(det, t, ref))
                        p["batch"].append(_p(det, t, shared))
                    cells.append(
                        {
                            "model": name,
                            "scheme": scheme,
                            "key": k.name,
                            "family": fam,
                            **{c: _rates(np.array(v)) for c, v in p.items()},
                        }
                    )
        print(f"  {name}: families in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return {
        "per_family": per_family,
        "keys": len(keys),
        "templates": [t[0] for t in TEMPLATES],
        "summary": summarize_families(cells, per_family),
        "cells": cells,
    }


def summarize_families(cells: list[dict], per_family: int) -> dict:
    """Per condition and level: mean and max FPR over cells, how many cells are above nominal beyond
    binomial noise (a count no more than 1% likely if that cell's texts were independent), and the
    spread of the cells' FPRs over the binomial spread (1 when the texts are as good as independent)."""
    from scipy import stats

    out: dict = {}
    for c in CONDITIONS:
        out[c] = {}
        for a in ("0.01", "0.05"):
            rates = np.array([cell[c][a] for cell in cells])
            bound = stats.binom.isf(0.01, per_family, float(a)) / per_family  # P(rate > bound) <= 1%
            out[c][a] = {
                "mean": float(rates.mean()),
                "max": float(rates.max()),
                "over": int(np.sum(rates > bound)),
                "cells": len(cells),
                "spread": float(rates.std() / np.sqrt(float(a) * (1 - float(a)) / per_family)),
                "per_family_max": {
                    fam: float(max(cell[c][a] for cell in cells if cell["family"] == fam))
                    for fam in dict.fromkeys(cell["family"] for cell in cells)
                },
            }
    return out


def generate(per_model: int, n_tokens: int, key, schemes: tuple[str, ...]) -> dict[str, list[str]]:
    """Watermarked generations (temperature 1.0) of each model and scheme under `key`."""
    import hallmark
    from hallmark.watermark import WatermarkSpec, make_scheme

    xsum = [d["document"] for d in _jsonl(DATA / "summarization" / "xsum.dev300.jsonl")]
    prompts = [" ".join(doc.split()[:24]) for doc in xsum[:per_model]]
    out = {}
    for name in MODELS:
        model = hallmark.load(name, n_ctx=512, max_sequences=8, show_progress=False)
        try:
            for scheme in schemes:
                model._watermark = make_scheme(
                    WatermarkSpec.create(scheme, key.key_id, model.fingerprint), key.secret
                )
                t0 = time.perf_counter()
                texts = []
                for i in range(0, len(prompts), 8):
                    results = model.generate_batch(
                        prompts[i : i + 8], temperature=1.0, max_tokens=n_tokens, ignore_eos=True, seed=i
                    )
                    texts += [r.text for r in results]
                out[f"{name}|{scheme}"] = texts
                print(
                    f"  generated {name}|{scheme} in {time.perf_counter() - t0:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            model.close()
    return out


def measure_tpr(tokenizers, keys, gens: dict[str, list[str]], per_family: int) -> dict:
    """Detection rates of the watermarked generations: before (the old `hallmark detect`: the default
    model's tokenizer, the default key, gumbel), after (every hypothesis, corrected), after in a batch
    (each text inside a template, tested with that family's human texts), and a batch of all of them."""
    from hallmark.watermark.detect import Detector, MultiDetector
    from hallmark.watermark.spec import WatermarkSpec

    detectors = all_detectors(tokenizers, keys)
    multi = MultiDetector(detectors)
    by_name = dict(tokenizers)
    old = Detector(
        by_name[MODELS[0]],
        WatermarkSpec.create("gumbel", keys[0].key_id, by_name[MODELS[0]].fingerprint()),
        keys[0].secret,
    )
    families = family_texts(per_family)
    rows = []
    for label, texts in gens.items():
        model, scheme = label.split("|")
        tok = by_name[model]
        own = Detector(tok, WatermarkSpec.create(scheme, keys[0].key_id, tok.fingerprint()), keys[0].secret)
        before = [old.detect(t).p_value for t in texts]
        known = [own.detect(t).p_value for t in texts]
        after = [multi.detect(t, windowed=False) for t in texts]
        # Inside templates, tested as a batch with the family's human texts (shared pairs left out).
        in_batch, human_in_batch = [], []
        for j, (fam, pre, suf) in enumerate(TEMPLATES):
            mine = [pre.replace("{question}", "What happened?") + t + suf for t in texts[j :: len(TEMPLATES)]]
            results = multi.detect_many(mine + families[fam], windowed=False)
            in_batch += [r.p_value for r in results[: len(mine)]]
            human_in_batch += [r.p_value for r in results[len(mine) :]]
        all_together = multi.detect_many(texts, windowed=False)
        rows.append(
            {
                "model": model,
                "scheme": scheme,
                "texts": len(texts),
                "before": _rates(np.array(before)),
                "spec_known": _rates(np.array(known)),
                "after": _rates(np.array([r.p_value for r in after])),
                "after_matched": float(np.mean([r.spec_id == own.spec.spec_id for r in after])),
                "after_in_template_batch": _rates(np.array(in_batch)),
                "human_in_template_batch": _rates(np.array(human_in_batch)),
                "after_all_in_one_batch": _rates(np.array([r.p_value for r in all_together])),
                "excluded_all_in_one_batch": float(
                    np.mean([r.excluded / max(1, r.excluded + r.scored) for r in all_together])
                ),
            }
        )
        print(f"  tpr {label}: {rows[-1]['after']}", file=sys.stderr, flush=True)
    return {"hypotheses": len(detectors), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller counts, for a look")
    ap.add_argument(
        "--skip-tpr", action="store_true", help="no generation (keeps the tpr part of the last run)"
    )
    ap.add_argument("--generations", type=int, default=24, help="watermarked texts per model and scheme")
    ap.add_argument(
        "--tpr-schemes",
        nargs="+",
        choices=SCHEMES,
        default=["gumbel"],
        help="schemes to generate with (gumbel, the default, by default: 200 tokens take minutes on 2 cores)",
    )
    ap.add_argument(
        "--summarize", action="store_true", help="recompute the family summary of the record only"
    )
    args = ap.parse_args(argv)
    from benchmark_tables import detect_any_table

    path = RESULTS / "detect_any.json"
    if args.summarize:  # the summary is a function of the cells: no need to measure again
        out = json.loads(path.read_text())
        fam = out["families"]
        out["families"] = {
            **{k: v for k, v in fam.items() if k != "cells"},
            "summary": summarize_families(fam["cells"], fam["per_family"]),
            "cells": fam["cells"],
        }
        path.write_text(json.dumps(out, indent=1) + "\n")
        (RESULTS / "detect_any.md").write_text(detect_any_table(out))
        return 0

    from hallmark.watermark.api import load_tokenizer

    per_family, n_keys = (40, 3) if args.quick else (150, 10)
    per_model = 8 if args.quick else args.generations
    tokenizers = [load_tokenizer(name) for name in MODELS]
    local_keys = eval_keys(2)  # a checker with two keys of their own: m = 2 tokenizers x 2 keys x 2 schemes
    out: dict = {
        "settings": {
            "per_family": per_family,
            "family_keys": n_keys,
            "generations": per_model,
            "tokens": N_TOKENS,
            "temperature": 1.0,
            "table_min_docs": TABLE_MIN_DOCS,
        }
    }
    print("human texts ...", file=sys.stderr, flush=True)
    out["human"] = measure_human(tokenizers, local_keys)
    print("families ...", file=sys.stderr, flush=True)
    out["families"] = measure_families(tokenizers, eval_keys(n_keys), per_family)
    if args.skip_tpr:
        out["tpr"] = json.loads(path.read_text())["tpr"]
    else:
        print("generating ...", file=sys.stderr, flush=True)
        gens = generate(per_model, N_TOKENS, local_keys[0], tuple(args.tpr_schemes))
        out["tpr"] = measure_tpr(tokenizers, local_keys, gens, per_family)
    path.write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "detect_any.md").write_text(detect_any_table(out))
    print(detect_any_table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
