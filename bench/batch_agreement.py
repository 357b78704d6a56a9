"""How often greedy output in a batch equals the same request run alone.

The server batches up to 8 sequences in one llama_decode call. Batched CPU kernels may add the
same numbers in a different order than a batch of one, so logits can differ in the last bits,
and where two tokens are nearly tied, greedy decoding can take the other one. This script
measures how often that happens: each prompt is decoded alone, then all of them together with
8 sequence slots (the server's scheduler), greedy, with a fixed output length.

Prompts are the first sentence of XSum documents from ../shared/data (real news text).
Reported per model: the share of outputs identical to their solo run, the share of output
tokens before the first difference, and how far apart the two runs' log-probabilities of the
same tokens are (over the tokens before the first difference): the size of the numerical
difference between llama.cpp's kernels for one row and for a batch of rows.

    python bench/batch_agreement.py                    # both shipped models, 64 prompts
    python bench/batch_agreement.py --models smollm2-135m-instruct --prompts 16

Writes bench/results/batch_agreement.json and bench/results/batch_agreement.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from benchmark_tables import batch_agreement_table as markdown

from hallmark.engine.results import GenerationResult
from hallmark.engine.scheduler import common_prefix

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELS = ("smollm2-135m-instruct", "gemma-3-270m")


def prompts(n: int) -> list[str]:
    path = DATA / "summarization" / "xsum.dev300.jsonl"
    docs = [json.loads(line)["document"] for line in path.open()]
    return [doc.split("\n")[0][:300] for doc in docs[:n]]


def agreement(model_name: str, texts: list[str], max_tokens: int, slots: int) -> dict:
    import hallmark

    model = hallmark.load(model_name, n_ctx=512, max_sequences=slots, show_progress=False)
    try:
        params = dict(temperature=0, max_tokens=max_tokens, ignore_eos=True, logprobs=0)
        solo = [model.generate(t, **params) for t in texts]
        batched = model.generate_batch(texts, **params)
    finally:
        model.close()
    alone = [r.token_ids for r in solo]
    same_prefix = [common_prefix(a.token_ids, b.token_ids) for a, b in zip(solo, batched, strict=True)]
    diverged = [n for n, a in zip(same_prefix, alone, strict=True) if n < len(a)]
    pairs = zip(solo, batched, same_prefix, strict=True)
    gap = np.concatenate([np.abs(_logprobs(a)[:n] - _logprobs(b)[:n]) for a, b, n in pairs])
    return {
        "model": model_name,
        "prompts": len(texts),
        "output_tokens": max_tokens,
        "slots": slots,
        "identical_outputs": sum(n == len(a) for n, a in zip(same_prefix, alone, strict=True)),
        "tokens_before_first_difference": sum(same_prefix),
        "tokens_total": sum(len(a) for a in alone),
        "first_difference_at": sorted(diverged),
        "logprob_gap_max": float(gap.max()),
        "logprob_gap_mean": float(gap.mean()),
    }


def _logprobs(result: GenerationResult) -> np.ndarray:
    return np.array([lp.logprob for lp in result.logprobs or []])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--slots", type=int, default=8)
    args = ap.parse_args()
    texts = prompts(args.prompts)
    rows = []
    for name in args.models:
        t0 = time.perf_counter()
        rows.append(agreement(name, texts, args.max_tokens, args.slots))
        print(f"{name}: {time.perf_counter() - t0:.0f}s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = {"benchmark": "batch_agreement", "date": time.strftime("%Y-%m-%d"), "results": rows}
    (RESULTS / "batch_agreement.json").write_text(json.dumps(out, indent=2) + "\n")
    table = markdown(rows)
    (RESULTS / "batch_agreement.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
