"""The policy's phrase rules: deny phrases per category, allow phrases for the whole policy.

Contract: a phrase matches a request when its words occur in the request in that order, next to each
other, ignoring case, punctuation between words and runs of whitespace ("write fake reviews" matches
"Write FAKE reviews!" but not "rewrite fake reviewsX"). `match(phrases, text)` returns the first
matching phrase or None. Phrases are compiled once per policy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def _pattern(phrase: str) -> str:
    parts = [re.escape(w) for w in re.findall(r"\w+|[^\w\s]", phrase.lower())]
    # Word characters at either end must not run on into the text's neighbouring word characters.
    return r"(?<!\w)" + r"[\W_]*".join(parts) + r"(?!\w)" if parts else r"(?!)"


class PhraseSet:
    """Phrases compiled into one regular expression (a match names the phrase)."""

    def __init__(self, phrases: Sequence[str]):
        self.phrases = tuple(phrases)
        self._regex = (
            re.compile(
                "|".join(f"(?P<p{i}>{_pattern(p)})" for i, p in enumerate(self.phrases)), re.IGNORECASE
            )
            if self.phrases
            else None
        )

    def match(self, text: str) -> str | None:
        if self._regex is None:
            return None
        m = self._regex.search(text)
        if m is None:
            return None
        return self.phrases[int(m.lastgroup[1:])]  # type: ignore[index]
