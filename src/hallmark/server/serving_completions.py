"""POST /v1/completions: what text completions fill into the shared serving skeleton (serving.py).

Prompts are text or token ids, one or several (each with n choices, numbered prompt-major); a
stream sends text pieces with the finish reason on the last one; logprobs are OpenAI's legacy
object with character offsets. response_format and grammar constrain every prompt's output, as
vLLM and llama-server accept them here.
"""

from __future__ import annotations

import json
from typing import Any

from hallmark.engine.request import Request
from hallmark.engine.results import GenerationResult, StreamChunk, TokenLogprob
from hallmark.engine.sampling import SamplingParams
from hallmark.server.engine import ModelEngine
from hallmark.server.errors import APIError
from hallmark.server.protocol import CompletionRequest
from hallmark.server.serving import Endpoint


def completion_logprobs(lps: list[TokenLogprob], offset: int) -> dict[str, Any]:
    """OpenAI's legacy logprobs object; text_offset counts characters from the completion's start."""
    offsets, pos = [], offset
    for lp in lps:
        offsets.append(pos)
        pos += len(lp.text)
    return {
        "tokens": [lp.text for lp in lps],
        "token_logprobs": [lp.logprob for lp in lps],
        "top_logprobs": [{t.text: t.logprob for t in lp.top} for lp in lps],
        "text_offset": offsets,
    }


class Completions(Endpoint):
    path = "/v1/completions"
    id_prefix = "cmpl"
    object = "text_completion"
    chunk_object = "text_completion"
    prompt_param = "prompt"

    def prompt_requests(
        self, engine: ModelEngine, body: CompletionRequest, params: SamplingParams
    ) -> list[Request]:
        prompts = body.prompts()
        if not prompts:
            raise APIError(400, "prompt must not be empty", param="prompt")
        grammar = body.output_grammar()  # one compiled grammar for every prompt
        return [engine.model.prompt_request(prompt, params, grammar=grammar) for prompt in prompts]

    def prompt_chars(self, body: CompletionRequest) -> int:
        return max((len(p) for p in body.prompts()), default=0)

    def log_prompt(self, body: CompletionRequest) -> str:
        return body.prompt if isinstance(body.prompt, str) else json.dumps(body.prompt)

    def choice(
        self, engine: ModelEngine, index: int, result: GenerationResult, body: CompletionRequest
    ) -> dict[str, Any]:
        return {
            "index": index,
            "text": result.text,
            "logprobs": completion_logprobs(result.logprobs or [], 0) if body.logprobs is not None else None,
            "finish_reason": result.finish_reason,
        }

    def stream_choices(
        self, engine: ModelEngine, index: int, piece: StreamChunk, text_before: str, body: CompletionRequest
    ) -> list[dict[str, Any]]:
        lp = (
            completion_logprobs(piece.logprobs or [], len(text_before)) if body.logprobs is not None else None
        )
        finish = piece.final.finish_reason if piece.final is not None else None
        if not (piece.text or finish or lp):
            return []
        return [{"index": index, "text": piece.text, "logprobs": lp, "finish_reason": finish}]

    def partial_choice(
        self, index: int, text: str, result: GenerationResult | None, body: CompletionRequest
    ) -> dict[str, Any]:
        return {"index": index, "text": text, "finish_reason": result and result.finish_reason}


COMPLETIONS = Completions()
