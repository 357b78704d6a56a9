"""`hallmark.detect()`: resolve the tokenizers, specs and keys to test, then run the detector.

Whoever checks a text rarely knows which model wrote it. With neither `model` nor `spec`, a text
is tested under every hypothesis here: each distinct tokenizer of the installed catalog models x
each local key (the store's and $HALLMARK_WATERMARK_KEY) x each scheme, and the best match is
reported with its p-value multiplied by their number m (Bonferroni: the chance that any of the m
flags an unwatermarked text stays at or below `fpr`). Naming a model narrows the tokenizers to
its one, a key the keys, a scheme the schemes; a spec names all three.

`detector_for` is the one place that turns (tokenizer, spec or scheme, key) into a Detector; the
Python API and CLI reach it through `hypotheses` (which opens catalog models' tokenizers), the
server with the tokenizers of the models it serves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from hallmark.backends import Tokenizer, open_tokenizer
from hallmark.catalog import CATALOG, is_installed, model_path, resolve
from hallmark.errors import WatermarkKeyError, WatermarkSpecError
from hallmark.watermark.detect import DetectionResult, Detector, MultiDetector, check_detect_args
from hallmark.watermark.keys import WatermarkKey, default_key, env_key, find_key, keys_dir, list_keys
from hallmark.watermark.spec import DEFAULT_FPR, SCHEMES, WatermarkSpec

_TOKENIZERS: dict[str, Tokenizer] = {}  # path -> tokenizer; loading one costs 0.1-0.8 s


def load_tokenizer(name_or_path: str | os.PathLike[str]) -> tuple[str, Tokenizer]:
    resolved = resolve(name_or_path)
    key = str(resolved.path)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = open_tokenizer(resolved.path)
    return resolved.name, _TOKENIZERS[key]


def installed_tokenizers() -> list[tuple[str, Tokenizer]]:
    """(model name, tokenizer) for each distinct tokenizer fingerprint among the installed catalog
    models, in catalog order; models sharing a tokenizer are named together ("a / b")."""
    found: dict[str, tuple[list[str], Tokenizer]] = {}
    for entry in CATALOG:
        if is_installed(entry):
            _, tok = load_tokenizer(str(model_path(entry, show_progress=False)))
            found.setdefault(tok.fingerprint(), ([], tok))[0].append(entry.name)
    return [(" / ".join(names), tok) for names, tok in found.values()]


def _model_for_tokenizer(fingerprint: str) -> str:
    """The installed catalog model whose tokenizer has this fingerprint."""
    for names, tok in installed_tokenizers():
        if tok.fingerprint() == fingerprint:
            return names.split(" / ")[0]
    raise WatermarkSpecError(
        f"no installed model has tokenizer {fingerprint}; pass the generating model with -m/model="
    )


def local_keys() -> list[WatermarkKey]:
    """Every key here, once each: the store's, then $HALLMARK_WATERMARK_KEY."""
    keys = list_keys()
    env = env_key()
    if env is not None:
        keys.append(env)
    unique = list({k.key_id: k for k in reversed(keys)}.values())[::-1]  # first of each id, in order
    if not unique:
        raise WatermarkKeyError(
            f"no watermark key here to test with ({keys_dir()} is empty and ${{HALLMARK_WATERMARK_KEY}} "
            "unset); text is watermarked with the key of whoever generated it: use theirs (--key, or a spec)"
        )
    return unique


def detector_for(
    tokenizer: Tokenizer,
    tokenizer_name: str,
    spec: WatermarkSpec | None = None,
    key: WatermarkKey | str | None = None,
    scheme: str | None = None,
) -> Detector:
    """A detector for `spec` on this tokenizer (refused if the spec names another tokenizer), or,
    without a spec, for `scheme` (default gumbel) with this tokenizer and the key (default: the
    spec's key, else the user's default key)."""
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
        spec = WatermarkSpec.create(scheme or SCHEMES[0], wm_key.key_id, tokenizer.fingerprint())
    elif wm_key.key_id != spec.key_id:
        raise WatermarkSpecError(f"key {wm_key.name} ({wm_key.key_id}) is not the key of spec {spec.spec_id}")
    return Detector(tokenizer, spec, wm_key.secret, model=tokenizer_name)


def hypotheses(
    model: str | os.PathLike[str] | None = None,
    spec: WatermarkSpec | str | None = None,
    key: WatermarkKey | str | None = None,
    scheme: str | None = None,
) -> MultiDetector:
    """Every (tokenizer, key, scheme) to test: one for a spec; otherwise the installed models'
    tokenizers (or `model`'s) x the local keys (or `key`) x the schemes (or `scheme`)."""
    parsed = WatermarkSpec.parse(spec) if isinstance(spec, str) else spec
    if scheme is not None and scheme not in SCHEMES:
        raise WatermarkSpecError(f"unknown watermark scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    if parsed is not None:
        name, tokenizer = load_tokenizer(
            model if model is not None else _model_for_tokenizer(parsed.tokenizer)
        )
        return MultiDetector([detector_for(tokenizer, name, parsed, key)])
    tokenizers = [load_tokenizer(model)] if model is not None else installed_tokenizers()
    if not tokenizers:
        raise WatermarkSpecError("no model is installed to take a tokenizer from; pass one with -m/model=")
    keys = [find_key(key) if isinstance(key, str) else key] if key is not None else local_keys()
    schemes = [scheme] if scheme is not None else list(SCHEMES)
    return MultiDetector(
        [detector_for(tok, name, None, k, s) for name, tok in tokenizers for k in keys for s in schemes]
    )


def detect(
    text: str,
    model: str | os.PathLike[str] | None = None,
    spec: WatermarkSpec | str | None = None,
    key: WatermarkKey | str | None = None,
    scheme: str | None = None,
    fpr: float = DEFAULT_FPR,
    windowed: bool = True,
    reference: Sequence[str] = (),
) -> DetectionResult:
    """Is `text` watermarked? Needs tokenizers and keys, not model weights.

    With neither `model` nor `spec`, every installed model's tokenizer, local key and scheme is
    tested and the best match reported (`model`, `spec_id`; `p_value` corrected for `hypotheses`,
    `raw_p_value` its own, `tested` all). `reference` texts (a blank template, say) have their
    (context, token) pairs left out of the score.
    """
    check_detect_args(text, fpr)  # before a tokenizer is loaded for nothing
    return hypotheses(model, spec, key, scheme).detect(text, fpr=fpr, windowed=windowed, reference=reference)


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
) -> list[DetectionResult]:
    """`detect` for a batch of texts; with `exclude_shared`, a pair found in two or more of them
    (shared boilerplate) is scored in none, so each text's verdict stands on its own pairs."""
    for text in texts:
        check_detect_args(text, fpr)
    return hypotheses(model, spec, key, scheme).detect_many(
        texts, fpr=fpr, windowed=windowed, reference=reference, exclude_shared=exclude_shared
    )


def build_detector(
    model: str | os.PathLike[str] | None = None,
    spec: WatermarkSpec | str | None = None,
    key: WatermarkKey | str | None = None,
    scheme: str | None = None,
) -> Detector:
    """One detector: for `spec`, or for `scheme` with `model`'s tokenizer (default: the default
    model) and the key (default: the spec's, else the default key). No hypotheses are tried."""
    from hallmark.catalog import DEFAULT_MODEL

    parsed = WatermarkSpec.parse(spec) if isinstance(spec, str) else spec
    if model is None:
        model = _model_for_tokenizer(parsed.tokenizer) if parsed is not None else DEFAULT_MODEL
    name, tokenizer = load_tokenizer(model)
    return detector_for(tokenizer, name, parsed, key, scheme)
