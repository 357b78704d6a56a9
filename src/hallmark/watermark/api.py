"""`hallmark.detect()`: resolve the tokenizer, spec and key, then run the detector.

`detector_for` is the one place that turns (tokenizer, spec or scheme, key) into a Detector; the
Python API and CLI reach it through `build_detector` (which opens a catalog model's tokenizer),
the server with the tokenizers of the models it serves.
"""

from __future__ import annotations

import os

from hallmark.backends import Tokenizer, open_tokenizer
from hallmark.catalog import CATALOG, DEFAULT_MODEL, is_installed, model_path, resolve
from hallmark.errors import WatermarkSpecError
from hallmark.watermark.detect import DetectionResult, Detector, check_detect_args
from hallmark.watermark.keys import WatermarkKey, default_key, find_key
from hallmark.watermark.spec import DEFAULT_FPR, DEFAULT_SCHEME, WatermarkSpec

_TOKENIZERS: dict[str, Tokenizer] = {}  # path -> tokenizer; loading one costs 0.1-0.8 s


def load_tokenizer(name_or_path: str | os.PathLike[str]) -> tuple[str, Tokenizer]:
    resolved = resolve(name_or_path)
    key = str(resolved.path)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = open_tokenizer(resolved.path)
    return resolved.name, _TOKENIZERS[key]


def _model_for_tokenizer(fingerprint: str) -> str:
    """The installed catalog model whose tokenizer has this fingerprint."""
    for entry in CATALOG:
        if is_installed(entry):
            _, tok = load_tokenizer(str(model_path(entry, show_progress=False)))
            if tok.fingerprint() == fingerprint:
                return entry.name
    raise WatermarkSpecError(
        f"no installed model has tokenizer {fingerprint}; pass the generating model with -m/model="
    )


def detector_for(
    tokenizer: Tokenizer,
    tokenizer_name: str,
    spec: WatermarkSpec | None = None,
    key: WatermarkKey | str | None = None,
    scheme: str = DEFAULT_SCHEME,
) -> Detector:
    """A detector for `spec` on this tokenizer (refused if the spec names another tokenizer), or,
    without a spec, for `scheme` with this tokenizer and the key (default: the spec's key, else
    the user's default key)."""
    if spec is not None:
        spec.check_tokenizer(tokenizer.fingerprint(), tokenizer_name)
    if isinstance(key, str):
        wm_key = find_key(key)
    elif key is not None:
        wm_key = key
    elif spec is not None:
        wm_key = find_key(spec.key_id)  # the key store, or $HALLMARK_WATERMARK_KEY
    else:
        wm_key = default_key(create=False)
    if spec is None:
        spec = WatermarkSpec.create(scheme, wm_key.key_id, tokenizer.fingerprint())
    elif wm_key.key_id != spec.key_id:
        raise WatermarkSpecError(f"key {wm_key.name} ({wm_key.key_id}) is not the key of spec {spec.spec_id}")
    return Detector(tokenizer, spec, wm_key.secret)


def build_detector(
    model: str | os.PathLike[str] | None = None,
    spec: WatermarkSpec | str | None = None,
    key: WatermarkKey | str | None = None,
    scheme: str = DEFAULT_SCHEME,
) -> Detector:
    """A detector for `spec` (an id, JSON or object), or for `scheme` with `model`'s tokenizer and the key."""
    parsed = WatermarkSpec.parse(spec) if isinstance(spec, str) else spec
    if model is None:
        model = _model_for_tokenizer(parsed.tokenizer) if parsed is not None else DEFAULT_MODEL
    name, tokenizer = load_tokenizer(model)
    return detector_for(tokenizer, name, parsed, key, scheme)


def detect(
    text: str,
    model: str | os.PathLike[str] | None = None,
    spec: WatermarkSpec | str | None = None,
    key: WatermarkKey | str | None = None,
    scheme: str = DEFAULT_SCHEME,
    fpr: float = DEFAULT_FPR,
    windowed: bool = True,
) -> DetectionResult:
    """Is `text` watermarked? Needs the tokenizer (from `model`) and the key, not the model weights."""
    check_detect_args(text, fpr)  # before a tokenizer is loaded for nothing
    return build_detector(model, spec, key, scheme).detect(text, fpr=fpr, windowed=windowed)
