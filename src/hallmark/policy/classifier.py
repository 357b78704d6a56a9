"""The trained request classifier: a linear softmax head over [sentence embedding, word n-grams].

Contract: `load_head()` reads the shipped head (`head.npz`, written by bench/train_policy.py) once per
process; `Head.scores(texts)` returns, per text, the probability of each label (`LABELS`: benign,
other_harm, disinformation, impersonation); `Head.version` is the SHA-256 of the head file (whose
meta records the encoder's), which the policy's hash includes: a retrained head changes every
policy's hash.

The head is multinomial logistic regression on the concatenation of the all-MiniLM-L6-v2 sentence
vector (scaled by `emb_weight`) and the unigram+bigram TF-IDF vector; `other_harm` is its own class
so that harmful-but-unrelated requests (weapons, malware) are not pushed into the two policy
categories. Thresholds per category were chosen by grouped cross-validation on the training split
(`meta["thresholds"]`); a policy file may override them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hallmark.policy.encoder import shared_encoder
from hallmark.policy.features import NgramVectorizer

HEAD_PATH = Path(__file__).resolve().parent / "head.npz"
LABELS = ("benign", "other_harm", "disinformation", "impersonation")


@dataclass
class Head:
    vectorizer: NgramVectorizer
    w_emb: np.ndarray  # [384, n_labels]
    w_ngram: np.ndarray  # [vocabulary, n_labels]
    bias: np.ndarray  # [n_labels]
    emb_weight: float
    meta: dict[str, Any]
    version: str

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.meta.get("thresholds", {}))

    def logits(self, embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        out = (embeddings * self.emb_weight) @ self.w_emb + self.bias
        for row, text in enumerate(texts):
            cols, values = self.vectorizer.sparse_terms(text)
            if len(cols):
                out[row] += values @ self.w_ngram[cols]
        return out

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), len(LABELS)] probabilities. Runs the encoder with one BLAS thread (see below)."""
        if not texts:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        embeddings = _encode(texts)
        z = self.logits(embeddings, texts)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)


# Sentence vectors of texts screened lately, by a hash of the text. A chat client sends the whole
# conversation every turn and each user and system message is screened, so without this a chat's
# n-th turn encoded n messages again (21 ms each for a 40-word message on one core).
_CACHE_SIZE = 4096  # 384 floats each: at most 6 MB
_cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()


def _encode(texts: Sequence[str]) -> np.ndarray:
    keys = [hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts]
    found: dict[int, np.ndarray] = {}
    with _cache_lock:
        for i, key in enumerate(keys):
            if key in _cache:
                _cache.move_to_end(key)
                found[i] = _cache[key]
    missing = [i for i in range(len(texts)) if i not in found]
    if missing:
        # One BLAS thread: the encoder's matrices are small (tens of rows), and a multi-threaded BLAS
        # competing with llama.cpp's threads for 2 cores measured 77 ms p50 / 810 ms p99 per request
        # against 25 ms / 41 ms single-threaded on the same busy machine (OpenBLAS's worker also spins
        # for ~120 ms after each call: 140 ms of CPU per 17 ms encode, measured idle).
        with _blas_controller().limit(limits=1, user_api="blas"):
            vectors = shared_encoder().encode([texts[i] for i in missing])
        with _cache_lock:
            for i, vector in zip(missing, vectors, strict=True):
                found[i] = _cache[keys[i]] = vector.copy()  # a row alone, not a view of the batch
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return np.stack([found[i] for i in range(len(texts))])


def clear_cache() -> None:
    """Forget every cached sentence vector (benchmarks time screening as for a new text)."""
    with _cache_lock:
        _cache.clear()


@functools.cache
def _blas_controller() -> Any:
    # Made once: threadpool_limits() looks up the loaded BLAS libraries on every call (0.6 ms).
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def read_head(path: Path = HEAD_PATH) -> Head:
    # The head's meta records the encoder file's SHA-256, so this one hash names both.
    digest = hashlib.sha256(path.read_bytes())
    with np.load(path) as z:
        meta = json.loads(z["meta"].item())
        vectorizer = NgramVectorizer([str(t) for t in z["vocabulary"]], z["idf"])
        head = Head(
            vectorizer=vectorizer,
            w_emb=z["w_emb"].astype(np.float32),
            w_ngram=z["w_ngram"].astype(np.float32),
            bias=z["bias"].astype(np.float32),
            emb_weight=float(meta["emb_weight"]),
            meta=meta,
            version=digest.hexdigest(),
        )
    if tuple(meta["labels"]) != LABELS:
        raise ValueError(f"{path}: head labels {meta['labels']} are not {LABELS}")
    return head


_HEAD: Head | None = None
_LOCK = threading.Lock()


def load_head() -> Head:
    """The shipped head, read on first use (the encoder loads on the first `scores` call)."""
    global _HEAD
    if _HEAD is None:
        with _LOCK:
            if _HEAD is None:
                _HEAD = read_head()
    return _HEAD
