"""Statistical watermarks on sampled output, and their detection with an exact p-value.

import hallmark
result = hallmark.detect(text)                      # every installed tokenizer x local key x scheme
result = hallmark.detect(text, spec="hm1-gumbel-w2-k...-t...")
print(result.verdict, result.p_value, result.scored, result.model, result.hypotheses)
results = hallmark.watermark.api.detect_many(texts)  # a batch: pairs shared by 2+ texts not scored

The names below are imported on first use (PEP 562): the CLI reads `watermark.spec`'s constants
to build its flags, and that must not import numpy and the detector.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS: dict[str, str] = {
    "DEFAULT_FPR": "hallmark.watermark.spec",
    "DEFAULT_SCHEME": "hallmark.watermark.spec",
    "SCHEMES": "hallmark.watermark.spec",
    "WatermarkSpec": "hallmark.watermark.spec",
    "DetectionResult": "hallmark.watermark.detect",
    "Detector": "hallmark.watermark.detect",
    "MultiDetector": "hallmark.watermark.detect",
    "Tested": "hallmark.watermark.detect",
    "Span": "hallmark.watermark.detect",
    "Verdict": "hallmark.watermark.detect",
    "WatermarkKey": "hallmark.watermark.keys",
    "default_key": "hallmark.watermark.keys",
    "find_key": "hallmark.watermark.keys",
    "list_keys": "hallmark.watermark.keys",
    "new_key": "hallmark.watermark.keys",
    "Scheme": "hallmark.watermark.schemes",
    "SequenceWatermarker": "hallmark.watermark.schemes",
    "make_scheme": "hallmark.watermark.schemes",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hallmark.watermark' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
