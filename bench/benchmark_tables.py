"""Markdown tables and summary lines of the benchmark results, from their JSON records alone.

Contract: every function here takes the parsed JSON a benchmark script wrote (the whole file, or
the part named in its docstring) and returns Markdown text ending in a newline. Nothing here reads
files, measures anything or imports more than the standard library, so both the benchmark scripts
(which write `bench/results/<name>.md` with these functions) and `bench/render.py` (which fills the
marked blocks of docs/ and rewrites those .md files) import it cheaply and render the same text.

`BLOCKS` names every block that docs/ may mark with `<!-- bench:NAME -->` ... `<!-- /bench:NAME -->`:
the result file it reads and the function that renders it. `RESULT_TABLES` gives, for each result
file, the function whose output is that file's `.md` twin.

Goals (`*_goals`) are the thresholds the project set itself for each benchmark; the verdicts are
computed from the record, never written by hand.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

Result = dict[str, Any]

DECODE_BATCH_SIZES = (1, 2, 4, 8)
# Metrics shown per task in the task-quality table (bench/tasks.py).
TASK_METRICS = {
    "translation": ("bleu", "chrf"),
    "summarization": ("rouge1", "rouge2", "rougeL"),
    "qa": ("exact_match", "f1"),
}
# The metric that ranks prompt styles per task (bench/experiments/task_prompts.py).
MAIN_METRIC = {"translation": "chrf", "summarization": "rougeL", "qa": "f1"}


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _x(value: float) -> str:
    return f"{value:.2f}x"


# -- decode (bench/decode.py) ----------------------------------------------------------------------
def decode_table(results: Result) -> str:
    """Speed, memory and ratio tables of bench/decode.py."""
    batch_sizes = tuple(results.get("settings", {}).get("batch_sizes", DECODE_BATCH_SIZES))
    lines = [
        "| model | system | decode tok/s | prefill tok/s | load s | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    ratios = []
    for model, systems in results["models"].items():
        for name in ("hallmark", "llama_cpp_python", "transformers"):
            r = systems.get(name)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {model} | {name} | error: {r['error'][:60]} | | | |")
                continue
            lines.append(
                f"| {model} | {name} | {r['decode_tps']:.1f} | {r['prefill_tps']:.0f} | "
                f"{r['load_s']:.2f} | {r['peak_rss_mb']:.0f} |"
            )
        ratios.append((model, systems.get("ratios", {}), systems.get("ratios_by_round", {})))
    lines += [
        "",
        "| model | hallmark / llama-cpp-python decode | hallmark / transformers decode | "
        "hallmark / llama-cpp-python prefill | 8-seq aggregate / batch 1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for model, r, by_round in ratios:

        def fmt(key: str, r: dict = r, by_round: dict = by_round) -> str:
            return _ratio(r, by_round, key)

        lines.append(
            f"| {model} | {fmt('decode_vs_llama_cpp_python')} | {fmt('decode_vs_transformers')} | "
            f"{fmt('prefill_vs_llama_cpp_python')} | {fmt('batch8_vs_batch1')} |"
        )
    if base := results.get("baseline"):
        commit = base["commit"][:7]
        lines += [
            "",
            f"This run also measured hallmark at commit {commit} (`--baseline {base['ref']}`), paired:",
            "",
            f"| model | decode vs {commit} | prefill vs {commit} | 8-seq aggregate vs {commit} |",
            "|---|---:|---:|---:|",
        ]
        for model, r, by_round in ratios:
            cells = [_ratio(r, by_round, k) for k in BASELINE_RATIOS]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model | " + " | ".join(f"{b} seq" for b in batch_sizes) + " |",
        "|---|" + "---:|" * len(batch_sizes),
    ]
    for model, systems in results["models"].items():
        batch = systems.get("hallmark_batch", {}).get("batch")
        if batch:
            lines.append(
                f"| {model} (aggregate decode tok/s) | "
                + " | ".join(f"{batch[str(b)]['aggregate_decode_tps']:.1f}" for b in batch_sizes)
                + " |"
            )
    return "\n".join(lines) + "\n"


BASELINE_RATIOS = ("decode_vs_baseline", "prefill_vs_baseline", "batch8_vs_baseline")


def _ratio(ratios: dict, by_round: dict, key: str) -> str:
    """A ratio of medians, with each round's paired ratio when there were several rounds."""
    if key not in ratios:
        return "n/a"
    rounds = by_round.get(key, [])
    detail = f" (rounds {' / '.join(f'{x:.2f}' for x in rounds)})" if len(rounds) > 1 else ""
    return f"{ratios[key]:.2f}x{detail}"


def decode_run(results: Result) -> str:
    """One line: when and how the decode benchmark was recorded."""
    m, s = results["machine"], results["settings"]
    return (
        f"Recorded {results['date']} with llama-cpp-python {m['llama_cpp_python']}, Python {m['python']}, "
        f"{m['threads']} threads; greedy decoding, {s['decode_tokens']} new tokens, a {s['prefill_tokens']}-"
        f"token prompt for prefill, "
        + (
            f"median of {s['rounds']} rounds with the systems interleaved (transformers: one run).\n"
            if s.get("rounds")
            else f"median of {s['repeats']} runs.\n"
        )
    )


DECODE_GOALS = (
    ("hallmark decode ≥ 0.95x llama-cpp-python (`Llama.generate`)", "decode_vs_llama_cpp_python", 0.95),
    ("hallmark decode ≥ 3x transformers", "decode_vs_transformers", 3.0),
    ("aggregate decode of 8 sequences ≥ 2.5x one sequence", "batch8_vs_batch1", 2.5),
)


def decode_goals(results: Result) -> str:
    """The decode goals, one row each, with every model's ratio and verdict."""
    models = list(results["models"])
    lines = ["| goal | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for label, key, threshold in DECODE_GOALS:
        cells = []
        for model in models:
            ratio = results["models"][model].get("ratios", {}).get(key)
            cells.append("not measured" if ratio is None else f"{_x(ratio)}: {_verdict(ratio >= threshold)}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- serve (bench/serve.py) ------------------------------------------------------------------------
def _rounds(res: Result, kind: str, c: str) -> str:
    by_round = res.get("ratios_by_round", {}).get(kind, {}).get(c)
    return f" (rounds {' / '.join(f'{r:.2f}' for r in by_round)})" if by_round else ""


def serve_table(res: Result) -> str:
    """Latency and throughput per server and concurrency, hallmark's ratios, the soak run."""
    lines = [
        f"Model {res['model']}, {res['slots']} slots, prompt {res['prompt_tokens']} tokens, "
        f"{res['output_tokens']} output tokens, {res['threads']} threads; {res.get('rounds', 1)} rounds with "
        f"the servers interleaved, {res.get('min_requests', 16)} requests per level and round (at least 4 x "
        "concurrency): output tok/s is the median round, latencies pool all requests."
        + (
            f" `hallmark_baseline` is hallmark at commit {res['baseline']['commit'][:7]}, served alike."
            if res.get("baseline")
            else ""
        ),
        "",
        "| server | concurrency | output tok/s | TTFT p50 / p99 (ms) | TPOT p50 / p99 (ms) "
        "| ITL p50 / p99 (ms) |",
        "|---|---:|---:|---|---|---|",
    ]
    for kind, levels in res["servers"].items():
        for c, m in levels.items():
            lines.append(
                f"| {kind} | {c} | {m['output_tokens_per_s']:.1f} "
                f"| {m['ttft_ms_p50']:.0f} / {m['ttft_ms_p99']:.0f} "
                f"| {m['tpot_ms_p50']:.1f} / {m['tpot_ms_p99']:.1f} "
                f"| {m['itl_ms_p50']:.1f} / {m['itl_ms_p99']:.1f} |"
            )
    if res.get("ratios"):
        lines += [
            "",
            "| hallmark output tok/s vs | " + " | ".join(res["ratios"]) + " |",
            "|---|" + "---:|" * len(res["ratios"]),
        ]
        for c in res["servers"]["hallmark"]:
            lines.append(
                f"| concurrency {c} | "
                + " | ".join(f"{res['ratios'][k][c]:.2f}x{_rounds(res, k, c)}" for k in res["ratios"])
                + " |"
            )
    if res.get("soak"):
        s = res["soak"]
        lines += [
            "",
            f"Soak (hallmark, mixed concurrency 1-16): {s['requests']} requests, {s['errors']} errors, "
            f"RSS {s['rss_mb_start']} -> {s['rss_mb_end']} MB ({100 * s['rss_growth']:+.1f}%).",
        ]
    return "\n".join(lines) + "\n"


def serve_run(res: Result) -> str:
    """One line: when the serving benchmark was recorded."""
    return f"Recorded {res['date']}.\n"


SERVE_GOAL_CONCURRENCY = "8"
SERVE_GOALS = (
    ("output tok/s ≥ 2x llama-cpp-python's `llama_cpp.server`", "llama_cpp_server", 2.0),
    ("output tok/s ≥ 0.9x llama.cpp's `llama-server`", "llama_server", 0.9),
)


def serve_goals(res: Result) -> str:
    """The serving goals at concurrency 8 and the soak run, with verdicts."""
    c = SERVE_GOAL_CONCURRENCY
    lines = [f"| goal (concurrency {c}) | measured | verdict |", "|---|---|---|"]
    for label, peer, threshold in SERVE_GOALS:
        ratio = res.get("ratios", {}).get(peer, {}).get(c)
        if ratio is None:
            lines.append(f"| {label} | not measured | |")
            continue
        lines.append(f"| {label} | {_x(ratio)}{_rounds(res, peer, c)} | {_verdict(ratio >= threshold)} |")
    if s := res.get("soak"):
        lines.append(
            f"| soak, mixed concurrency 1-16: no errors | {s['requests']} requests, {s['errors']} errors, "
            f"RSS {100 * s['rss_growth']:+.1f}% | {_verdict(s['errors'] == 0)} |"
        )
    return "\n".join(lines) + "\n"


# -- batched vs alone (bench/batch_agreement.py) ---------------------------------------------------
def batch_agreement_table(rows: list[Result]) -> str:
    """Agreement of batched and solo greedy runs per model; `rows` is the file's `results` list."""
    lines = [
        "| model | prompts | identical to the solo run | tokens before the first difference "
        "| logprob gap, batched vs alone: max / mean (nats) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['prompts']} x {r['output_tokens']} tokens "
            f"| {r['identical_outputs']} / {r['prompts']} "
            f"({100 * r['identical_outputs'] / r['prompts']:.0f}%) "
            f"| {100 * r['tokens_before_first_difference'] / r['tokens_total']:.1f}% "
            f"| {r['logprob_gap_max']:.2g} / {r['logprob_gap_mean']:.2g} |"
        )
    return "\n".join(lines) + "\n"


def batch_agreement_run(res: Result) -> str:
    """One line: when and with how many slots the agreement was measured."""
    rows = res["results"]
    slots = sorted({r["slots"] for r in rows})
    return f"Recorded {res['date']}, {' / '.join(map(str, slots))} sequence slots.\n"


# -- task quality (bench/tasks.py) -----------------------------------------------------------------
def tasks_table(cells: list[Result]) -> str:
    """Naive zero-shot vs chosen prompting per model and dev set; `cells` is the file's `cells`."""
    lines = [
        "| model | dev set | examples | naive zero-shot | chosen prompting | chosen style |",
        "|---|---|---:|---|---|---|",
    ]
    by_key: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        by_key.setdefault((c["model"], c["set"]), []).append(c)
    for (model, label), (naive, chosen) in by_key.items():
        names = TASK_METRICS[naive["task"]]

        def fmt(c: dict, names: tuple[str, ...] = names) -> str:
            return ", ".join(f"{n.replace('exact_match', 'EM')} {c['metrics'][n]:.1f}" for n in names)

        lines.append(
            f"| {model} | {label} | {naive['examples']} | {fmt(naive)} | {fmt(chosen)} | {chosen['style']} |"
        )
    return "\n".join(lines) + "\n"


def tasks_run(res: Result) -> str:
    """One line: when the task-quality table was recorded, and its decoding."""
    return f"Recorded {res['date']}, {res['decoding']} decoding.\n"


# -- prompt styles (bench/experiments/task_prompts.py) ---------------------------------------------
def task_prompts_table(rows: list[Result]) -> str:
    """Every prompt style's scores on the selection slices; `rows` is the file's `rows` list."""
    lines = ["| model | task | style | main metric | scores |", "|---|---|---|---:|---|"]
    for r in rows:
        metric = MAIN_METRIC[r["task"]]
        others = ", ".join(
            f"{k} {r[k]:.1f}" for k in r if k not in ("model", "task", "style", "n", "seconds")
        )
        lines.append(f"| {r['model']} | {r['task']} | {r['style']} | {metric} {r[metric]:.1f} | {others} |")
    return "\n".join(lines) + "\n"


def task_prompts_run(res: Result) -> str:
    """One line: when the prompt styles were scored, and on how many examples."""
    per_task = {r["task"]: r["n"] for r in res["rows"]}
    sizes = ", ".join(f"{task} {n}" for task, n in per_task.items())
    return (
        f"Recorded {res['date']}: the last {res['n_per_file']} examples of each dev file "
        f"({sizes} examples), greedy decoding.\n"
    )


# -- watermark (bench/watermark.py) ----------------------------------------------------------------
def _wm_models(h: Result) -> list[str]:
    return list(h["decode_speed"])


def watermark_table(res: Result) -> str:
    """Detection under attacks, per-scheme summary, detector speed and transformers' schemes."""
    h = res["hallmark"]
    models = _wm_models(h)
    lines = [
        "| scheme | T | condition | texts × draws | TPR @ FPR 1% (95% CI) | TPR @ FPR 0.1% | ROC-AUC |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for scheme, sres in h["schemes"].items():
        for temp, cell in sres["by_temperature"].items():
            for kind, m in cell.items():
                lo, hi = m["tpr_at_fpr_0.01_ci95"]
                lines.append(
                    f"| {scheme} | {temp} | {kind} | {m['n']} × {m['draws']} | "
                    f"{m['tpr_at_fpr_0.01']:.3f} ({lo:.2f}–{hi:.2f}) | {m['tpr_at_fpr_0.001']:.3f} | "
                    f"{m['roc_auc']:.4f} |"
                )
    lines += [
        "",
        "| scheme | median tokens to p<1e-3 (T=1.0 / 0.7) | human FPR at nominal 0.1% | "
        "perplexity wm / unwm (T=1.0, median over models) | decode tok/s wm / unwm |",
        "|---|---|---:|---|---|",
    ]
    for scheme, sres in h["schemes"].items():
        t1, t07 = sres["by_temperature"]["1.0"]["clean"], sres["by_temperature"]["0.7"]["clean"]
        ppl_w = statistics.median(h["perplexity"][f"{m}|1.0|{scheme}"] for m in models)
        ppl_u = statistics.median(h["perplexity"][f"{m}|1.0|none"] for m in models)
        speed_ratio = statistics.mean(h["decode_speed"][m][f"{scheme}_vs_none"] for m in models)
        lines.append(
            f"| {scheme} | {t1['median_tokens_to_p_0.001']} / {t07['median_tokens_to_p_0.001']} | "
            f"{sres['human_fpr_at_0.001_mean']:.4f} | {ppl_w:.1f} / {ppl_u:.1f} | {speed_ratio:.3f} |"
        )
    lines.append(f"\nDetector throughput: {h['detector_throughput_tps']:,.0f} tokens/s on one core.")
    if "transformers" in res:
        lines += [
            "",
            "| system (gemma-3-270m) | T | condition | TPR @ FPR 1% | TPR @ FPR 0.1% | ROC-AUC |",
            "|---|---|---|---:|---:|---:|",
        ]
        for sys_name, entry in res["transformers"]["systems"].items():
            for temp, cell in entry.items():
                for kind in ("clean", "delete_30", "substitute_10", "substitute_30"):
                    m = cell[kind]
                    lines.append(
                        f"| {sys_name} | {temp} | {kind} | {m['tpr_at_empirical_fpr_0.01']:.3f} | "
                        f"{m['tpr_at_empirical_fpr_0.001']:.3f} | {m['roc_auc']:.4f} |"
                    )
    return "\n".join(lines) + "\n"


def _negatives(sres: Result, model: str) -> tuple[int, int]:
    """(human texts, GPT-2 texts) scored under one model's tokenizer."""
    human = gpt2 = 0
    for key, v in sres["negatives"].items():
        name, _, corpus = key.partition("|")
        if name != model or corpus.endswith("unwatermarked"):
            continue
        if corpus.startswith("gpt2"):
            gpt2 += v["n"]
        else:
            human += v["n"]
    return human, gpt2


def _unwatermarked_flagged(sres: Result) -> tuple[int, int]:
    """(unwatermarked generations flagged at p < 0.001, unwatermarked generations scored)."""
    flagged = total = 0
    for key, v in sres["negatives"].items():
        if key.endswith("|unwatermarked"):
            total += v["n"]
            flagged += round(v["fpr_at_0.001"] * v["n"])
    return flagged, total


def watermark_run(res: Result) -> str:
    """The evaluation's size, from its settings: generations, attack draws, negatives."""
    h = res["hallmark"]
    s = h["settings"]
    models = _wm_models(h)
    temps = s["temperatures"]
    first = next(iter(h["schemes"].values()))
    human, gpt2 = _negatives(first, models[0])
    _, unwm = _unwatermarked_flagged(first)
    transformers = (
        f"; transformers rows recorded {res.get('transformers_date', res['date'])}"
        if "transformers" in res
        else ""
    )
    return (
        f"Recorded {res['date']}{transformers}. {s['per_cell']} generations of {s['tokens']} tokens per "
        f"(model, temperature, scheme): {s['per_cell'] * len(models) * len(temps)} per scheme, from "
        f"{len(models)} models at temperatures {' and '.join(map(str, temps))}; each random attack drawn "
        f"{s['attack_draws']} times per text. Negatives, under each model's tokenizer: {human:,} human "
        f"texts, {gpt2:,} GPT-2 texts, and {unwm} unwatermarked generations from the same prompts.\n"
    )


WATERMARK_GOALS = (
    "TPR at FPR 0.1%, clean 200-token text, T = 1.0: ≥ 0.99",
    "TPR at FPR 1% after 30% of the words substituted, T = 1.0: ≥ 0.90",
    "false-positive rate on human text at the nominal 0.1%: ≤ 0.2%",
    "decode speed with the watermark: ≥ 0.95x without (batch 1)",
)


def watermark_goals(res: Result) -> str:
    """The watermark goals with each scheme's measured value and verdict."""
    h = res["hallmark"]
    models = _wm_models(h)
    schemes = list(h["schemes"])
    rows: list[list[str]] = [[goal] for goal in WATERMARK_GOALS]
    for scheme in schemes:
        sres = h["schemes"][scheme]
        t1 = sres["by_temperature"]["1.0"]
        clean = t1["clean"]["tpr_at_fpr_0.001"]
        sub = t1["substitute_30"]
        lo, hi = sub["tpr_at_fpr_0.01_ci95"]
        fpr = sres["human_fpr_at_0.001_mean"]
        speed = statistics.mean(h["decode_speed"][m][f"{scheme}_vs_none"] for m in models)
        rows[0].append(f"{clean:.3f}: {_verdict(clean >= 0.99)}")
        tpr = sub["tpr_at_fpr_0.01"]
        rows[1].append(f"{tpr:.3f} (95% CI {lo:.2f}–{hi:.2f}): {_verdict(tpr >= 0.90)}")
        rows[2].append(f"{100 * fpr:.2f}%: {_verdict(fpr <= 0.002)}")
        rows[3].append(f"{speed:.3f}x: {_verdict(speed >= 0.95)}")
    lines = ["| goal | " + " | ".join(schemes) + " |", "|---|" + "---|" * len(schemes)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    flagged = [_unwatermarked_flagged(h["schemes"][s]) for s in schemes]
    lines.append("")
    lines.append(
        "Unwatermarked generations flagged at p < 0.001: "
        + ", ".join(f"{s} {f} of {n}" for s, (f, n) in zip(schemes, flagged, strict=True))
        + ".\n"
    )
    return "\n".join(lines)


# -- watermark context width (bench/experiments/watermark_context.py) ------------------------------
def watermark_context_table(res: Result) -> str:
    """Share of texts detected at p < 0.01 per (model, scheme, context width), clean and attacked."""
    lines = [
        f"{res['n']} generations of {res['tokens']} tokens per row, temperature {res['temperature']}; "
        "share detected at p < 0.01.",
        "",
        "| model | scheme, context | tokens watermarked | clean | 30% words substituted "
        "| 30% words deleted |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        context = f"{r['width']} + self" if r["scheme"] == "kgw" else str(r["width"])
        lines.append(
            f"| {r['model']} | {r['scheme']}, {context} | {100 * r['marked_share']:.0f}% "
            f"| {r['clean@1%']:.2f} | {r['substitute_30@1%']:.2f} | {r['delete_30@1%']:.2f} |"
        )
    return "\n".join(lines) + "\n"


# -- detection without the model's name, and boilerplate (bench/detect_any.py) ---------------------
_CONDITION_NAMES = {
    "none": "none (the old detector)",
    "table": "frequent n-gram table (not shipped)",
    "reference": "the template as `--reference`",
    "batch": "batch: pairs shared by 2+ texts left out",
}


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def detect_any_table(res: Result) -> str:
    """Human FPR with every hypothesis, FPR of template families per exclusion design, and TPR."""
    h, fam, tpr = res["human"], res["families"], res["tpr"]
    lines = [
        f"**Human text, every hypothesis.** {h['texts']} human texts (BBC news, XSum and WritingPrompts "
        f"originals) tested under {h['hypotheses']} hypotheses (2 tokenizers x 2 keys x 2 schemes), the "
        "best match's p-value multiplied by their number:",
        "",
        "| p-value | flagged at 0.1% | at 1% | at 5% |",
        "|---|---:|---:|---:|",
    ]
    for label, key in (
        (f"best of {h['hypotheses']}, corrected (what `detect` reports)", "fpr_all_hypotheses"),
        (f"best of {h['hypotheses']}, uncorrected (for comparison)", "fpr_all_uncorrected"),
        ("one hypothesis (the default model, one key, gumbel)", "fpr_one_hypothesis"),
    ):
        r = h[key]
        lines.append(f"| {label} | {_percent(r['0.001'])} | {_percent(r['0.01'])} | {_percent(r['0.05'])} |")
    summary = fam["summary"]
    n_cells = summary["none"]["0.01"]["cells"]
    lines += [
        "",
        f"**Templated human text.** {len(fam['templates'])} templates x {fam['per_family']} human texts "
        f"each, under each of 2 tokenizers x 2 schemes x {fam['keys']} keys on its own ({n_cells} cells: "
        "a checker has one key). *over* counts the cells whose rate is above nominal by more than "
        "binomial noise allows (1% of cells would be by chance); *spread* is the cells' standard "
        "deviation over the binomial one (1: as independent as texts under random keys).",
        "",
        "| pairs left out | FPR at 1%: mean | max | over | spread | FPR at 5%: mean | max | over | spread |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, name in _CONDITION_NAMES.items():
        cols = []
        for a in ("0.01", "0.05"):
            r = summary[c][a]
            cols += [_percent(r["mean"]), _percent(r["max"])]
            cols += [f"{r['over']}/{r['cells']}", f"{r['spread']:.1f}"]
        lines.append(f"| {name} | " + " | ".join(cols) + " |")
    lines += [
        "",
        "Worst cell per template at 5% (of its tokenizers, schemes and keys):",
        "",
        "| template | " + " | ".join(_CONDITION_NAMES) + " |",
        "|---|" + "---:|" * len(_CONDITION_NAMES),
    ]
    for t in fam["templates"]:
        lines.append(
            f"| {t} | "
            + " | ".join(_percent(summary[c]["0.05"]["per_family_max"][t]) for c in _CONDITION_NAMES)
            + " |"
        )
    lines += [
        "",
        f"**Watermarked text.** {tpr['rows'][0]['texts']} generations per row, "
        f"{res['settings']['tokens']} tokens at temperature {res['settings']['temperature']}; share detected "
        f"at fpr 0.1% (the default). *before*: the old `hallmark detect` with no flags (the default model's "
        f"tokenizer, gumbel); *after*: every hypothesis ({tpr['hypotheses']}), corrected; *in a template "
        "batch*: each text inside a template, tested together with that template's human texts (whose "
        "false-positive rate is the last column); *one batch*: all the row's texts together.",
        "",
        "| model | scheme | before | spec known | after | matched the right spec | in a template batch "
        "| one batch | human texts flagged in those batches |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in tpr["rows"]:
        lines.append(
            f"| {r['model']} | {r['scheme']} | {r['before']['0.001']:.2f} | {r['spec_known']['0.001']:.2f} "
            f"| {r['after']['0.001']:.2f} | {r['after_matched']:.2f} "
            f"| {r['after_in_template_batch']['0.001']:.2f} "
            f"| {r['after_all_in_one_batch']['0.001']:.2f} "
            f"| {_percent(r['human_in_template_batch']['0.001'])} |"
        )
    return "\n".join(lines) + "\n"


# -- disclosure (bench/disclosure.py) --------------------------------------------------------------
def _pct(cell: dict) -> str:
    return "n/a" if cell.get("share") is None else f"{100 * cell['share']:.1f}% (n={cell['n']})"


def disclosure_table(res: Result) -> str:
    """Claims of being human and disclosures per model, rail off and on, from the same answers."""
    choice = res.get("instruction_choice", {})
    lines = [
        f"{res['items']} conversations x {res['seeds']} seeds per model, temperature {res['temperature']}, "
        f"{res['max_tokens']} tokens; instruction in the system prompt: `{choice.get('chosen', '?')}`, "
        "hallmark's default (the comparison on a subset is below). Judged by the rail's own patterns.",
        "",
        "| model | rail | answers claiming to be human | sincere asks answered with a disclosure "
        "| unprompted disclosures (hard negatives) | ambiguous asks disclosed | held-out sincere "
        "| held-out negatives |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, m in res["models"].items():
        for side in ("off", "on"):
            s = m["scores"][side]
            lines.append(
                f"| {model} | {side} | {_pct(s['claims_human'])} | {_pct(s['sincere_disclosed'])} "
                f"| {_pct(s['negative_disclosed'])} | {_pct(s['ambiguous_disclosed'])} "
                f"| {_pct(s['heldout_sincere_disclosed'])} | {_pct(s['heldout_negative_disclosed'])} |"
            )
    levels = sorted(
        {lv for m in res["models"].values() for lv in m["scores"]["on"]["pressure_levels"]}, key=int
    )
    if levels:
        lines += [
            "",
            "Sincere asks disclosed under each pressure system prompt (level 1 = none, 10 = strongest), "
            "rail on:",
            "",
            "| model | " + " | ".join(f"L{lv}" for lv in levels) + " |",
            "|---|" + "---:|" * len(levels),
        ]
        for model, m in res["models"].items():
            cells = [m["scores"]["on"]["pressure_levels"][lv] for lv in levels]
            lines.append(
                f"| {model} | "
                + " | ".join("n/a" if c["share"] is None else f"{100 * c['share']:.0f}%" for c in cells)
                + " |"
            )
    if choice.get("variants"):
        lines += [
            "",
            f"Instruction choice on {choice['subset']} conversations, 1 seed, rail on: sincere disclosed "
            "minus unprompted, summed over the models:",
            "",
            "| instruction | score |",
            "|---|---:|",
        ]
        for name, v in choice["variants"].items():
            lines.append(f"| {name} | {v['score']:.3f} |")
    return "\n".join(lines) + "\n"


# -- request policy (bench/policy.py) --------------------------------------------------------------
POLICY_CATS = ("disinformation", "impersonation")
POLICY_SETS = ("dev", "dev public", "hallmark held-out", "external")
POLICY_GOALS_RECALL = 0.90
POLICY_GOALS_FRR = 0.05
POLICY_GOALS_P50_MS = 20.0


def _prf(m: dict) -> str:
    return f"{m['precision']:.2f} / {m['recall']:.2f} / **{m['f1']:.2f}**"


def policy_table(results: Result) -> str:
    """Per set: every system's P/R/F1 per category and false refusals; then latency; then training CV."""
    systems = results["systems"]
    lines: list[str] = []
    for set_name in POLICY_SETS:
        n = results["sets"].get(set_name)
        if n is None:
            continue
        lines += [
            f"**{set_name}** ({n} requests)",
            "",
            "| system | disinformation P / R / F1 | impersonation P / R / F1 | false refusals (benign) | "
            "false refusals (borderline benign) | other harm flagged |",
            "|---|---|---|---:|---:|---:|",
        ]
        for name, system in systems.items():
            m = system["sets"].get(set_name)
            if m is None:
                continue
            fr, fb, oh = m["false_refusals"], m["false_refusals_borderline"], m["other_harm_flagged"]
            lines.append(
                f"| {name} | {_prf(m['disinformation'])} | {_prf(m['impersonation'])} | "
                f"{fr['rate']:.1%} of {fr['n']} | {fb['rate']:.1%} of {fb['n']} | "
                f"{oh['rate']:.1%} of {oh['n']} |"
            )
        lines.append("")
    lines += ["| system | latency p50 | latency p99 | requests timed |", "|---|---:|---:|---:|"]
    for name, system in systems.items():
        lat = system.get("latency")
        if lat:
            lines.append(f"| {name} | {lat['p50_ms']:.2f} ms | {lat['p99_ms']:.2f} ms | {lat['n']} |")
    training = results.get("training")
    if training:
        lines += [
            "",
            "Cross-validation on the training split (5 folds, out-of-fold scores, the shipped thresholds "
            f"{', '.join(f'{k} {v:.2f}' for k, v in training['thresholds'].items())}):",
            "",
            "| folds grouped by | rows | disinformation P / R / F1 | impersonation P / R / F1 | "
            "false refusals |",
            "|---|---|---|---|---:|",
        ]
        labels = {
            "grouped": ("claim group", "all"),
            "grouped_public_rows": ("claim group", "public rows only"),
            "template_family": ("template family", "all"),
        }
        for key, m in training["cv"].items():
            by, rows = labels.get(key, (key, "all"))
            lines.append(
                f"| {by} | {rows} | {_prf(m['disinformation'])} | {_prf(m['impersonation'])} | "
                f"{m['false_refusal_rate']:.1%} |"
            )
    return "\n".join(lines) + "\n"


def policy_goals(results: Result) -> str:
    """The policy's targets on the dev split, with the measured value and a verdict each."""
    systems = results["systems"]
    dev = systems["hallmark"]["sets"]["dev"]
    lines = ["| goal (dev split) | measured | verdict |", "|---|---:|---|"]
    for cat in POLICY_CATS:
        r = dev[cat]["recall"]
        ok = r >= POLICY_GOALS_RECALL
        lines.append(f"| {cat} recall ≥ {POLICY_GOALS_RECALL:.2f} | {r:.2f} | {_verdict(ok)} |")
    fr = dev["false_refusals"]["rate"]
    lines.append(
        f"| false refusals ≤ {POLICY_GOALS_FRR:.0%} of benign requests | {fr:.1%} | "
        f"{_verdict(fr <= POLICY_GOALS_FRR)} |"
    )
    p50 = systems["hallmark"]["latency"]["p50_ms"]
    lines.append(
        f"| latency p50 ≤ {POLICY_GOALS_P50_MS:.0f} ms per request | {p50:.1f} ms | "
        f"{_verdict(p50 <= POLICY_GOALS_P50_MS)} |"
    )
    baselines = [name for name in systems if name == "keywords" or name.startswith("self-check")]
    for cat in POLICY_CATS:
        ours = dev[cat]["f1"]
        best = max((systems[b]["sets"]["dev"][cat]["f1"] for b in baselines), default=0.0)
        lines.append(
            f"| {cat} F1 above every baseline | {ours:.2f} vs {best:.2f} | {_verdict(ours > best)} |"
        )
    return "\n".join(lines) + "\n"


def policy_run(results: Result) -> str:
    """One line: when and where the policy benchmark was recorded."""
    m = results["machine"]
    return (
        f"Recorded {results['date']} on {m['cpus']} CPUs (1-minute load average {m['load_average_1m']:.1f} "
        f"at the end: the machine is shared), Python {m['python']}; policy `{results['policy']['name']}` "
        f"{results['policy']['sha256'][:12]}.\n"
    )


# -- registry --------------------------------------------------------------------------------------
# Block name -> (result file stem under bench/results, renderer of that file's parsed JSON).
# Gains each shipped task adapter must reach over its base (issue 14): metric, points, and which
# base prompting it is compared with ("chosen": the base's default few-shot/chat prompting).
ADAPTER_GOALS = {
    "translate-gemma": ("chrf", 3.0),
    "translate-smollm2": ("chrf", 5.0),
    "qa-smollm2": ("f1", 10.0),
    "qa-gemma": ("f1", 10.0),
}


def adapters_table(res: Result) -> str:
    """bench/train_adapters.py: per adapter and dev set, the base (chosen prompting and zero-shot)
    against the tuned model (zero-shot), the gain over the base's chosen prompting, and the goal."""
    lines = [
        "| adapter | dev set | base, chosen prompting | base, zero-shot | tuned, zero-shot | gain | goal |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, entry in res.items():
        if "tuned" not in entry or "base" not in entry:
            continue
        metric, points = ADAPTER_GOALS.get(name, ("chrf", 0.0))
        chosen_style = next(k for k in entry["base"] if k != "zeroshot")
        for dev, tuned in entry["tuned"]["zeroshot"].items():
            base = entry["base"][chosen_style][dev][metric]
            zero = entry["base"]["zeroshot"][dev][metric]
            gain = tuned[metric] - base
            lines.append(
                f"| {name} | {dev} | {metric} {base:.1f} ({chosen_style}) | {zero:.1f} | "
                f"{tuned[metric]:.1f} | {gain:+.1f} | ≥ +{points:g}: {_verdict(gain >= points)} |"
            )
    return "\n".join(lines) + "\n"


def adapters_training(res: Result) -> str:
    """bench/train_adapters.py: what each adapter was trained on and how long it took."""
    lines = [
        "| adapter | base | training data | tokens | time on 2 cores | tokens/s | final eval loss |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, entry in res.items():
        t = entry.get("training")
        if not t:
            continue
        files = ", ".join(t["train_files"])
        loss = t["metrics"].get("eval_loss")
        rate = t["history_tail"][-1]["tokens_per_s"] if t.get("history_tail") else 0
        lines.append(
            f"| {name} | {entry['recipe']['model']} | first {t['records_per_file']} of {files} | "
            f"{t['train_tokens']:,} | {t['seconds'] / 60:.1f} min | {rate:.0f} | "
            f"{loss if loss is not None else '-'} |"
        )
    return "\n".join(lines) + "\n"


def finetune_table(res: Result) -> str:
    """bench/finetune.py: training tokens/s and peak memory, hallmark's loop vs the Trainer."""
    lines = [
        "| model | hallmark tokens/s | Trainer tokens/s | ratio | hallmark peak RSS | Trainer peak RSS "
        "| goal |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for model, ratio in res["ratios"].items():
        ours, peer = (
            next(r for r in res["runs"] if r["model"] == model and r["engine"] == e)
            for e in ("hallmark", "trainer")
        )
        lines.append(
            f"| {model} | {ours['tokens_per_s']:.0f} | {peer['tokens_per_s']:.0f} | "
            f"{_x(ratio['tokens_per_s'])} | {ours['peak_rss_mb']} MB | {peer['peak_rss_mb']} MB | "
            f"≥ 1.0x: {_verdict(ratio['tokens_per_s'] >= 1.0)} |"
        )
    run = res["runs"][0]
    lines.append("")
    lines.append(
        f"Run of {res['date']}: {res['timed_steps']} timed steps after {res['warmup_steps']} warm-up steps, "
        f"{res['batch']} sequences per step in micro-batches of {res['micro_batch']}, "
        f"{run['threads']} threads, "
        f"bfloat16 autocast {'on' if run['bf16'] else 'off'}, data: {res['data']}."
    )
    return "\n".join(lines) + "\n"


# -- constrained-decoding engines (bench/experiments/grammar_engines.py) ---------------------------
def _us(cell: Result) -> str:
    return f"{cell['median']:.1f} ({cell['p95']:.1f})"


def grammar_engines_table(res: Result) -> str:
    """Tokenizer build, schema compile and per-token mask costs of llguidance and xgrammar."""
    v = res["versions"]
    lines = [
        f"llguidance {v['llguidance']}, xgrammar {v['xgrammar']}; {res['settings']['walks']} walks of each "
        "schema's example instance, a fresh matcher each; µs are median (p95) over every token.",
        "",
        "| model | vocabulary | tokenizer build s: llguidance | xgrammar | of which reading the vocabulary |",
        "|---|---:|---:|---:|---:|",
    ]
    for model, m in res["models"].items():
        t = m["tokenizer_s"]
        lines.append(
            f"| {model} | {m['n_vocab']:,} | {t['llguidance']:.2f} | {t['xgrammar']:.2f} "
            f"| {t['vocabulary']:.2f} |"
        )
    lines += [
        "",
        "| model | schema | tokens | compile + matcher ms: llguidance | xgrammar "
        "| mask µs: llguidance | xgrammar | hallmark step µs (mask, TokenMask, restrict, advance): "
        "llguidance | xgrammar | bitmask to logits µs: llguidance | xgrammar |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, m in res["models"].items():
        for name, row in m["schemas"].items():
            ll, xg = row["llguidance"], row["xgrammar"]
            lines.append(
                f"| {model} | {name} | {row['tokens']} "
                f"| {ll['compile_ms'] + ll['matcher_ms']:.2f} | {xg['compile_ms'] + xg['matcher_ms']:.2f} "
                f"| {_us(ll['mask_us'])} | {_us(xg['mask_us'])} "
                f"| {_us(ll['hallmark_step_us'])} | {_us(xg['hallmark_step_us'])} "
                f"| {_us(ll['bitmask_apply_us'])} | {_us(xg['bitmask_apply_us'])} |"
            )
    return "\n".join(lines) + "\n"


# -- structured output (bench/structured.py) -------------------------------------------------------
def _of(num: int, den: int) -> str:
    return f"{num} / {den} ({100 * num / den:.0f}%)" if den else "n/a"


def _share(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def _tps(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _xr(value: float | None) -> str:
    return "n/a" if value is None else _x(value)


def _structured_rows(res: Result) -> list[tuple[str, str, Result]]:
    """(model, schema or "all", summary) for every model: its schemas, then the overall row."""
    rows = []
    for model, m in res["models"].items():
        rows += [(model, name, cell) for name, cell in m["schemas"].items()]
        rows.append((model, "**all**", m["overall"]))
    return rows


def structured_run(res: Result) -> str:
    """One line: when and how the structured-output benchmark was recorded."""
    s = res["settings"]
    sp = s["sampling"]
    n_cases = len(res["cases"])
    return (
        f"Recorded {res['date']} at commit {res['commit'][:7]}: {s['n']} generations per model over "
        f"{n_cases} schemas ({s['n'] // n_cases} each), max_tokens {s['max_tokens']}, temperature "
        f"{sp['temperature']}, top_k {sp['top_k']}, top_p {sp['top_p']}, min_p {sp['min_p']}, "
        f"{s['threads']} threads; hallmark through {s['hallmark_via']}, watermarked "
        f"with {s['watermark_key']}; {s['llama_server']}; validity by {s['validator']}.\n"
    )


STRUCTURED_MAX_OVERHEAD = 0.10


def structured_goals(res: Result) -> str:
    """The structured-output goals per model, with verdicts: every finished output valid, and the
    mask's cost at most 10% of decode time (inside the run, and as tokens/s vs unconstrained)."""
    models = list(res["models"])
    lines = ["| goal | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    valid, inside, tps = [], [], []
    for model in models:
        h = res["models"][model]["overall"]["hallmark"]
        valid.append(f"{_of(h['valid'], h['finished'])}: {_verdict(h['invalid_finished'] == 0)}")
        share = h["grammar_share_of_decode"]
        inside.append(f"{_share(share, 1)}: {_verdict(share <= STRUCTURED_MAX_OVERHEAD)}")
        ratio = res["models"][model]["overall"]["ratios"]["hallmark_constrained_vs_free_decode"]
        tps.append(f"{_x(ratio)}: {_verdict(ratio >= 1 - STRUCTURED_MAX_OVERHEAD)}")
    lines.append("| every finished output valid under its schema (100%) | " + " | ".join(valid) + " |")
    lines.append(
        "| the grammar's time inside the run (mask, and sampling beyond its unconstrained cost) ≤ 10% "
        "of decode time | " + " | ".join(inside) + " |"
    )
    lines.append("| decode tok/s constrained ≥ 0.90x unconstrained, same prompts | " + " | ".join(tps) + " |")
    return "\n".join(lines) + "\n"


def structured_validity_table(res: Result) -> str:
    """Valid among finished outputs, and the finished share, per model and schema, both engines."""
    lines = [
        "| model | schema | hallmark: valid / finished | finished / all | llama-server: valid / finished "
        "| finished / all |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for model, name, c in _structured_rows(res):
        h, ls = c["hallmark"], c["llama_server"]
        err = f", {ls['errors']} refused" if ls["errors"] else ""
        lines.append(
            f"| {model} | {name} | {_of(h['valid'], h['finished'])} | {_of(h['finished'], h['n'])} "
            f"| {_of(ls['valid'], ls['finished'])} | {_of(ls['finished'], ls['n'])}{err} |"
        )
    return "\n".join(lines) + "\n"


def structured_speed_table(res: Result) -> str:
    """Decode tokens/s constrained and unconstrained on both engines, the grammar's cost inside the
    run (the mask's functions; sampling constrained vs unconstrained; their sum as a share), ratios."""
    lines = [
        "| model | schema | hallmark tok/s: constrained | unconstrained | ratio | mask µs/token (share) "
        "| sampling µs/token: constrained / unconstrained | grammar share of decode "
        "| llama-server tok/s: constrained | unconstrained | ratio | hallmark / llama-server, constrained |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, name, c in _structured_rows(res):
        h, hf, ls, lsf = (c[k] for k in ("hallmark", "hallmark_free", "llama_server", "llama_server_free"))
        r = c["ratios"]
        lines.append(
            f"| {model} | {name} | {_tps(h['decode_tps'])} | {_tps(hf['decode_tps'])} "
            f"| {_xr(r['hallmark_constrained_vs_free_decode'])} "
            f"| {h['mask_us_per_token']:.0f} ({_share(h['mask_share_of_decode'], 1)}) "
            f"| {h['sampler_us_per_token']:.0f} / {hf['sampler_us_per_token']:.0f} "
            f"| {_share(h['grammar_share_of_decode'], 1)} "
            f"| {_tps(ls['decode_tps'])} | {_tps(lsf['decode_tps'])} "
            f"| {_xr(r['llama_server_constrained_vs_free_decode'])} "
            f"| {_xr(r['hallmark_vs_llama_server_decode'])} |"
        )
    return "\n".join(lines) + "\n"


def structured_watermark_table(res: Result) -> str:
    """Detection of hallmark's constrained outputs (from their text, and from the sampled ids), their
    scored, free and forced tokens; the unconstrained outputs of the same prompts; llama-server's
    (unwatermarked) outputs as negatives."""
    lines = [
        "| model | schema | constrained: detected p < 0.01 (from ids) | p < 0.001 "
        "| median tokens / scored / free | steps forced by the grammar "
        "| unconstrained: detected p < 0.01 | median tokens / free | llama-server outputs flagged p < 0.01 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, name, c in _structured_rows(res):
        h, hf, ls, lsf = (c[k] for k in ("hallmark", "hallmark_free", "llama_server", "llama_server_free"))
        flagged = [x for x in (ls, lsf) if x["detected_p01"] is not None]
        n_neg = sum(x["n"] for x in flagged)
        fp = sum(round(x["detected_p01"] * x["n"]) for x in flagged)
        lines.append(
            f"| {model} | {name} | {_share(h['detected_p01'])} ({_share(h['detected_p01_from_ids'])}) "
            f"| {_share(h['detected_p001'])} "
            f"| {h['tokens_median']:.0f} / {h['scored_median']:.0f} / {h['free_median']:.0f} "
            f"| {_share(h['forced_share'])} "
            f"| {_share(hf['detected_p01'])} | {hf['tokens_median']:.0f} / {hf['free_median']:.0f} "
            f"| {_of(fp, n_neg)} |"
        )
    return "\n".join(lines) + "\n"


def structured_table(res: Result) -> str:
    """bench/results/structured.md: the run, the goals and the three tables."""
    parts = [
        structured_run(res),
        structured_goals(res),
        structured_validity_table(res),
        structured_speed_table(res),
        structured_watermark_table(res),
    ]
    return "\n".join(parts)


# -- zero-shot detection ----------------------------------------------------------------------------
_ZS_MODELS = {"smollm2-135m-instruct": "SmolLM2", "gemma-3-270m": "gemma"}
_ZS_STATS = {
    "log_likelihood": "log-likelihood",
    "log_rank": "log-rank",
    "entropy": "entropy",
    "fast_detectgpt": "Fast-DetectGPT",
    "binoculars": "Binoculars",
    "all": "all five averaged",
}


def _zs_method(method: str) -> str:
    if method == "shipped":
        return "**shipped combination**"
    if method == "all":
        return "all ten averaged"
    if method.startswith("shipped -"):
        return f"shipped without {_zs_method(method.removeprefix('shipped -'))}"
    model, statistic = method.split(":")
    return f"{_ZS_MODELS.get(model, model)} {_ZS_STATS.get(statistic, statistic)}"


def _ci(cell: dict, digits: int = 2) -> str:
    lo, hi = cell["ci"]
    return f"{cell['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def zeroshot_table(res: Result) -> str:
    """AUROC per method and set, the shipped combination with CIs and its calibrated decisions,
    false positives on human-only sets, AUROC by length, scoring speed."""
    metrics, decisions = res["metrics"], res["decisions"]
    names = list(metrics)
    methods = list(next(iter(metrics.values())))
    pooled = res["settings"]["pooled_human_texts"]
    lines = [
        "AUROC / TPR at 1% FPR per method. Texts are compared at the longest calibrated length they "
        f"reach; the TPR's threshold is the 99th percentile of all {pooled} human texts of the run, "
        "pooled:",
        "",
    ]
    lines.append("| method | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for m in methods:
        cells = [
            f"{metrics[n][m]['auroc']['value']:.3f} / {metrics[n][m]['tpr_1pct_pooled']:.2f}" for n in names
        ]
        lines.append(f"| {_zs_method(m)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The shipped detector, with 95% bootstrap intervals (the set's own human texts set the "
        "empirical TPR's threshold); its calibrated decisions at --zs-fpr 1%:",
        "",
    ]
    lines.append(
        "| set | human / machine texts | AUROC | TPR at 1% FPR, pooled | TPR at 1% FPR, own human texts "
        "| flagged at 1%: machine | flagged at 1%: human |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for n in names:
        d, m = decisions[n], metrics[n]["shipped"]
        lines.append(
            f"| {n} | {d['human']} / {d['machine']} | {_ci(m['auroc'], 3)} | {m['tpr_1pct_pooled']:.2f} | "
            f"{_ci(m['tpr_1pct'])} | {d['machine_flagged']} ({d['machine_flagged'] / d['machine']:.0%}) | "
            f"{d['human_flagged']} ({d['human_flagged'] / d['human']:.1%}) |"
        )
    human_only = [s for s in res["sets"] if not s["machine"]]
    if human_only:
        lines += ["", "Human-only sets the calibration never saw, flagged at --zs-fpr 1%:", ""]
        lines.append("| set | texts | median words compared | flagged |")
        lines.append("|---|---:|---:|---:|")
        for s in human_only:
            d = decisions[s["name"]]
            lines.append(
                f"| {s['name']} | {d['human']} | {s['median_words']} | "
                f"{d['human_flagged']} ({d['human_flagged'] / d['human']:.1%}) |"
            )
    lengths = sorted({int(b) for v in res["length_auroc"].values() for b in v})  # JSON keys: strings
    lines += ["", "AUROC of the shipped combination with every text cut to a length (words):", ""]
    lines.append("| set | " + " | ".join(str(b) for b in lengths) + " |")
    lines.append("|---|" + "---:|" * len(lengths))
    for n, by in res["length_auroc"].items():
        lines.append(
            f"| {n} | " + " | ".join(f"{by[str(b)]:.3f}" if str(b) in by else "" for b in lengths) + " |"
        )
    lines += ["", "| scoring model | tokens | seconds | tokens/s |", "|---|---:|---:|---:|"]
    for model, sp in res["speed"].items():
        lines.append(f"| {model} | {sp['tokens']} | {sp['seconds']} | {sp['tokens_per_s']} |")
    return "\n".join(lines)


def zeroshot_run(res: Result) -> str:
    """One line: when and on what the zero-shot benchmark was recorded."""
    st = res["settings"]
    info = st["calibration_info"]
    domains = ", ".join(f"{k} {v}" for k, v in info.get("domains", {}).items())
    return (
        f"Recorded {res['recorded']} at commit {res['commit']}: calibration {st['calibration']} "
        f"({domains} human texts), {len(st['features'])} features, lengths {st['lengths'][0]}-"
        f"{st['lengths'][-1]} words; {st['bootstrap']} bootstrap draws."
    )


def speculative_table(res: Result) -> str:
    """bench/speculative.py: decode tokens/s off, with every draft verified (always) and with drafts
    only where they pay (adaptive, the default), and llama-lookup's."""
    lines = [
        "| model | workload | prompts | tok/s off | always: on / off | tokens per step | adaptive: on / off "
        "| accepted / drafted (adaptive) | identical to off (always / adaptive) | llama-lookup tok/s "
        "| adaptive / llama-lookup |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, workloads in res["results"].items():
        for workload, r in workloads.items():
            if workload in ("verify_cost", "engine_step_costs"):
                continue
            a, d = r["always"], r["adaptive"]
            ll = r.get("tok_s_llama_lookup")
            lines.append(
                f"| {model} | {workload} | {r['prompts']} | {r['tok_s_off']:.1f} | {_x(a['speedup'])} "
                f"| {a['tokens_per_step']:.2f} | {_x(d['speedup'])} | {d['accepted']} / {d['drafted']} "
                f"| {a['identical']} / {d['identical']} of {r['prompts']} "
                f"| {'-' if ll is None else f'{ll:.1f}'} "
                f"| {'-' if ll is None else _x(d['vs_llama_lookup'])} |"
            )
    geo = res["speedup_geomean"]
    lines.append("")
    lines.append(
        "Geometric mean over the workloads, on / off: "
        + "; ".join(f"{m} always {_x(g['always'])}, adaptive {_x(g['adaptive'])}" for m, g in geo.items())
        + "."
    )
    return "\n".join(lines) + "\n"


def speculative_costs(res: Result) -> str:
    """What verifying a draft costs: a k-token call as a multiple of a one-token call."""
    ks = ["2", "3", "5", "8"]
    lines = [
        "| model | one-token call | " + " | ".join(f"{k} tokens" for k in ks) + " |",
        "|---|---:|" + "---:|" * len(ks),
    ]
    for model, workloads in res["results"].items():
        c = workloads["verify_cost"]
        lines.append(f"| {model} | {c['ms_1']:.1f} ms | " + " | ".join(_x(c[k]) for k in ks) + " |")
    lines.append("")
    lines.append(
        "What the adaptive mode decided with, measured by the engine at load (1 to 5 tokens after a "
        "64-token context): "
        + "; ".join(
            f"{m} " + " / ".join(f"{c:.2f}" for c in w["engine_step_costs"])
            for m, w in res["results"].items()
        )
        + "."
    )
    return "\n".join(lines) + "\n"


def speculative_run(res: Result) -> str:
    return (
        f"Recorded {res['recorded']}, {res['threads']} threads, greedy, "
        f"{res['prompts_per_workload']} prompts per workload, drafts of up to "
        f"{res['config']['max_draft']} tokens ({res['llama_cpp']}).\n"
    )


BLOCKS: dict[str, tuple[str, Callable[[Result], str]]] = {
    "decode": ("decode", decode_table),
    "decode-run": ("decode", decode_run),
    "decode-goals": ("decode", decode_goals),
    "serve": ("serve", serve_table),
    "serve-run": ("serve", serve_run),
    "serve-goals": ("serve", serve_goals),
    "serve_baseline": ("serve_baseline", serve_table),
    "disclosure": ("disclosure", disclosure_table),
    "serve_baseline-run": ("serve_baseline", serve_run),
    "serve_safeguards": ("serve_safeguards", serve_table),
    "serve_safeguards-run": ("serve_safeguards", serve_run),
    "batch_agreement": ("batch_agreement", lambda res: batch_agreement_table(res["results"])),
    "batch_agreement-run": ("batch_agreement", batch_agreement_run),
    "tasks": ("tasks", lambda res: tasks_table(res["cells"])),
    "tasks-run": ("tasks", tasks_run),
    "task_prompts": ("task_prompts", lambda res: task_prompts_table(res["rows"])),
    "task_prompts-run": ("task_prompts", task_prompts_run),
    "watermark": ("watermark", watermark_table),
    "watermark-run": ("watermark", watermark_run),
    "watermark-goals": ("watermark", watermark_goals),
    "watermark_context": ("watermark_context", watermark_context_table),
    "detect_any": ("detect_any", detect_any_table),
    "policy": ("policy", policy_table),
    "policy-goals": ("policy", policy_goals),
    "policy-run": ("policy", policy_run),
    "adapters": ("adapters", adapters_table),
    "adapters-training": ("adapters", adapters_training),
    "finetune": ("finetune", finetune_table),
    "grammar_engines": ("grammar_engines", grammar_engines_table),
    "structured": ("structured", structured_table),
    "structured-run": ("structured", structured_run),
    "structured-goals": ("structured", structured_goals),
    "structured-validity": ("structured", structured_validity_table),
    "structured-speed": ("structured", structured_speed_table),
    "structured-watermark": ("structured", structured_watermark_table),
    "zeroshot": ("zeroshot", zeroshot_table),
    "zeroshot-run": ("zeroshot", zeroshot_run),
    "speculative": ("speculative", speculative_table),
    "speculative-run": ("speculative", speculative_run),
    "speculative-costs": ("speculative", speculative_costs),
}

# Result file stem -> the block whose text is bench/results/<stem>.md (what the script writes).
RESULT_TABLES = {
    "decode": "decode",
    "serve": "serve",
    "serve_baseline": "serve_baseline",
    "serve_safeguards": "serve_safeguards",
    "disclosure": "disclosure",
    "batch_agreement": "batch_agreement",
    "tasks": "tasks",
    "task_prompts": "task_prompts",
    "watermark": "watermark",
    "watermark_context": "watermark_context",
    "detect_any": "detect_any",
    "policy": "policy",
    "adapters": "adapters",
    "finetune": "finetune",
    "grammar_engines": "grammar_engines",
    "structured": "structured",
    "zeroshot": "zeroshot",
    "speculative": "speculative",
}
