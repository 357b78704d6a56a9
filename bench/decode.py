"""Decode and prefill speed, load time and peak memory: hallmark vs llama-cpp-python vs transformers.

Every system runs in its own subprocess (so peak RSS is its own) on the same machine, in the same
run, with the same thread count, the same prompts and greedy decoding. Speeds are measured the same
way for all three: the time to produce N tokens minus the time to produce 1 token (which contains
the prefill) gives the decode time of N-1 tokens; prefill speed is prompt tokens / time to the
first token. The systems run in --rounds passes with their order rotated, so that a slow spell of
this shared machine hits every system alike; a speed is the median over the rounds, and each
round's ratios are paired comparisons (its systems ran back to back). transformers, several times
slower, runs once.

    python bench/decode.py                     # both shipped models, all systems
    python bench/decode.py --skip-transformers # without the (slow) transformers baseline
    python bench/decode.py --models smollm2-135m-instruct --rounds 5
    python bench/decode.py --baseline 7e25356      # also hallmark at that commit, paired in this run

Writes bench/results/decode.json and prints a Markdown table (also bench/results/decode.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmark_tables import decode_table as markdown

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
N_DECODE = 128
N_PREFILL = 500
BATCH_SIZES = (1, 2, 4, 8)
SHORT_PROMPTS = [
    "The history of the printing press begins",
    "In the morning the market opened with",
    "Scientists announced on Tuesday that",
    "The recipe calls for two cups of flour and",
    "When the train finally arrived at the station,",
    "The committee published its report, which",
    "Mountains in the north of the country are",
    "Our team spent the summer building",
]


def _long_text() -> str:
    """A real document long enough for a 500-token prompt (XSum article from shared/data, else filler)."""
    path = DATA / "summarization" / "xsum.dev300.jsonl"
    if path.exists():
        docs = [json.loads(line)["document"] for line in path.open()]
        return "\n\n".join(docs[:6])
    return " ".join(SHORT_PROMPTS * 60)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _measure(timed, prompt, long_prompt, repeats: int, load_s: float) -> dict:
    """Decode and prefill speed from a system's `timed(prompt, n_tokens) -> seconds`, the same for all."""
    timed(prompt, 4)  # warm-up
    decode, prefill = [], []
    for _ in range(repeats):
        decode.append((N_DECODE - 1) / (timed(prompt, N_DECODE) - timed(prompt, 1)))
        prefill.append(N_PREFILL / timed(long_prompt, 1))
    return {
        "load_s": load_s,
        "decode_tps": _median(decode),
        "prefill_tps": _median(prefill),
        "decode_runs": decode,
        "prefill_runs": prefill,
        "peak_rss_mb": _peak_rss_mb(),
    }


# --------------------------------------------------------------------------------------------------
# workers: each runs in its own process and prints one JSON object
# --------------------------------------------------------------------------------------------------
def worker_hallmark(model: str, threads: int, repeats: int) -> dict:
    import hallmark

    t0 = time.perf_counter()
    m = hallmark.load(model, n_ctx=2048, n_threads=threads, show_progress=False)
    load_s = time.perf_counter() - t0
    prompt_ids = m.tokenize(SHORT_PROMPTS[0])
    long_ids = m.tokenize(_long_text())[:N_PREFILL]

    def timed(ids: list[int], n: int) -> float:
        t = time.perf_counter()
        r = m.generate(ids, temperature=0, max_tokens=n, ignore_eos=True)
        assert len(r.token_ids) == n
        return time.perf_counter() - t

    return _measure(timed, prompt_ids, long_ids, repeats, load_s)


def worker_hallmark_batch(model: str, threads: int, repeats: int) -> dict:
    import hallmark

    m = hallmark.load(
        model, n_ctx=1024, max_sequences=max(BATCH_SIZES), n_threads=threads, show_progress=False
    )

    def timed(prompts: list[str], n: int) -> float:
        t = time.perf_counter()
        rs = m.generate_batch(prompts, temperature=0, max_tokens=n, ignore_eos=True)
        assert all(len(r.token_ids) == n for r in rs)
        return time.perf_counter() - t

    timed(SHORT_PROMPTS[:2], 4)  # warm-up
    out = {}
    for b in BATCH_SIZES:
        prompts = SHORT_PROMPTS[:b]
        runs = [b * (N_DECODE - 1) / (timed(prompts, N_DECODE) - timed(prompts, 1)) for _ in range(repeats)]
        out[str(b)] = {"aggregate_decode_tps": _median(runs), "runs": runs}
    return {"batch": out, "peak_rss_mb": _peak_rss_mb()}


def worker_llama_cpp_python(model: str, threads: int, repeats: int) -> dict:
    from llama_cpp import Llama

    from hallmark.catalog import resolve

    path = str(resolve(model, show_progress=False).path)
    t0 = time.perf_counter()
    # Same settings as hallmark's defaults (threads, flash attention), so that only the code above
    # llama.cpp differs.
    llm = Llama(
        model_path=path,
        n_ctx=2048,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=True,
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    prompt_ids = llm.tokenize(SHORT_PROMPTS[0].encode(), add_bos=True, special=True)
    long_ids = llm.tokenize(_long_text().encode(), add_bos=True, special=True)[:N_PREFILL]

    def timed(ids: list[int], n: int) -> float:
        t = time.perf_counter()
        for count, _ in enumerate(llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True), 1):
            if count == n:
                break
        return time.perf_counter() - t

    return _measure(timed, prompt_ids, long_ids, repeats, load_s)


def worker_transformers(model: str, threads: int, repeats: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hallmark.catalog import resolve

    torch.set_num_threads(threads)
    path = resolve(model, show_progress=False).path
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    hf.eval()
    load_s = time.perf_counter() - t0
    prompt = tok(SHORT_PROMPTS[0], return_tensors="pt")
    long_ids = tok(_long_text(), return_tensors="pt")["input_ids"][:, :N_PREFILL]

    def timed(input_ids, n: int) -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=False,
                max_new_tokens=n,
                min_new_tokens=n,
                pad_token_id=tok.eos_token_id,
            )
        assert out.shape[1] - input_ids.shape[1] == n
        return time.perf_counter() - t

    import transformers

    result = _measure(timed, prompt["input_ids"], long_ids, repeats, load_s)
    result["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    return result


WORKERS = {
    "hallmark": worker_hallmark,
    "hallmark_batch": worker_hallmark_batch,
    "llama_cpp_python": worker_llama_cpp_python,
    "transformers": worker_transformers,
}


def combine(rounds: list[dict]) -> dict:
    """One system's rounds as one result: median speeds, every run kept, the largest peak RSS."""
    errors = [r for r in rounds if "error" in r]
    if errors:
        return errors[0]
    if "batch" in rounds[0]:
        batch = {
            b: {
                "aggregate_decode_tps": _median([r["batch"][b]["aggregate_decode_tps"] for r in rounds]),
                "runs": [x for r in rounds for x in r["batch"][b]["runs"]],
            }
            for b in rounds[0]["batch"]
        }
        return {"batch": batch, "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds)}
    out = {key: _median([r[key] for r in rounds]) for key in ("load_s", "decode_tps", "prefill_tps")}
    out["decode_runs"] = [x for r in rounds for x in r["decode_runs"]]
    out["prefill_runs"] = [x for r in rounds for x in r["prefill_runs"]]
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rounds)
    if "versions" in rounds[0]:
        out["versions"] = rounds[0]["versions"]
    return out


def ratios_of(per: dict) -> dict[str, float]:
    """hallmark's speed over each other system's, for every pair both measured without error."""
    out: dict[str, float] = {}

    def ok(name: str) -> bool:
        return name in per and "error" not in per[name]

    for peer, suffix in (
        ("llama_cpp_python", "llama_cpp_python"),
        ("transformers", "transformers"),
        ("hallmark_baseline", "baseline"),
    ):
        if ok("hallmark") and ok(peer):
            out[f"decode_vs_{suffix}"] = per["hallmark"]["decode_tps"] / per[peer]["decode_tps"]
            out[f"prefill_vs_{suffix}"] = per["hallmark"]["prefill_tps"] / per[peer]["prefill_tps"]
    if ok("hallmark_batch"):
        batch = per["hallmark_batch"]["batch"]
        out["batch8_vs_batch1"] = batch["8"]["aggregate_decode_tps"] / batch["1"]["aggregate_decode_tps"]
        if ok("hallmark_batch_baseline"):
            base = per["hallmark_batch_baseline"]["batch"]
            out["batch8_vs_baseline"] = batch["8"]["aggregate_decode_tps"] / base["8"]["aggregate_decode_tps"]
    return out


# --------------------------------------------------------------------------------------------------
def run_worker(
    name: str, model: str, threads: int, repeats: int, env: dict[str, str] | None = None, label: str = ""
) -> dict:
    print(f"  {model}: {label or name} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--models",
            model,
            "--threads",
            str(threads),
            "--repeats",
            str(repeats),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        return {
            "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}"
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--rounds", type=int, default=3, help="passes over the systems; medians count")
    ap.add_argument("--repeats", type=int, default=1, help="measurements per system and round")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument(
        "--baseline", metavar="REF", help="also run hallmark at this git revision (systems *_baseline)"
    )
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS / "decode.json"))
    args = ap.parse_args()

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.models, args.threads, args.repeats)))
        return

    import llama_cpp

    results: dict = {
        "benchmark": "decode",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "python": platform.python_version(),
            "llama_cpp_python": llama_cpp.__version__,
        },
        "settings": {
            "decode_tokens": N_DECODE,
            "prefill_tokens": N_PREFILL,
            "rounds": args.rounds,
            "repeats": args.repeats,
            "greedy": True,
            "batch_sizes": list(BATCH_SIZES),
        },
        "models": {},
    }
    systems = ["hallmark", "hallmark_batch", "llama_cpp_python"] + (
        [] if args.skip_transformers else ["transformers"]
    )
    # system -> (worker, environment): a baseline system runs the same worker on the other revision.
    runs: dict[str, tuple[str, dict[str, str] | None]] = {name: (name, None) for name in systems}
    if args.baseline:
        from baseline import checkout

        base = checkout(args.baseline)
        results["baseline"] = base.to_dict()
        for name in ("hallmark", "hallmark_batch"):
            runs[f"{name}_baseline"] = (name, base.env())
    interleaved = [name for name in runs if name != "transformers"]
    for model in args.models.split(","):
        rounds: dict[str, list[dict]] = {name: [] for name in runs}
        for r in range(args.rounds):
            for name in interleaved[r % len(interleaved) :] + interleaved[: r % len(interleaved)]:
                worker, env = runs[name]
                rounds[name].append(run_worker(worker, model, args.threads, args.repeats, env, name))
        if "transformers" in runs:
            rounds["transformers"] = [run_worker("transformers", model, args.threads, args.repeats)]
        per: dict = {name: combine(results) for name, results in rounds.items()}
        per["ratios"] = ratios_of(per)
        # Round i's ratios compare systems that ran back to back: paired, unlike the medians'.
        paired = [
            ratios_of({name: rs[i] for name, rs in rounds.items() if name != "transformers"})
            for i in range(args.rounds)
        ]
        per["ratios_by_round"] = {key: [r[key] for r in paired if key in r] for key in paired[0]}
        results["models"][model] = per
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
