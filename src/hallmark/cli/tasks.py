"""`hallmark translate`, `summarize`, `ask` and `eval`: the task commands (eval also scores perplexity).

Everything that can be checked without the model (the prompt style, language codes, the eval data
file) is checked before the model loads, so a typo fails at once with a one-line error. The task
code (and with it llama.cpp) is imported only when a command runs.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hallmark.cli.options import envvar, load_model, model_options
from hallmark.errors import HallmarkError

# An argument that looks like a file name (a path separator, or a name with a text-file extension)
# but does not exist is an error, not text to translate.
_LOOKS_LIKE_FILE = re.compile(r"(.*[/\\].*|[\w.-]+\.(txt|md|text|srt|csv|tsv|json|jsonl|html))$")


def _read_input(arg: str | None, what: str) -> str:
    """TEXT, a FILE, or stdin ('-' or no argument)."""
    if arg is None or arg == "-":
        if sys.stdin.isatty():
            raise click.UsageError(f"give {what} as an argument or a file, or pipe it on stdin")
        return sys.stdin.read()
    path = Path(arg)
    if "\n" not in arg and len(arg) < 4096 and path.is_file():
        return _read_file(path)
    if "\n" not in arg and " " not in arg and _LOOKS_LIKE_FILE.fullmatch(arg):
        raise HallmarkError(f"no such file: {arg}")
    return arg


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise HallmarkError(f"cannot read {path}: it is not UTF-8 text") from None
    except OSError as e:
        raise HallmarkError(f"cannot read {path}: {e.strerror}") from None


def _load_for_tasks(options: dict[str, Any], task: str) -> Any:
    """The model the options name; without -m or $HALLMARK_MODEL, the best installed one for the
    task (hallmark.tasks.defaults: a shipped task adapter where one scored best)."""
    from hallmark.tasks.defaults import default_model
    from hallmark.tasks.runner import TASK_CTX, TASK_SEQUENCES

    if click.get_current_context().get_parameter_source("model") == click.core.ParameterSource.DEFAULT:
        options["model"] = default_model(task)
    return load_model(options, default_ctx=TASK_CTX, max_sequences=TASK_SEQUENCES)


def _check_style(task: str, style: str | None) -> None:
    """Reject an unknown --style before the model loads (UnknownStyleError names the known ones)."""
    from hallmark.tasks.prompts import check_style  # imports the task code: not at `--help` time

    check_style(task, style)


def task_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Prompt style and sampling flags shared by the task commands (greedy unless --temperature)."""
    for option in reversed(
        [
            click.option(
                "--style",
                default=None,
                envvar=envvar("task_style"),
                show_envvar=True,
                help="Prompt style: naive, fewshot-N, chat, ... [default: the best for the model kind].",
            ),
            click.option(
                "--temperature",
                type=click.FloatRange(0, 2),
                default=0.0,
                show_default=True,
                envvar=envvar("task_temperature"),
                show_envvar=True,
                help="0 = greedy (best dev-set scores; no watermark). Above 0 samples, watermarked.",
            ),
            click.option("--seed", type=int, default=None, help="Random seed when sampling."),
            click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
        ]
    ):
        f = option(f)
    return f


def _sampling(options: dict[str, Any]) -> dict[str, Any]:
    out = {"temperature": options.pop("temperature")}
    seed = options.pop("seed")
    if seed is not None:
        out["seed"] = seed
    return out


def _emit(result: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        click.echo(result.text)


@click.command()
@click.argument("text", required=False)
@click.option("--to", "target", required=True, help="Language to translate into (ISO 639-1 code, e.g. fr).")
@click.option("--from", "source", default="en", show_default=True, help="Language of the input.")
@model_options
@task_options
def translate(
    text: str | None, target: str, source: str, style: str | None, as_json: bool, **options: Any
) -> None:
    """Translate TEXT, a FILE, or stdin ('-' or no argument).

    A file is translated line by line: the output has as many lines as the input.

    \b
    Examples:
      hallmark translate --to fr "Where is the station?"
      hallmark translate --to de notes.txt > notes.de.txt
      cat lines.txt | hallmark translate --from es --to en -
      hallmark translate --to es -m gemma-3-270m "Good morning" --json
    """
    _check_style("translation", style)
    from hallmark.tasks import translate as run
    from hallmark.tasks.languages import language_code

    language_code(source), language_code(target)  # a bad code fails before the model loads
    content = _read_input(text, "the text to translate")
    sampling = _sampling(options)
    llm = _load_for_tasks(options, "translation")
    ends_with_newline = content.endswith("\n")
    result = run(
        content.removesuffix("\n"), target, source, model=llm, style=style, progress=True, **sampling
    )
    if as_json:
        _emit(result, True)
    else:
        click.echo(result.text, nl=ends_with_newline or "\n" not in content)


@click.command()
@click.argument("file", required=False)
@click.option(
    "--length",
    default="short",
    show_default=True,
    help="short (1 sentence), medium (3), long (6), or a number of sentences.",
)
@model_options
@task_options
def summarize(file: str | None, length: str, style: str | None, as_json: bool, **options: Any) -> None:
    """Summarize FILE (or stdin, with '-' or no argument).

    Text longer than the context window is summarized in parts, then the parts' summaries are
    summarized (map-reduce); nothing is cut off.

    \b
    Examples:
      hallmark summarize article.txt
      hallmark summarize --length medium report.md
      curl -s https://example.org/post.txt | hallmark summarize - --json
    """
    _check_style("summarization", style)
    from hallmark.tasks import summarize as run

    content = _read_input(file, "the text to summarize")
    sampling = _sampling(options)
    llm = _load_for_tasks(options, "summarization")
    _emit(run(content, length, model=llm, style=style, progress=True, **sampling), as_json)


@click.command()
@click.argument("question")
@click.option(
    "-c",
    "--context",
    "context_file",
    default=None,
    help="File (or '-' for stdin) with the text to answer from; without it the model answers from memory.",
)
@model_options
@task_options
def ask(question: str, context_file: str | None, style: str | None, as_json: bool, **options: Any) -> None:
    """Answer QUESTION, from the text in --context when given.

    With a context the answer is a short phrase taken from it (extractive, as in SQuAD).

    \b
    Examples:
      hallmark ask "Where does the Lek join?" --context rhine.txt
      cat notes.txt | hallmark ask "Who signed the letter?" -c -
      hallmark ask "What is the capital of Japan?" --json
    """
    _check_style("qa", style)
    from hallmark.tasks import answer as run

    context = None
    if context_file is not None:
        context = (
            _read_input(context_file, "the context")
            if context_file == "-"
            else _read_file(Path(context_file))
        )
    sampling = _sampling(options)
    llm = _load_for_tasks(options, "qa")
    _emit(run(question, context, model=llm, style=style, **sampling), as_json)


@click.command("eval")
@click.argument("task", type=click.Choice(["translation", "summarization", "qa", "perplexity"]))
@click.option(
    "--data",
    required=True,
    help="JSONL file of examples (see the README for the fields); for perplexity a text file, "
    'or JSONL with {"text": ...} per line.',
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N examples.")
@click.option(
    "--out",
    default=None,
    help="Output prefix: writes PREFIX.predictions.jsonl and PREFIX.summary.json "
    "[default: hallmark-eval/TASK-DATA-MODEL-STYLE].",
)
@click.option("--from", "source", default=None, help="Translation: source language if the file has none.")
@click.option("--to", "target", default=None, help="Translation: target language if the file has none.")
@click.option(
    "--stride",
    type=click.IntRange(min=1),
    default=None,
    help="Perplexity: tokens the sliding window moves by (it is --ctx-size wide) [default: half the window].",
)
@model_options
@task_options
def eval_task(
    task: str,
    data: str,
    limit: int | None,
    out: str | None,
    source: str | None,
    target: str | None,
    stride: int | None,
    style: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Score a model on TASK (translation, summarization, qa or perplexity) with a dev set.

    Metrics: BLEU and chrF (sacrebleu) for translation, ROUGE-1/2/L (rouge-score) for
    summarization, exact match and F1 with SQuAD's normalisation for qa. perplexity: the
    perplexity, mean negative log-likelihood, tokens scored and bits per byte of held-out text
    (teacher-forced, a sliding window over long texts).

    \b
    Examples:
      hallmark eval translation --data tatoeba.en-fr.jsonl --limit 100
      hallmark eval summarization --data xsum.dev300.jsonl -m gemma-3-270m
      hallmark eval qa --data squad.dev300.jsonl --style naive --json
      hallmark eval perplexity --data held-out.jsonl -m smollm2 --lora tuned.gguf
    """
    if task == "perplexity":
        _eval_perplexity(data, limit, out, stride, style, as_json, options)
        return
    if stride is not None:
        raise click.UsageError("--stride applies to perplexity only")
    _check_style(task, style)
    from hallmark.tasks.evaluate import evaluate, load_examples
    from hallmark.tasks.prompts import chosen_style

    load_examples(task, data, 1)  # a bad file fails before the model loads
    sampling = _sampling(options)
    llm = _load_for_tasks(options, task)
    style = chosen_style(task, llm, style)
    prefix = out or f"hallmark-eval/{task}-{Path(data).stem}-{llm.name}-{style}"
    summary = evaluate(task, data, llm, limit, style, prefix, source, target, progress=True, **sampling)
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
        return
    scores = ", ".join(f"{k} {v:.1f}" for k, v in summary["metrics"].items())
    click.echo(f"{task} on {summary['examples']} examples ({llm.name}, style {style}): {scores}")
    click.echo(f"predictions: {summary['predictions_file']}\nsummary:     {summary['summary_file']}")


def _eval_perplexity(
    data: str,
    limit: int | None,
    out: str | None,
    stride: int | None,
    style: str | None,
    as_json: bool,
    options: dict[str, Any],
) -> None:
    """`hallmark eval perplexity`: score held-out text, print and write the summary."""
    if style is not None:
        raise click.UsageError("--style does not apply to perplexity (the text is scored as it is)")
    from hallmark.tasks.perplexity import evaluate_perplexity, load_texts
    from hallmark.tasks.runner import TASK_CTX

    texts = load_texts(data, limit)  # a bad file fails before the model loads
    _sampling(options)  # --temperature and --seed: nothing is sampled
    llm = load_model(options, default_ctx=TASK_CTX)
    result = evaluate_perplexity(texts, llm, stride=stride, progress=True)
    summary = {**result.to_dict(), "data": data, "date": time.strftime("%Y-%m-%d")}
    prefix = Path(out or f"hallmark-eval/perplexity-{Path(data).stem}-{llm.name}")
    summary["summary_file"] = str(prefix.with_name(prefix.name + ".summary.json"))
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
        Path(summary["summary_file"]).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    except OSError as e:
        raise HallmarkError(f"cannot write {summary['summary_file']}: {e.strerror}") from None
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
        return
    bpb = f", {result.bits_per_byte:.3f} bits/byte" if result.bits_per_byte is not None else ""
    click.echo(
        f"perplexity {result.perplexity:.3f} (mean NLL {result.mean_nll:.4f} nats/token{bpb}) over "
        f"{result.tokens} tokens of {result.texts} text(s) ({llm.name}, window {result.window}, "
        f"stride {result.stride})"
    )
    click.echo(f"summary: {summary['summary_file']}")
