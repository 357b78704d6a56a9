"""Speculative decoding benchmark: decode tokens/s with prompt lookup off and on, and llama.cpp's own
lookup decoding (`llama-lookup`, built from the llama.cpp sources vendored in llama-cpp-python, as
bench/serve.py builds llama-server) on the same prompts, in one run.

Three modes per prompt: off; `always` (every draft found is verified); `adaptive` (the default
SpeculativeConfig: drafts only where recent drafts pay for the verification costs the engine
measures on this machine). Workloads, from ../shared/data: XSum summaries, SQuAD answers and
Tatoeba en->fr translations, each with hallmark's own task prompt for the model (few-shot text for
gemma-3-270m, the chat template for SmolLM2: hallmark.tasks), and a plain chat prompt that copies
nothing. Greedy decoding, so the runs of a prompt can be compared token for token (each mode vs
off) and llama-lookup (`--temp 0`) does the same work; one sequence at a time, 2 threads.

Decode tokens/s excludes the prompt: hallmark's `predicted_n / predicted_ms` (the time from the first
sampled token to the last), llama-lookup's "decoded N tokens in T seconds". Reported per model,
workload and mode: tokens/s and the ratio to off, tokens per verification step (1 + accepted /
steps), the outputs identical to off, llama-lookup's tokens/s and hallmark / llama-lookup.

    python bench/speculative.py                      # both models, 8 prompts per workload
    python bench/speculative.py --prompts 3 --models smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from serve import LLAMA_CPP_PYTHON, build_llama_server

import hallmark
from hallmark.engine.sampling import SamplingParams
from hallmark.engine.speculative import SpeculativeConfig
from hallmark.tasks.prompts import chosen_style, qa_prompt, summary_prompt, translation_prompt
from hallmark.tasks.runner import request_for

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).parent / "results" / "speculative.json"
MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
MAX_TOKENS = {"summaries": 64, "answers": 32, "translations": 48, "chat": 64}
CHAT_PROMPTS = [
    "Write a short story about a lighthouse keeper and a storm.",
    "Give me three tips for learning to play the guitar.",
    "Explain why the sky is blue to a ten-year-old.",
    "Describe a walk through a forest in autumn.",
    "What should I pack for a weekend camping trip?",
    "Write a poem about the sea.",
    "How do I make a cup of good coffee?",
    "Tell me about the history of bicycles.",
]


def workloads(model: hallmark.Model, n: int) -> dict[str, list]:
    """Task prompts (hallmark.tasks.prompts.TaskPrompt) per workload, for this model."""

    def rows(path: Path) -> list[dict]:
        with open(path) as f:
            return [json.loads(line) for _, line in zip(range(n), f, strict=False)]

    summary = chosen_style("summarization", model)
    qa = chosen_style("qa", model)
    tr = chosen_style("translation", model)
    return {
        "summaries": [
            summary_prompt(r["document"][:2000], summary)
            for r in rows(DATA / "summarization" / "xsum.dev300.jsonl")
        ],
        "answers": [
            qa_prompt(r["question"], r["context"], qa) for r in rows(DATA / "qa" / "squad.dev300.jsonl")
        ],
        "translations": [
            translation_prompt(r["source"], "en", "fr", tr)
            for r in rows(DATA / "translation" / "tatoeba.en-fr.jsonl")
        ],
        "chat": CHAT_PROMPTS[:n],
    }


def request(model: hallmark.Model, prompt, max_tokens: int):
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    if isinstance(prompt, str):  # plain chat
        return model.chat_request([{"role": "user", "content": prompt}], params, conversation=False)
    return request_for(model, prompt, params, max_tokens)


def prompt_text(model: hallmark.Model, ids: list[int]) -> bytes:
    """The prompt as llama-lookup reads it (it adds BOS and parses control-token markup)."""
    tok = model.tokenizer
    body = ids[1:] if ids and ids[0] == tok.bos_token else ids
    return b"".join(tok.token_text(t).encode() if tok.is_special(t) else tok.token_bytes(t) for t in body)


def build_lookup() -> Path:
    server = build_llama_server()  # extracts and configures the vendored sources once
    build = server.parent.parent
    binary = build / "bin" / "llama-lookup"
    if not binary.exists():
        print("building llama-lookup ...", file=sys.stderr, flush=True)
        subprocess.run(
            ["cmake", "--build", str(build), "--target", "llama-lookup", "-j", "2"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return binary


def llama_lookup(binary: Path, model_path: Path, prompt: bytes, max_tokens: int, threads: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".txt") as f:
        f.write(prompt)
        f.flush()
        proc = subprocess.run(
            [
                str(binary),
                "-m",
                str(model_path),
                "-f",
                f.name,
                "-n",
                str(max_tokens),
                "--temp",
                "0",
                "--spec-draft-n-max",
                "4",
                "-t",
                str(threads),
                "-c",
                "4096",
            ],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=600,
        )
    log = proc.stdout + proc.stderr
    decoded = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", log)
    drafted = re.search(r"n_drafted\s*=\s*(\d+)", log)
    accepted = re.search(r"n_accept\s*=\s*(\d+)", log)
    if proc.returncode != 0 or decoded is None:
        raise RuntimeError(f"llama-lookup failed ({proc.returncode}): {log[-2000:]}")
    n, seconds = int(decoded.group(1)), float(decoded.group(2))
    return {
        "tokens": n,
        "seconds": seconds,
        "drafted": int(drafted.group(1)) if drafted else 0,
        "accepted": int(accepted.group(1)) if accepted else 0,
    }


def verify_costs(model: hallmark.Model, reps: int = 15) -> dict[str, float]:
    """Milliseconds of one backend call that evaluates k tokens of one sequence (all-position logits
    for k > 1), after a 500-token prompt, as a multiple of the one-token call: what verifying a
    k-1 token draft costs. Median of `reps`."""
    from hallmark.backends.base import SequenceInput

    backend = model.backend
    ids = model.tokenize("The history of the city begins with its founding on the river. " * 40)[:500]
    backend.free(0)
    backend.decode([SequenceInput(0, ids)])
    base = backend.sequence_length(0)
    ms = {}
    for k in (1, 2, 3, 5, 8):
        times = []
        for _ in range(reps):
            backend.truncate(0, base)
            t = time.perf_counter()
            backend.decode([SequenceInput(0, ids[:k], all_logits=k > 1)])
            times.append(time.perf_counter() - t)
        ms[k] = float(np.median(times)) * 1e3
    backend.free(0)
    return {str(k): round(v / ms[1], 2) for k, v in ms.items()} | {"ms_1": round(ms[1], 2)}


MODES = {
    "off": None,
    "always": SpeculativeConfig(adaptive=False),  # every draft found is verified
    "adaptive": SpeculativeConfig(),  # drafts only where they pay for the costs measured here
}


def run_model(name: str, n: int, threads: int, lookup: Path | None) -> dict:
    from hallmark.engine.speculative import step_costs

    model = hallmark.load(name, n_threads=threads, policy="off", n_ctx=4096)
    out = {}
    try:
        out["verify_cost"] = verify_costs(model)
        print(name, "verify cost (x one-token call)", out["verify_cost"], file=sys.stderr, flush=True)
        # What the adaptive mode decides with: the engine's own measurement (64-token context).
        out["engine_step_costs"] = list(step_costs(model.backend, 0, SpeculativeConfig().max_draft))
        for workload, prompts in workloads(model, n).items():
            cell = {
                m: {"tokens": 0, "seconds": 0.0, "drafted": 0, "accepted": 0, "identical": 0} for m in MODES
            }
            cell["llama_lookup"] = {"tokens": 0, "seconds": 0.0}
            n_prompts = 0
            for prompt in prompts:
                limit = MAX_TOKENS[workload]
                outputs = {}
                for mode, config in MODES.items():  # off first: it also warms the prompt's pages
                    model.speculative = config
                    req = request(model, prompt, limit)
                    result = next(r for _, r in model.generate_requests([req]))
                    c = cell[mode]
                    c["tokens"] += result.timings.predicted_n
                    c["seconds"] += result.timings.predicted_ms / 1e3
                    c["drafted"] += result.timings.draft_n
                    c["accepted"] += result.timings.draft_n_accepted
                    outputs[mode] = result.token_ids
                    c["identical"] += outputs[mode] == outputs["off"]
                n_prompts += 1
                if lookup is not None:
                    ll = llama_lookup(lookup, model.path, prompt_text(model, req.prompt_ids), limit, threads)
                    cell["llama_lookup"]["tokens"] += ll["tokens"]
                    cell["llama_lookup"]["seconds"] += ll["seconds"]
            tok_s = {m: cell[m]["tokens"] / cell[m]["seconds"] for m in MODES}
            row: dict = {
                "prompts": n_prompts,
                "tokens_off": cell["off"]["tokens"],
                "tok_s_off": round(tok_s["off"], 2),
            }
            for mode in ("always", "adaptive"):
                c = cell[mode]
                steps = c["tokens"] - c["accepted"]  # each verification step yields 1 + its accepted
                row[mode] = {
                    "tok_s": round(tok_s[mode], 2),
                    "speedup": round(tok_s[mode] / tok_s["off"], 3),
                    "drafted": c["drafted"],
                    "accepted": c["accepted"],
                    "tokens_per_step": round(c["tokens"] / max(steps, 1), 3),
                    "identical": c["identical"],
                }
            if lookup is not None:
                ll = cell["llama_lookup"]["tokens"] / cell["llama_lookup"]["seconds"]
                row["tok_s_llama_lookup"] = round(ll, 2)
                row["adaptive"]["vs_llama_lookup"] = round(tok_s["adaptive"] / ll, 3)
                row["always"]["vs_llama_lookup"] = round(tok_s["always"] / ll, 3)
            out[workload] = row
            print(name, workload, row, file=sys.stderr, flush=True)
    finally:
        model.close()
    return out


def rows(workloads: dict) -> list[dict]:
    return [r for k, r in workloads.items() if k not in ("verify_cost", "engine_step_costs")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--prompts", type=int, default=8, help="prompts per workload")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-llama", action="store_true", help="skip llama-lookup")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    lookup = None if args.no_llama else build_lookup()
    t0 = time.time()
    results = {name: run_model(name, args.prompts, args.threads, lookup) for name in args.models}
    record = {
        "benchmark": "speculative",
        "recorded": time.strftime("%Y-%m-%d"),
        "threads": args.threads,
        "prompts_per_workload": args.prompts,
        "max_tokens": MAX_TOKENS,
        "config": {k: v for k, v in vars(SpeculativeConfig()).items() if k != "step_costs"},
        "llama_cpp": f"vendored in llama-cpp-python {LLAMA_CPP_PYTHON}, "
        "llama-lookup --spec-draft-n-max 4 --temp 0",
        "seconds": round(time.time() - t0),
        "results": results,
        "speedup_geomean": {
            m: {
                mode: round(float(np.exp(np.mean([np.log(r[mode]["speedup"]) for r in rows(w)]))), 3)
                for mode in ("always", "adaptive")
            }
            for m, w in results.items()
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
