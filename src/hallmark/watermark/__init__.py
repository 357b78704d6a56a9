"""Statistical watermarks on sampled output, and their detection with an exact p-value.

import hallmark
result = hallmark.detect(text)                      # default model's tokenizer, default key
result = hallmark.detect(text, spec="hm1-gumbel-w4-k...-t...")
print(result.verdict, result.p_value, result.scored)
"""

from __future__ import annotations

from hallmark.watermark.detect import DEFAULT_FPR, DetectionResult, Detector, Span
from hallmark.watermark.keys import WatermarkKey, default_key, find_key, list_keys, new_key
from hallmark.watermark.schemes import Scheme, SequenceWatermarker, make_scheme
from hallmark.watermark.spec import DEFAULT_SCHEME, SCHEMES, WatermarkSpec

__all__ = [
    "DEFAULT_FPR",
    "DEFAULT_SCHEME",
    "SCHEMES",
    "DetectionResult",
    "Detector",
    "Scheme",
    "SequenceWatermarker",
    "Span",
    "WatermarkKey",
    "WatermarkSpec",
    "default_key",
    "find_key",
    "list_keys",
    "make_scheme",
    "new_key",
]
