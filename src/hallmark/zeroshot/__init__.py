"""Zero-shot detection of machine-generated text: statistics of a text under the scoring models,
calibrated on human text, reported beside (never instead of) the watermark's exact verdict.

- statistics.py: log-likelihood, log-rank, entropy and Fast-DetectGPT's curvature of one text
  under one model, from one forward pass;
- calibration.py: per-length standardization on human text, the equal-weight combination and the
  conformal p-value that states the false-positive rate;
- detector.py: `ZeroShotDetector.assess(text, fpr)` -> `ZeroShotResult`.

`assess` keeps one detector per process (loading both scoring models takes a few seconds). This
module imports nothing heavy, so the CLI can read DEFAULT_ZS_FPR for its help.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hallmark.zeroshot.detector import ZeroShotDetector, ZeroShotResult

DEFAULT_ZS_FPR = 0.01
MIN_WORDS = 48  # the shortest calibrated length (hallmark.zeroshot.calibration.LENGTHS)

_DEFAULT: ZeroShotDetector | None = None
_LOCK = threading.Lock()


def default_detector(show_progress: bool = True) -> ZeroShotDetector:
    """The process's detector with the shipped calibration, loaded on first use."""
    from hallmark.zeroshot.detector import ZeroShotDetector

    global _DEFAULT
    with _LOCK:
        if _DEFAULT is None:
            _DEFAULT = ZeroShotDetector(show_progress=show_progress)
        return _DEFAULT


def assess(text: str, fpr: float = DEFAULT_ZS_FPR) -> ZeroShotResult:
    """The zero-shot assessment of `text` at false-positive rate `fpr` (shipped calibration)."""
    return default_detector().assess(text, fpr)
