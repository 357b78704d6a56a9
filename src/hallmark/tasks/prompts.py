"""Prompts for the task commands, per model kind, and the clean-up of what the model writes.

A base model (no chat template, e.g. gemma-3-270m) continues text, so it gets few-shot prompts in a
fixed `Label: text` format and stops at the end of the line. An instruct model (a chat template,
e.g. smollm2-135m-instruct) gets an instruction through its template. The `naive` style is the
zero-shot baseline: the bare instruction, no examples, no stop sequence, no clean-up. Each task's
styles are a Literal type and a tuple (TRANSLATION_STYLES, SUMMARY_STYLES, QA_STYLES); any other
style raises UnknownStyleError (`check_style`, which the CLI and the API call before loading a model).

Which style is used by default (`CHOSEN`) was decided by dev-set scores from
bench/experiments/task_prompts.py; the README has the table. The examples below were written for
hallmark, not taken from any evaluation set.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from typing import Any, Literal, get_args

from hallmark.errors import UnknownStyleError
from hallmark.tasks.languages import language_name

Messages = list[dict[str, str]]

Task = Literal["translation", "summarization", "qa"]

# The prompt styles each task knows; the tuples are derived from the Literal types, written once.
TranslationStyle = Literal[
    "naive", "zeroshot", "fewshot-1", "fewshot-3", "fewshot-5", "chat", "chat-fewshot-3"
]
SummaryStyle = Literal["naive", "tldr", "fewshot-1", "chat"]
QAStyle = Literal["naive", "zeroshot", "fewshot-1", "fewshot-3", "chat", "chat-fewshot-3"]
TRANSLATION_STYLES: tuple[TranslationStyle, ...] = get_args(TranslationStyle)
SUMMARY_STYLES: tuple[SummaryStyle, ...] = get_args(SummaryStyle)
QA_STYLES: tuple[QAStyle, ...] = get_args(QAStyle)
STYLES: dict[Task, tuple[str, ...]] = {
    "translation": TRANSLATION_STYLES,
    "summarization": SUMMARY_STYLES,
    "qa": QA_STYLES,
}
_TASK_WORDS: dict[Task, str] = {
    "translation": "translation",
    "summarization": "summarization",
    "qa": "question-answering",
}


def check_style(task: Task, style: str | None) -> None:
    """Raise UnknownStyleError unless `style` is None (the default) or one of the task's styles.

    Called before a model is loaded, so that a typo fails at once and names the known styles.
    """
    if task not in STYLES:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(STYLES)}")
    if style is not None and style not in STYLES[task]:
        raise UnknownStyleError(
            f"unknown {_TASK_WORDS[task]} style {style!r}; known: {', '.join(STYLES[task])}"
        )


# Parallel example sentences for few-shot translation between any two of these languages.
TRANSLATION_SHOTS: list[dict[str, str]] = [
    {
        "en": "The weather is nice today, so we are going to the beach.",
        "fr": "Il fait beau aujourd'hui, alors nous allons à la plage.",
        "de": "Heute ist schönes Wetter, also gehen wir an den Strand.",
        "es": "Hoy hace buen tiempo, así que vamos a la playa.",
        "it": "Oggi fa bel tempo, quindi andiamo al mare.",
        "pt": "Hoje está um dia bonito, então vamos à praia.",
        "nl": "Het is mooi weer vandaag, dus we gaan naar het strand.",
    },
    {
        "en": "Where is the nearest train station?",
        "fr": "Où est la gare la plus proche ?",
        "de": "Wo ist der nächste Bahnhof?",
        "es": "¿Dónde está la estación de tren más cercana?",
        "it": "Dov'è la stazione ferroviaria più vicina?",
        "pt": "Onde fica a estação de trem mais próxima?",
        "nl": "Waar is het dichtstbijzijnde treinstation?",
    },
    {
        "en": "I don't know what he wants.",
        "fr": "Je ne sais pas ce qu'il veut.",
        "de": "Ich weiß nicht, was er will.",
        "es": "No sé lo que quiere.",
        "it": "Non so cosa vuole.",
        "pt": "Não sei o que ele quer.",
        "nl": "Ik weet niet wat hij wil.",
    },
    {
        "en": "She has been reading this book for two weeks.",
        "fr": "Elle lit ce livre depuis deux semaines.",
        "de": "Sie liest dieses Buch seit zwei Wochen.",
        "es": "Lleva dos semanas leyendo este libro.",
        "it": "Sta leggendo questo libro da due settimane.",
        "pt": "Ela está lendo este livro há duas semanas.",
        "nl": "Ze leest dit boek al twee weken.",
    },
    {
        "en": "Thank you very much for your help.",
        "fr": "Merci beaucoup pour votre aide.",
        "de": "Vielen Dank für Ihre Hilfe.",
        "es": "Muchas gracias por su ayuda.",
        "it": "Grazie mille per il suo aiuto.",
        "pt": "Muito obrigado pela sua ajuda.",
        "nl": "Hartelijk dank voor uw hulp.",
    },
]

SUMMARY_SHOTS: list[dict[str, str]] = [
    {
        "document": (
            "The town council voted on Tuesday to close the old library on Mill Street at the end of "
            "the year. Councillors said the building needs repairs costing more than two million "
            "pounds, and that its services will move to the new community centre next to the "
            "station. Residents who opposed the plan had collected 4,000 signatures. A spokesperson "
            "for the campaign said they were disappointed and would keep fighting for the building "
            "to be used for the public."
        ),
        "summary": (
            "A town's old library will close at the end of the year and move to a new community "
            "centre, despite a 4,000-signature petition against the plan."
        ),
    },
]

QA_SHOTS: list[dict[str, str]] = [
    {
        "context": (
            "The Eiffel Tower was built for the 1889 World's Fair in Paris. It was designed by the "
            "engineering company of Gustave Eiffel and was the tallest man-made structure in the "
            "world until the Chrysler Building was finished in New York in 1930."
        ),
        "question": "Which building was taller than the Eiffel Tower in 1930?",
        "answer": "the Chrysler Building",
    },
    {
        "context": (
            "Honey bees live in colonies of up to 60,000 workers. The workers collect nectar from "
            "flowers and store it in wax cells, where it slowly turns into honey as water "
            "evaporates from it."
        ),
        "question": "How many workers can a honey bee colony have?",
        "answer": "up to 60,000",
    },
    {
        "context": (
            "Marie Curie moved from Warsaw to Paris in 1891 to study physics and mathematics at the "
            "Sorbonne. In 1903 she shared the Nobel Prize in Physics with her husband Pierre and "
            "Henri Becquerel."
        ),
        "question": "Where did Marie Curie study?",
        "answer": "the Sorbonne",
    },
]

OPEN_QA_SHOTS: list[dict[str, str]] = [
    {"question": "What is the capital of Japan?", "answer": "Tokyo"},
    {"question": "How many legs does a spider have?", "answer": "Eight"},
    {"question": "Who wrote Romeo and Juliet?", "answer": "William Shakespeare"},
]

# Summary lengths: how many sentences to ask for and keep.
SUMMARY_LENGTHS = {"short": 1, "medium": 3, "long": 6}


@dataclass
class TaskPrompt:
    """What to send to the model for one input, and how to clean up what comes back."""

    text: str | None = None  # a completion prompt (base models) ...
    messages: Messages | None = None  # ... or chat messages (instruct models)
    stop: tuple[str, ...] = ()
    clean: Callable[[str], str] = field(default=lambda s: s.strip())
    # A few-shot prompt can fail where a zero-shot one does not: a small base model sometimes copies
    # an example's answer or ends the line at once. A cleaned output that `usable` rejects is
    # replaced by the output of `fallback`, the zero-shot prompt with the same clean-up.
    usable: Callable[[str], bool] = field(default=lambda s: bool(s.strip()))
    fallback: TaskPrompt | None = None


def echoes(output: str, example: str) -> bool:
    """Whether `output` is (nearly) a copy of a few-shot example's answer rather than a new one."""
    return SequenceMatcher(None, output.lower(), example.lower()).ratio() >= 0.6


ModelKind = Literal["chat", "base"]


def model_kind(model: Any) -> ModelKind:
    """'chat' for a model with a chat template (instruct), 'base' otherwise."""
    return "chat" if getattr(model, "chat_template", None) else "base"


# -- clean-up ---------------------------------------------------------------------------------------
def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def strip_label(text: str, labels: tuple[str, ...]) -> str:
    """Drop a leading 'Label:' the model may echo (e.g. 'French:' or 'Answer:')."""
    for label in labels:
        if text.lower().startswith(label.lower() + ":"):
            return text[len(label) + 1 :].strip()
    return text


def strip_quotes(text: str) -> str:
    for a, b in (('"', '"'), ("“", "”"), ("'", "'"), ("«", "»")):
        if len(text) > 1 and text.startswith(a) and text.endswith(b):
            return text[1:-1].strip()
    return text


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“'(])")


def first_sentences(text: str, n: int) -> str:
    sentences = [s for s in _SENTENCE_END.split(" ".join(text.split())) if s]
    return " ".join(sentences[:n])


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


# -- translation ------------------------------------------------------------------------------------
def translation_prompt(text: str, source: str, target: str, style: str) -> TaskPrompt:
    # Checked first: the branches below match style prefixes, which would take 'fewshot-banana'.
    check_style("translation", style)
    src, tgt = language_name(source), language_name(target)
    if style == "naive":
        instruction = f"Translate from {src} to {tgt}:\n{text}"
        return TaskPrompt(text=instruction + "\n", messages=[{"role": "user", "content": instruction}])
    shots = _translation_shots(source, target, _shots(style))

    def clean(out: str) -> str:
        return strip_quotes(strip_label(first_line(out), (tgt, "Translation", f"{tgt} translation")))

    ask = f"Translate this {src} text into {tgt}. Reply with the {tgt} translation only.\n\n"
    if style == "zeroshot":  # the labelled format with no examples: what the task adapters are tuned on
        return TaskPrompt(
            text=f"{src}: {text}\n{tgt}:",
            messages=[{"role": "user", "content": ask + text}],
            stop=("\n",),
            clean=clean,
        )
    if style.startswith("fewshot"):
        lines = [f"{src}: {s}\n{tgt}: {t}\n" for s, t in shots]
        return TaskPrompt(text="\n".join([*lines, f"{src}: {text}\n{tgt}:"]), stop=("\n",), clean=clean)
    if style.startswith("chat"):
        messages: Messages = []
        for s, t in shots:
            messages += [{"role": "user", "content": ask + s}, {"role": "assistant", "content": t}]
        messages.append({"role": "user", "content": ask + text})
        return TaskPrompt(messages=messages, clean=clean)
    raise UnknownStyleError(f"unknown translation style {style!r}; known: {', '.join(TRANSLATION_STYLES)}")


def _translation_shots(source: str, target: str, k: int) -> list[tuple[str, str]]:
    pairs = [(s[source], s[target]) for s in TRANSLATION_SHOTS if source in s and target in s]
    return pairs[:k]


def _shots(style: str) -> int:
    m = re.search(r"fewshot-(\d+)$", style)
    return int(m.group(1)) if m else 0


# -- summarization ----------------------------------------------------------------------------------
def summary_prompt(document: str, style: str, sentences: int = 1) -> TaskPrompt:
    check_style("summarization", style)
    unit = "one sentence" if sentences == 1 else f"{sentences} sentences"

    def clean(out: str) -> str:
        return first_sentences(strip_label(out.strip(), ("Summary", "TL;DR")), sentences)

    instruction = f"Summarize the following text:\n\n{document}"
    zero_shot = TaskPrompt(
        text=instruction + "\n\nSummary:", messages=[{"role": "user", "content": instruction}]
    )
    if style == "naive":
        return zero_shot
    if style == "tldr":
        return TaskPrompt(text=f"{document}\n\nTL;DR:", stop=("\n",), clean=clean)
    if style == "fewshot-1":
        shot = SUMMARY_SHOTS[0]
        text = (
            f"Article: {shot['document']}\nSummary in one sentence: {shot['summary']}\n\n"
            f"Article: {document}\nSummary in {unit}:"
        )
        return TaskPrompt(
            text=text,
            stop=("\n",),
            clean=clean,
            usable=lambda out: bool(out) and not echoes(out, shot["summary"]),
            fallback=replace(zero_shot, clean=clean),
        )
    if style == "chat":
        instruction = f"Summarize the following article in {unit}. Reply with the summary only.\n\n{document}"
        return TaskPrompt(messages=[{"role": "user", "content": instruction}], clean=clean)
    raise UnknownStyleError(f"unknown summarization style {style!r}; known: {', '.join(SUMMARY_STYLES)}")


# -- question answering -----------------------------------------------------------------------------
def _clean_answer(out: str) -> str:
    answer = strip_quotes(strip_label(first_line(out), ("Answer", "A")))
    return answer[:-1].strip() if answer.endswith(".") else answer


def qa_prompt(question: str, context: str | None, style: str) -> TaskPrompt:
    # Checked first: the branches below match style prefixes, which would take 'fewshot-banana'.
    check_style("qa", style)
    instruction = f"{context}\n\nQuestion: {question}" if context else question
    zero_shot = TaskPrompt(
        text=instruction + "\nAnswer:", messages=[{"role": "user", "content": instruction}]
    )
    if style == "naive":
        return zero_shot
    k = _shots(style)
    ask = (
        "Answer the question with the shortest phrase from the text that answers it; "
        "do not write a full sentence.\n\n"
    )
    if style == "zeroshot":  # the labelled format with no examples: what the task adapters are tuned on
        text = (
            f"Context: {context}\nQuestion: {question}\nAnswer:"
            if context
            else f"Question: {question}\nAnswer:"
        )
        content = f"{ask}Text: {context}\n\nQuestion: {question}" if context else question
        return TaskPrompt(
            text=text, messages=[{"role": "user", "content": content}], stop=("\n",), clean=_clean_answer
        )
    if style.startswith("fewshot"):
        if context is None:
            shots = [f"Question: {s['question']}\nAnswer: {s['answer']}\n" for s in OPEN_QA_SHOTS[:k]]
            final = f"Question: {question}\nAnswer:"
        else:
            shots = [
                f"Context: {s['context']}\nQuestion: {s['question']}\nAnswer: {s['answer']}\n"
                for s in QA_SHOTS[:k]
            ]
            final = f"Context: {context}\nQuestion: {question}\nAnswer:"
        # A few-shot prompt now and then gets an empty line back; the zero-shot question then answers.
        return TaskPrompt(
            text="\n".join([*shots, final]),
            stop=("\n",),
            clean=_clean_answer,
            fallback=replace(zero_shot, stop=("\n",), clean=_clean_answer),
        )
    if style.startswith("chat"):
        if context is None:  # an open question: the instruct model answers in its own words
            return TaskPrompt(messages=[{"role": "user", "content": question}])
        messages: Messages = []
        for s in QA_SHOTS[:k]:
            messages += [
                {"role": "user", "content": f"{ask}Text: {s['context']}\n\nQuestion: {s['question']}"},
                {"role": "assistant", "content": s["answer"]},
            ]
        messages.append({"role": "user", "content": f"{ask}Text: {context}\n\nQuestion: {question}"})
        return TaskPrompt(messages=messages, clean=_clean_answer)
    raise UnknownStyleError(f"unknown question-answering style {style!r}; known: {', '.join(QA_STYLES)}")


# The default style per (task, model kind), chosen by dev-set scores (bench/results/task_prompts.md:
# chrF, ROUGE-L and F1 on the last 30 examples of each dev file). `naive` is the baseline and is not
# a candidate: it leaves run-on text in the output. SmolLM2-135M-Instruct answers questions better
# from the few-shot text format than through its chat template (F1 42.5 vs 15.2).
CHOSEN: dict[tuple[str, str], str] = {
    ("translation", "base"): "fewshot-3",  # chrF 38.4; fewshot-5 ties (38.5) with a longer prompt
    ("translation", "chat"): "chat",  # chrF 15.5; the 135M model barely translates in any format
    ("summarization", "base"): "fewshot-1",  # ROUGE-L 14.9
    ("summarization", "chat"): "fewshot-1",  # ROUGE-L 15.6 (chat template: 15.1)
    ("qa", "base"): "fewshot-1",  # F1 46.8 (fewshot-3: 44.9)
    ("qa", "chat"): "fewshot-3",  # F1 42.5
}


def chosen_style(task: Task, model: Any, style: str | None = None) -> str:
    """`style` if given (it must be one of the task's styles); else the style a fine-tuned model was
    trained in for this task (its registry entry says); else the default for the model's kind."""
    check_style(task, style)
    if style:
        return style
    trained = getattr(model, "registry", None)
    if trained is not None and trained.task == task and trained.style in STYLES[task]:
        return trained.style
    return CHOSEN[(task, model_kind(model))]
