"""Serving benchmark: hallmark's server vs llama-cpp-python's server vs llama.cpp's llama-server.

Same model, same number of slots, same prompt and output lengths (end-of-text tokens are banned
with logit_bias, which all three accept), streaming completions over loopback HTTP. Each request's
prompt starts with its own number, so no server can answer from a cached prompt: the comparison
is of batching and decoding, not of prompt caching (all three have it).
At concurrency 1, 4, 8 and 16 it reports TTFT, TPOT and ITL at p50/p99 and output tokens/s,
over several rounds with the servers interleaved (the median round's tokens/s counts); then a
soak run of 500 requests at mixed concurrency against hallmark (errors, RSS growth).
hallmark runs with its watermark and request policy on, as it ships; `hallmark_policy_off` is the same
server without the policy screen (the other servers screen nothing), so the two show what it costs.

llama-server is built by this script from the llama.cpp sources vendored in the
llama-cpp-python sdist (`pip download --no-binary`), into ~/.cache/hallmark-bench; never committed.

    python bench/serve.py                      # everything (about 35 minutes on 2 cores)
    python bench/serve.py --servers hallmark --no-soak
    python bench/serve.py --baseline 7e25356   # also hallmark at that commit, interleaved in the rounds

Writes bench/results/serve.json and bench/results/serve.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import numpy as np
from benchmark_tables import serve_table as markdown

RESULTS = Path(__file__).parent / "results"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hallmark-bench"
LLAMA_CPP_PYTHON = "0.3.36"
# hallmark_policy_off: hallmark as shipped but without request screening (--policy off), which the
# other servers do not do: the difference is what screening costs (~21 ms of one core a request).
SERVERS = ("hallmark", "hallmark_policy_off", "llama_cpp_server", "llama_server")
BASELINE = None  # a baseline.Baseline when --baseline is given: the server kind "hallmark_baseline"
REQUEST_NUMBERS = itertools.count()
PROMPT = (
    "The following is a detailed report on the history of the city's harbour, its trade, its "
    "ships and the people who worked there over three centuries. Chapter one: the early years."
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- llama-server build -----------------------------------------------------------------------------
def build_llama_server() -> Path:
    out = CACHE / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    binary = out / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist_dir = CACHE / "sdist"
    sdists = list(sdist_dir.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"))
    if not sdists:
        print("downloading the llama-cpp-python sdist ...", file=sys.stderr, flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(sdist_dir),
                f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
            ],
            check=True,
        )
        sdists = list(sdist_dir.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"))
    print("extracting vendored llama.cpp ...", file=sys.stderr, flush=True)
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    with tarfile.open(sdists[0]) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        for m in members:
            m.name = m.name[len(prefix) :]
        if out.exists():
            shutil.rmtree(out)
        tar.extractall(out, members=members, filter="data")
    print("building llama-server (several minutes) ...", file=sys.stderr, flush=True)
    build = out / "build"
    flags = [
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DBUILD_SHARED_LIBS=OFF",
    ]
    subprocess.run(
        ["cmake", "-S", str(out), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", *flags],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 2)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return binary


# -- servers ------------------------------------------------------------------------------------------
def start(kind: str, model_path: Path, slots: int, n_ctx: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HALLMARK_LOG_DB": str(CACHE / "serve-bench-logs.db")}
    if kind == "hallmark_baseline":  # the same command, with the baseline revision's hallmark
        assert BASELINE is not None, "hallmark_baseline needs --baseline REF"
        env = BASELINE.env(env)
    if kind in ("hallmark", "hallmark_baseline", "hallmark_policy_off"):
        cmd = [
            sys.executable,
            "-m",
            "hallmark",
            "serve",
            str(model_path),
            "--port",
            str(port),
            "--parallel",
            str(slots),
            "--ctx-size",
            str(n_ctx),
            "--threads",
            str(threads),
            "--max-queue",
            "1000",
            "--no-log",
            *(["--policy", "off"] if kind == "hallmark_policy_off" else []),
        ]
    elif kind == "llama_cpp_server":
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--host",
            "127.0.0.1",
            "--model",
            str(model_path),
            "--port",
            str(port),
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            "--interrupt_requests",  # by default a new request cuts off the stream being served
            "False",
        ]
    else:
        cmd = [
            str(build_llama_server()),
            "-m",
            str(model_path),
            "--port",
            str(port),
            "--parallel",
            str(slots),
            "-c",
            str(n_ctx * slots),
            "-t",
            str(threads),
            "-tb",
            str(threads),
            "--no-webui",
        ]
    # Server logs go to a file: a pipe nobody reads fills up and blocks a verbose server.
    log_path = CACHE / f"{kind}.log"
    CACHE.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log_path.open("w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/v1/models", timeout=1).status_code == 200:  # every server has this
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{kind} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- load -------------------------------------------------------------------------------------------
async def one_request(client: httpx.AsyncClient, body: dict) -> dict:
    try:
        return await _timed_request(client, body)
    except httpx.HTTPError as e:
        return {"error": f"{type(e).__name__}: {e}"}


async def _timed_request(client: httpx.AsyncClient, body: dict) -> dict:
    t0 = time.perf_counter()
    stamps: list[float] = []
    async with client.stream("POST", "/v1/completions", json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return {"error": f"HTTP {resp.status_code}: {resp.text[:200]}"}
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("choices") and data["choices"][0].get("text"):
                stamps.append(time.perf_counter())
    if not stamps:
        return {"error": "no tokens"}
    return {
        "ttft": stamps[0] - t0,
        "e2e": stamps[-1] - t0,
        "itl": np.diff(stamps).tolist(),
        "chunks": len(stamps),
    }


async def run_level(url: str, concurrency: int, n_requests: int, body: dict) -> list[dict]:
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        queue = list(range(n_requests))
        out: list[dict] = []

        async def worker() -> None:
            while queue:
                queue.pop()
                i = next(REQUEST_NUMBERS)  # never repeats, so no prompt is ever seen twice
                out.append(await one_request(client, {**body, "prompt": f"Report {i}. {body['prompt']}"}))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return out


def requests_per_level(concurrency: int, min_requests: int) -> int:
    """Four waves of requests at least: with fewer, the ramp at the start and the stragglers at the
    end (a batch that is not full) weigh on tokens/s more than the steady state being measured."""
    return max(min_requests, 4 * concurrency)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3 if values else float("nan")


def tokens_per_s(results: list[dict], wall: float, out_tokens: int) -> float:
    """Output tokens/s of one level's run: every successful request made exactly `out_tokens`."""
    return sum("error" not in r for r in results) * out_tokens / wall


def summarize(rounds: list[tuple[list[dict], float]], out_tokens: int) -> dict:
    """One cell from its rounds: tokens/s is the median round's; latencies pool every request."""
    ok = [r for results, _ in rounds for r in results if "error" not in r]
    per_round = [tokens_per_s(results, wall, out_tokens) for results, wall in rounds]
    ttft = [r["ttft"] for r in ok]
    tpot = [(r["e2e"] - r["ttft"]) / max(1, out_tokens - 1) for r in ok]
    itl = [x for r in ok for x in r["itl"]]
    return {
        "requests": sum(len(results) for results, _ in rounds),
        "errors": sum(len(results) for results, _ in rounds) - len(ok),
        "output_tokens_per_s": float(np.median(per_round)),
        "output_tokens_per_s_rounds": [round(x, 1) for x in per_round],
        "ttft_ms_p50": pct(ttft, 50),
        "ttft_ms_p99": pct(ttft, 99),
        "tpot_ms_p50": pct(tpot, 50),
        "tpot_ms_p99": pct(tpot, 99),
        "itl_ms_p50": pct(itl, 50),
        "itl_ms_p99": pct(itl, 99),
    }


def served_model(url: str) -> str:
    return httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]


def run_server(kind: str, model_path: Path, args: argparse.Namespace, body: dict) -> dict[str, tuple]:
    """One round against a freshly started server: every concurrency level, raw per-request results."""
    proc, url = start(kind, model_path, args.slots, args.ctx, args.threads)
    body = {**body, "model": served_model(url)}
    try:
        asyncio.run(run_level(url, 1, 2, body))  # warm up
        levels = {}
        for c in args.concurrency:
            n = requests_per_level(c, args.min_requests)
            t0 = time.perf_counter()
            res = asyncio.run(run_level(url, c, n, body))
            wall = time.perf_counter() - t0
            levels[str(c)] = (res, wall)
            tps = tokens_per_s(res, wall, body["max_tokens"])
            print(f"{kind} c={c}: {tps:.1f} output tok/s", file=sys.stderr, flush=True)
        return levels
    finally:
        stop(proc)


def bench_servers(model_path: Path, args: argparse.Namespace, body: dict) -> dict[str, dict]:
    """Each server, each concurrency level, in `args.rounds` rounds with the servers' order rotated.

    Two cores are shared by the server, its HTTP work and this client, so one pass is noisy (the
    same llama-server cell measured 119 and 138 tok/s in two runs); rounds, interleaved so that a
    slow spell hits every server alike, and the median round make the ratios steadier.
    """
    raw: dict[str, dict[str, list]] = {k: {str(c): [] for c in args.concurrency} for k in args.servers}
    for r in range(args.rounds):
        order = args.servers[r % len(args.servers) :] + args.servers[: r % len(args.servers)]
        for kind in order:
            print(f"round {r + 1}/{args.rounds}: {kind}", file=sys.stderr, flush=True)
            for c, cell in run_server(kind, model_path, args, body).items():
                raw[kind][c].append(cell)
    out: dict[str, dict] = {}
    for kind in args.servers:  # the table lists the servers in the order asked for
        out[kind] = {}
        for c, rounds in raw[kind].items():
            out[kind][c] = summarize(rounds, body["max_tokens"])
            if errors := [r["error"] for results, _ in rounds for r in results if "error" in r]:
                out[kind][c]["first_error"] = errors[0]
    return out


def soak(model_path: Path, args: argparse.Namespace, body: dict) -> dict:
    proc, url = start("hallmark", model_path, args.slots, args.ctx, args.threads)
    rng = random.Random(0)
    try:
        short = {**body, "model": served_model(url), "max_tokens": 16}
        asyncio.run(run_level(url, 8, 40, short))  # warm-up: allocations, caches
        rss_start = rss_mb(proc.pid)
        done, errors = 0, 0
        while done < args.soak:
            c = rng.choice([1, 2, 4, 8, 16])
            n = min(args.soak - done, rng.randint(c, 3 * c))
            res = asyncio.run(run_level(url, c, n, short))
            errors += sum("error" in r for r in res)
            done += n
        rss_end = rss_mb(proc.pid)
        return {
            "requests": done,
            "errors": errors,
            "rss_mb_start": round(rss_start, 1),
            "rss_mb_end": round(rss_end, 1),
            "rss_growth": round(rss_end / rss_start - 1, 4),
        }
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=1024, help="context per slot")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument(
        "--min-requests", type=int, default=24, help="requests per level and round (at least 4 x concurrency)"
    )
    ap.add_argument("--rounds", type=int, default=3, help="passes over all servers; the median counts")
    ap.add_argument("--soak", type=int, default=500, help="soak requests (0 = skip)")
    ap.add_argument("--no-soak", action="store_const", const=0, dest="soak")
    ap.add_argument(
        "--baseline", metavar="REF", help="also serve hallmark at this git revision (hallmark_baseline)"
    )
    ap.add_argument("--out", default=str(RESULTS / "serve.json"))
    args = ap.parse_args()
    if args.baseline:
        from baseline import checkout

        global BASELINE
        BASELINE = checkout(args.baseline)
        args.servers = [*args.servers, "hallmark_baseline"]

    import hallmark
    from hallmark.catalog import resolve

    model_path = resolve(args.model).path
    tok = hallmark.load(model_path, n_ctx=512, show_progress=False, watermark=None)
    eog = [t for t in range(tok.n_vocab) if tok.tokenizer.is_eog(t)]
    prompt_tokens = len(tok.tokenize(PROMPT))
    tok.close()
    body = {
        "model": args.model,
        "prompt": PROMPT,
        "max_tokens": args.output_tokens,
        "temperature": 0.8,
        "stream": True,
        "logit_bias": {str(t): -100 for t in eog},  # fixed output length on every server
    }
    res: dict = {
        "benchmark": "serve",
        "date": time.strftime("%Y-%m-%d"),
        "model": args.model,
        "slots": args.slots,
        "threads": args.threads,
        "prompt_tokens": prompt_tokens,
        "output_tokens": args.output_tokens,
        "servers": {},
    }
    if BASELINE is not None:
        res["baseline"] = BASELINE.to_dict()
    res["rounds"] = args.rounds
    res["min_requests"] = args.min_requests
    res["servers"] = bench_servers(model_path, args, body)
    if "hallmark" in res["servers"]:
        ours = res["servers"]["hallmark"]
        peers = {kind: levels for kind, levels in res["servers"].items() if kind != "hallmark"}
        tps, tps_rounds = "output_tokens_per_s", "output_tokens_per_s_rounds"
        res["ratios"] = {
            kind: {c: ours[c][tps] / levels[c][tps] for c in levels} for kind, levels in peers.items()
        }
        # Servers in one round ran back to back, so each round's ratio is a paired comparison.
        res["ratios_by_round"] = {
            kind: {
                c: [round(h / p, 3) for h, p in zip(ours[c][tps_rounds], levels[c][tps_rounds], strict=True)]
                for c in levels
            }
            for kind, levels in peers.items()
        }
    if args.soak:
        res["soak"] = soak(model_path, args, body)
    RESULTS.mkdir(exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    table = markdown(res)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
