"""Experiment: llguidance vs xgrammar as hallmark's constrained-decoding engine, at 49k and 262k vocabularies.

For SmolLM2-135M (49k tokens) and gemma-3-270m (262k), and for each schema of the structured-output
benchmark (bench/structured_cases.py), it measures:

- tokenizer build: each engine's view of the GGUF vocabulary (token bytes, control tokens as b"",
  the end-of-generation tokens as stops), with and without the Python loop that reads the bytes;
- schema compile: llguidance as hallmark uses it (`Grammar.json_schema`, then the `GrammarState`
  whose matcher builds its lexer lazily) and xgrammar's `compile_json_schema` (cache off, then a
  `GrammarMatcher`), both writing JSON as hallmark does (no free whitespace, `, ` and `: `);
- per token, while walking the schema's example instance token by token: the engine's mask
  (a bitmask of 32-bit words, the same layout in both), hallmark's `TokenMask` over it (it counts
  the allowed tokens), `restrict` as the sampler calls it with top-k 40 (the logits of the top 40
  allowed tokens kept; random logits here), each engine's own kernel that applies a bitmask to the
  whole vocabulary, and advancing the matcher. "hallmark step" is mask + TokenMask + restrict +
  advance: the per-token work either engine would do inside hallmark's sampler.
  Median and p95 over every token of `--walks` walks, each with a fresh matcher (so the lazily built
  states of the first walk count too).

xgrammar is not a hallmark dependency (it requires torch, transformers and triton at install, which a
CPU inference install must not pull in); install it beside hallmark's dev environment, without its
dependencies (torch and transformers come with the `train`/`dev` extras; triton is not needed here):

    pip install --no-deps xgrammar apache-tvm-ffi
    python bench/experiments/grammar_engines.py               # both models, every schema (about 2 minutes)
    python bench/experiments/grammar_engines.py --models smollm2-135m-instruct --walks 3

Writes bench/results/grammar_engines.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmark_tables import grammar_engines_table  # noqa: E402
from structured_cases import CASES, check_examples, compact  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
MODELS = ("smollm2-135m-instruct", "gemma-3-270m")


def _xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError:
        sys.exit(
            "grammar_engines.py needs xgrammar, which is not a hallmark dependency:\n"
            "    pip install --no-deps xgrammar apache-tvm-ffi\n"
            "(with torch and transformers from hallmark's dev or train extra)"
        )
    return xgrammar


def _validator() -> Any:
    from structured import validator  # the benchmark's validator (the jsonschema package)

    return validator()


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    """Median seconds of `repeats` calls, and the last call's value."""
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def stats_us(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1e6
    return {"median": round(float(np.median(arr)), 2), "p95": round(float(np.percentile(arr, 95)), 2)}


def vocabulary(tok: Any) -> tuple[list[bytes], list[int]]:
    """The token bytes (control tokens as b"", as hallmark's llguidance wrapper gives them) and the
    end-of-generation ids, read from the GGUF vocabulary through hallmark's tokenizer."""
    n = tok.n_vocab
    special = [tok.is_special(t) for t in range(n)]
    data = [b"" if special[t] else tok.token_bytes(t) for t in range(n)]
    eog = [t for t in range(n) if special[t] and tok.is_eog(t)] or [tok.eos_token]
    return data, eog


# The sampler's default top-k (hallmark's and llama.cpp's): restrict keeps that many allowed tokens.
TOP_K = 40


def has(mask: Any, token: int) -> bool:
    return bool(mask.allows(np.array([token]))[0])


def bench_model(name: str, walks: int, repeats: int, threads: int) -> dict:
    import llguidance
    import llguidance.numpy as llnp
    import torch

    import hallmark
    from hallmark.engine import grammar as hg
    from hallmark.engine.sampler import TokenMask, restrict

    xgr = _xgrammar()
    model = hallmark.load(name, n_ctx=256, watermark=None, show_progress=False)
    tok = model.tokenizer
    n = tok.n_vocab
    out: dict[str, Any] = {"n_vocab": n}

    # -- tokenizers -------------------------------------------------------------------------------
    vocab_s, (data, eog) = timed(lambda: vocabulary(tok), repeats)

    def ll_build() -> Any:
        hg._tokenizers.clear()  # grammar_tokenizer caches by fingerprint; time the first use
        return hg.grammar_tokenizer(tok)

    ll_s, _ = timed(ll_build, repeats)
    wrapper = hg._Wrapper(tok)
    ll_engine_s, _ = timed(lambda: llguidance.LLTokenizer(wrapper, eos_token=wrapper.eos_token_ids), repeats)
    xgr_engine_s, info = timed(
        lambda: xgr.TokenizerInfo(data, xgr.VocabType.RAW, vocab_size=n, stop_token_ids=eog), repeats
    )
    out["tokenizer_s"] = {
        "vocabulary": round(vocab_s, 4),
        "llguidance": round(ll_s, 4),
        "llguidance_engine": round(ll_engine_s, 4),
        "xgrammar": round(vocab_s + xgr_engine_s, 4),
        "xgrammar_engine": round(xgr_engine_s, 4),
    }
    print(f"{name}: vocabulary {n}, tokenizers {out['tokenizer_s']}", file=sys.stderr, flush=True)

    compiler = xgr.GrammarCompiler(info, max_threads=threads, cache_enabled=False)
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(n).astype(np.float32)
    logits_t = torch.from_numpy(logits.copy())
    out["schemas"] = {}
    for case in CASES:
        text = compact(case.example)
        ids = tok.tokenize(text, add_special=False, parse_special=False)
        assert tok.detokenize(ids) == text, f"{case.name}: the example does not round-trip"

        # -- llguidance, as hallmark runs it ------------------------------------------------------
        compile_s, grammar = timed(lambda case=case: hg.Grammar.json_schema(case.schema), repeats)
        matcher_s, _ = timed(lambda grammar=grammar: hg.GrammarState(grammar, tok), repeats)
        ll: dict[str, list[float]] = {
            k: [] for k in ("mask", "token_mask", "restrict", "bitmask_apply", "advance")
        }
        ll_first: list[float] = []
        for _ in range(walks):
            state = hg.GrammarState(grammar, tok)
            bits = state._bits
            for i, t in enumerate(ids):
                t0 = time.perf_counter()
                state.matcher.unsafe_compute_mask_ptr(bits.ctypes.data, bits.nbytes)
                t1 = time.perf_counter()
                allowed = TokenMask(bits, n)
                t2 = time.perf_counter()
                restrict(logits, allowed, TOP_K)
                t3 = time.perf_counter()
                x = logits.copy()
                t4 = time.perf_counter()
                llnp.apply_token_bitmask_inplace(x, bits)
                t5 = time.perf_counter()
                assert has(allowed, t), f"llguidance rejects token {i} of the {case.name} example"
                t6 = time.perf_counter()
                state.advance(t)
                t7 = time.perf_counter()
                for k, v in zip(ll, (t1 - t0, t2 - t1, t3 - t2, t5 - t4, t7 - t6), strict=True):
                    ll[k].append(v)
                if i == 0:
                    ll_first.append(t1 - t0)
            assert state.complete or state.allowed().allows(np.array(eog)).any(), "llguidance: not complete"

        # -- xgrammar -----------------------------------------------------------------------------
        schema_text = json.dumps(case.schema)

        def xgr_compile(schema_text: str = schema_text) -> Any:
            return compiler.compile_json_schema(
                schema_text, any_whitespace=False, separators=(", ", ": "), strict_mode=True
            )

        x_compile_s, compiled = timed(xgr_compile, repeats)
        x_matcher_s, _ = timed(lambda compiled=compiled: xgr.GrammarMatcher(compiled), repeats)
        xg: dict[str, list[float]] = {k: [] for k in ll}
        xg_first: list[float] = []
        bitmask = xgr.allocate_token_bitmask(1, n)
        for _ in range(walks):
            matcher = xgr.GrammarMatcher(compiled)
            for i, t in enumerate(ids):
                t0 = time.perf_counter()
                matcher.fill_next_token_bitmask(bitmask)
                t1 = time.perf_counter()
                allowed = TokenMask(bitmask.numpy()[0], n)
                t2 = time.perf_counter()
                restrict(logits, allowed, TOP_K)
                t3 = time.perf_counter()
                xgr.apply_token_bitmask_inplace(logits_t, bitmask)
                t4 = time.perf_counter()
                assert has(allowed, t), f"xgrammar rejects token {i} of the {case.name} example"
                t5 = time.perf_counter()
                ok = matcher.accept_token(t)
                t6 = time.perf_counter()
                assert ok, f"xgrammar refuses token {i} of the {case.name} example"
                for k, v in zip(xg, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t6 - t5), strict=True):
                    xg[k].append(v)
                if i == 0:
                    xg_first.append(t1 - t0)
            matcher.fill_next_token_bitmask(bitmask)
            assert TokenMask(bitmask.numpy()[0], n).allows(np.array(eog)).any(), "xgrammar: not complete"

        def summary(samples: dict[str, list[float]], first: list[float], c_s: float, m_s: float) -> dict:
            per_token = [
                a + b + c + d
                for a, b, c, d in zip(
                    *(samples[k] for k in ("mask", "token_mask", "restrict", "advance")), strict=True
                )
            ]
            return {
                "compile_ms": round(c_s * 1e3, 3),
                "matcher_ms": round(m_s * 1e3, 3),
                "first_mask_us": round(statistics.median(first) * 1e6, 1),
                **{f"{k}_us": stats_us(v) for k, v in samples.items()},
                "hallmark_step_us": stats_us(per_token),
            }

        out["schemas"][case.name] = {
            "tokens": len(ids),
            "llguidance": summary(ll, ll_first, compile_s, matcher_s),
            "xgrammar": summary(xg, xg_first, x_compile_s, x_matcher_s),
        }
        row = out["schemas"][case.name]
        print(
            f"{name} {case.name}: {len(ids)} tokens; compile ms llguidance "
            f"{row['llguidance']['compile_ms']} + {row['llguidance']['matcher_ms']}, xgrammar "
            f"{row['xgrammar']['compile_ms']} + {row['xgrammar']['matcher_ms']}; mask us median "
            f"{row['llguidance']['mask_us']['median']} vs {row['xgrammar']['mask_us']['median']}",
            file=sys.stderr,
            flush=True,
        )
    model.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--walks", type=int, default=5, help="walks of each example, each with a fresh matcher")
    ap.add_argument("--repeats", type=int, default=3, help="timed builds and compiles (median)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="xgrammar's compile threads")
    ap.add_argument("--out", default=str(RESULTS / "grammar_engines.json"))
    args = ap.parse_args()
    check_examples(_validator())
    _xgrammar()
    res = {
        "benchmark": "grammar_engines",
        "date": time.strftime("%Y-%m-%d"),
        "versions": {
            p: importlib.metadata.version(p) for p in ("llguidance", "xgrammar", "llama-cpp-python")
        },
        "settings": {"walks": args.walks, "repeats": args.repeats, "xgrammar_threads": args.threads},
        "models": {name: bench_model(name, args.walks, args.repeats, args.threads) for name in args.models},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    table = grammar_engines_table(res)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
