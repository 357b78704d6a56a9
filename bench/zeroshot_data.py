"""The texts of the zero-shot detection benchmark and of the shipped calibration, read from ../shared/data.

Two disjoint pools of human text, so that the false-positive rate the detector states is measured on
texts its calibration never saw:

- `calibration_texts()`: what `bench/zeroshot_calibrate.py` calibrates the shipped detector on, four
  domains: BBC news (detection/human_news_bbc.jsonl, XSum test articles), Wikipedia paragraphs (the
  contexts of finetune/qa/squad.train10k.jsonl), 19th-century novels (finetune/pretrain/
  gutenberg_en.train.txt, consecutive paragraphs joined) and people's answers to instructions
  (finetune/chat/dolly.sample5k.jsonl, Databricks employees, 2023).
- `evaluation_sets()`: the machine-text files of detection/ with their human pairs (news and
  stories: a domain, WritingPrompts stories, that calibration does not contain), plus held-back human
  sets of calibration's kinds from other files (XSum dev articles, SQuAD dev paragraphs, two novels
  held out of the pretraining text).

The machine texts of detection/ continue the first ~30 tokens of their human pair. They are scored
whole, prefix included, as Fast-DetectGPT's evaluation does and as a user would paste them: the
prefix is the same on both sides of a pair, and it gives the continuation its context (stripping
it cost gemma's Fast-DetectGPT 0.93 -> 0.86 AUROC on 60+60 xsum_gpt2-xl texts).
`machine_sets(strip_prefix=True)` scores only what each side wrote.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DETECTION = DATA / "detection"
MACHINE_FILES = (
    "xsum_gpt2-xl.raw_data.json",
    "writing_gpt2-xl.raw_data.json",
    "chatgpt_writing/writing_davinci.raw_data.json",
    "chatgpt_writing/writing_gpt-3.5-turbo.raw_data.json",
    "chatgpt_writing/writing_gpt-4.raw_data.json",
)
MIN_WORDS = 100  # the human sets' own floor (SOURCE.human_text.md)


@dataclass(frozen=True)
class LabelledSet:
    name: str  # e.g. "writing_gpt-4"
    human: list[str]
    machine: list[str]  # empty for a human-only set


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def strip_shared_prefix(a: str, b: str) -> tuple[str, str]:
    """Both texts without the words they start with in common."""
    wa, wb = a.split(), b.split()
    n = 0
    while n < min(len(wa), len(wb)) and wa[n] == wb[n]:
        n += 1
    return " ".join(wa[n:]), " ".join(wb[n:])


def _sample(items: list[str], n: int | None, seed: int) -> list[str]:
    """`n` of the texts (all for None), each stripped of surrounding whitespace, as the detector
    scores a passage from its first word to its last."""
    items = [t.strip() for t in items]
    if n is None or n >= len(items):
        return items
    return random.Random(seed).sample(items, n)


def _gutenberg_passages(path: Path, min_words: int = 150, max_words: int = 400) -> list[str]:
    """Consecutive paragraphs joined until a passage holds at least `min_words` words."""
    passages, current = [], []
    for line in path.open(encoding="utf-8"):
        line = line.strip()
        if not line or line.isupper():  # headings
            continue
        current.append(line)
        words = sum(len(p.split()) for p in current)
        if words >= min_words:
            if words <= max_words:
                passages.append(" ".join(current))
            current = []
    return passages


def _squad_contexts(path: Path) -> list[str]:
    seen: dict[str, None] = {}
    for record in _jsonl(path):
        if len(record["context"].split()) >= MIN_WORDS:
            seen.setdefault(record["context"], None)
    return list(seen)


def calibration_texts(per_domain: int | None = 400) -> dict[str, list[str]]:
    """Human texts by domain, `per_domain` of each (drawn with a fixed seed)."""
    news = [r["text"] for r in _jsonl(DETECTION / "human_news_bbc.jsonl")]
    wiki = _squad_contexts(DATA / "finetune/qa/squad.train10k.jsonl")
    books = _gutenberg_passages(DATA / "finetune/pretrain/gutenberg_en.train.txt")
    answers = [
        m["content"]
        for r in _jsonl(DATA / "finetune/chat/dolly.sample5k.jsonl")
        for m in r["messages"]
        if m["role"] == "assistant" and len(m["content"].split()) >= MIN_WORDS
    ]
    return {
        "news": _sample(news, per_domain, 1),
        "wikipedia": _sample(wiki, per_domain, 2),
        "novels": _sample(books, per_domain, 3),
        "answers": _sample(answers, per_domain, 4),
    }


def machine_sets(per_file: int | None = None, strip_prefix: bool = False) -> list[LabelledSet]:
    """Each machine-text file of detection/ with its human pairs (whole, or without their shared
    prefix)."""
    out = []
    for name in MACHINE_FILES:
        raw = json.loads((DETECTION / name).read_text(encoding="utf-8"))
        pairs = list(zip(raw["original"], raw["sampled"], strict=True))
        if strip_prefix:
            pairs = [strip_shared_prefix(h, m) for h, m in pairs]
        pairs = [(h.strip(), m.strip()) for h, m in pairs]
        pairs = [(h, m) for h, m in pairs if h and m]
        if per_file is not None:
            pairs = random.Random(5).sample(pairs, min(per_file, len(pairs)))
        out.append(
            LabelledSet(
                name.split("/")[-1].removesuffix(".raw_data.json"),
                [h for h, _ in pairs],
                [m for _, m in pairs],
            )
        )
    return out


def heldback_human_sets(per_set: int | None = 300) -> list[LabelledSet]:
    """Human texts of calibration's kinds from files calibration does not read."""
    news = [r["document"] for r in _jsonl(DATA / "summarization/xsum.dev300.jsonl")]
    news = [t for t in news if len(t.split()) >= MIN_WORDS]
    wiki = _squad_contexts(DATA / "qa/squad.dev300.jsonl")
    books = _gutenberg_passages(DATA / "finetune/pretrain/gutenberg_en.valid.txt")
    return [
        LabelledSet("xsum_dev_news", _sample(news, per_set, 6), []),
        LabelledSet("squad_dev_wikipedia", _sample(wiki, per_set, 7), []),
        LabelledSet("heldout_novels", _sample(books, per_set, 8), []),
    ]


if __name__ == "__main__":
    for domain, texts in calibration_texts(None).items():
        words = sum(len(t.split()) for t in texts) // len(texts)
        print(f"calibration {domain}: {len(texts)} texts, {words} words")
    for s in machine_sets() + heldback_human_sets(None):
        words = [len(t.split()) for t in s.human + s.machine]
        print(f"{s.name}: {len(s.human)} human, {len(s.machine)} machine, {sum(words) // len(words)} words")
