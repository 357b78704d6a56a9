"""POST /v1/completions: text (or token-id) prompts, n choices each, streaming, logprobs, provenance."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse

from hallmark.engine.request import Request
from hallmark.engine.results import GenerationResult, TokenLogprob
from hallmark.errors import HallmarkError
from hallmark.server.engine import SequenceGroup
from hallmark.server.errors import APIError, from_hallmark_error
from hallmark.server.protocol import CompletionRequest
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

ENDPOINT = "/v1/completions"


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


async def create_completion(state: ServerState, body: CompletionRequest, http: HTTPRequest) -> Response:
    engine = state.engine(body.model)
    limit = body.token_limit()
    params = sampling_from(body, limit, body.logprobs)
    prompts = body.prompts()
    if not prompts:
        raise APIError(400, "prompt must not be empty", param="prompt")
    requests: list[Request] = []
    n_prompt = 0
    try:
        for prompt in prompts:
            base = engine.model.prompt_request(prompt, params)
            base.validate(engine.model.backend)
            check_fits(engine, len(base.prompt_ids), limit)
            n_prompt += len(base.prompt_ids)
            requests += choice_requests(engine, base, body.n)
    except HallmarkError as e:
        err = from_hallmark_error(e)
        err.param = err.param if err.code != "context_length_exceeded" else "prompt"
        raise err from e
    request_id = new_id("cmpl")
    info, headers = provenance(engine, params, request_id)
    exchange = Exchange(
        state,
        ENDPOINT,
        request_id,
        engine.name,
        http.client.host if http.client else None,
        body.user,
        prompt=body.prompt if isinstance(body.prompt, str) else json.dumps(body.prompt),
        params=body.model_dump(exclude={"prompt"}, exclude_none=True),
        spec_id=info["watermark"]["spec_id"],
        http=http,
    )
    group = open_group(engine, requests, exchange, n_prompt)
    head = {
        "id": request_id,
        "created": int(time.time()),
        "model": engine.name,
        "system_fingerprint": engine.fingerprint,
    }
    if body.stream:
        events = _stream(group, body, head, info, n_prompt, exchange)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    results = await collect(group, http, exchange, n_prompt)
    if results is None:
        return Response(status_code=499)
    response = {
        **head,
        "object": "text_completion",
        "choices": [
            {
                "index": i,
                "text": r.text,
                "logprobs": completion_logprobs(r.logprobs or [], 0) if body.logprobs is not None else None,
                "finish_reason": r.finish_reason,
            }
            for i, r in enumerate(results)
        ],
        "usage": usage(n_prompt, results),
        "timings": results[0].timings.to_dict(),
        "hallmark": final_provenance(info, results),
    }
    exchange.finish("completed", 200, results, n_prompt, response=response)
    return JSONResponse(response, headers=headers)


async def _stream(
    group: SequenceGroup,
    body: CompletionRequest,
    head: dict[str, Any],
    info: dict[str, Any],
    n_prompt: int,
    exchange: Exchange,
) -> AsyncIterator[str]:
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    n = len(group.subs)
    results: list[GenerationResult | None] = [None] * n
    texts = [""] * n
    base = {**head, "object": "text_completion"}
    extra = {"usage": None} if include_usage else {}
    status, error = "cancelled", "client disconnected"
    first = True
    try:
        async for i, piece in group:
            exchange.token_arrived()
            lp = (
                completion_logprobs(piece.logprobs or [], len(texts[i]))
                if body.logprobs is not None
                else None
            )
            texts[i] += piece.text
            finish = piece.final.finish_reason if piece.final is not None else None
            if piece.final is not None:
                results[i] = piece.final
            if piece.text or finish or lp:
                choice = {"index": i, "text": piece.text, "logprobs": lp, "finish_reason": finish}
                more = {"hallmark": info} if first else {}
                first = False
                yield sse({**base, "choices": [choice], **extra, **more})
        final_info = final_provenance(info, results)
        if include_usage:
            yield sse({**base, "choices": [], "usage": usage(n_prompt, results), "hallmark": final_info})
        else:
            yield sse({**base, "choices": [], "hallmark": final_info})
        yield sse("[DONE]")
        status, error = "completed", None
    except HallmarkError as e:
        status, error = "error", str(e)
        yield sse(APIError(500, str(e), type="server_error").body())
    finally:
        group.close()
        response = {
            **head,
            "object": "text_completion",
            "choices": [
                {"index": i, "text": t, "finish_reason": r and r.finish_reason}
                for i, (t, r) in enumerate(zip(texts, results, strict=True))
            ],
            "usage": usage(n_prompt, results),
        }
        http_status = 200 if status != "cancelled" else 499
        exchange.finish(status, http_status, results, n_prompt, response=response, error=error, partial=texts)
