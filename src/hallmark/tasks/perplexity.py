"""`hallmark eval perplexity`: how well a model (with its LoRA adapters) predicts a held-out text.

Input: a text file (scored as one text) or a JSONL file (`.jsonl`; one `{"text": ...}` object per
line, each scored on its own). Each text is tokenized as a prompt is (with the BOS token where the
model has one) and scored teacher-forced by the backend (hallmark.engine.scoring): every token but
the first gets log p(token | the tokens before it). A text longer than the window (default: the
context window) is scored with a sliding window that moves by `stride` tokens (default: half the
window) and scores only the tokens new in each window, as Hugging Face's perplexity guide and
llama.cpp's llama-perplexity do, so each token is scored once with at least window - stride
tokens of context.

Output (`PerplexityResult`): the perplexity exp(mean NLL), the mean negative log-likelihood in
nats per token, the tokens scored, and bits per byte: the total NLL in bits over the UTF-8 bytes of
the scored tokens, which compares models with different tokenizers.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hallmark.errors import HallmarkError
from hallmark.model import LoraArg, Model, load
from hallmark.progress import progress_bar

JSONL_SUFFIXES = (".jsonl", ".ndjson")


class PerplexityDataError(HallmarkError, ValueError):
    """A perplexity data file that cannot be read, or a line of it that is not {"text": "..."}."""


@dataclass
class PerplexityResult:
    perplexity: float  # exp(mean_nll)
    mean_nll: float  # nats per scored token
    tokens: int  # tokens scored (every token of each text but its first)
    bytes: int  # UTF-8 bytes of the scored tokens
    bits_per_byte: float | None  # None when the scored tokens have no bytes (control tokens only)
    texts: int
    windows: int  # backend evaluations of a window (one per text that fits the window)
    window: int
    stride: int
    model: str
    data: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_texts(path: str | os.PathLike[str], limit: int | None = None) -> list[str]:
    """The texts of a data file: a whole text file, or the "text" of each line of a JSONL file.

    One-line PerplexityDataError for a missing or unreadable file, a JSONL line that is not an
    object with a non-empty string "text" (naming the line), or a file with no text.
    """
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PerplexityDataError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise PerplexityDataError(f"{path} is a directory, not a text or JSONL file") from None
    except UnicodeDecodeError:
        raise PerplexityDataError(f"cannot read {path}: it is not UTF-8 text") from None
    except OSError as e:
        raise PerplexityDataError(f"cannot read {path}: {e.strerror}") from None
    if path.suffix.lower() not in JSONL_SUFFIXES:
        if not content.strip():
            raise PerplexityDataError(f"{path} holds no text")
        return [content]
    texts = []
    for n, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise PerplexityDataError(f"{path}:{n}: not valid JSON ({getattr(e, 'msg', e)})") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise PerplexityDataError(f'{path}:{n}: each line must be a JSON object {{"text": "..."}}')
        if not item["text"].strip():
            raise PerplexityDataError(f"{path}:{n}: the text is empty")
        texts.append(item["text"])
        if limit is not None and len(texts) >= limit:
            break
    if not texts:
        raise PerplexityDataError(f"{path} holds no texts")
    return texts


def evaluate_perplexity(
    data: str | os.PathLike[str] | list[str],
    model: Model | str | os.PathLike[str] | None = None,
    *,
    lora: LoraArg | None = None,
    window: int | None = None,
    stride: int | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> PerplexityResult:
    """Perplexity, mean NLL, tokens scored and bits per byte of `data` under `model`.

    `data`: a text or JSONL file (see the module docstring), or a list of texts. `model`: a loaded
    Model (with its adapters), or a name or path to load (with `lora`: adapters, as `hallmark.load`
    takes them); None is the default model. `window` (default: the context window) and `stride`
    (default: half the window) set the sliding window; `limit` keeps the first texts only.
    """
    texts = list(data[:limit] if limit else data) if isinstance(data, list) else load_texts(data, limit)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise PerplexityDataError("the texts must be non-empty strings")
    owned = not isinstance(model, Model)
    if not owned and lora:
        raise HallmarkError("lora: give the adapters to hallmark.load, or a model name here, not both")
    m = model if isinstance(model, Model) else load(model, lora=lora, show_progress=progress, policy="off")
    try:
        return _score(m, texts, None if isinstance(data, list) else str(data), window, stride, progress)
    finally:
        if owned:
            m.close()


def _score(
    model: Model, texts: list[str], source: str | None, window: int | None, stride: int | None, progress: bool
) -> PerplexityResult:
    window, stride = model.scoring_window(window, stride)
    ids = [model.tokenize(t) for t in texts]
    t0 = time.perf_counter()
    total_nll = 0.0
    n_tokens = n_bytes = n_windows = 0
    with progress_bar(sum(max(0, len(t) - 1) for t in ids), "perplexity", progress, unit="tok") as bar:

        def on_window(scored: int) -> None:
            nonlocal n_windows
            n_windows += 1
            bar.update(scored)

        for tokens in ids:
            if len(tokens) < 2:
                continue  # a text of one token has nothing to predict
            lp = model.token_logprobs(tokens, window=window, stride=stride, on_window=on_window)
            total_nll -= float(lp.sum())
            n_tokens += lp.size
            n_bytes += sum(len(model.tokenizer.token_bytes(t)) for t in tokens[1:])
    if n_tokens == 0:
        raise PerplexityDataError("the texts are too short to score (each needs two tokens or more)")
    mean_nll = total_nll / n_tokens
    return PerplexityResult(
        perplexity=math.exp(mean_nll),
        mean_nll=mean_nll,
        tokens=n_tokens,
        bytes=n_bytes,
        bits_per_byte=total_nll / math.log(2) / n_bytes if n_bytes else None,
        texts=len(texts),
        windows=n_windows,
        window=window,
        stride=stride,
        model=model.name,
        data=source,
        seconds=round(time.perf_counter() - t0, 2),
    )
