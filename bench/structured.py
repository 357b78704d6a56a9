"""Structured-output benchmark: hallmark's JSON-schema decoding vs llama.cpp's llama-server `json_schema`.

For each model (SmolLM2-135M-Instruct, chat-formatted prompts; gemma-3-270m, a base model, plain
text), `--n` extraction prompts built from real documents (XSum articles, SQuAD paragraphs in
../shared/data) spread over the five schemas of bench/structured_cases.py. Every prompt runs, back to
back so that a slow spell of the shared machine hits all four alike:

1. hallmark constrained: `hallmark serve`'s /v1/completions with the prompt's token ids and
   `response_format` json_schema, watermarked as shipped;
2. hallmark unconstrained: the same prompt and seed without the schema;
3. llama-server constrained: `/completion` with the same token ids, `json_schema`, max_tokens, seed
   and sampling settings, on the same GGUF file and thread count (started by this script);
4. llama-server unconstrained: the same without the schema.

Measured per model, per schema and overall:
- validity: an output is valid when it finished (end of grammar or end-of-generation token) and
  parses as JSON valid under the schema (the jsonschema package, formats checked); outputs cut by
  max_tokens ("length") are counted apart, never as valid. A finished hallmark output that is not
  valid is an engine bug: the script lists each with its schema, prompt and seed.
- the mask's cost: inside the run, the time in `GrammarState.allowed()`, `sampler.restrict`,
  `GrammarState.advance()` and the matcher's creation, and the time `Sampler.sample` takes beyond
  its unconstrained cost per token (a mask changes what the filters after it cost), as a share of
  the decode time the engine reports (target <= 10%); and decode tokens/s constrained vs
  unconstrained on the same prompts.
- the watermark on constrained output: detection at p < 0.01 (and 0.001) with the model's
  watermark spec and key, as bench/watermark.py scores it (from the text); the tokens the detector
  scored and the tokens that were free (the sampler had more than one candidate after the grammar
  and the filters: forced tokens carry no watermark). llama-server's outputs, unwatermarked and
  of the same shapes, are the negatives (their share flagged is the false-positive rate).
- llama-server side by side: its validity, and decode tokens/s of both engines as each reports it
  (`timings`: time from the first generated token on), with the hallmark / llama-server ratio.

Both servers are queried over loopback HTTP, one request at a time, one slot each. hallmark's server
runs as `structured.py --serve-instrumented`: `hallmark serve` with the functions named above wrapped
to time them (the engine is not changed) and each request's counts appended to a file the client
reads after the response. `--via api` runs hallmark through its Python API in this process instead.
llama-server is built by bench/serve.py (`build_llama_server`).

    python bench/structured.py                       # 200 per model, both models (about 2 hours)
    python bench/structured.py --quick               # 10 per model, a look at every number
    python bench/structured.py --models gemma-3-270m --n 50
    PYTHONPATH=$(python -c "import sys; sys.path[:0] = ['bench']; from baseline import checkout; \
        print(checkout('HEAD').src)") python bench/structured.py     # hallmark as committed

Writes bench/results/structured.json and bench/results/structured.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from benchmark_tables import structured_table as markdown
from serve import CACHE, build_llama_server, free_port, stop
from structured_cases import CASES, chat_messages, check_examples, items, prompt_text
from watermark import EVAL_SECRET

RESULTS = Path(__file__).parent / "results"
MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
CHAT_MODELS = {"smollm2-135m-instruct"}  # instruction-tuned: chat prompts; the others: plain text
# hallmark's and llama.cpp's default sampling, written out so that both servers get the same.
SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
N_CTX = 1024
PASSES = ("hallmark", "hallmark_free", "llama_server", "llama_server_free")


# -- validity ---------------------------------------------------------------------------------------
def validator() -> Callable[[dict, Any], str | None]:
    """`validate(schema, instance)` -> the first error, or None: the `jsonschema` package (the dev
    extra's oracle, independent of llguidance and llama.cpp), JSON Schema 2020-12 with formats checked."""
    import jsonschema

    cls = jsonschema.Draft202012Validator
    cache: dict[str, Any] = {}

    def validate(schema: dict, instance: Any) -> str | None:
        key = json.dumps(schema, sort_keys=True)
        if key not in cache:
            cls.check_schema(schema)
            cache[key] = cls(schema, format_checker=cls.FORMAT_CHECKER)
        error = jsonschema.exceptions.best_match(cache[key].iter_errors(instance))
        return (
            None
            if error is None
            else f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        )

    return validate


def check_output(text: str, finished: bool, schema: dict, validate: Callable) -> tuple[bool, str | None]:
    """(valid, why not). An output cut by max_tokens is never valid, whatever it holds."""
    if not finished:
        return False, "cut by max_tokens"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return False, f"not JSON: {e}"
    error = validate(schema, value)
    return error is None, error


# -- hallmark, instrumented --------------------------------------------------------------------------
class Probe:
    """Time spent in the grammar's functions during one request, and the sampler's free choices.

    Installed by wrapping the functions (the engine is not changed): GrammarState.__init__ (the
    matcher), .allowed (the mask as token ids), .advance, sampler.restrict (the mask applied to the
    logits), Sampler.sample (the whole choice of a token, restrict included: a mask changes what
    the filters after it cost) and SequenceWatermarker.pick (how many candidates the watermark chose
    among)."""

    FIELDS = (
        "init_s",
        "allowed_s",
        "restrict_s",
        "advance_s",
        "sample_s",
        "steps",
        "forced",
        "picks",
        "free",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        for f in self.FIELDS:
            setattr(self, f, 0)

    def snapshot(self) -> dict[str, float]:
        return {f: getattr(self, f) for f in self.FIELDS}

    def install(self) -> None:
        from hallmark.engine import grammar, sampler
        from hallmark.watermark import schemes

        probe = self
        state = grammar.GrammarState
        init, allowed, advance = state.__init__, state.allowed, state.advance
        restrict, pick = sampler.restrict, schemes.SequenceWatermarker.pick
        sample = sampler.Sampler.sample

        def timed_init(self: Any, *a: Any, **k: Any) -> None:
            t0 = time.perf_counter()
            init(self, *a, **k)
            probe.init_s += time.perf_counter() - t0

        def timed_allowed(self: Any) -> Any:
            t0 = time.perf_counter()
            mask = allowed(self)
            probe.allowed_s += time.perf_counter() - t0
            probe.steps += 1
            probe.forced += (mask.count if hasattr(mask, "count") else mask.shape[0]) == 1
            return mask

        def timed_advance(self: Any, token: int) -> None:
            t0 = time.perf_counter()
            advance(self, token)
            probe.advance_s += time.perf_counter() - t0

        def timed_restrict(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            out = restrict(*a, **k)
            probe.restrict_s += time.perf_counter() - t0
            return out

        def timed_sample(self: Any, *a: Any, **k: Any) -> int:
            t0 = time.perf_counter()
            token = sample(self, *a, **k)
            probe.sample_s += time.perf_counter() - t0
            return token

        def counted_pick(self: Any, cand: np.ndarray, *a: Any, **k: Any) -> Any:
            probe.picks += 1
            probe.free += cand.shape[0] > 1
            return pick(self, cand, *a, **k)

        state.__init__, state.allowed, state.advance = timed_init, timed_allowed, timed_advance
        sampler.restrict = timed_restrict  # Sampler.sample looks it up in its module at each call
        sampler.Sampler.sample = timed_sample
        schemes.SequenceWatermarker.pick = counted_pick

    def write_per_request(self, path: str) -> None:
        """In a server: when a request's result is made, append its counts, seed and output ids to
        `path` (one JSON line) and start counting afresh. Requests run one at a time (1 slot, one
        client), so everything counted since the previous line is this request's."""
        from hallmark.engine.request import Request

        probe, result = self, Request.result
        out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the server's lifetime

        def result_and_probe(self: Any, *a: Any, **k: Any) -> Any:
            r = result(self, *a, **k)
            if not getattr(self, "_probed", False):
                self._probed = True
                line = {"seed": self.seed, "grammar": self.grammar is not None, "output_ids": self.output_ids}
                out.write(json.dumps({**line, "stop_reason": r.stop_reason.value, "probe": probe.snapshot()}))
                out.write("\n")
                probe.reset()
            return r

        Request.result = result_and_probe


PROBE = Probe()


def serve_instrumented(argv: list[str]) -> None:
    """`structured.py --serve-instrumented PROBE_FILE serve ARGS...`: `hallmark serve ARGS` with the
    probe installed and each request's counts appended to PROBE_FILE."""
    PROBE.install()
    PROBE.write_per_request(argv[0])
    from hallmark.cli.main import main as hallmark_cli

    hallmark_cli(argv[1:])


def run_hallmark(model: Any, ids: list[int], schema: dict | None, seed: int, max_tokens: int) -> dict:
    PROBE.reset()
    t0 = time.perf_counter()
    r = model.generate(ids, response_format=schema, seed=seed, max_tokens=max_tokens, **SAMPLING)
    wall = time.perf_counter() - t0
    probe = PROBE.snapshot()
    return {
        "text": r.text,
        "finished": r.finish_reason == "stop",
        "stop_reason": r.stop_reason.value,
        "tokens": len(r.token_ids),
        "decode_ms": r.timings.predicted_ms,
        "prompt_ms": r.timings.prompt_ms,
        "wall_ms": wall * 1e3,
        "spec_id": r.watermark.spec_id if r.watermark.applied else None,
        "token_ids": r.token_ids,
        "grammar_ms": 1e3 * (probe["init_s"] + probe["allowed_s"] + probe["restrict_s"] + probe["advance_s"]),
        "probe": probe,
    }


class HallmarkServer:
    """`hallmark serve` on one model (1 slot, the policy off, no request log), instrumented."""

    def __init__(self, model_path: Path, threads: int):
        CACHE.mkdir(parents=True, exist_ok=True)
        self.probe_path = CACHE / "hallmark-structured-probe.jsonl"
        self.probe_path.write_text("")
        self.read = 0
        port = free_port()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-instrumented", str(self.probe_path)]
        cmd += ["serve", str(model_path), "--port", str(port), "--parallel", "1", "--ctx-size", str(N_CTX)]
        cmd += ["--threads", str(threads), "--no-log", "--policy", "off"]
        log_path = CACHE / "hallmark-structured.log"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log_path.open("w"))
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hallmark serve exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            stop(self.proc)
            raise RuntimeError("hallmark serve did not start")
        self.client = httpx.Client(base_url=self.url, timeout=600)
        self.model = self.client.get("/v1/models").json()["data"][0]["id"]

    def next_probe(self) -> dict:
        lines = self.probe_path.read_text().splitlines()
        if len(lines) != self.read + 1:
            raise RuntimeError(f"expected one probe line per request, found {len(lines) - self.read} new")
        self.read += 1
        return json.loads(lines[-1])

    def run(self, ids: list[int], schema: dict | None, seed: int, max_tokens: int, name: str) -> dict:
        body: dict[str, Any] = {"model": self.model, "prompt": ids, "max_tokens": max_tokens, "seed": seed}
        body |= {**SAMPLING, "repetition_penalty": 1.0}
        if schema is not None:
            spec = {"name": name, "schema": schema, "strict": True}
            body["response_format"] = {"type": "json_schema", "json_schema": spec}
        t0 = time.perf_counter()
        resp = self.client.post("/v1/completions", json=body)
        wall = time.perf_counter() - t0
        if resp.status_code != 200:
            raise RuntimeError(f"hallmark serve: HTTP {resp.status_code}: {resp.text[:300]}")
        d = resp.json()
        line = self.next_probe()
        if line["seed"] != seed or line["grammar"] != (schema is not None):
            raise RuntimeError(f"probe line {line['seed']}/{line['grammar']} is not request {seed}")
        wm = d["hallmark"]["watermark"]
        return {
            "text": d["choices"][0]["text"],
            "finished": d["choices"][0]["finish_reason"] == "stop",
            "stop_reason": line["stop_reason"],
            "tokens": d["timings"]["predicted_n"],
            "decode_ms": d["timings"]["predicted_ms"],
            "prompt_ms": d["timings"]["prompt_ms"],
            "wall_ms": wall * 1e3,
            "spec_id": wm["spec_id"] if wm["applied"] else None,
            "token_ids": line["output_ids"],
            "grammar_ms": 1e3
            * sum(line["probe"][k] for k in ("init_s", "allowed_s", "restrict_s", "advance_s")),
            "probe": line["probe"],
        }

    def close(self) -> None:
        self.client.close()
        stop(self.proc)


# -- llama-server -------------------------------------------------------------------------------------
def start_llama_server(model_path: Path, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [str(build_llama_server()), "-m", str(model_path), "--port", str(port), "--parallel", "1"]
    cmd += ["-c", str(N_CTX), "-t", str(threads), "-tb", str(threads), "--no-webui"]
    CACHE.mkdir(parents=True, exist_ok=True)
    log_path = CACHE / "llama_server-structured.log"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log_path.open("w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop(proc)
    raise RuntimeError("llama-server did not start")


def run_llama_server(
    client: httpx.Client, ids: list[int], schema: dict | None, seed: int, max_tokens: int
) -> dict:
    body: dict[str, Any] = {"prompt": ids, "n_predict": max_tokens, "seed": seed, **SAMPLING}
    body["repeat_penalty"] = 1.0  # hallmark's default; llama.cpp's too, written out
    if schema is not None:
        body["json_schema"] = schema
    t0 = time.perf_counter()
    resp = client.post("/completion", json=body)
    wall = time.perf_counter() - t0
    if resp.status_code != 200:
        return {"error": f"HTTP {resp.status_code}: {resp.text[:300]}"}
    d = resp.json()
    if d.get("tokens_evaluated") not in (None, len(ids)):
        raise RuntimeError(f"llama-server evaluated {d['tokens_evaluated']} prompt tokens, not {len(ids)}")
    t = d["timings"]
    return {
        "text": d["content"],
        "finished": d.get("stop_type") in ("eos", "word"),
        "stop_reason": d.get("stop_type"),
        "tokens": t["predicted_n"],
        "decode_ms": t["predicted_ms"],
        "prompt_ms": t["prompt_ms"],
        "wall_ms": wall * 1e3,
    }


# -- one model ----------------------------------------------------------------------------------------
def prompt_ids(model: Any, case: Any, doc: dict, chat: bool) -> list[int]:
    if chat:
        return model.chat_prompt_ids(chat_messages(case, doc))
    return model.tokenize(prompt_text(case, doc))


def _verdict(run: dict) -> str:
    return "valid" if run["valid"] else "INVALID" if run["finished"] else "cut"


def bench_model(name: str, args: argparse.Namespace, validate: Callable) -> dict:
    import hallmark
    from hallmark.catalog import resolve
    from hallmark.watermark import Detector, WatermarkSpec

    path = resolve(name).path
    # The request policy screens requests, not task documents (as hallmark's task runner does not):
    # the default policy refused an XSum extraction prompt as disinformation (score 0.90).
    model = hallmark.load(name, n_ctx=N_CTX, n_threads=args.threads, show_progress=False, policy="off")
    chat = name in CHAT_MODELS
    server = HallmarkServer(path, args.threads) if args.via == "server" else None

    def hallmark_run(ids: list[int], schema: dict | None, seed: int, max_tokens: int, case: str) -> dict:
        if server is not None:
            return server.run(ids, schema, seed, max_tokens, case)
        return run_hallmark(model, ids, schema, seed, max_tokens)

    proc, url = start_llama_server(path, args.threads)
    records: list[dict] = []
    try:
        client = httpx.Client(base_url=url, timeout=600)
        work = items(args.n)
        # Warm-up, not recorded: llguidance's view of the vocabulary (1 s at 262k tokens), the
        # caches of both engines, and one grammar of every schema on each.
        for case in CASES:
            doc = next(d for c, d in work if c is case)
            ids = prompt_ids(model, case, doc, chat)
            hallmark_run(ids, case.schema, 0, 8, case.name)
            run_llama_server(client, ids, case.schema, 0, 8)
        t_start = time.perf_counter()
        for i, (case, doc) in enumerate(work):
            ids = prompt_ids(model, case, doc, chat)
            if len(ids) + args.max_tokens > N_CTX:
                raise ValueError(
                    f"{case.name} prompt {doc['id']} has {len(ids)} tokens: too long for {N_CTX}"
                )
            seed = 1000 + i
            rec: dict[str, Any] = {
                "case": case.name,
                "doc": doc["id"],
                "seed": seed,
                "prompt_tokens": len(ids),
            }
            rec["hallmark"] = hallmark_run(ids, case.schema, seed, args.max_tokens, case.name)
            rec["hallmark_free"] = hallmark_run(ids, None, seed, args.max_tokens, case.name)
            rec["llama_server"] = run_llama_server(client, ids, case.schema, seed, args.max_tokens)
            rec["llama_server_free"] = run_llama_server(client, ids, None, seed, args.max_tokens)
            for engine in ("hallmark", "llama_server"):
                out = rec[engine]
                if "error" not in out:
                    out["valid"], out["why"] = check_output(
                        out["text"], out["finished"], case.schema, validate
                    )
            if rec["hallmark"]["finished"] and not rec["hallmark"]["valid"]:
                rec["prompt"] = model.detokenize(ids)  # an engine bug: keep what reproduces it
            records.append(rec)
            h, s = rec["hallmark"], rec["llama_server"]
            eta = (time.perf_counter() - t_start) / (i + 1) * (len(work) - i - 1)
            print(
                f"[{name} {i + 1}/{len(work)}, {eta / 60:.0f} min left] {case.name}: hallmark "
                f"{h['tokens']} tok {h['stop_reason']} {_verdict(h)} "
                f"{1e3 * h['tokens'] / max(h['decode_ms'], 1e-9):.0f} tok/s, mask {h['grammar_ms']:.1f} ms | "
                f"free {rec['hallmark_free']['tokens']} tok | llama-server "
                + (
                    s["error"][:60]
                    if "error" in s
                    else f"{s['tokens']} tok {s['stop_reason']} {_verdict(s)} "
                    f"{1e3 * s['tokens'] / max(s['decode_ms'], 1e-9):.0f} tok/s"
                ),
                file=sys.stderr,
                flush=True,
            )
    finally:
        stop(proc)
        if server is not None:
            server.close()

    # Watermark: scored from the text with the spec the outputs name and the evaluation key.
    spec_ids = {r[p]["spec_id"] for r in records for p in ("hallmark", "hallmark_free") if r[p]["spec_id"]}
    if len(spec_ids) != 1:
        raise RuntimeError(f"expected one watermark spec for {name}, got {spec_ids}")
    spec_id = spec_ids.pop()
    detector = Detector(model.tokenizer, WatermarkSpec.from_id(spec_id), EVAL_SECRET)
    for rec in records:
        for p in PASSES:
            out = rec[p]
            if "error" in out:
                continue
            if out["text"].strip():
                d = detector.detect(out["text"])
                out["p_value"], out["scored"] = d.p_value, d.scored
            else:
                out["p_value"], out["scored"] = 1.0, 0
            if "token_ids" in out:  # hallmark: also from the ids it sampled (text re-tokenized may differ)
                out["canonical"] = model.tokenize(out["text"], add_special=False) == out["token_ids"]
                out["p_value_ids"] = (
                    detector.detect_tokens(out["token_ids"]).p_value if out["token_ids"] else 1.0
                )
    model.close()
    return {
        "watermark_spec": spec_id,
        "chat_prompts": chat,
        "overall": summarize(records),
        "schemas": {c.name: summarize([r for r in records if r["case"] == c.name]) for c in CASES},
        "hallmark_invalid_finished": [
            {
                "schema": r["case"],
                "doc": r["doc"],
                "seed": r["seed"],
                "why": r["hallmark"]["why"],
                "text": r["hallmark"]["text"],
                "prompt": r["prompt"],
            }
            for r in records
            if "prompt" in r
        ],
        "samples": {
            c.name: {p: next(r[p].get("text") for r in records if r["case"] == c.name) for p in PASSES}
            for c in CASES
            if any(r["case"] == c.name for r in records)
        },
        "records": [compact_record(r) for r in records],
    }


def compact_record(rec: dict) -> dict:
    """One prompt's four runs without their texts (the outputs are samples and failures only)."""
    keep = ("finished", "valid", "tokens", "decode_ms", "wall_ms", "grammar_ms", "p_value", "p_value_ids")
    keep += ("scored", "canonical", "error")
    out = {k: rec[k] for k in ("case", "doc", "seed", "prompt_tokens")}
    for p in PASSES:
        run = {k: rec[p][k] for k in keep if k in rec[p]}
        for k in ("decode_ms", "wall_ms", "grammar_ms"):
            if k in run:
                run[k] = round(run[k], 2)
        for k in ("p_value", "p_value_ids"):
            if k in run:
                run[k] = float(f"{run[k]:.4g}")
        if "probe" in rec[p]:
            run["free_tokens"] = rec[p]["probe"]["free"]
            run["forced_by_grammar"] = rec[p]["probe"]["forced"]
        out[p] = run
    return out


# -- summaries ----------------------------------------------------------------------------------------
def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def summarize(records: list[dict]) -> dict:
    out: dict[str, Any] = {"n": len(records)}
    for p in PASSES:
        runs = [r[p] for r in records if "error" not in r[p]]
        tokens = sum(x["tokens"] for x in runs)
        decode_s = sum(x["decode_ms"] for x in runs) / 1e3
        s: dict[str, Any] = {
            "n": len(runs),
            "errors": len(records) - len(runs),
            "finished": sum(x["finished"] for x in runs),
            "length": sum(not x["finished"] for x in runs),
            "tokens_median": _median([x["tokens"] for x in runs]),
            "tokens_total": tokens,
            "decode_tps": tokens / decode_s if decode_s else None,
            "wall_tps": tokens / (sum(x["wall_ms"] for x in runs) / 1e3) if runs else None,
            "detected_p01": _rate(sum(x["p_value"] < 0.01 for x in runs), len(runs)),
            "detected_p001": _rate(sum(x["p_value"] < 0.001 for x in runs), len(runs)),
            "scored_median": _median([x["scored"] for x in runs]),
        }
        if p in ("hallmark", "llama_server"):
            s["valid"] = sum(bool(x["valid"]) for x in runs)
            s["valid_among_finished"] = _rate(s["valid"], s["finished"])
            s["finished_share"] = _rate(s["finished"], len(runs))
            s["invalid_finished"] = s["finished"] - s["valid"]
            if s["errors"]:
                s["first_error"] = next(r[p]["error"] for r in records if "error" in r[p])
            reasons = Counter(x["why"][:100] for x in runs if x["finished"] and not x["valid"])
            if reasons:
                s["invalid_reasons"] = dict(reasons.most_common(5))
        if p.startswith("hallmark"):
            probe = {k: sum(x["probe"][k] for x in runs) for k in Probe.FIELDS}
            s["free_median"] = _median([x["probe"]["free"] for x in runs])
            s["free_share"] = _rate(probe["free"], tokens)
            s["sampler_us_per_token"] = 1e6 * probe["sample_s"] / tokens if tokens else None
            s["detected_p01_from_ids"] = _rate(sum(x["p_value_ids"] < 0.01 for x in runs), len(runs))
            s["canonical_share"] = _rate(sum(x["canonical"] for x in runs), len(runs))
        if p == "hallmark":
            mask_s = probe["init_s"] + probe["allowed_s"] + probe["restrict_s"] + probe["advance_s"]
            s["mask_share_of_decode"] = mask_s / decode_s if decode_s else None
            s["mask_us_per_token"] = 1e6 * mask_s / tokens if tokens else None
            s["mask_split_us_per_token"] = {
                k[:-2]: round(1e6 * probe[k] / tokens, 1) if tokens else None
                for k in ("allowed_s", "restrict_s", "advance_s", "init_s")
            }
            s["forced_share"] = _rate(probe["forced"], probe["steps"])
            s["_grammar_s"] = probe["init_s"] + probe["allowed_s"] + probe["advance_s"] + probe["sample_s"]
        out[p] = s
    h, hf, ls, lsf = (out[p] for p in PASSES)
    # The grammar's whole cost per token inside the run: the mask's functions, plus what sampling
    # costs beyond its unconstrained cost per token on the same prompts (a narrow mask makes the
    # top-k after it slower). Restrict runs inside Sampler.sample, so it is counted once.
    extra_s = h.pop("_grammar_s") - (hf["sampler_us_per_token"] or 0.0) * 1e-6 * h["tokens_total"]
    decode_s = h["tokens_total"] / h["decode_tps"] if h["decode_tps"] else None
    h["grammar_share_of_decode"] = extra_s / decode_s if decode_s else None
    h["grammar_us_per_token"] = 1e6 * extra_s / h["tokens_total"] if h["tokens_total"] else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    out["ratios"] = {
        "hallmark_vs_llama_server_decode": ratio(h["decode_tps"], ls["decode_tps"]),
        "hallmark_vs_llama_server_wall": ratio(h["wall_tps"], ls["wall_tps"]),
        "hallmark_constrained_vs_free_decode": ratio(h["decode_tps"], hf["decode_tps"]),
        "llama_server_constrained_vs_free_decode": ratio(ls["decode_tps"], lsf["decode_tps"]),
        "hallmark_vs_llama_server_free_decode": ratio(hf["decode_tps"], lsf["decode_tps"]),
    }
    return out


def git_state() -> dict[str, Any]:
    """The commit of the hallmark this process imports (the working tree, or a checkout put first on
    PYTHONPATH, as bench/baseline.py does) and whether its src/ differs from that commit."""
    import hallmark

    src = Path(hallmark.__file__).resolve().parents[1]

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=src, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "src_dirty": bool(git("status", "--porcelain", "."))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="generations per model, spread over the schemas")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--quick", action="store_true", help="10 generations per model (2 per schema)")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument(
        "--via",
        choices=("server", "api"),
        default="server",
        help="hallmark over HTTP (hallmark serve, as llama-server is) or its Python API in this process",
    )
    ap.add_argument("--out", default=str(RESULTS / "structured.json"))
    args = ap.parse_args()
    if args.quick:
        args.n = 10
    # The evaluation key (bench/watermark.py's): detection needs the secret the outputs were made with.
    os.environ["HALLMARK_WATERMARK_KEY"] = EVAL_SECRET.hex()
    validate = validator()
    check_examples(validate)
    if args.via == "api":
        PROBE.install()
    import importlib.metadata

    res: dict[str, Any] = {
        "benchmark": "structured",
        "date": time.strftime("%Y-%m-%d"),
        **git_state(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "settings": {
            "n": args.n,
            "max_tokens": args.max_tokens,
            "threads": args.threads,
            "n_ctx": N_CTX,
            "sampling": SAMPLING,
            "hallmark_via": (
                "hallmark serve (/v1/completions, token ids, response_format json_schema, 1 slot)"
                if args.via == "server"
                else "its Python API in the benchmark's process"
            ),
            "llama_server": "llama.cpp from llama-cpp-python "
            + importlib.metadata.version("llama-cpp-python")
            + ", /completion with json_schema, 1 slot",
            "validator": "jsonschema " + importlib.metadata.version("jsonschema") + ", formats checked",
            "llguidance": importlib.metadata.version("llguidance"),
            "watermark_key": "bench/watermark.py's evaluation key",
        },
        "cases": {c.name: {"shape": c.shape, "source": c.source, "schema": c.schema} for c in CASES},
        "models": {},
    }
    for name in args.models:
        print(f"== {name}", file=sys.stderr, flush=True)
        res["models"][name] = bench_model(name, args, validate)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
    table = markdown(res)
    out.with_suffix(".md").write_text(table)
    print(table)
    bugs = [(m, b) for m, r in res["models"].items() for b in r["hallmark_invalid_finished"]]
    for m, b in bugs:
        print(f"ENGINE BUG: {m} {b['schema']} seed {b['seed']} doc {b['doc']}: {b['why']}", file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-instrumented"]:
        serve_instrumented(sys.argv[2:])
    else:
        main()
