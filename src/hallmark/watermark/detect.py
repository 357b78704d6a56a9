"""Watermark detection: re-tokenize, score each (context, token) pair once, exact p-value.

Needs only the tokenizer and the key. The p-value is exact for the scheme's null distribution
(Gamma for gumbel, Binomial for kgw): on text not watermarked with this key, each distinct
(context, token) pair gets an independent pseudorandom score, so the p-value is uniform.
For gumbel, repeated contexts are scored once (their first occurrence), matching generation,
which does not watermark them; for kgw every distinct (seed, token) pair counts once.

Boilerplate. The p-value is exact over random keys, but a checker has one key, and under one key
every text holding the same (context, token) pair gets the same score for it: texts that share
boilerplate (a "Question: ... Answer:" frame, a letter head, a form) share those scores, and for
an unlucky key a whole family of innocent texts drifts towards "watermarked" (12 templates x 150
human texts, one key at a time: up to 41% flagged at fpr 5%, bench/results/detect_any.json). The
cure is to score only pairs particular to each text, so two sources of pairs are left out:
- reference texts (`reference`: a blank template, say): every pair they hold;
- a batch tested together (`MultiDetector.detect_many`): every pair found in two or more of its
  texts, so no two texts of the batch share a scored pair and, for the one key, their verdicts
  are as independent as for random keys (every family back within binomial noise of the nominal
  rate, same file).
Which pairs are left out depends on the texts' tokens only, never on their scores, so the p-value
of what is scored stays exact; `excluded` counts the pairs left out. A shipped table of frequent
n-grams was measured too and left out: a template's pairs are particular to its issuer, not
frequent in any corpus, and the table fixed no family (docs/watermark.md, Boilerplate).

Windowed detection finds watermarked passages inside other text as maximal-scoring segments of
the per-token scores; their p-values are Bonferroni-corrected for every segment that could be tested.

Several hypotheses (MultiDetector: tokenizers x keys x schemes, when the caller does not know which
model and key made a text) are tested on the same text; the best match is reported with its
p-value multiplied by their number m (Bonferroni), which keeps the probability that any of them
flags an unwatermarked text at or below `fpr`. `raw_p_value` is the best match's own p-value and
`tested` lists every hypothesis with its raw p-value.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hallmark.backends.base import Tokenizer
from hallmark.errors import DetectionError, check_rate, check_unicode
from hallmark.watermark.prf import context_seeds
from hallmark.watermark.schemes import Scheme, make_scheme
from hallmark.watermark.spec import DEFAULT_FPR, WatermarkSpec

MIN_TOKENS = 16  # fewer scored tokens than this: no verdict
_NO_PAIRS = np.empty(0, np.uint64)


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
class Tested:
    """One hypothesis tested on a text: the model whose tokenizer, the spec, its own p-value."""

    model: str | None
    spec_id: str
    scored: int
    p_value: float  # raw: not corrected for the other hypotheses

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DetectionResult:
    spec_id: str
    scheme: str
    tokens: int  # tokens in the text
    scored: int  # distinct (context, token) pairs scored
    statistic: float  # gumbel: sum of -log(1-r); kgw: number of green tokens
    p_value: float  # corrected for the number of hypotheses tested (= raw_p_value when one)
    z_score: float
    fpr: float
    verdict: Verdict
    message: str
    spans: list[Span] = field(default_factory=list)
    model: str | None = None  # the model whose tokenizer matched best (None: a bare tokenizer)
    hypotheses: int = 1  # how many (tokenizer, key, scheme) hypotheses were tested
    raw_p_value: float = 1.0  # the best match's own p-value, before the correction
    excluded: int = 0  # distinct pairs left out as boilerplate (reference texts, shared in a batch)
    tested: list[Tested] = field(default_factory=list)  # every hypothesis, when more than one
    # The zero-shot assessment (hallmark.zeroshot.ZeroShotResult) when asked for; None otherwise.
    zero_shot: Any = None
    # When asked for: [start, end, z] per scored token (character offsets of the token; z its score
    # standardized under the null, so a watermarked passage runs above 0): for plotting along the text.
    token_scores: list[list[float]] | None = None

    @property
    def watermarked(self) -> bool:
        return self.verdict is Verdict.WATERMARKED

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = str(self.verdict)
        d["spans"] = [s.to_dict() for s in self.spans]
        d["tested"] = [t.to_dict() for t in self.tested]
        d["zero_shot"] = self.zero_shot.to_dict() if self.zero_shot is not None else None
        return d


class Detector:
    """Scores texts against one spec and key; reusable across many texts."""

    def __init__(self, tokenizer: Tokenizer, spec: WatermarkSpec, secret: bytes, model: str | None = None):
        self.tokenizer = tokenizer
        self.spec = spec
        self.model = model
        self.scheme: Scheme = make_scheme(spec, secret)

    def tokenize(self, text: str) -> np.ndarray:
        ids = self.tokenizer.tokenize(text, add_special=False, parse_special=False)
        return np.asarray(ids, dtype=np.int64)

    def pair_ids(self, tokens: np.ndarray) -> np.ndarray:
        """Sorted distinct identities of every (context, token) pair in `tokens` (for batches, references)."""
        return np.unique(self.scheme.score(tokens).keys)

    def scored_tokens(
        self, tokens: np.ndarray, exclude: np.ndarray = _NO_PAIRS
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Positions and scores of the tokens that count, and how many pairs were left out as boilerplate.

        A token counts at the first occurrence of its pair (gumbel: of its context, as generation
        watermarks only that one), unless its pair is in `exclude` (sorted pair ids of reference
        texts or of pairs shared within a batch).
        """
        ts = self.scheme.score(tokens)
        if ts.positions.shape[0] == 0:
            return ts.positions, ts.scores, 0
        if self.scheme.skip_repeated_contexts:
            w = self.scheme.width
            ctx = context_seeds(sliding_window_view(tokens[:-1], w), np.uint64(0))  # unkeyed identity
            _, first_ctx = np.unique(ctx, return_index=True)
            keep = np.sort(first_ctx)
        else:
            keep = np.arange(ts.positions.shape[0])
        _, first_pair = np.unique(ts.keys[keep], return_index=True)
        keep = keep[np.sort(first_pair)]
        n_pairs = keep.shape[0]
        if exclude.shape[0]:
            keep = keep[~contains(exclude, ts.keys[keep])]
        return ts.positions[keep], ts.scores[keep], n_pairs - keep.shape[0]

    def detect_tokens(self, tokens: list[int] | np.ndarray, fpr: float = DEFAULT_FPR) -> DetectionResult:
        check_detect_args("", fpr)
        arr = np.asarray(tokens, dtype=np.int64)
        _, scores, n_dropped = self.scored_tokens(arr)
        return self._result(arr.shape[0], scores, fpr, n_dropped)

    def detect(
        self, text: str, fpr: float = DEFAULT_FPR, windowed: bool = False, exclude: np.ndarray = _NO_PAIRS
    ) -> DetectionResult:
        check_detect_args(text, fpr)
        return self._detect(text, self.tokenize(text), fpr, windowed, exclude)

    def _detect(
        self,
        text: str,
        tokens: np.ndarray,
        fpr: float,
        windowed: bool,
        exclude: np.ndarray = _NO_PAIRS,
        multiplier: int = 1,
        token_scores: bool = False,
    ) -> DetectionResult:
        """The result for one text; span p-values corrected for `multiplier` hypotheses too."""
        positions, scores, n_dropped = self.scored_tokens(tokens, exclude)
        result = self._result(tokens.shape[0], scores, fpr, n_dropped)
        windows = windowed and scores.shape[0] >= MIN_TOKENS
        # Character offsets of the tokens: for the passages and the per-token scores, computed once.
        offsets = self._char_offsets(text, tokens) if windows or token_scores else []
        if windows:
            result.spans = self._windows(offsets, positions, scores, fpr, multiplier)
        if token_scores:
            mean, var = self.scheme.null_mean_var()
            z = (scores - mean) / math.sqrt(var)
            result.token_scores = [
                [offsets[int(p)], offsets[int(p) + 1], round(float(zi), 3)]
                for p, zi in zip(positions, z, strict=True)
            ]
        return result

    def _result(self, n_tokens: int, scores: np.ndarray, fpr: float, n_dropped: int = 0) -> DetectionResult:
        n = int(scores.shape[0])
        total = float(scores.sum())
        p = self.scheme.p_value(total, n)
        mean, var = self.scheme.null_mean_var()
        z = (total - n * mean) / math.sqrt(n * var) if n else 0.0
        verdict, message = _verdict(p, n, fpr, self.scheme.width)
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
            model=self.model,
            raw_p_value=p,
            excluded=n_dropped,
        )

    def _windows(
        self,
        offsets: list[int],
        positions: np.ndarray,
        scores: np.ndarray,
        fpr: float,
        multiplier: int = 1,
    ) -> list[Span]:
        """Watermarked passages: maximal-scoring segments of the per-token scores.

        Each token's score minus a drift term (the null mean plus half a standard deviation) is
        positive on average inside a watermarked passage and negative outside, so the segment
        with the largest sum (Kadane) lines up with the passage. Segments are taken one at a time
        until none is significant; each p-value is Bonferroni-corrected for all n(n+1)/2 segments
        (and for `multiplier` hypotheses tested on the same text).
        """
        n = scores.shape[0]
        mean, var = self.scheme.null_mean_var()
        drifted = scores - (mean + 0.5 * np.sqrt(var))
        n_segments = n * (n + 1) / 2 * multiplier
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


def _verdict(p: float, n: int, fpr: float, width: int, note: str = "") -> tuple[Verdict, str]:
    if n < MIN_TOKENS:
        return Verdict.TOO_SHORT, (
            f"too short to decide: {n} distinct scored tokens, at least {MIN_TOKENS} are needed "
            f"(the first {width} tokens of a text, repeats and boilerplate are not scored)"
        )
    if p < fpr:
        return Verdict.WATERMARKED, f"watermarked (p = {p:.3g} < fpr {fpr:g}{note})"
    return Verdict.NOT_WATERMARKED, f"no watermark found (p = {p:.3g} >= fpr {fpr:g}{note})"


class MultiDetector:
    """Tests texts under several hypotheses (one Detector each: a tokenizer, a key, a scheme) and
    reports the best match, its p-value multiplied by the number of hypotheses (Bonferroni).

    With one hypothesis the result is exactly that Detector's. Texts tested together as a batch
    (`detect_many`, exclude_shared) lose every pair that two or more of them hold, so no two share
    a scored pair; `reference` texts lose theirs to every text.
    """

    def __init__(self, detectors: Sequence[Detector]):
        if not detectors:
            raise DetectionError("no watermark hypothesis to test (no tokenizer, key or scheme)")
        self.detectors = list(detectors)

    def detect(
        self,
        text: str,
        fpr: float = DEFAULT_FPR,
        windowed: bool = True,
        reference: Sequence[str] = (),
        token_scores: bool = False,
    ) -> DetectionResult:
        """`token_scores`: also return each scored token's standardized score (best match's)."""
        return self.detect_many([text], fpr, windowed, reference, False, token_scores)[0]

    def detect_many(
        self,
        texts: Sequence[str],
        fpr: float = DEFAULT_FPR,
        windowed: bool = True,
        reference: Sequence[str] = (),
        exclude_shared: bool = True,
        token_scores: bool = False,
    ) -> list[DetectionResult]:
        for text in texts:
            check_detect_args(text, fpr)
        for ref in reference:
            check_detect_args(ref, fpr, what="a reference text")
        m = len(self.detectors)
        results: list[list[DetectionResult]] = [[] for _ in texts]
        tokenized: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for det in self.detectors:
            if id(det.tokenizer) not in tokenized:  # hypotheses that share a tokenizer tokenize once
                tokenized[id(det.tokenizer)] = (
                    [det.tokenize(t) for t in texts],
                    [det.tokenize(r) for r in reference],
                )
            tokens, ref_tokens = tokenized[id(det.tokenizer)]
            parts = [det.pair_ids(t) for t in ref_tokens]
            if exclude_shared and len(texts) > 1:
                every = np.concatenate([det.pair_ids(t) for t in tokens])  # each text's distinct pairs
                values, counts = np.unique(every, return_counts=True)
                parts.append(values[counts >= 2])
            exclude = np.unique(np.concatenate(parts)) if parts else _NO_PAIRS
            for i, text in enumerate(texts):
                results[i].append(
                    det._detect(text, tokens[i], fpr, windowed, exclude, m, token_scores=token_scores)
                )
        return [self._combine(r, fpr, m) for r in results]

    @staticmethod
    def _combine(results: list[DetectionResult], fpr: float, m: int) -> DetectionResult:
        if m == 1:
            return results[0]

        def strength(r: DetectionResult) -> tuple[bool, float]:
            # Spans' p-values are already corrected for all m hypotheses; the whole text's is not yet.
            corrected = min([min(1.0, r.raw_p_value * m)] + [s.p_value for s in r.spans])
            return r.verdict is Verdict.TOO_SHORT, corrected

        best = min(results, key=strength)
        p = min(1.0, best.raw_p_value * m)
        where = f"{best.model}'s tokenizer, " if best.model else ""
        note = f"; best of {m} hypotheses: {where}{best.scheme}, p corrected for all {m}"
        best.verdict, best.message = _verdict(p, best.scored, fpr, _width(best.spec_id), note)
        best.p_value = p
        best.hypotheses = m
        best.tested = [Tested(r.model, r.spec_id, r.scored, r.raw_p_value) for r in results]
        return best


def _width(spec_id: str) -> int:
    return WatermarkSpec.from_id(spec_id).context_width


def check_detect_args(text: object, fpr: object, what: str = "the text to test") -> None:
    """The detector's inputs, checked before any work: a clear error, never a numpy traceback."""
    if not isinstance(text, str):
        raise DetectionError(f"{what} must be a string, got {type(text).__name__}")
    check_unicode(text, what, DetectionError)
    check_rate(fpr, "fpr")


def contains(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Element-wise membership of `values` in a sorted array."""
    if sorted_values.shape[0] == 0:
        return np.zeros(values.shape[0], dtype=bool)
    idx = np.searchsorted(sorted_values, values)
    idx[idx == sorted_values.shape[0]] = 0
    return sorted_values[idx] == values


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
