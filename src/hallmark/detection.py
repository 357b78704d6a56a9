"""`hallmark.detect`: the watermark's exact verdict and, beside it, the zero-shot assessment.

The watermark test (hallmark.watermark.api) needs only tokenizers and keys; the zero-shot
assessment (hallmark.zeroshot) loads the scoring models, which is why this module sits above the
model layer rather than in watermark/. The two answers stay apart: `result` is the watermark's
DetectionResult, `result.zero_shot` the assessment (None when skipped).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from hallmark.watermark.api import detect_many as watermark_detect_many
from hallmark.watermark.detect import DetectionResult
from hallmark.watermark.keys import WatermarkKey
from hallmark.watermark.spec import DEFAULT_FPR, WatermarkSpec
from hallmark.zeroshot import DEFAULT_ZS_FPR


def zero_shot_default() -> bool:
    """Whether detection adds the zero-shot assessment when not told: yes, unless
    $HALLMARK_ZERO_SHOT is 0, false, no or off."""
    return os.environ.get("HALLMARK_ZERO_SHOT", "1").strip().lower() not in ("0", "false", "no", "off")


def detect(
    text: str,
    model: str | os.PathLike[str] | None = None,
    spec: WatermarkSpec | str | None = None,
    key: WatermarkKey | str | None = None,
    scheme: str | None = None,
    fpr: float = DEFAULT_FPR,
    windowed: bool = True,
    reference: Sequence[str] = (),
    zero_shot: bool | None = None,
    zs_fpr: float = DEFAULT_ZS_FPR,
) -> DetectionResult:
    """Is `text` watermarked, and does it look machine-generated anyway?

    The watermark test: with neither `model` nor `spec`, every installed model's tokenizer, local
    key and scheme is tested and the best match reported (`model`, `spec_id`; `p_value` corrected
    for `hypotheses`, `raw_p_value` its own, `tested` all). `reference` texts (a blank template,
    say) have their (context, token) pairs left out of the score.

    With `zero_shot` (default: on unless $HALLMARK_ZERO_SHOT is off) `result.zero_shot` holds the
    zero-shot assessment at false-positive rate `zs_fpr`: a statistical estimate for text from any
    model, never exact (docs/zeroshot.md).
    """
    return detect_many([text], model, spec, key, scheme, fpr, windowed, reference, False, zero_shot, zs_fpr)[
        0
    ]


def detect_many(
    texts: Sequence[str],
    model: str | os.PathLike[str] | None = None,
    spec: WatermarkSpec | str | None = None,
    key: WatermarkKey | str | None = None,
    scheme: str | None = None,
    fpr: float = DEFAULT_FPR,
    windowed: bool = True,
    reference: Sequence[str] = (),
    exclude_shared: bool = True,
    zero_shot: bool | None = None,
    zs_fpr: float = DEFAULT_ZS_FPR,
) -> list[DetectionResult]:
    """`detect` for a batch of texts; with `exclude_shared`, a watermark pair found in two or more of
    them (shared boilerplate) is scored in none. The zero-shot assessment is per text."""
    zero_shot = zero_shot_default() if zero_shot is None else zero_shot
    if zero_shot:
        from hallmark.zeroshot.detector import check_zs_fpr

        check_zs_fpr(zs_fpr)  # before any tokenizer or scoring model is loaded for nothing
    results = watermark_detect_many(texts, model, spec, key, scheme, fpr, windowed, reference, exclude_shared)
    if zero_shot:
        from hallmark.zeroshot import default_detector

        detector = default_detector()
        for text, result in zip(texts, results, strict=True):
            result.zero_shot = detector.assess(text, zs_fpr)
    return results
