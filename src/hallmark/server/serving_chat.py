"""POST /v1/chat/completions: what chat fills into the shared serving skeleton (serving.py).

Messages go through the model's chat template; a stream opens with each choice's role, sends
content deltas, then a chunk with the finish reason; logprobs are OpenAI's `content` list.
"""

from __future__ import annotations

import json
from typing import Any

from hallmark.engine.request import Request
from hallmark.engine.results import GenerationResult, StreamChunk, TokenLogprob
from hallmark.engine.sampling import SamplingParams
from hallmark.server.engine import ModelEngine
from hallmark.server.protocol import ChatCompletionRequest
from hallmark.server.serving import Endpoint


def logprob_content(engine: ModelEngine, lps: list[TokenLogprob]) -> list[dict[str, Any]]:
    tb = engine.model.tokenizer.token_bytes
    return [
        {
            "token": lp.text,
            "logprob": lp.logprob,
            "bytes": list(tb(lp.token)),
            "top_logprobs": [
                {"token": t.text, "logprob": t.logprob, "bytes": list(tb(t.token))} for t in lp.top
            ],
        }
        for lp in lps
    ]


def _messages(body: ChatCompletionRequest) -> list[dict[str, str]]:
    # OpenAI's "developer" role is the system prompt of newer models; templates know "system".
    return [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages
    ]


class ChatCompletions(Endpoint):
    path = "/v1/chat/completions"
    id_prefix = "chatcmpl"
    object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    prompt_param = "messages"

    def prompt_requests(
        self, engine: ModelEngine, body: ChatCompletionRequest, params: SamplingParams
    ) -> list[Request]:
        return [engine.model.chat_request(_messages(body), params)]

    def prompt_chars(self, body: ChatCompletionRequest) -> int:
        return sum(len(m.text()) for m in body.messages)

    def log_prompt(self, body: ChatCompletionRequest) -> str:
        return json.dumps(_messages(body), ensure_ascii=False)

    def choice(
        self, engine: ModelEngine, index: int, result: GenerationResult, body: ChatCompletionRequest
    ) -> dict[str, Any]:
        return {
            "index": index,
            "message": {"role": "assistant", "content": result.text},
            "logprobs": {"content": logprob_content(engine, result.logprobs or [])}
            if body.logprobs
            else None,
            "finish_reason": result.finish_reason,
        }

    def opening_choices(self, n: int) -> list[dict[str, Any]]:
        return [
            {
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            for i in range(n)
        ]

    def stream_choices(
        self,
        engine: ModelEngine,
        index: int,
        piece: StreamChunk,
        text_before: str,
        body: ChatCompletionRequest,
    ) -> list[dict[str, Any]]:
        out = []
        lp = {"content": logprob_content(engine, piece.logprobs or [])} if body.logprobs else None
        if piece.text or (lp and lp["content"]):
            out.append(
                {"index": index, "delta": {"content": piece.text}, "logprobs": lp, "finish_reason": None}
            )
        if piece.final is not None:
            out.append(
                {"index": index, "delta": {}, "logprobs": None, "finish_reason": piece.final.finish_reason}
            )
        return out

    def partial_choice(self, index: int, text: str, result: GenerationResult | None) -> dict[str, Any]:
        return {
            "index": index,
            "message": {"role": "assistant", "content": text},
            "finish_reason": result and result.finish_reason,
        }


CHAT = ChatCompletions()
