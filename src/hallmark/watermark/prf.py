"""Keyed pseudorandom functions over token ids, vectorised with numpy.

Every watermark decision is a function of (key, context tokens, candidate token) only, so the
detector can recompute it from the text and the key. The mixer is SplitMix64's finaliser, a
bijection on 64-bit integers with full avalanche; keyed by 128 bits derived from the secret.
"""

from __future__ import annotations

import hashlib

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11 = (np.uint64(n) for n in (30, 27, 31, 11))
_TO_UNIT = 2.0**-53


def mix64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> _S30)) * _M1
        x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def derive_keys(secret: bytes, scheme: str) -> tuple[np.uint64, np.uint64]:
    """Two 64-bit subkeys for one scheme, so that schemes never share pseudorandom values."""
    digest = hashlib.sha256(b"hallmark-watermark-v1\0" + scheme.encode() + b"\0" + secret).digest()
    return np.uint64(int.from_bytes(digest[:8], "little")), np.uint64(int.from_bytes(digest[8:16], "little"))


def context_seeds(windows: np.ndarray, key: np.uint64) -> np.ndarray:
    """Seed per row of `windows` (shape [n, w]): an order-sensitive keyed hash of the row's tokens."""
    seeds = np.full(windows.shape[0], key, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(windows.shape[1]):
            seeds = mix64(seeds ^ (windows[:, j].astype(np.uint64) * _GOLDEN))
    return seeds


def minhash_seeds(windows: np.ndarray, key: np.uint64) -> np.ndarray:
    """Seed per row: the minimum keyed hash of the row's tokens (order-free, robust to edits)."""
    with np.errstate(over="ignore"):
        hashed = mix64((windows.astype(np.uint64) * _GOLDEN) ^ key)
    return hashed.min(axis=1)


def pair_uniforms(seeds: np.ndarray, tokens: np.ndarray, key: np.uint64) -> np.ndarray:
    """Uniform(0, 1) value for each (seed, token) pair; never exactly 0 or 1."""
    with np.errstate(over="ignore"):
        token_hash = mix64(tokens.astype(np.uint64) * _GOLDEN + key)
        x = mix64(seeds.astype(np.uint64) ^ token_hash)
    return ((x >> _S11).astype(np.float64) + 0.5) * _TO_UNIT
