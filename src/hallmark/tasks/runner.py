"""Running task prompts on a model: batching, token budgets, and the result the task functions return."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hallmark.engine.generate import in_order
from hallmark.engine.request import Request, check_fits, fits_context
from hallmark.engine.results import GenerationResult
from hallmark.engine.sampling import SamplingParams, sampling_params
from hallmark.errors import PromptError
from hallmark.model import Model, load
from hallmark.progress import progress_bar
from hallmark.tasks.defaults import default_model
from hallmark.tasks.prompts import TaskPrompt, model_kind

# Task outputs decode greedily unless the caller asks for sampling: the most likely translation or
# answer scores best on the dev sets, and it is reproducible. Greedy text carries no watermark
# (there is no randomness to carry it); results say so, and passing a temperature samples with one.
TASK_DEFAULTS: dict[str, Any] = {"temperature": 0.0}
# When a task function loads a model by name: room for long inputs and a few sequences at once.
TASK_CTX = 4096
TASK_SEQUENCES = 4


@dataclass
class TaskResult:
    """The output of translate / summarize / answer."""

    text: str
    model: str
    style: str  # the prompt style used (see hallmark.tasks.prompts)
    parts: int = 1  # model calls the input was split into (more than 1 for inputs beyond the window)
    generations: list[GenerationResult] = field(default_factory=list, repr=False)

    def __str__(self) -> str:
        return self.text

    @property
    def watermarked(self) -> bool:
        return bool(self.generations) and all(g.watermark.applied for g in self.generations)

    def to_dict(self) -> dict[str, Any]:
        wm = [g.watermark for g in self.generations]
        return {
            "text": self.text,
            "model": self.model,
            "style": self.style,
            "parts": self.parts,
            "watermark": {
                "applied": self.watermarked,
                "spec_id": next((w.spec_id for w in wm if w.spec_id), None),
                "reason": next((w.reason for w in wm if not w.applied), None),
            },
            "usage": {
                "prompt_tokens": sum(g.prompt_tokens for g in self.generations),
                "completion_tokens": sum(len(g.token_ids) for g in self.generations),
            },
        }


def resolve_model(
    model: Model | str | os.PathLike[str] | None, task: str | None = None, show_progress: bool = False
) -> Model:
    """A loaded model as it is, or load one by name or path (None: $HALLMARK_MODEL, else the best
    installed model for `task`, hallmark.tasks.defaults)."""
    if isinstance(model, Model):
        return model
    if model is None:
        model = os.environ.get("HALLMARK_MODEL") or (default_model(task) if task else None)
    return load(model, n_ctx=TASK_CTX, max_sequences=TASK_SEQUENCES, show_progress=show_progress)


def task_params(params: SamplingParams | None, sampling: dict[str, Any]) -> SamplingParams:
    return sampling_params(params, **{**TASK_DEFAULTS, **sampling}) if params is None else params


def request_for(model: Model, prompt: TaskPrompt, params: SamplingParams, max_tokens: int) -> Request:
    """The generation request for one task prompt: the chat template for chat models, else the text."""
    p = params.with_overrides(
        max_tokens=min(max_tokens, params.max_tokens) if params.max_tokens else max_tokens,
        stop=tuple(params.stop) + prompt.stop,
    )
    if _uses_chat(model, prompt):
        return model.chat_request(prompt.messages or [], p, conversation=False)
    assert prompt.text is not None
    return model.prompt_request(prompt.text, p, screen=False)


def _uses_chat(model: Model, prompt: TaskPrompt) -> bool:
    """Chat messages for chat models (or when the prompt has no text form), else the text prompt."""
    return prompt.messages is not None and (prompt.text is None or model_kind(model) == "chat")


def prompt_tokens(model: Model, prompt: TaskPrompt) -> int:
    if _uses_chat(model, prompt):
        return len(model.chat_prompt_ids(prompt.messages))
    return len(model.tokenize(prompt.text or ""))


def fits(model: Model, prompt: TaskPrompt, max_tokens: int) -> bool:
    return fits_context(prompt_tokens(model, prompt), model.n_ctx, max_tokens)


def run_prompts(
    model: Model,
    prompts: Sequence[TaskPrompt],
    params: SamplingParams,
    max_tokens: Sequence[int],
    progress: str | None = None,
) -> list[tuple[str, GenerationResult]]:
    """Generate for every prompt (batched on the model's sequence slots); cleaned text and result each."""
    requests = []
    for prompt, limit in zip(prompts, max_tokens, strict=True):
        request = request_for(model, prompt, params, limit)
        # The task functions split inputs to fit; failing here means a piece could not be.
        check_fits(len(request.prompt_ids), model.n_ctx, request.params.max_tokens)
        requests.append(request)
    out: list[tuple[str, GenerationResult] | None] = [None] * len(requests)
    with progress_bar(len(requests), progress or "", enabled=progress is not None, unit="it") as bar:
        for i, result in model.generate_requests(requests):
            out[i] = (prompts[i].clean(result.text), result)
            bar.update(1)
    done = in_order(out)
    retry = [
        i
        for i, (text, _) in enumerate(done)
        if prompts[i].fallback is not None and not prompts[i].usable(text)
    ]
    if retry:  # the zero-shot prompt, for outputs the few-shot prompt got wrong (see TaskPrompt)
        fallbacks = [prompts[i].fallback for i in retry]
        label = f"{progress}, zero-shot retries" if progress else None
        again = run_prompts(model, fallbacks, params, [max_tokens[i] for i in retry], label)
        for i, redo in zip(retry, again, strict=True):
            done[i] = redo
    return done


def pack(pieces: Sequence[str], fits_in_one: Any, joiner: str = " ") -> list[str]:
    """Greedily join consecutive pieces into groups for which `fits_in_one(group_text)` holds.

    A single piece that does not fit alone is split on whitespace, word by word; a single word that
    does not fit is an error (it cannot be split without changing the text).
    """
    groups: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current}{joiner}{piece}" if current else piece
        if fits_in_one(candidate):
            current = candidate
            continue
        if current:
            groups.append(current)
        if fits_in_one(piece):
            current = piece
            continue
        words = piece.split()
        if len(words) <= 1:
            raise PromptError("a single word of the input is too long for the model's context window")
        groups += pack(words, fits_in_one, " ")
        current = ""
    if current:
        groups.append(current)
    return groups
