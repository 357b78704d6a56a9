"""Exception types. Every error hallmark raises on bad input is a `HallmarkError`.

The CLI prints `error: <message>` for these and exits non-zero; anything else is a bug.
"""


class HallmarkError(Exception):
    """Base class for errors caused by bad input or a bad environment, not by a bug."""


class UnknownModelError(HallmarkError, LookupError):
    """A model name that is neither in the catalog nor a path to a .gguf file."""


class ModelNotInstalledError(HallmarkError):
    """A catalog model whose PyPI package is not installed."""


class ModelFileError(HallmarkError):
    """A model file that is missing, unreadable, or not a valid GGUF file."""


class PromptError(HallmarkError, ValueError):
    """A prompt that cannot be generated from (empty, or too long for the context window)."""


class ContextLengthError(PromptError):
    """A prompt that does not fit in the model's context window."""

    def __init__(self, prompt_tokens: int, n_ctx: int, max_tokens: int | None = None, at_least: bool = False):
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens  # the completion tokens asked for, when they must all fit
        self.at_least = at_least  # prompt_tokens is a lower bound (the prompt was too long to tokenize)
        if max_tokens is None:
            need = "at least 1 token must be left for the answer"
        else:
            need = f"{max_tokens} more were asked for the answer, {prompt_tokens + max_tokens} in all"
        size = f"at least {prompt_tokens}" if at_least else str(prompt_tokens)
        super().__init__(
            f"prompt is {size} tokens but the context window is {n_ctx} tokens "
            f"({need}); shorten the prompt or raise --ctx-size"
        )


class TooManySequencesError(HallmarkError, ValueError):
    """A request asking for more sequences than the server can ever hold at once."""


class InvalidSamplingError(HallmarkError, ValueError):
    """A sampling parameter outside its valid range; `param` names it."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class ChatFormatError(HallmarkError, ValueError):
    """Chat messages that are malformed or that the model's chat template rejects."""


class WatermarkKeyError(HallmarkError):
    """A watermark key that is missing, malformed or ambiguous."""


class WatermarkSpecError(HallmarkError, ValueError):
    """A watermark spec that is malformed, or that does not fit the tokenizer it is used with."""


class UnknownStyleError(HallmarkError, ValueError):
    """A task prompt style (`--style`) that the task does not know."""


class BackendError(HallmarkError):
    """The inference backend failed to evaluate a batch (e.g. llama_decode returned an error)."""


class EngineStopped(HallmarkError):
    """The engine shut down before the request finished (or before it could be accepted)."""


class DetectionError(HallmarkError, ValueError):
    """Bad input to watermark detection (not a string, an fpr outside (0, 1), ...)."""


def check_unicode(text: str, what: str, error: type[HallmarkError] = PromptError) -> None:
    """Refuse text that cannot be encoded as UTF-8 (a lone surrogate, as JSON's "\\ud800" gives),
    which every tokenizer needs, with an error naming where, instead of a UnicodeEncodeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise error(f"{what} is not valid Unicode: a lone surrogate at character {e.start}") from None


def check_rate(value: object, what: str) -> None:
    """A false-positive rate: a real number strictly between 0 and 1 (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise DetectionError(f"{what} must be a number in (0, 1), got {value!r}")


class GrammarError(HallmarkError, ValueError):
    """A response format, JSON schema or grammar that is invalid or unsupported; `param` names it."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param
