"""Word n-gram features of a request: the same code at training time and at screening time.

Contract: `words(text)` lower-cases and splits into word tokens (runs of two or more word
characters, scikit-learn's default token pattern); `ngrams(tokens)` gives unigrams and
bigrams; `NgramVectorizer` maps texts to sublinear-TF x IDF vectors, L2-normalised, over a fixed
vocabulary (learnt with `fit` from the training texts, shipped in the head file). numpy only.

Why n-grams next to the sentence embedding: the embedding carries the topic (vaccines, banks,
elections) and much of the intent, the n-grams carry the explicit cues of intent that the embedding
blurs ("fake", "pretending to be", "as if from", "made-up"). Measured in bench/train_policy.py: the
two together beat either alone on grouped cross-validation, on the public rows and on held-out
prompts (docs/policy.md, How the classifier was built).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def words(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def ngrams(tokens: Sequence[str]) -> list[str]:
    return list(tokens) + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]


class NgramVectorizer:
    """Unigram+bigram TF-IDF over a fixed vocabulary (sublinear tf, smooth idf, L2 norm)."""

    def __init__(self, vocabulary: Sequence[str], idf: np.ndarray):
        self.vocabulary = list(vocabulary)
        self.index = {term: i for i, term in enumerate(self.vocabulary)}
        self.idf = np.asarray(idf, dtype=np.float32)

    @classmethod
    def fit(cls, texts: Iterable[str], min_df: int = 2) -> NgramVectorizer:
        docs = [set(ngrams(words(t))) for t in texts]
        df = Counter(term for doc in docs for term in doc)
        vocabulary = sorted(term for term, n in df.items() if n >= min_df)
        n_docs = len(docs)
        idf = np.array([np.log((1 + n_docs) / (1 + df[t])) + 1.0 for t in vocabulary], dtype=np.float32)
        return cls(vocabulary, idf)

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Dense [len(texts), len(vocabulary)] float32 (small: a request has tens of terms)."""
        out = np.zeros((len(texts), len(self.vocabulary)), dtype=np.float32)
        for row, text in enumerate(texts):
            cols, values = self.sparse_terms(text)
            out[row, cols] = values
        return out

    def sparse_terms(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text's (column indices, values): screening multiplies only these rows of the head."""
        counts = Counter(t for t in ngrams(words(text)) if t in self.index)
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        cols = np.fromiter((self.index[t] for t in counts), dtype=np.int64, count=len(counts))
        tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float32, count=len(counts)))
        values = tf * self.idf[cols]
        return cols, (values / np.linalg.norm(values)).astype(np.float32)
