"""Watermark evaluation: detection power, robustness, false positives, quality and speed cost.

Runs both shipped models, both schemes (gumbel, kgw) and temperatures 0.7 and 1.0 on prompts made
from the starts of real documents (XSum articles and SQuAD paragraphs in ../shared/data), then
scores clean and attacked texts with hallmark's detector; negatives are human texts from
../shared/data/detection (BBC news, XSum and WritingPrompts originals), GPT-2 texts from the same
folder, and unwatermarked generations from the same prompts. Side by side, on gemma-3-270m loaded
from the same GGUF: transformers' own KGW (`WatermarkingConfig`) and SynthID-Text
(`SynthIDTextWatermarkingConfig`) with their detectors.

    python bench/watermark.py                       # everything (about 90 minutes on 2 cores)
    python bench/watermark.py --per-cell 8 --skip-transformers   # a quick look
    python bench/watermark.py --reuse-transformers   # hallmark side only (about 30 minutes)

Writes bench/results/watermark.json, bench/results/watermark.md and bench/results/watermark_roc.png.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from benchmark_tables import watermark_table as markdown

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
SCHEMES = ("gumbel", "kgw")
TEMPERATURES = (0.7, 1.0)
EVAL_SECRET = b"hallmark-watermark-evaluation-key-not-for-real-use"
ATTACKS = (
    "clean",
    "delete_10",
    "delete_30",
    "substitute_10",
    "substitute_30",
    "paste_25",
    "normalize",
    "paraphrase",
)
# Attacks drawn at random: each text is attacked this many times (fresh draws) and the rates are
# averaged, so one unlucky draw does not decide a cell. 30% substitution on 100 texts swings between
# 0.88 and 0.95 from one draw to the next (measured over 20 draws).
RANDOM_ATTACKS = ("delete_10", "delete_30", "substitute_10", "substitute_30", "paste_25")
ATTACK_DRAWS = 5


# -- data ------------------------------------------------------------------------------------------
def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def prompts(n: int) -> list[str]:
    """Starts of real documents: the first 24 words of XSum articles and SQuAD paragraphs, alternating."""
    xsum = [d["document"] for d in _jsonl(DATA / "summarization" / "xsum.dev300.jsonl")]
    squad = list(dict.fromkeys(d["context"] for d in _jsonl(DATA / "qa" / "squad.dev300.jsonl")))
    docs = [doc for pair in zip(xsum, squad, strict=False) for doc in pair]
    return [" ".join(doc.split()[:24]) for doc in docs[:n]]


def human_texts() -> dict[str, list[str]]:
    det = DATA / "detection"
    out = {"bbc_news": [d["text"] for d in _jsonl(det / "human_news_bbc.jsonl")]}
    for name in ("xsum", "writing"):
        raw = json.loads((det / f"{name}_gpt2-xl.raw_data.json").read_text())
        out[f"{name}_original"] = raw["original"]
        out[f"gpt2_{name}_sampled"] = raw["sampled"]  # machine text, not watermarked: a negative too
    return out


# -- attacks ---------------------------------------------------------------------------------------
def attack(text: str, kind: str, rng: np.random.Generator, vocabulary: list[str], human: list[str]) -> str:
    words = text.split()
    if kind == "clean":
        return text
    if kind.startswith("delete_"):
        keep = rng.random(len(words)) >= int(kind.split("_")[1]) / 100
        return " ".join(w for w, k in zip(words, keep, strict=True) if k)
    if kind.startswith("substitute_"):
        swap = rng.random(len(words)) < int(kind.split("_")[1]) / 100
        return " ".join(
            vocabulary[rng.integers(len(vocabulary))] if s else w for w, s in zip(words, swap, strict=True)
        )
    if kind == "paste_25":
        # The watermarked text becomes 25% of a human document: 3 human words for each of its own.
        pool: list[str] = []
        while len(pool) < 3 * len(words):
            pool += human[int(rng.integers(len(human)))].split()
        pool = pool[: 3 * len(words)]
        at = int(rng.integers(len(pool) + 1))
        return " ".join(pool[:at] + words + pool[at:])
    if kind == "normalize":
        return re.sub(r"\s+", " ", text.lower()).strip()
    raise ValueError(kind)


# -- metrics ---------------------------------------------------------------------------------------
def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie), exactly (Mann-Whitney)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    order = np.concatenate([pos, neg]).argsort(kind="mergesort")
    ranks = np.empty(order.size)
    ranks[order] = np.arange(1, order.size + 1)
    allv = np.concatenate([pos, neg])
    for v in np.unique(allv):  # average ranks of ties
        idx = allv == v
        if idx.sum() > 1:
            ranks[idx] = ranks[idx].mean()
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def roc_curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    tpr = np.array([(pos >= t).mean() for t in thresholds])
    fpr = np.array([(neg >= t).mean() for t in thresholds])
    return np.concatenate([[0], fpr, [1]]), np.concatenate([[0], tpr, [1]])


def bootstrap_ci(per_text: np.ndarray, rng: np.random.Generator, n_boot: int = 2000) -> list[float]:
    """95% bootstrap interval of a mean over texts (each text's detection rate over its attack draws)."""
    means = rng.choice(per_text, size=(n_boot, per_text.shape[0]), replace=True).mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def tpr_at_empirical_fpr(pos: np.ndarray, neg: np.ndarray, fpr: float) -> float:
    """TPR at the score threshold that keeps the negatives' false-positive rate <= fpr."""
    thr = np.quantile(neg, 1 - fpr, method="higher")
    return float((pos > thr).mean())


def neglog(p: np.ndarray) -> np.ndarray:
    return -np.log10(np.maximum(np.asarray(p, float), 1e-300))


# -- hallmark stage --------------------------------------------------------------------------------
def stage_hallmark(per_cell: int, n_tokens: int, attack_draws: int = ATTACK_DRAWS) -> dict:
    import hallmark
    from hallmark.watermark import Detector, WatermarkKey, WatermarkSpec, make_scheme

    key = WatermarkKey("eval", EVAL_SECRET, "", None)
    texts = prompts(per_cell)
    human = human_texts()
    vocabulary = sorted({w for t in human["bbc_news"] for w in t.split() if w.isalpha()})
    rng = np.random.default_rng(0)
    models = {name: hallmark.load(name, n_ctx=640, max_sequences=8, show_progress=False) for name in MODELS}
    gens: dict[str, list[dict]] = {}  # "model|temp|scheme" (scheme "none" = unwatermarked) -> records
    speed: dict[str, dict[str, float]] = {}

    def generate(model, temp: float, scheme: str | None) -> tuple[list, float]:
        if scheme is not None:
            spec = WatermarkSpec.create(scheme, key.key_id, model.fingerprint)
            model._watermark = make_scheme(spec, key.secret)
        t0 = time.perf_counter()
        out = []
        for i in range(0, len(texts), 8):
            out += model.generate_batch(
                texts[i : i + 8],
                temperature=temp,
                max_tokens=n_tokens,
                ignore_eos=True,
                watermark=scheme is not None,
            )
        return out, sum(len(r.token_ids) for r in out) / (time.perf_counter() - t0)

    for name, model in models.items():
        for temp in TEMPERATURES:
            for scheme in (*SCHEMES, None):
                label = f"{name}|{temp}|{scheme or 'none'}"
                print(f"generating {label} ...", file=sys.stderr, flush=True)
                results, tps = generate(model, temp, scheme)
                speed[label] = {"aggregate_decode_tps": tps}
                gens[label] = [
                    {
                        "prompt": p,
                        "text": r.text,
                        "tokens": r.token_ids,
                        "watermarked_tokens": r.watermark.watermarked_tokens,
                    }
                    for p, r in zip(texts, results, strict=True)
                ]

    # Paraphrase attack: the local instruct model rewrites each temperature-1.0 positive (no watermark).
    para_model = models["smollm2-135m-instruct"]
    for name in MODELS:
        for scheme in SCHEMES:
            label = f"{name}|1.0|{scheme}"
            print(f"paraphrasing {label} ...", file=sys.stderr, flush=True)
            recs = gens[label]
            asks = [
                para_model.chat_prompt_ids(
                    [
                        {
                            "role": "user",
                            "content": "Rewrite the following text in your own words:\n\n" + r["text"],
                        }
                    ]
                )
                for r in recs
            ]
            for i in range(0, len(asks), 8):
                outs = para_model.generate_batch(
                    asks[i : i + 8], temperature=0.7, max_tokens=n_tokens + 50, watermark=False
                )
                for rec, o in zip(recs[i : i + 8], outs, strict=True):
                    rec["paraphrase"] = o.text

    # Perplexity of each text under the *other* shipped model.
    other = {"smollm2-135m-instruct": "gemma-3-270m", "gemma-3-270m": "smollm2-135m-instruct"}
    perplexity: dict[str, float] = {}
    for label, recs in gens.items():
        scorer = models[other[label.split("|")[0]]]
        ppl = [scorer.perplexity(r["prompt"] + r["text"]) for r in recs[:16]]
        perplexity[label] = float(statistics.median(ppl))

    # Detection.
    detectors = {
        (name, scheme): Detector(
            models[name].tokenizer,
            WatermarkSpec.create(scheme, key.key_id, models[name].fingerprint),
            key.secret,
        )
        for name in MODELS
        for scheme in SCHEMES
    }
    out: dict = {
        "settings": {
            "per_cell": per_cell,
            "tokens": n_tokens,
            "temperatures": TEMPERATURES,
            "prompts": len(texts),
            "sampling": "defaults: top_k 40, top_p 0.95, min_p 0.05",
            "attack_draws": attack_draws,
        },
        "speed": speed,
        "perplexity": perplexity,
        "schemes": {},
    }
    roc_data: dict = {}
    for scheme in SCHEMES:
        res: dict = {"by_temperature": {}, "human_fpr_at_0.001": {}, "negatives": {}}
        # Negatives: human and GPT-2 texts under each model's tokenizer, and our unwatermarked text.
        neg_p: list[float] = []
        for name in MODELS:
            det = detectors[(name, scheme)]
            for corpus, docs in human.items():
                p = np.array([det.detect(t).p_value for t in docs])
                res["negatives"][f"{name}|{corpus}"] = {
                    "n": len(docs),
                    "fpr_at_0.001": float((p < 1e-3).mean()),
                    "fpr_at_0.01": float((p < 1e-2).mean()),
                }
                neg_p += p.tolist()
                if not corpus.startswith("gpt2"):
                    res["human_fpr_at_0.001"][f"{name}|{corpus}"] = float((p < 1e-3).mean())
            for temp in TEMPERATURES:
                unwm = [det.detect(r["text"]).p_value for r in gens[f"{name}|{temp}|none"]]
                res["negatives"][f"{name}|{temp}|unwatermarked"] = {
                    "n": len(unwm),
                    "fpr_at_0.001": float((np.array(unwm) < 1e-3).mean()),
                }
                neg_p += unwm
        neg_scores = neglog(np.array(neg_p))
        all_human_p = [res["human_fpr_at_0.001"][k] for k in res["human_fpr_at_0.001"]]
        res["human_fpr_at_0.001_mean"] = float(np.mean(all_human_p))
        for temp in TEMPERATURES:
            cell: dict = {}
            for kind in ATTACKS:
                if kind == "paraphrase" and temp != 1.0:
                    continue
                draws = attack_draws if kind in RANDOM_ATTACKS else 1
                per_text, needed = [], []  # per_text: the p-values of each text's draws
                for name in MODELS:
                    det = detectors[(name, scheme)]
                    for rec in gens[f"{name}|{temp}|{scheme}"]:
                        texts_attacked = [
                            rec["paraphrase"]
                            if kind == "paraphrase"
                            else attack(rec["text"], kind, rng, vocabulary, human["bbc_news"])
                            for _ in range(draws)
                        ]
                        per_text.append([det.detect(t).p_value for t in texts_attacked])
                        if kind == "clean":
                            needed.append(tokens_to_detect(det, rec["tokens"]))
                p = np.array(per_text)  # [texts, draws]
                scores = neglog(p.ravel())
                cell[kind] = {
                    "n": p.shape[0],
                    "draws": draws,
                    "tpr_at_fpr_0.01": float((p < 1e-2).mean()),
                    "tpr_at_fpr_0.01_ci95": bootstrap_ci((p < 1e-2).mean(axis=1), rng),
                    "tpr_at_fpr_0.001": float((p < 1e-3).mean()),
                    "roc_auc": roc_auc(scores, neg_scores),
                    "median_p": float(np.median(p)),
                }
                if kind == "clean":
                    finite = [x for x in needed if x is not None]
                    cell[kind]["median_tokens_to_p_0.001"] = float(np.median(finite)) if finite else None
                    cell[kind]["share_reaching_p_0.001"] = len(finite) / len(needed)
                roc_data[f"{scheme}|{temp}|{kind}"] = (scores, neg_scores)
            res["by_temperature"][str(temp)] = cell
        out["schemes"][scheme] = res
    out["decode_speed"] = watermark_speed(models, key)
    out["detector_throughput_tps"] = detector_throughput(
        detectors[("smollm2-135m-instruct", "gumbel")], human["bbc_news"]
    )
    plot_roc(roc_data, RESULTS / "watermark_roc.png")
    return out


def tokens_to_detect(det, tokens: list[int], alpha: float = 1e-3) -> int | None:
    """Fewest leading tokens of a text whose detection p-value is below alpha (None if never)."""
    arr = np.asarray(tokens, dtype=np.int64)
    positions, scores = det.scored_tokens(arr)
    if scores.size == 0:
        return None
    csum = np.cumsum(scores)
    n = np.arange(1, scores.size + 1)
    from scipy import special, stats

    p = (
        special.gammaincc(n, csum)
        if det.spec.scheme == "gumbel"
        else stats.binom.sf(csum - 1, n, det.spec.gamma)
    )
    hit = np.flatnonzero(p < alpha)
    return int(positions[hit[0]]) + 1 if hit.size else None


def watermark_speed(models: dict, key) -> dict:
    """Batch-1 decode tokens/s (128 tokens, temperature 1.0) with each scheme and without, interleaved."""
    from hallmark.watermark import WatermarkSpec, make_scheme

    out = {}
    for name, model in models.items():
        schemes = {
            s: make_scheme(WatermarkSpec.create(s, key.key_id, model.fingerprint), key.secret)
            for s in SCHEMES
        }
        runs: dict[str, list[float]] = {"none": [], **{s: [] for s in SCHEMES}}
        for rep in range(5):
            for label in runs:
                if label != "none":
                    model._watermark = schemes[label]
                r = model.generate(
                    "The history of the printing press begins",
                    temperature=1.0,
                    max_tokens=128,
                    ignore_eos=True,
                    seed=rep,
                    watermark=label != "none",
                )
                runs[label].append(r.timings.predicted_per_second)
        med = {label: float(statistics.median(v)) for label, v in runs.items()}
        out[name] = {"decode_tps": med, **{f"{s}_vs_none": med[s] / med["none"] for s in SCHEMES}}
    return out


def detector_throughput(det, docs: list[str]) -> float:
    """Tokens per second of full detection (tokenize + score + p-value), one thread."""
    text = "\n\n".join(docs[:200])
    n = len(det.vocab.tokenize(text, add_special=False))
    t0 = time.perf_counter()
    for _ in range(3):
        det.detect(text, windowed=False)
    return 3 * n / (time.perf_counter() - t0)


def plot_roc(roc_data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SCHEMES), figsize=(11, 4.6), sharey=True)
    for ax, scheme in zip(axes, SCHEMES, strict=True):
        for kind in ("clean", "substitute_30", "delete_30", "paste_25", "paraphrase"):
            key = f"{scheme}|1.0|{kind}"
            if key in roc_data:
                fpr, tpr = roc_curve(*roc_data[key])
                ax.plot(np.maximum(fpr, 1e-4), tpr, label=kind)
        ax.set_xscale("log")
        ax.set_xlim(1e-4, 1)
        ax.axvline(1e-3, color="grey", lw=0.6, ls=":")
        ax.set_title(f"hallmark {scheme}, temperature 1.0, 200 tokens")
        ax.set_xlabel("false-positive rate (human + unwatermarked text)")
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("true-positive rate")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# -- transformers stage (gemma-3-270m from the same GGUF) -------------------------------------------
TRANSFORMERS_PROMPTS = 16  # transformers decodes gemma at ~3-8 tok/s here: 16 prompts x 200 tokens per system


def stage_transformers(per_cell: int, n_tokens: int) -> dict:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        SynthIDTextWatermarkingConfig,
        WatermarkDetector,
        WatermarkingConfig,
    )
    from transformers.generation import SynthIDTextWatermarkLogitsProcessor

    from hallmark.catalog import resolve

    torch.manual_seed(0)
    path = resolve("gemma-3-270m", show_progress=False).path
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    texts = prompts(min(per_cell, TRANSFORMERS_PROMPTS))
    kgw = WatermarkingConfig(greenlist_ratio=0.25, bias=2.0, hashing_key=15485863, seeding_scheme="selfhash")
    synthid = SynthIDTextWatermarkingConfig(
        keys=[
            654,
            400,
            836,
            123,
            340,
            443,
            597,
            160,
            57,
            29,
            590,
            639,
            13,
            715,
            468,
            990,
            966,
            226,
            324,
            585,
        ],
        ngram_len=5,
    )
    human = human_texts()
    vocabulary = sorted({w for t in human["bbc_news"] for w in t.split() if w.isalpha()})
    rng = np.random.default_rng(1)

    def generate(config, temp: float) -> tuple[list[list[int]], float]:
        outs, n_new = [], 0
        t0 = time.perf_counter()
        for i in range(0, len(texts), 8):
            enc = tok(texts[i : i + 8], return_tensors="pt", padding=True)
            with torch.inference_mode():
                gen = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=temp,
                    top_k=40,
                    top_p=0.95,
                    min_p=0.05,
                    max_new_tokens=n_tokens,
                    min_new_tokens=n_tokens,
                    watermarking_config=config,
                    pad_token_id=tok.pad_token_id,
                )
            new = gen[:, enc["input_ids"].shape[1] :]
            outs += new.tolist()
            n_new += new.numel()
        return outs, n_new / (time.perf_counter() - t0)

    kgw_det = WatermarkDetector(model_config=model.config, device="cpu", watermarking_config=kgw)
    synth_proc: SynthIDTextWatermarkLogitsProcessor = synthid.construct_processor(
        model.config.vocab_size, "cpu"
    )

    def kgw_score(ids: list[int]) -> float:
        out = kgw_det(torch.tensor([ids]), return_dict=True)
        return float(out.z_score[0]) if out.z_score is not None else 0.0

    def synthid_score(ids: list[int]) -> float:
        """SynthID-Text's unweighted mean g-value (Dathathri et al. 2024, 'mean' scoring)."""
        t = torch.tensor([ids])
        g = synth_proc.compute_g_values(t)  # [1, len - ngram_len + 1, depth]
        mask = synth_proc.compute_context_repetition_mask(t)
        m = mask.unsqueeze(-1).float()
        return float((g.float() * m).sum() / m.sum().clamp(min=1) / 1.0) if m.sum() > 0 else 0.5

    def ids_of(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    neg_texts = [t for v in human.values() for t in v[:100]]
    results: dict = {
        "settings": {
            "per_cell": per_cell,
            "tokens": n_tokens,
            "model": "gemma-3-270m (GGUF, fp32)",
            "kgw": "greenlist_ratio 0.25, bias 2.0, selfhash",
            "synthid": "ngram_len 5, 20 keys",
        },
        "systems": {},
    }
    temp = 1.0
    print("transformers plain T=1.0 ...", file=sys.stderr, flush=True)
    plain, tps_plain = generate(None, temp)
    for sys_name, config, score in (
        ("transformers_kgw", kgw, kgw_score),
        ("transformers_synthid", synthid, synthid_score),
    ):
        neg = [score(ids_of(t)) for t in neg_texts]
        entry: dict = {}
        print(f"transformers {sys_name} T={temp} ...", file=sys.stderr, flush=True)
        wm, tps_wm = generate(config, temp)
        neg_all = np.array(neg + [score(ids) for ids in plain])
        cell = {"decode_tps_watermarked": tps_wm, "decode_tps_plain": tps_plain}
        for kind in ("clean", "delete_30", "substitute_10", "substitute_30"):
            pos = np.array(
                [
                    score(ids)
                    if kind == "clean"
                    else score(
                        ids_of(
                            attack(
                                tok.decode(ids, skip_special_tokens=True),
                                kind,
                                rng,
                                vocabulary,
                                human["bbc_news"],
                            )
                        )
                    )
                    for ids in wm
                ]
            )
            cell[kind] = {
                "n": len(pos),
                "tpr_at_empirical_fpr_0.01": tpr_at_empirical_fpr(pos, neg_all, 0.01),
                "tpr_at_empirical_fpr_0.001": tpr_at_empirical_fpr(pos, neg_all, 0.001),
                "roc_auc": roc_auc(pos, neg_all),
            }
        if sys_name == "transformers_kgw":
            p = np.array([float(kgw_det(torch.tensor([ids]), return_dict=True).p_value[0]) for ids in wm])
            cell["clean"]["tpr_at_nominal_p_0.001"] = float((p < 1e-3).mean())
        entry[str(temp)] = cell
        results["systems"][sys_name] = entry
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-cell", type=int, default=50, help="generations per (model, temperature, scheme)")
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument(
        "--reuse-transformers",
        action="store_true",
        help="take the transformers side from the existing results file instead of re-running it "
        "(it does not depend on hallmark's code and takes most of the run time)",
    )
    ap.add_argument("--stage", choices=["hallmark", "transformers"], help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS / "watermark.json"))
    args = ap.parse_args()
    if args.stage:
        fn = stage_hallmark if args.stage == "hallmark" else stage_transformers
        print(json.dumps(fn(args.per_cell, args.tokens)))
        return
    res: dict = {"benchmark": "watermark", "date": time.strftime("%Y-%m-%d")}
    stages = ["hallmark"] + ([] if args.skip_transformers or args.reuse_transformers else ["transformers"])
    if args.reuse_transformers:
        previous = json.loads(Path(args.out).read_text())
        res["transformers"] = previous["transformers"]
        res["transformers_date"] = previous.get("transformers_date", previous["date"])
    for stage in stages:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--stage",
                stage,
                "--per-cell",
                str(args.per_cell),
                "--tokens",
                str(args.tokens),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        if proc.returncode != 0:
            raise SystemExit(f"stage {stage} failed")
        res[stage] = json.loads(proc.stdout.strip().splitlines()[-1])
        # Keep each stage's result as soon as it exists: a later stage failing must not lose it.
        (RESULTS / f"watermark.{stage}.json").write_text(json.dumps(res[stage], indent=2) + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    table = markdown(res)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
