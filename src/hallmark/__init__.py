"""hallmark: run, use and shape open-weight LLMs on your own machine."""

from hallmark.catalog import CATALOG, DEFAULT_MODEL
from hallmark.engine.results import GenerationResult, StreamChunk, Timings, TokenLogprob
from hallmark.engine.sampling import SamplingParams
from hallmark.errors import (
    ChatFormatError,
    ContextLengthError,
    HallmarkError,
    InvalidSamplingError,
    ModelFileError,
    ModelNotInstalledError,
    PromptError,
    UnknownModelError,
)
from hallmark.model import Model, load
from hallmark.tasks import TaskResult, UnknownLanguageError, answer, summarize, translate
from hallmark.watermark.api import detect
from hallmark.watermark.detect import DetectionResult
from hallmark.watermark.spec import WatermarkSpec

__version__ = "0.1.0"

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "ChatFormatError",
    "ContextLengthError",
    "DetectionResult",
    "GenerationResult",
    "HallmarkError",
    "InvalidSamplingError",
    "Model",
    "ModelFileError",
    "ModelNotInstalledError",
    "PromptError",
    "SamplingParams",
    "StreamChunk",
    "TaskResult",
    "Timings",
    "TokenLogprob",
    "UnknownLanguageError",
    "UnknownModelError",
    "WatermarkSpec",
    "answer",
    "detect",
    "load",
    "summarize",
    "translate",
]
