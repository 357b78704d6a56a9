"""A generation request: prompt tokens, sampling parameters and the watermark scheme to use."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from hallmark.backends.base import Backend
from hallmark.engine.sampling import SamplingParams
from hallmark.errors import ContextLengthError, InvalidSamplingError, PromptError
from hallmark.watermark.schemes import Scheme


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    watermark: Scheme | None = None  # the model's scheme; used when params.watermark and not greedy

    def validate(self, backend: Backend) -> None:
        """Raise the user-facing error for a request that cannot run, before any work is done."""
        if not self.prompt_ids:
            raise PromptError("the prompt is empty (it tokenizes to no tokens)")
        if len(self.prompt_ids) >= backend.n_ctx:
            raise ContextLengthError(len(self.prompt_ids), backend.n_ctx)
        bias = self.params.logit_bias
        if bias and max(bias) >= backend.n_vocab:
            raise InvalidSamplingError(
                f"logit_bias token id {max(bias)} is outside the vocabulary (size {backend.n_vocab})"
            )


def new_seed() -> int:
    return secrets.randbits(63)
