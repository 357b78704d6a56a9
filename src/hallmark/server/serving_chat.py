"""POST /v1/chat/completions: the chat template, n choices, streaming, logprobs, provenance."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse

from hallmark.engine.results import GenerationResult, TokenLogprob
from hallmark.errors import HallmarkError
from hallmark.server.engine import ModelEngine, SequenceGroup
from hallmark.server.errors import APIError, from_hallmark_error
from hallmark.server.protocol import ChatCompletionRequest
from hallmark.server.serving import (
    Exchange,
    ServerState,
    check_fits,
    choice_requests,
    collect,
    final_provenance,
    new_id,
    open_group,
    provenance,
    sampling_from,
    sse,
    usage,
)

ENDPOINT = "/v1/chat/completions"


def logprob_content(engine: ModelEngine, lps: list[TokenLogprob]) -> list[dict[str, Any]]:
    tb = engine.model.backend.token_bytes
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


async def create_chat_completion(
    state: ServerState, body: ChatCompletionRequest, http: HTTPRequest
) -> Response:
    engine = state.engine(body.model)
    limit = body.token_limit()
    params = sampling_from(body, limit, (body.top_logprobs or 0) if body.logprobs else None)
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages
    ]
    try:
        base = engine.model.chat_request(messages, params)
        base.validate(engine.model.backend)
    except HallmarkError as e:
        raise from_hallmark_error(e) from e
    n_prompt = len(base.prompt_ids)
    check_fits(engine, n_prompt, limit)
    request_id = new_id("chatcmpl")
    info, headers = provenance(engine, params, request_id)
    exchange = Exchange(
        state,
        ENDPOINT,
        request_id,
        engine.name,
        http.client.host if http.client else None,
        body.user,
        prompt=json.dumps(messages, ensure_ascii=False),
        params=body.model_dump(exclude={"messages"}, exclude_none=True),
        spec_id=info["watermark"]["spec_id"],
        http=http,
    )
    group = open_group(engine, choice_requests(engine, base, body.n), exchange, n_prompt)
    created = int(time.time())
    head = {
        "id": request_id,
        "created": created,
        "model": engine.name,
        "system_fingerprint": engine.fingerprint,
    }
    if body.stream:
        events = _stream(engine, group, body, head, info, n_prompt, exchange)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    results = await collect(group, http, exchange, n_prompt)
    if results is None:
        return Response(status_code=499)
    response = {
        **head,
        "object": "chat.completion",
        "choices": [_choice(engine, i, r, body.logprobs) for i, r in enumerate(results)],
        "usage": usage(n_prompt, results),
        "timings": results[0].timings.to_dict(),
        "hallmark": final_provenance(info, results),
    }
    exchange.finish("completed", 200, results, n_prompt, response=response)
    return JSONResponse(response, headers=headers)


def _choice(engine: ModelEngine, i: int, r: GenerationResult, logprobs: bool) -> dict[str, Any]:
    return {
        "index": i,
        "message": {"role": "assistant", "content": r.text},
        "logprobs": {"content": logprob_content(engine, r.logprobs or [])} if logprobs else None,
        "finish_reason": r.finish_reason,
    }


async def _stream(
    engine: ModelEngine,
    group: SequenceGroup,
    body: ChatCompletionRequest,
    head: dict[str, Any],
    info: dict[str, Any],
    n_prompt: int,
    exchange: Exchange,
) -> AsyncIterator[str]:
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    results: list[GenerationResult | None] = [None] * body.n
    texts = [""] * body.n
    base = {**head, "object": "chat.completion.chunk"}
    extra = {"usage": None} if include_usage else {}

    def chunk(choices: list[dict[str, Any]], **more: Any) -> str:
        return sse({**base, "choices": choices, **extra, **more})

    status, error = "cancelled", "client disconnected"
    try:
        first = [
            {
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            for i in range(body.n)
        ]
        yield chunk(first, hallmark=info)
        async for i, piece in group:
            exchange.token_arrived()
            texts[i] += piece.text
            lp = {"content": logprob_content(engine, piece.logprobs or [])} if body.logprobs else None
            if piece.text or (lp and lp["content"]):
                delta = {"index": i, "delta": {"content": piece.text}, "logprobs": lp, "finish_reason": None}
                yield chunk([delta])
            if piece.final is not None:
                results[i] = piece.final
                done = {"index": i, "delta": {}, "logprobs": None, "finish_reason": piece.final.finish_reason}
                yield chunk([done])
        final_info = final_provenance(info, results)
        if include_usage:
            yield sse({**base, "choices": [], "usage": usage(n_prompt, results), "hallmark": final_info})
        else:
            yield chunk([], hallmark=final_info)
        yield sse("[DONE]")
        status, error = "completed", None
    except HallmarkError as e:
        status, error = "error", str(e)
        yield sse(APIError(500, str(e), type="server_error").body())
    finally:
        group.close()
        response = {
            **head,
            "object": "chat.completion",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t},
                    "finish_reason": r and r.finish_reason,
                }
                for i, (t, r) in enumerate(zip(texts, results, strict=True))
            ],
            "usage": usage(n_prompt, results),
        }
        http_status = 200 if status != "cancelled" else 499
        exchange.finish(status, http_status, results, n_prompt, response=response, error=error, partial=texts)
