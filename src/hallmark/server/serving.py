"""What chat and text completions share: server state, sampling, provenance, running, logging."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request as HTTPRequest

from hallmark import __version__
from hallmark.engine.request import Request
from hallmark.engine.results import GenerationResult
from hallmark.engine.sampling import SamplingParams
from hallmark.errors import HallmarkError
from hallmark.requestlog import LogRecord, RequestLog
from hallmark.server.engine import ModelEngine, SequenceGroup
from hallmark.server.errors import APIError, from_hallmark_error
from hallmark.server.metrics import Metrics
from hallmark.server.protocol import SamplingFields

log = logging.getLogger("hallmark.server")


@dataclass
class ServerState:
    engines: dict[str, ModelEngine]  # by model name
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> model name
    request_log: RequestLog | None = None
    metrics: Metrics | None = None
    api_keys: tuple[str, ...] = ()
    started: float = field(default_factory=time.time)
    draining: bool = False

    def engine(self, name: str) -> ModelEngine:
        real = self.aliases.get(name, name)
        if real not in self.engines:
            raise APIError(
                404,
                f"The model '{name}' does not exist on this server; it serves: {', '.join(self.engines)}.",
                param="model",
                code="model_not_found",
            )
        return self.engines[real]


def sampling_from(body: SamplingFields, limit: int | None, logprobs: int | None) -> SamplingParams:
    """hallmark's SamplingParams from an OpenAI request; unset fields keep hallmark's defaults."""
    fields: dict[str, Any] = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "repetition_penalty": body.repetition_penalty,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "seed": body.seed,
        "logprobs": logprobs,
    }
    overrides = {k: v for k, v in fields.items() if v is not None}
    if body.logit_bias:
        overrides["logit_bias"] = {int(k): v for k, v in body.logit_bias.items()}
    # OpenAI semantics: without max_tokens, generate until the model stops or the context is full.
    overrides["max_tokens"] = limit
    overrides["stop"] = body.stop_list()
    try:
        return SamplingParams(**overrides)
    except HallmarkError as e:
        raise APIError(400, str(e), code="invalid_value") from e


def choice_requests(engine: ModelEngine, base: Request, n: int) -> list[Request]:
    """n sequences of one prompt; with a seed, choice i uses seed + i so choices differ but repeat."""
    seed = base.params.seed
    return [
        Request(
            base.prompt_ids,
            base.params if seed is None else base.params.with_overrides(seed=seed + i),
            base.watermark,
        )
        for i in range(n)
    ]


def check_fits(engine: ModelEngine, prompt_tokens: int, limit: int | None) -> None:
    """400 for a request that cannot fit the context window: never truncate silently."""
    n_ctx = engine.model.n_ctx
    if limit is not None and prompt_tokens + limit > n_ctx:
        raise APIError(
            400,
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{prompt_tokens + limit} tokens ({prompt_tokens} in the prompt, {limit} for the completion). "
            f"Please reduce the length of the prompt or the completion.",
            param="max_tokens",
            code="context_length_exceeded",
        )


# -- provenance -------------------------------------------------------------------------------------
def provenance(
    engine: ModelEngine, params: SamplingParams, request_id: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """The `hallmark` extension object and response headers that mark a response as AI-generated."""
    spec = engine.model.watermark_spec  # the key was loaded (or created) when the server started
    spec_id = spec.spec_id if spec is not None else None
    applied = spec is not None and params.watermark and not params.greedy
    disclosure = (
        f"AI-generated text from the language model {engine.name}, served by hallmark; "
        "not written by a person."
    )
    if applied:
        disclosure += (
            f" It carries the statistical watermark {spec_id}; "
            "verify with POST /v1/detect or `hallmark detect`."
        )
    elif params.greedy:
        disclosure += " Greedy decoding (temperature 0) carries no watermark."
    info = {
        "ai_generated": True,
        "disclosure": disclosure,
        "model": engine.name,
        "request_id": request_id,
        "generator": f"hallmark/{__version__}",
        "watermark": {"spec_id": spec_id, "applied": applied},
    }
    headers = {
        "X-Request-Id": request_id,
        "X-Hallmark-AI-Generated": "true",
        "X-Hallmark-Model": engine.name,
        "X-Hallmark-Watermark": spec_id if applied and spec_id else "none",
        "X-Hallmark-Disclosure": disclosure,
    }
    return info, headers


def final_provenance(info: dict[str, Any], results: list[GenerationResult | None]) -> dict[str, Any]:
    """The provenance object once generation ended: per-choice watermark facts added."""
    choices = []
    for i, r in enumerate(results):
        if r is not None and r.watermark is not None:
            choices.append({"index": i, **r.watermark.to_dict()})
    return {**info, "watermark": {**info["watermark"], "choices": choices}}


# -- running --------------------------------------------------------------------------------------
async def run_to_completion(group: SequenceGroup, http: HTTPRequest) -> list[GenerationResult]:
    """Final results of all sequences; a client that disconnects cancels them (freeing their slots)."""
    results: list[GenerationResult | None] = [None] * len(group.subs)

    async def consume() -> None:
        async for i, chunk in group:
            if chunk.final is not None:
                results[i] = chunk.final

    task = asyncio.create_task(consume())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await http.is_disconnected():
                raise ClientGone()
        task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        group.close()
    return [r for r in results if r is not None]


class ClientGone(Exception):
    """The client disconnected before the response was ready."""


def open_group(
    engine: ModelEngine, requests: list[Request], exchange: Exchange, n_prompt: int
) -> SequenceGroup:
    """Submit the sequences; a refusal (full queue, shutdown) is logged and raised as an APIError."""
    try:
        return engine.open(requests)
    except Exception as e:
        err = submit_errors(e)
        exchange.finish("error", err.status, [], n_prompt, error=err.message)
        raise err from e


async def collect(
    group: SequenceGroup, http: HTTPRequest, exchange: Exchange, n_prompt: int
) -> list[GenerationResult] | None:
    """Final results for a non-streaming response; None if the client left (logged as cancelled)."""
    try:
        return await run_to_completion(group, http)
    except ClientGone:
        exchange.finish("cancelled", 499, [], n_prompt, error="client disconnected")
        return None
    except HallmarkError as e:
        exchange.finish("error", 500, [], n_prompt, error=str(e))
        raise APIError(500, str(e), type="server_error") from e


def submit_errors(e: Exception) -> APIError:
    if isinstance(e, APIError):
        return e
    if isinstance(e, HallmarkError):
        return from_hallmark_error(e)
    if isinstance(e, RuntimeError):  # the engine is shutting down
        return APIError(503, str(e), type="server_error", code="shutting_down")
    raise e


def sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, results: list[GenerationResult | None]) -> dict[str, Any]:
    completion = sum(r.completion_tokens for r in results if r is not None)
    cached = sum(r.timings.cache_n for r in results if r is not None)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": min(cached, prompt_tokens)},
    }


# -- logging and metrics ----------------------------------------------------------------------------
@dataclass
class Exchange:
    """Bookkeeping for one HTTP request: what to log and count when it ends, however it ends."""

    state: ServerState
    endpoint: str
    request_id: str
    model: str
    client: str | None
    user: str | None
    prompt: str
    params: dict[str, Any]
    spec_id: str | None
    http: HTTPRequest | None = None
    t0: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    done: bool = False

    def __post_init__(self) -> None:
        if self.http is not None:
            self.http.state.logged = True  # from here on the serving code logs this request

    def token_arrived(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            if self.state.metrics:
                self.state.metrics.ttft.labels(self.model).observe(self.first_token_at - self.t0)

    def finish(
        self,
        status: str,
        http_status: int,
        results: list[GenerationResult | None],
        prompt_tokens: int | None,
        response: dict[str, Any] | None = None,
        error: str | None = None,
        partial: list[str] | None = None,
    ) -> None:
        if self.done:
            return
        self.done = True
        elapsed = time.perf_counter() - self.t0
        texts = partial if partial is not None else [r.text if r else "" for r in results]
        completion = sum(r.completion_tokens for r in results if r is not None)
        m = self.state.metrics
        if m:
            m.requests.labels(self.endpoint, self.model, status).inc()
            m.duration.labels(self.endpoint).observe(elapsed)
            m.prompt_tokens.labels(self.model).inc(prompt_tokens or 0)
            m.generated_tokens.labels(self.model).inc(completion)
            m.watermarked_tokens.labels(self.model).inc(
                sum(r.watermark.watermarked_tokens for r in results if r is not None and r.watermark)
            )
        if self.state.request_log is None:
            return
        record = LogRecord(
            id=self.request_id,
            endpoint=self.endpoint,
            model=self.model,
            client=self.client,
            user=self.user,
            status=status,
            http_status=http_status,
            prompt=self.prompt,
            params=self.params,
            output=texts[0] if len(texts) == 1 else json.dumps(texts, ensure_ascii=False),
            response=response,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            duration_ms=elapsed * 1e3,
            timings=[r.timings.to_dict() for r in results if r is not None] or None,
            watermark_spec=self.spec_id,
            error=error,
        )
        try:
            self.state.request_log.write(record)
        except Exception:  # the log must never break serving
            log.exception("could not write the request log")
