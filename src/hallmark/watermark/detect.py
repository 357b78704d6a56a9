"""Watermark detection: re-tokenize, score each (context, token) pair once, exact p-value.

Needs only the tokenizer and the key. The p-value is exact for the scheme's null distribution
(Gamma for gumbel, Binomial for kgw): on text not watermarked with this key, each distinct
(context, token) pair gets an independent pseudorandom score, so the p-value is uniform.
For gumbel, repeated contexts are scored once (their first occurrence), matching generation,
which does not watermark them; for kgw every distinct (seed, token) pair counts once.

Windowed detection finds watermarked passages inside other text as maximal-scoring segments of
the per-token scores; their p-values are Bonferroni-corrected for every segment that could be tested.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hallmark.backends.base import Tokenizer
from hallmark.errors import DetectionError, check_unicode
from hallmark.watermark.prf import context_seeds
from hallmark.watermark.schemes import Scheme, make_scheme
from hallmark.watermark.spec import DEFAULT_FPR, WatermarkSpec

MIN_TOKENS = 16  # fewer scored tokens than this: no verdict


class Verdict(enum.StrEnum):
    WATERMARKED = "watermarked"
    NOT_WATERMARKED = "not_watermarked"
    TOO_SHORT = "too_short"  # too few scored tokens to decide


@dataclass
class Span:
    start: int  # character offsets into the text, end exclusive
    end: int
    tokens: int  # scored tokens in the span
    p_value: float  # Bonferroni-corrected over all windows tested

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DetectionResult:
    spec_id: str
    scheme: str
    tokens: int  # tokens in the text
    scored: int  # distinct (context, token) pairs scored
    statistic: float  # gumbel: sum of -log(1-r); kgw: number of green tokens
    p_value: float
    z_score: float
    fpr: float
    verdict: Verdict
    message: str
    spans: list[Span] = field(default_factory=list)

    @property
    def watermarked(self) -> bool:
        return self.verdict is Verdict.WATERMARKED

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spans"] = [s.to_dict() for s in self.spans]
        return d


class Detector:
    """Scores texts against one spec and key; reusable across many texts."""

    def __init__(self, tokenizer: Tokenizer, spec: WatermarkSpec, secret: bytes):
        self.tokenizer = tokenizer
        self.spec = spec
        self.scheme: Scheme = make_scheme(spec, secret)

    def scored_tokens(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions and scores of the tokens that count: first occurrence of each context and pair."""
        ts = self.scheme.score(tokens)
        if ts.positions.shape[0] == 0:
            return ts.positions, ts.scores
        keep = np.arange(ts.positions.shape[0])
        if self.scheme.skip_repeated_contexts:
            w = self.scheme.width
            ctx = context_seeds(sliding_window_view(tokens[:-1], w), np.uint64(0))  # unkeyed identity
            _, first_ctx = np.unique(ctx, return_index=True)
            keep = np.sort(first_ctx)
        _, first_pair = np.unique(ts.keys[keep], return_index=True)
        keep = keep[np.sort(first_pair)]
        return ts.positions[keep], ts.scores[keep]

    def detect_tokens(self, tokens: list[int] | np.ndarray, fpr: float = DEFAULT_FPR) -> DetectionResult:
        check_detect_args("", fpr)
        arr = np.asarray(tokens, dtype=np.int64)
        _, scores = self.scored_tokens(arr)
        return self._result(arr.shape[0], scores, fpr)

    def detect(self, text: str, fpr: float = DEFAULT_FPR, windowed: bool = False) -> DetectionResult:
        check_detect_args(text, fpr)
        tokens = np.asarray(
            self.tokenizer.tokenize(text, add_special=False, parse_special=False), dtype=np.int64
        )
        positions, scores = self.scored_tokens(tokens)
        result = self._result(tokens.shape[0], scores, fpr)
        if windowed and scores.shape[0] >= MIN_TOKENS:
            result.spans = self._windows(text, tokens, positions, scores, fpr)
        return result

    def _result(self, n_tokens: int, scores: np.ndarray, fpr: float) -> DetectionResult:
        n = int(scores.shape[0])
        total = float(scores.sum())
        p = self.scheme.p_value(total, n)
        mean, var = self.scheme.null_mean_var()
        z = (total - n * mean) / math.sqrt(n * var) if n else 0.0
        if n < MIN_TOKENS:
            verdict = Verdict.TOO_SHORT
            message = (
                f"too short to decide: {n} distinct scored tokens, at least {MIN_TOKENS} are needed "
                f"(the first {self.scheme.width} tokens of a text and repeats are not scored)"
            )
        elif p < fpr:
            verdict, message = Verdict.WATERMARKED, f"watermarked (p = {p:.3g} < fpr {fpr:g})"
        else:
            verdict, message = Verdict.NOT_WATERMARKED, f"no watermark found (p = {p:.3g} >= fpr {fpr:g})"
        return DetectionResult(
            spec_id=self.spec.spec_id,
            scheme=self.spec.scheme,
            tokens=n_tokens,
            scored=n,
            statistic=total,
            p_value=p,
            z_score=z,
            fpr=fpr,
            verdict=verdict,
            message=message,
        )

    def _windows(
        self, text: str, tokens: np.ndarray, positions: np.ndarray, scores: np.ndarray, fpr: float
    ) -> list[Span]:
        """Watermarked passages: maximal-scoring segments of the per-token scores.

        Each token's score minus a drift term (the null mean plus half a standard deviation) is
        positive on average inside a watermarked passage and negative outside, so the segment
        with the largest sum (Kadane) lines up with the passage. Segments are taken one at a time
        until none is significant; each p-value is Bonferroni-corrected for all n(n+1)/2 segments.
        """
        n = scores.shape[0]
        mean, var = self.scheme.null_mean_var()
        drifted = scores - (mean + 0.5 * np.sqrt(var))
        n_segments = n * (n + 1) / 2
        free = np.ones(n, dtype=bool)
        found: list[tuple[int, int, float]] = []
        while True:
            lo, hi = _max_segment(np.where(free, drifted, -np.inf))
            if hi < lo:
                break
            size = hi - lo + 1
            p = min(1.0, float(self.scheme.p_value(float(scores[lo : hi + 1].sum()), size)) * n_segments)
            if p >= fpr or size < MIN_TOKENS:
                break
            found.append((lo, hi, p))
            free[lo : hi + 1] = False
        offsets = self._char_offsets(text, tokens)
        width = self.scheme.width
        spans = []
        for lo, hi, p in sorted(found):
            # A scored token's watermark starts at its context, `width` tokens earlier.
            first_token = max(0, int(positions[lo]) - width)
            spans.append(Span(offsets[first_token], offsets[int(positions[hi]) + 1], hi - lo + 1, p))
        return spans

    def _char_offsets(self, text: str, tokens: np.ndarray) -> list[int]:
        """Character offset where each token starts (plus the end), via the tokens' UTF-8 bytes."""
        byte_ends = np.cumsum([0] + [len(self.tokenizer.token_bytes(int(t))) for t in tokens])
        encoded = text.encode("utf-8")
        # Map byte offsets to character offsets; a token boundary inside a character rounds down.
        char_at_byte = np.zeros(len(encoded) + 1, dtype=np.int64)
        pos = 0
        for ci, ch in enumerate(text):
            n = len(ch.encode("utf-8"))
            char_at_byte[pos : pos + n] = ci
            pos += n
        char_at_byte[pos:] = len(text)
        return [int(char_at_byte[min(int(b), len(encoded))]) for b in byte_ends]


def check_detect_args(text: object, fpr: object) -> None:
    """The detector's inputs, checked before any work: a clear error, never a numpy traceback."""
    if not isinstance(text, str):
        raise DetectionError(f"the text to test must be a string, got {type(text).__name__}")
    check_unicode(text, "the text to test", DetectionError)
    if isinstance(fpr, bool) or not isinstance(fpr, int | float) or not 0 < fpr < 1:
        raise DetectionError(f"fpr must be a number in (0, 1), got {fpr!r}")


def _max_segment(values: np.ndarray) -> tuple[int, int]:
    """Indices (lo, hi) of the contiguous run with the largest positive sum; hi < lo if none."""
    best, best_lo, best_hi = 0.0, 0, -1
    run, run_lo = 0.0, 0
    for i, v in enumerate(values.tolist()):
        if run <= 0:
            run, run_lo = v, i
        else:
            run += v
        if run > best:
            best, best_lo, best_hi = run, run_lo, i
    return best_lo, best_hi
