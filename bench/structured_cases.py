"""The structured-output benchmark's cases: five JSON schemas of different shapes, each with a valid
example instance, an extraction instruction and the real documents its prompts are built from.

Contract: `CASES` lists the cases in a fixed order; every case's `example` is valid under its
`schema` (checked by `check_examples`, which bench/structured.py and
bench/experiments/grammar_engines.py run first). `items(n)` gives n (case, document) pairs spread
evenly over the cases, the same on every call; `prompt_text` is the plain-text prompt (base models)
and `chat_messages` the chat form (instruction-tuned models) of one pair. Documents are XSum
articles and SQuAD paragraphs from ../shared/data (read there, never copied into the repository);
nothing here loads a model.

The shapes are the ones the issue asks for: a flat object of string, integer and boolean; nested
objects; an array of objects; enums and numbers (a classification); and string patterns and
formats with optional fields and anyOf. String lengths and array sizes are bounded, as an
application's schema would bound them: an unbounded string lets a 135M model write until max_tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Documents are cut to their first words: prompts of ~250-350 tokens keep prefill small next to
# the decoding being measured, and every prompt fits a 1024-token context with max_tokens to spare.
DOC_WORDS = 180


@dataclass(frozen=True)
class Case:
    name: str
    shape: str  # what the schema exercises, for the tables
    source: str  # "xsum" or "squad"
    schema: dict[str, Any]
    example: dict[str, Any]  # a valid instance (the engine experiment walks it token by token)
    instruction: str  # what to extract; the document follows


CASES: tuple[Case, ...] = (
    Case(
        name="flat",
        shape="flat object: string, integer, boolean",
        source="xsum",
        schema={
            "type": "object",
            "properties": {
                "headline": {"type": "string", "maxLength": 100},
                "location": {"type": "string", "maxLength": 50},
                "people_named": {"type": "integer", "minimum": 0, "maximum": 50},
                "mentions_police": {"type": "boolean"},
            },
            "required": ["headline", "location", "people_named", "mentions_police"],
        },
        example={
            "headline": "Inquest into baby's hospital death suspended",
            "location": "Chertsey",
            "people_named": 4,
            "mentions_police": True,
        },
        instruction=(
            "Read the news article and give its facts as JSON with the keys headline (a short "
            "headline), location (the main place), people_named (how many people it names) and "
            "mentions_police (true or false)."
        ),
    ),
    Case(
        name="nested",
        shape="nested objects",
        source="xsum",
        schema={
            "type": "object",
            "properties": {
                "event": {
                    "type": "object",
                    "properties": {
                        "what": {"type": "string", "maxLength": 100},
                        "where": {
                            "type": "object",
                            "properties": {
                                "place": {"type": "string", "maxLength": 50},
                                "country": {"type": "string", "maxLength": 40},
                            },
                            "required": ["place", "country"],
                        },
                    },
                    "required": ["what", "where"],
                },
                "source": {
                    "type": "object",
                    "properties": {
                        "organisation": {"type": "string", "maxLength": 60},
                        "quoted": {"type": "boolean"},
                    },
                    "required": ["organisation", "quoted"],
                },
            },
            "required": ["event", "source"],
        },
        example={
            "event": {
                "what": "An inquest was halted so police can re-examine a baby's death",
                "where": {"place": "Chertsey", "country": "England"},
            },
            "source": {"organisation": "Surrey Police", "quoted": True},
        },
        instruction=(
            "Read the news article and describe its main event as JSON: event (what happened, and "
            "where: place and country) and source (the organisation the news comes from, and "
            "whether it is quoted)."
        ),
    ),
    Case(
        name="array",
        shape="array of objects",
        source="xsum",
        schema={
            "type": "object",
            "properties": {
                "people": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 4,
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string", "maxLength": 40},
                            "role": {"type": "string", "maxLength": 60},
                        },
                        "required": ["name", "role"],
                    },
                }
            },
            "required": ["people"],
        },
        example={
            "people": [
                {"name": "Sophie Burgess", "role": "baby who died"},
                {"name": "Polly Leavold", "role": "nurse"},
            ]
        },
        instruction=(
            "Read the news article and list the people it mentions as JSON: people, a list of at "
            "most four entries, each with the person's name and role."
        ),
    ),
    Case(
        name="classify",
        shape="enums and numbers (classification)",
        source="xsum",
        schema={
            "type": "object",
            "properties": {
                "topic": {
                    "enum": [
                        "politics",
                        "business",
                        "sport",
                        "health",
                        "science",
                        "crime",
                        "entertainment",
                        "other",
                    ]
                },
                "tone": {"type": "string", "enum": ["positive", "neutral", "negative"]},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "importance": {"type": "integer", "minimum": 1, "maximum": 5},
            },
            "required": ["topic", "tone", "confidence", "importance"],
        },
        example={"topic": "health", "tone": "negative", "confidence": 0.8, "importance": 4},
        instruction=(
            "Classify the news article as JSON: topic (politics, business, sport, health, science, "
            "crime, entertainment or other), tone (positive, neutral or negative), confidence "
            "(from 0 to 1) and importance (1 to 5)."
        ),
    ),
    Case(
        name="qa",
        shape="patterns, formats, optional fields, anyOf",
        source="squad",
        schema={
            "type": "object",
            "properties": {
                "answer": {"type": "string", "minLength": 1, "maxLength": 80},
                "answer_type": {"enum": ["person", "place", "date", "number", "thing", "other"]},
                "topic_slug": {"type": "string", "pattern": "^[a-z0-9]{1,20}(-[a-z0-9]{1,20}){0,3}$"},
                "year": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 2100}, {"type": "null"}]},
                "date": {"type": "string", "format": "date"},
                "evidence": {"type": "string", "maxLength": 120},
            },
            "required": ["answer", "answer_type", "topic_slug", "year"],
        },
        example={
            "answer": "Nieuwe Maas",
            "answer_type": "place",
            "topic_slug": "rhine-branches",
            "year": None,
            "evidence": "It flows farther west, to rejoin the Noord River into the Nieuwe Maas",
        },
        instruction=(
            "Answer the question from the passage as JSON: answer (a short answer), answer_type "
            "(person, place, date, number, thing or other), topic_slug (the passage's topic in "
            "lowercase words joined by hyphens), year (a year the answer refers to, or null), and "
            "optionally date (YYYY-MM-DD) and evidence (a quote from the passage)."
        ),
    ),
)
BY_NAME = {c.name: c for c in CASES}


def compact(value: Any) -> str:
    """JSON as hallmark's grammar writes it (engine/grammar.py JSON_OPTIONS): `, ` and `: `."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def check_examples(validate: Any) -> None:
    """Raise unless every case's example is valid; `validate(schema, instance) -> str | None` (the
    error) is the benchmark's validator, so the examples are checked the way outputs are."""
    for case in CASES:
        if error := validate(case.schema, case.example):
            raise AssertionError(f"the {case.name} example is not valid under its schema: {error}")


# -- documents ------------------------------------------------------------------------------------
def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _english(text: str) -> bool:
    """XSum holds a few Welsh BBC articles; an English news text has 'the' in nearly every line."""
    words = text.lower().split()
    return len(words) >= 60 and words.count("the") >= 0.03 * len(words)


def _cut(text: str, n_words: int = DOC_WORDS) -> str:
    words = text.split()
    return " ".join(words[:n_words]) + (" ..." if len(words) > n_words else "")


def documents(source: str) -> list[dict[str, str]]:
    """XSum articles (English only) or SQuAD question + paragraph pairs, in the files' order."""
    if source == "xsum":
        rows = _jsonl(DATA / "summarization" / "xsum.dev300.jsonl")
        return [{"id": r["id"], "document": _cut(r["document"])} for r in rows if _english(r["document"])]
    rows = _jsonl(DATA / "qa" / "squad.dev300.jsonl")
    return [
        {
            "id": r["id"],
            "document": _cut(r["context"]),
            "question": r["question"].strip(),
            "title": r["title"],
        }
        for r in rows
    ]


def items(n: int) -> list[tuple[Case, dict[str, str]]]:
    """n (case, document) pairs, round-robin over the cases; each XSum case reads its own articles."""
    docs = {src: documents(src) for src in {c.source for c in CASES}}
    used = {src: 0 for src in docs}
    per_case: dict[str, list[dict[str, str]]] = {}
    quota = [n // len(CASES) + (i < n % len(CASES)) for i in range(len(CASES))]
    for case, k in zip(CASES, quota, strict=True):
        start = used[case.source]
        if start + k > len(docs[case.source]):
            raise ValueError(f"{n} generations need more {case.source} documents than the data holds")
        per_case[case.name] = docs[case.source][start : start + k]
        used[case.source] += k
    out = []
    for i in range(max(quota)):
        out += [(c, per_case[c.name][i]) for c in CASES if i < len(per_case[c.name])]
    return out


def _task(case: Case, doc: dict[str, str]) -> str:
    if case.source == "squad":
        return f"Passage: {doc['document']}\n\nQuestion: {doc['question']}"
    return f"Article: {doc['document']}"


def chat_messages(case: Case, doc: dict[str, str]) -> list[dict[str, str]]:
    """The prompt for an instruction-tuned model: one user turn, the instruction then the document."""
    return [{"role": "user", "content": f"{case.instruction}\n\n{_task(case, doc)}"}]


def prompt_text(case: Case, doc: dict[str, str]) -> str:
    """The prompt for a base model: the document, then the instruction, then 'JSON:' to continue."""
    return f"{_task(case, doc)}\n\n{case.instruction}\nJSON:"
