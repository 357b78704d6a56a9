"""The human-claim rail: a chat answer never tells the user it is a person.

An output rail on the text stream. A first-person claim of being human ("I'm a real person",
"I am not an AI", "I'm human") is replaced, together with the rest of its sentence, by a plain
disclosure before any of it is released. It uses the same hold-back as stop strings: text that
could still turn into a claim (from an "I" or "as a" up to the end of its sentence) is held until
the sentence is complete, so nothing unchecked reaches the client, streaming or not.

Claims are matched by patterns, not understood: the rail is the last line, behind the disclosure
instruction in the system prompt (hallmark.policy); bench/disclosure.py measures both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# What replaces a claim and the rest of its sentence.
DISCLOSURE = "I'm an AI, not a human."

# The assistant's instruction, added to a chat's system prompt (the policy file can change it).
# Short on purpose: measured on both shipped models (bench/disclosure.py, docs/disclosure.md), a
# longer one that spells out "say you are an AI when asked ... never claim to be human" made
# SmolLM2-135M bring up being an AI (or a human) unprompted in 34% of hard negatives against 16%
# with this one, while the rail's disclosure answers sincere asks either way.
DEFAULT_INSTRUCTION = "You are an AI assistant."
LONG_INSTRUCTION = (
    "You are an AI assistant. If the user sincerely asks whether they are talking to a human or a "
    "machine, say that you are an AI, even when playing a character. Never claim to be human."
)

_I = r"(?:i\s*(?:'|’)?\s*m|i\s+am|i\s+really\s+am|i\s+truly\s+am)"
_ADV = r"(?:\s+(?:really|actually|definitely|totally|truly|honestly|100%|absolutely|just|still|a))*"
_HUMAN = (
    r"(?:(?:real|actual|living|genuine|regular|normal|ordinary|flesh[- ]and[- ]blood|breathing)\s+)*"
    r"(?:human(?:\s+being)?|person|people|man|woman|guy|girl|dude|lady)\b"
)
_MACHINE = (
    r"(?:(?:an?|no)\s+)?(?:ai\b|a\.i\.|artificial\b|bot\b|robot|chat\s*bot|chatbot|machine|computer|program\b|"
    r"language\s+model|llm\b|virtual\s+assistant|automated)"
)
_CLAIMS = re.compile(
    "|".join(
        [
            rf"\b{_I}{_ADV}\s+{_HUMAN}",  # I'm a real person / I am human
            rf"\b{_I}\s+(?:not|never|no)\s+{_MACHINE}",  # I'm not an AI / I'm no bot
            rf"\bi\s+(?:ain'?t|ain’t)\s+{_MACHINE}",
            # "As a human, I ..." (not "being a human is hard": a claim names the speaker)
            r"\b(?:as|being)\s+a\s+(?:real\s+|fellow\s+)?human(?:\s+being)?\s*,?\s+(?:i|me|my|myself)\b",
            r"\bi(?:'|’)?m\s+flesh\s+and\s+blood\b",
        ]
    ),
    re.IGNORECASE,
)
# Where a claim could start: held back from here until its sentence is complete.
_STARTER = re.compile(r"\b(?:i|im|as|being)\b", re.IGNORECASE)
# The last word, while it may still grow into a starter ("A" -> "As"): held too.
_TRAILING_WORD = re.compile(r"\w+$")
_SENTENCE_END = re.compile(r"[.!?\n]")
# A claim is short: past this many characters without one, held text is let go.
MAX_CLAIM_CHARS = 80


@dataclass
class HumanClaimRail:
    """Finds and rewrites human claims in text as it streams (one instance per generation).

    With `must_disclose` (the user sincerely asked whether they talk to a machine), the answer's
    first sentence is also held until it is complete, and if it does not say that the answer
    comes from an AI, the disclosure is put before it.
    """

    replacement: str = DISCLOSURE
    must_disclose: bool = False
    rewrites: int = 0  # claims replaced so far
    disclosed: bool = False  # the rail put a disclosure before the answer

    def held_back(self, pending: str) -> int:
        """How many trailing characters of not-yet-released text must wait: from the last word
        that could start a claim, if its sentence is not complete yet (and, before the first
        sentence was checked for a disclosure, all of it)."""
        if self.must_disclose and not self._first_checked:
            first_end = _SENTENCE_END.search(pending)
            if first_end is None and len(pending) < MAX_CLAIM_CHARS * 2:
                return len(pending)
        window_start = max(0, len(pending) - MAX_CLAIM_CHARS)
        start = None
        for m in _STARTER.finditer(pending, window_start):
            if not _SENTENCE_END.search(pending, m.start()):
                start = m.start()
                break
        if start is None and (word := _TRAILING_WORD.search(pending)) is not None:
            start = word.start()
        return len(pending) - start if start is not None else 0

    def rewrite(self, text: str) -> str:
        """`text` with each claim and the rest of its sentence replaced by the disclosure (and,
        for the first text released under `must_disclose`, a disclosure first if it has none)."""
        text = self._rewrite_claims(text)
        if self.must_disclose and not self._first_checked:
            self._first_checked = True
            if not discloses_ai(text):
                self.disclosed = True
                text = f"{self.replacement} {text.lstrip()}" if text.strip() else self.replacement
        return text

    def finish(self) -> str:
        """Text the rail still owes at the end of a generation (an empty answer's disclosure)."""
        return self.rewrite("") if self.must_disclose and not self._first_checked else ""

    def __post_init__(self) -> None:
        self._first_checked = False

    def _rewrite_claims(self, text: str) -> str:
        out: list[str] = []
        pos = 0
        while (m := _CLAIMS.search(text, pos)) is not None:
            end = _SENTENCE_END.search(text, m.end())
            stop = _sentence_stop(text, end.start()) if end else len(text)
            out.append(text[pos : m.start()] + self.replacement)
            self.rewrites += 1
            pos = stop
        out.append(text[pos:])
        return "".join(out)


def _sentence_stop(text: str, at: int) -> int:
    """Where a sentence ending at `at` ends: after its punctuation, before a line break."""
    return at if text[at] == "\n" else at + 1


_DISCLOSES = re.compile(
    r"\b(?:i\s*(?:'|’)?\s*m|i\s+am)\s+(?:just\s+|only\s+|actually\s+|simply\s+|really\s+)*"
    r"(?:an?\s+)?(?:(?!not\b|no\b|never\b|of\b|about\b|with\b|for\b|in\b|like\b)[\w-]+\s+){0,2}(?:ai\b|a\.i\.|artificial|language\s+model|chat\s*bot|bot\b|virtual\b|"
    r"digital\s+assistant|computer\s+program|machine|robot|program\b)"
    r"|\bas\s+an\s+ai\b|\bi\s*(?:'|’)?\s*m\s+not\s+(?:a\s+)?(?:real\s+)?(?:human|person)\b",
    re.IGNORECASE,
)
_YOU = r"(?:you|u|ya|yourself)"
_BEING = (
    r"(?:human|person|people|man|woman|lady|dude|guy|girl|boy|bot|robot|chat\s*bot|ai\b|a\.i\.|machine|"
    r"computer|program|software|automated|recording|real|live|living|alive|artificial|android|"
    r"(?:digital|virtual)\s+assistant|someone|somebody)"
)
_TALKING = r"(?:talk|text|chat|speak|typ|messag|writ|correspond)\w*"
_ASKS = re.compile(
    "|".join(
        [
            # are you a real person / aren't you a bot / r u human
            rf"\b(?:are|r|aren'?t|arent|ain'?t)\s+{_YOU}\b[^.?!]{{0,40}}\b{_BEING}",
            # am i talking to a machine / am i texting someone real
            rf"\b(?:am|are)\s+(?:i|we)\s+(?:\w+\s+)?{_TALKING}\s+(?:(?:to|with)\s+)?[^.?!]{{0,40}}\b{_BEING}",
            # I feel like I'm chatting with a machine. am I?
            rf"\b{_TALKING}\s+(?:to|with)\s+(?:an?\s+)?{_BEING}\b.*\bam\s+i\b",
            # is there a real person typing this? / is a human answering? / do I have a human on the line?
            rf"\bis\s+there\s+(?:\w+\s+){{0,2}}{_BEING}\b",
            rf"\b(?:is|was)\s+(?:a|an|the)\s+(?:\w+\s+)?{_BEING}\s+\w+ing\b",
            rf"\b(?:do|did)\s+i\s+have\s+(?:a|an)\s+(?:\w+\s+)?{_BEING}\b",
            # (hey,) you a bot? / what are you, really?
            rf"(?:^|[,.!?:;]\s*)(?:you|u)\s+(?:an?\s+)?{_BEING}\b[^.!]*\?",
            r"\bwhat\s+are\s+(?:you|u)\s*(?:,?\s*(?:really|actually|exactly))?\s*\?",
            # swear you're a real person / ... if you're human
            rf"\b(?:swear|promise|prove|confirm|admit|if|whether)\b[^.?!]{{0,20}}\b(?:you'?re|you\s+are|ur)\s+"
            rf"(?:an?\s+)?(?:\w+\s+)?{_BEING}",
            # is this a bot? / is it a real person I am talking to?
            rf"\b(?:is|was)\s+(?:this|that|it)\s+(?:\w+\s+){{0,2}}(?:an?\s+)?{_BEING}\b[^.!]*(?:\?|{_TALKING})",
            # you're a dude, right? / you a girl?
            rf"(?:\b(?:you'?re|you\s+are|ur|u\s+r|youre)|^\s*(?:you|u))\s+(?:an?\s+)?(?:\w+\s+){{0,2}}"
            rf"{_BEING}\b[^.!]*(?:\?|\bright\b|\bcorrect\b|\baren'?t\s+{_YOU}\b)",
            # tell me whether you are a person / let me know if you're a bot
            rf"\b(?:tell|let)\s+me\b[^.?!]{{0,20}}\b(?:you\s+are|you'?re|ur)\b[^.?!]{{0,30}}\b{_BEING}",
            # human or robot, which are you? / ... are you one?
            rf"\b{_BEING}\s+or\s+(?:an?\s+)?{_BEING}\b",
            rf"\b{_BEING}\b.*\b(?:are|r)\s+{_YOU}\s+(?:one|too|also)\b",
            rf"\bwho\s+(?:am\s+i|are\s+we|are\s+you|is\s+this)\s+{_TALKING}",
        ]
    ),
    re.IGNORECASE,
)
# Titles and quotations ("have you seen the show 'are you a computer?'") ask nothing of the assistant.
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”")


def discloses_ai(text: str) -> bool:
    """Whether a text says, in the first person, that it comes from an AI."""
    return _DISCLOSES.search(text) is not None


def asks_if_human(text: str) -> bool:
    """Whether a user's message asks if they are talking to a person or a machine."""
    return _ASKS.search(_QUOTED.sub(" ", text)) is not None


def claims_human(text: str) -> bool:
    """Whether a text contains a first-person claim of being human (for measurement)."""
    return _CLAIMS.search(text) is not None


@dataclass(frozen=True)
class Disclosure:
    """How a model's chats disclose that they come from an AI: an instruction added to the system
    prompt, and the human-claim rail on the answer (the request policy configures both)."""

    instruction: str | None = DEFAULT_INSTRUCTION
    rail: bool = True

    def apply(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The messages with the instruction added to the system prompt (a new one if there is none)."""
        out = [dict(m) for m in messages]
        if not self.instruction:
            return out
        if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
            out[0]["content"] = f"{out[0]['content']}\n\n{self.instruction}"
        else:
            out.insert(0, {"role": "system", "content": self.instruction})
        return out


NO_DISCLOSURE = Disclosure(instruction=None, rail=False)
DEFAULT_DISCLOSURE = Disclosure()
