"""translate(), summarize() and answer(): the task functions of the Python API and the CLI.

Each takes a loaded Model (or a model name; None = the default model), builds the prompt that suits
the model (hallmark.tasks.prompts), and splits inputs that do not fit the context window instead of
truncating them: translation goes line by line and then sentence by sentence, summaries are
map-reduced (summarise parts, then summarise the summaries), and a long context for a question is
cut into parts of which the one sharing most words with the question is used.
"""

from __future__ import annotations

import os
import re
from typing import Any

from hallmark.engine.generate import in_order
from hallmark.engine.sampling import SamplingParams
from hallmark.errors import PromptError
from hallmark.model import Model
from hallmark.tasks.languages import language_code
from hallmark.tasks.prompts import (
    SUMMARY_LENGTHS,
    check_style,
    chosen_style,
    model_kind,
    qa_prompt,
    split_sentences,
    summary_prompt,
    translation_prompt,
)
from hallmark.tasks.runner import TaskResult, fits, pack, resolve_model, run_prompts, task_params

ModelLike = Model | str | os.PathLike[str] | None


def _require_text(text: str, what: str) -> str:
    if not isinstance(text, str):
        raise PromptError(f"{what} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise PromptError(f"{what} is empty")
    return text


# -- translation ------------------------------------------------------------------------------------
def translate_max_tokens(model: Model, text: str) -> int:
    # Translations run up to about twice the source's tokens (e.g. English to German in a
    # tokenizer trained mostly on English); the stop sequence or end of turn ends them earlier.
    return 2 * len(model.tokenize(text, add_special=False)) + 16


def translate(
    text: str,
    to: str,
    source: str = "en",
    *,
    model: ModelLike = None,
    style: str | None = None,
    params: SamplingParams | None = None,
    progress: bool = False,
    **sampling: Any,
) -> TaskResult:
    """Translate `text` from `source` into `to` (ISO 639-1 codes such as "fr" or names such as "French").

    Each line is translated on its own, so the output has as many lines as the input (empty lines
    stay empty); a line too long for the context window is translated in groups of sentences.
    """
    check_style("translation", style)  # before the model loads, so that a typo fails at once
    _require_text(text, "the text to translate")
    src, tgt = language_code(source), language_code(to)
    if src == tgt:
        raise PromptError(f"the source and target language are the same ({src})")
    m = resolve_model(model, "translation")
    style = chosen_style("translation", m, style)
    params = task_params(params, sampling)
    lines = text.split("\n")

    def fits_one(piece: str) -> bool:
        return fits(m, translation_prompt(piece, src, tgt, style), translate_max_tokens(m, piece))

    pieces: list[tuple[int, str]] = []  # (line index, a piece of that line)
    for i, line in enumerate(lines):
        if not line.strip():
            continue  # empty lines stay empty, without a model call
        if fits_one(line.strip()):
            pieces.append((i, line.strip()))
        else:  # a line beyond the context window: groups of its sentences
            pieces += [(i, piece) for piece in pack(split_sentences(line), fits_one)]
    prompts = [translation_prompt(piece, src, tgt, style) for _, piece in pieces]
    outs = run_prompts(
        m,
        prompts,
        params,
        [translate_max_tokens(m, piece) for _, piece in pieces],
        progress="translating" if progress else None,
    )
    translated = [""] * len(lines)
    for (i, _), (out, _) in zip(pieces, outs, strict=True):
        # A line's translation is one line, whatever the prompt style: that keeps the alignment.
        translated[i] = f"{translated[i]} {' '.join(out.split())}".strip()
    return TaskResult(
        text="\n".join(translated),
        model=m.name,
        style=style,
        parts=len(pieces),
        generations=[g for _, g in outs],
    )


# -- summarization ----------------------------------------------------------------------------------
def summary_max_tokens(sentences: int) -> int:
    return 48 * sentences + 16


def summarize(
    text: str | list[str],
    length: str | int = "short",
    *,
    model: ModelLike = None,
    style: str | None = None,
    params: SamplingParams | None = None,
    progress: bool = False,
    **sampling: Any,
) -> TaskResult | list[TaskResult]:
    """Summarize `text` in `length` sentences ("short" = 1, "medium" = 3, "long" = 6, or a number).

    A list of texts is summarised in one batch and gives a list of results. A text beyond the
    context window is split into parts that fit; each part is summarised in 3 sentences and the
    joined part summaries are summarised again (repeatedly, until they fit).
    """
    check_style("summarization", style)  # before the model loads, so that a typo fails at once
    texts = [text] if isinstance(text, str) else list(text)
    for t in texts:
        _require_text(t, "the text to summarize")
    sentences = _sentences(length)
    m = resolve_model(model, "summarization")
    style = chosen_style("summarization", m, style)
    params = task_params(params, sampling)
    docs = [t.strip() for t in texts]
    results: list[TaskResult | None] = [None] * len(docs)
    prompts = [summary_prompt(d, style, sentences) for d in docs]
    limit = summary_max_tokens(sentences)
    short = [i for i, prompt in enumerate(prompts) if fits(m, prompt, limit)]
    outs = run_prompts(
        m,
        [prompts[i] for i in short],
        params,
        [limit] * len(short),
        progress="summarizing" if progress else None,
    )
    for i, (out, gen) in zip(short, outs, strict=True):
        results[i] = TaskResult(text=out, model=m.name, style=style, generations=[gen])
    for i, doc in enumerate(docs):
        if results[i] is None:
            results[i] = _map_reduce(m, doc, sentences, style, params, progress)
    final = in_order(results)
    return final[0] if isinstance(text, str) else final


def _map_reduce(
    m: Model, document: str, sentences: int, style: str, params: SamplingParams, progress: bool
) -> TaskResult:
    generations = []
    parts = 0

    def fits_one(piece: str) -> bool:
        return fits(m, summary_prompt(piece, style, 3), summary_max_tokens(3))

    for _ in range(8):  # each round shrinks the text to ~3 sentences per part; 8 rounds is plenty
        if fits(m, summary_prompt(document, style, sentences), summary_max_tokens(sentences)):
            break
        chunks = pack(split_sentences(document), fits_one)
        outs = run_prompts(
            m,
            [summary_prompt(c, style, 3) for c in chunks],
            params,
            [summary_max_tokens(3)] * len(chunks),
            progress="summarizing parts" if progress else None,
        )
        generations += [g for _, g in outs]
        parts += len(chunks)
        document = " ".join(out for out, _ in outs)
    ((out, gen),) = run_prompts(
        m, [summary_prompt(document, style, sentences)], params, [summary_max_tokens(sentences)]
    )
    return TaskResult(text=out, model=m.name, style=style, parts=parts + 1, generations=[*generations, gen])


def _sentences(length: str | int) -> int:
    if isinstance(length, int) and not isinstance(length, bool) and length >= 1:
        return length
    if isinstance(length, str) and length in SUMMARY_LENGTHS:
        return SUMMARY_LENGTHS[length]
    if isinstance(length, str) and length.isdigit() and int(length) >= 1:
        return int(length)
    raise PromptError(f"unknown summary length {length!r}: use short, medium, long or a number of sentences")


# -- question answering -----------------------------------------------------------------------------
QA_MAX_TOKENS = 32  # extractive answers are short phrases
OPEN_QA_MAX_TOKENS = 256  # an instruct model answering in its own words

_WORD = re.compile(r"\w+")
_STOPWORDS_TEXT = (
    "a an the of in on at to for by with from and or is are was were be been what which who whom "
    "whose when where why how did do does this that these those it its as"
)
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def answer(
    question: str | list[str],
    context: str | list[str] | None = None,
    *,
    model: ModelLike = None,
    style: str | None = None,
    params: SamplingParams | None = None,
    progress: bool = False,
    **sampling: Any,
) -> TaskResult | list[TaskResult]:
    """Answer `question`, from `context` when given (a short phrase taken from it, SQuAD-style).

    Lists of questions (and of contexts, one each) are answered in one batch and give a list of
    results. A context beyond the context window is cut into parts that fit, and the part sharing
    the most content words with the question is used (`parts` in the result counts them all).
    """
    check_style("qa", style)  # before the model loads, so that a typo fails at once
    questions = [question] if isinstance(question, str) else list(question)
    if context is None:
        contexts: list[str | None] = [None] * len(questions)
    else:
        contexts = [context] if isinstance(context, str) else list(context)
    if len(contexts) != len(questions):
        raise PromptError(f"{len(questions)} questions but {len(contexts)} contexts")
    for q, c in zip(questions, contexts, strict=True):
        _require_text(q, "the question")
        if c is not None:
            _require_text(c, "the context")
    m = resolve_model(model, "qa")
    style = chosen_style("qa", m, style)
    params = task_params(params, sampling)
    prompts, limits, parts = [], [], []
    for q, c in zip(questions, contexts, strict=True):
        limit = QA_MAX_TOKENS if c is not None or model_kind(m) == "base" else OPEN_QA_MAX_TOKENS
        n_parts = 1
        if c is not None and not fits(m, qa_prompt(q, c, style), limit):
            c, n_parts = _best_part(m, q, c, style, limit)
        prompt = qa_prompt(q, c, style)
        if not fits(m, prompt, limit):
            raise PromptError(f"the question is too long for the model's {m.n_ctx}-token context window")
        prompts.append(prompt)
        limits.append(limit)
        parts.append(n_parts)
    outs = run_prompts(m, prompts, params, limits, progress="answering" if progress else None)
    results = [
        TaskResult(text=out, model=m.name, style=style, parts=n, generations=[gen])
        for (out, gen), n in zip(outs, parts, strict=True)
    ]
    return results[0] if isinstance(question, str) else results


def _best_part(m: Model, question: str, context: str, style: str, limit: int) -> tuple[str, int]:
    """The part of a too-long context that shares most content words with the question; and the count."""
    chunks = pack(split_sentences(context), lambda piece: fits(m, qa_prompt(question, piece, style), limit))
    wanted = _content_words(question)
    return max(chunks, key=lambda piece: len(wanted & _content_words(piece))), len(chunks)
