"""`hallmark.detect()`: resolve the tokenizer, spec and key, then run the detector."""

from __future__ import annotations

import os

from hallmark.backends.llamacpp import Tokenizer
from hallmark.catalog import CATALOG, DEFAULT_MODEL, is_installed, model_path, resolve
from hallmark.errors import WatermarkSpecError
from hallmark.watermark.detect import DEFAULT_FPR, DetectionResult, Detector
from hallmark.watermark.keys import WatermarkKey, default_key, find_key
from hallmark.watermark.spec import DEFAULT_SCHEME, WatermarkSpec

_TOKENIZERS: dict[str, Tokenizer] = {}  # path -> tokenizer; loading one costs 0.1-0.8 s


def load_tokenizer(name_or_path: str | os.PathLike[str]) -> tuple[str, Tokenizer]:
    resolved = resolve(name_or_path)
    key = str(resolved.path)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = Tokenizer(resolved.path)
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
    if parsed is not None:
        parsed.check_tokenizer(tokenizer.fingerprint(), name)
    if isinstance(key, str):
        wm_key = find_key(key)
    elif key is not None:
        wm_key = key
    elif parsed is not None:
        wm_key = find_key(parsed.key_id)
    else:
        wm_key = default_key(create=False)
    if parsed is None:
        parsed = WatermarkSpec.create(scheme, wm_key.key_id, tokenizer.fingerprint())
    elif wm_key.key_id != parsed.key_id:
        raise WatermarkSpecError(
            f"key {wm_key.name} ({wm_key.key_id}) is not the key of spec {parsed.spec_id}"
        )
    return Detector(tokenizer, parsed, wm_key.secret)


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
    return build_detector(model, spec, key, scheme).detect(text, fpr=fpr, windowed=windowed)
