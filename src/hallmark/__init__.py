"""hallmark: run, use and shape open-weight LLMs on your own machine.

The public API below (`hallmark.load`, `hallmark.translate`, `hallmark.SamplingParams`, ...) is
imported lazily (PEP 562): `import hallmark` is cheap, and a name's module (for `load`, llama.cpp)
is imported on first use. So `hallmark --help`, which imports `hallmark.cli`, never loads llama.cpp.
`__version__` is the installed distribution's version (importlib.metadata, also on first use),
written only in pyproject.toml; "0+unknown" when hallmark runs from a tree that was never installed.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_DISTRIBUTION = "hallmark-llm"  # the name on PyPI; pyproject.toml holds its version

# Each public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "CATALOG": "hallmark.catalog",
    "DEFAULT_MODEL": "hallmark.catalog",
    "BackendError": "hallmark.errors",
    "ChatFormatError": "hallmark.errors",
    "ContextLengthError": "hallmark.errors",
    "DetectionError": "hallmark.errors",
    "DetectionResult": "hallmark.watermark.detect",
    "GenerationResult": "hallmark.engine.results",
    "Grammar": "hallmark.engine.grammar",
    "GrammarError": "hallmark.errors",
    "HallmarkError": "hallmark.errors",
    "InvalidSamplingError": "hallmark.errors",
    "Model": "hallmark.model",
    "ModelFileError": "hallmark.errors",
    "ModelNotInstalledError": "hallmark.errors",
    "PerplexityResult": "hallmark.tasks.perplexity",
    "Policy": "hallmark.policy",
    "PolicyError": "hallmark.policy",
    "PolicyViolation": "hallmark.policy",
    "PromptError": "hallmark.errors",
    "RegistryEntry": "hallmark.registry",
    "RegistryError": "hallmark.registry",
    "SamplingParams": "hallmark.engine.sampling",
    "StreamChunk": "hallmark.engine.results",
    "TaskResult": "hallmark.tasks",
    "Timings": "hallmark.engine.results",
    "TokenLogprob": "hallmark.engine.results",
    "UnknownLanguageError": "hallmark.tasks",
    "UnknownModelError": "hallmark.errors",
    "UnknownStyleError": "hallmark.errors",
    "WatermarkKeyError": "hallmark.errors",
    "WatermarkSpecError": "hallmark.errors",
    "WatermarkSpec": "hallmark.watermark.spec",
    "answer": "hallmark.tasks",
    "detect": "hallmark.detection",
    "evaluate_perplexity": "hallmark.tasks.perplexity",
    "finetune": "hallmark.train.finetune",
    "pretrain": "hallmark.train.pretrain",
    "FinetuneResult": "hallmark.train.finetune",
    "LoraSettings": "hallmark.train.config",
    "TrainConfig": "hallmark.train.config",
    "load": "hallmark.model",
    "load_policy": "hallmark.policy",
    "summarize": "hallmark.tasks",
    "translate": "hallmark.tasks",
}

__all__ = list(_EXPORTS)


def _version() -> str:
    # On first use only: importlib.metadata is slow to import and scan, and only `--version` and
    # the server need the version.
    from importlib import metadata

    try:
        return metadata.version(_DISTRIBUTION)
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562), then keep the name in this module."""
    if name == "__version__":
        value: Any = _version()
    elif name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'hallmark' has no attribute {name!r}")
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
