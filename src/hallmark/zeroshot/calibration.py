"""Calibration of the zero-shot detector on human text: how each statistic is put on one scale, how
they are combined, and how a combined score becomes an estimated false-positive rate.

A statistic's distribution over human texts depends on the text's length (a mean over fewer tokens
spreads wider, and later tokens have more context), so everything is calibrated per length: texts
are compared at their first `b` words, `b` the longest calibrated length (`LENGTHS`) they reach.

For each length the human calibration texts are split in two halves (by a hash of the text):
- half A fixes each feature's center and scale (median and interquartile range / 1.349, a robust
  standard deviation); a feature's z-score is (value - center) / scale;
- the combined score is the mean of the features' z-scores. Equal weights need no machine text to
  fit (a fitted combination would learn the machine texts at hand, not machine text);
- half B is the null sample: a text's estimated p-value is (1 + the number of B's combined scores
  at or above its own) / (|B| + 1), a conformal p-value. If the text is exchangeable with the
  calibration texts (a human text of the same kinds) it is at most alpha with probability at most
  alpha, so flagging at p <= fpr keeps the false-positive rate at or below fpr. For human text
  unlike the calibration domains it is an estimate, not a guarantee, which is why the detector says
  so; unlike the watermark's p-value it is never exact.

A `Calibration` is data (an .npz file shipped in the package, rebuilt by
`bench/zeroshot_calibrate.py`): the scorers it was made with, the features, the lengths, and per
length the centers, scales and the sorted null sample.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hallmark.errors import DetectionError
from hallmark.zeroshot import MIN_WORDS

# Lengths in words at which texts are compared. The shortest is the minimum the detector accepts.
LENGTHS = (MIN_WORDS, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256)
IQR_TO_SD = 1.349  # the interquartile range of a normal distribution, in standard deviations
SHIPPED = Path(__file__).parent / "calibration.npz"


@dataclass(frozen=True)
class Scorer:
    """A scoring model as the calibration knows it: name, tokenizer fingerprint and file size."""

    name: str
    fingerprint: str
    file_size: int


@dataclass
class Calibration:
    scorers: list[Scorer]
    features: list[str]  # "scorer name:statistic"
    lengths: list[int]  # words; ascending
    centers: np.ndarray  # (lengths, features)
    scales: np.ndarray  # (lengths, features)
    nulls: list[np.ndarray]  # per length: the sorted combined scores of half B
    info: dict  # sources, counts per domain, how it was built

    # -- use ---------------------------------------------------------------------------------------
    def length_index(self, words: int) -> int | None:
        """The longest calibrated length a text of `words` words reaches (None: too short)."""
        reached = [i for i, b in enumerate(self.lengths) if b <= words]
        return reached[-1] if reached else None

    def z_scores(self, features: Mapping[str, float], index: int) -> np.ndarray:
        values = np.array([features[f] for f in self.features], dtype=np.float64)
        return (values - self.centers[index]) / self.scales[index]

    def combined(self, features: Mapping[str, float], index: int) -> float:
        return float(self.z_scores(features, index).mean())

    def p_value(self, score: float, index: int) -> float:
        """Estimated chance that a human text of this length scores at least `score` (conformal)."""
        null = self.nulls[index]
        at_or_above = null.shape[0] - int(np.searchsorted(null, score, side="left"))
        return (1 + at_or_above) / (null.shape[0] + 1)

    def decision_fpr(self, fpr: float, index: int) -> float:
        """The false-positive rate of flagging at p <= fpr for a human text exchangeable with the
        calibration's: floor(fpr (|B| + 1)) / (|B| + 1), never above fpr (0 when |B| is too small)."""
        n = self.nulls[index].shape[0]
        return float(np.floor(fpr * (n + 1)) / (n + 1))

    @property
    def calibration_id(self) -> str:
        blob = json.dumps([self.features, self.lengths, self.centers.round(6).tolist()]).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    # -- build -------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        scorers: Sequence[Scorer],
        features: Sequence[str],
        human: Sequence[tuple[str, Mapping[int, Mapping[str, float]]]],
        info: dict,
        min_texts: int = 100,
    ) -> Calibration:
        """From human texts' features: (text, {length: {feature: value}}) for each text, with an
        entry for every calibrated length the text reaches. A length with fewer than `min_texts`
        texts in either half is left out (its p-values could not reach 1%)."""
        lengths, centers, scales, nulls, counts = [], [], [], [], {}
        for b in LENGTHS:
            rows = [(text, by_length[b]) for text, by_length in human if b in by_length]
            half_a = [f for text, f in rows if _half(text) == 0]
            half_b = [f for text, f in rows if _half(text) == 1]
            if min(len(half_a), len(half_b)) < min_texts:
                continue
            a = np.array([[f[name] for name in features] for f in half_a])
            center = np.median(a, axis=0)
            q75, q25 = np.percentile(a, [75, 25], axis=0)
            scale = np.maximum((q75 - q25) / IQR_TO_SD, 1e-9)
            b_values = np.array([[f[name] for name in features] for f in half_b])
            null = np.sort(((b_values - center) / scale).mean(axis=1))
            lengths.append(b)
            centers.append(center)
            scales.append(scale)
            nulls.append(null)
            counts[b] = {"reference": len(half_a), "null": len(half_b)}
        if not lengths:
            raise DetectionError(f"too few human texts to calibrate on: fewer than {min_texts} per half")
        return cls(
            list(scorers),
            list(features),
            lengths,
            np.array(centers),
            np.array(scales),
            nulls,
            {**info, "texts_per_length": counts},
        )

    # -- files -------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        meta = {
            "scorers": [vars(s) for s in self.scorers],
            "features": self.features,
            "lengths": self.lengths,
            "info": self.info,
        }
        nulls = {f"null_{b}": null for b, null in zip(self.lengths, self.nulls, strict=True)}
        with open(path, "wb") as f:
            np.savez_compressed(f, meta=json.dumps(meta), centers=self.centers, scales=self.scales, **nulls)

    @classmethod
    def load(cls, path: str | Path = SHIPPED) -> Calibration:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                nulls = [data[f"null_{b}"] for b in meta["lengths"]]
                centers, scales = data["centers"], data["scales"]
        except (OSError, KeyError, ValueError) as e:
            raise DetectionError(f"cannot read the zero-shot calibration {path}: {e}") from None
        return cls(
            [Scorer(**s) for s in meta["scorers"]],
            meta["features"],
            meta["lengths"],
            centers,
            scales,
            nulls,
            meta["info"],
        )


def _half(text: str) -> int:
    return hashlib.sha256(text.encode("utf-8")).digest()[0] & 1
