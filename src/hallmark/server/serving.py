"""The one serving path that chat and text completions share.

`serve_completion` is the skeleton: sampling parameters from the request body, the endpoint's
engine requests (tokenized and checked against the context window), provenance, submission, then
either a stream of SSE chunks or one JSON response; the request is logged and counted however it
ends. An `Endpoint` (serving_chat.py, serving_completions.py) fills in what differs: how prompts
become requests and how choices and stream chunks look.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse

from hallmark import __version__
from hallmark.engine.generate import in_order
from hallmark.engine.request import Request, check_fits, watermark_applies
from hallmark.engine.results import GenerationResult, StreamChunk
from hallmark.engine.sampling import SamplingParams
from hallmark.errors import ContextLengthError, EngineStopped, HallmarkError
from hallmark.policy import PolicyViolation, rank
from hallmark.provenance import ai_disclosure
from hallmark.requestlog import LogRecord, Outcome, RequestLog
from hallmark.server.engine import ModelEngine, SequenceGroup
from hallmark.server.errors import APIError, to_api_error
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
    max_body_size: int = 8 << 20
    allowed_hosts: tuple[str, ...] = ()
    started: float = field(default_factory=time.time)
    draining: bool = False
    zero_shot: bool = True  # /v1/detect offers the zero-shot assessment
    zero_shot_threads: int | None = None
    _zero_shot_detector: Any = None
    _zero_shot_lock: threading.Lock = field(default_factory=threading.Lock)

    def zero_shot_detector(self) -> Any:
        """The zero-shot detector (hallmark.zeroshot), its scoring models loaded on first use (a few
        seconds, on the worker thread that asks: never the event loop)."""
        from hallmark.zeroshot.detector import ZeroShotDetector

        with self._zero_shot_lock:
            if self._zero_shot_detector is None:
                self._zero_shot_detector = ZeroShotDetector(
                    n_threads=self.zero_shot_threads, show_progress=False
                )
            return self._zero_shot_detector

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


class Endpoint(ABC):
    """What one completion endpoint fills into the skeleton."""

    path: str  # e.g. /v1/chat/completions
    id_prefix: str  # of response ids: chatcmpl, cmpl
    object: str  # of the response: chat.completion, text_completion
    chunk_object: str  # of each stream chunk
    prompt_param: str  # the body field holding the prompt, named in context-length errors

    @abstractmethod
    def prompt_requests(self, engine: ModelEngine, body: Any, params: SamplingParams) -> list[Request]:
        """One engine request per prompt (tokenized; HallmarkError for bad input)."""

    @abstractmethod
    def prompt_chars(self, body: Any) -> int:
        """Characters (or token ids) in the longest prompt of the body, before any tokenizing."""

    @abstractmethod
    def log_prompt(self, body: Any) -> str:
        """The prompt as the request log stores it."""

    @abstractmethod
    def choice(self, engine: ModelEngine, index: int, result: GenerationResult, body: Any) -> dict[str, Any]:
        """A finished choice of the non-streaming response."""

    @abstractmethod
    def stream_choices(
        self, engine: ModelEngine, index: int, piece: StreamChunk, text_before: str, body: Any
    ) -> list[dict[str, Any]]:
        """The stream chunks' choices for one piece of a choice's output (none, one or more)."""

    @abstractmethod
    def partial_choice(
        self, index: int, text: str, result: GenerationResult | None, body: Any
    ) -> dict[str, Any]:
        """A choice as far as it got, for the request log of a stream."""

    def opening_choices(self, n: int, body: Any) -> list[dict[str, Any]] | None:
        """Choices of a first stream chunk sent before any output (chat's role deltas), if any."""
        return None


async def serve_completion(
    state: ServerState, api: Endpoint, body: SamplingFields, http: HTTPRequest
) -> Response:
    engine = state.engine(body.model)
    try:
        params = body.to_sampling_params()
        # Refuse a prompt that cannot fit before spending any time on it...
        fewest = api.prompt_chars(body) // engine.model.longest_token
        if fewest >= engine.model.n_ctx:
            raise ContextLengthError(fewest, engine.model.n_ctx, at_least=True)
        # ...and tokenize and screen (the request policy) off the event loop: other requests' streams
        # and /health go on meanwhile.
        bases = await asyncio.to_thread(_engine_requests, api, engine, body, params)
    except PolicyViolation as e:
        refusal = to_api_error(e, api.prompt_param)
        exchange = new_exchange(state, api, engine, body, http, new_id(api.id_prefix))
        exchange.policy = e.decision
        exchange.finish(
            Outcome.REFUSED, refusal.status, [], None, response=refusal.body(), error=refusal.message
        )
        raise refusal from e
    except HallmarkError as e:
        raise to_api_error(e, api.prompt_param) from e
    n_prompt = sum(len(b.prompt_ids) for b in bases)  # each prompt counts once, whatever n is
    requests = [r for base in bases for r in choice_requests(base, body.n)]
    request_id = new_id(api.id_prefix)
    info, headers = provenance(engine, bases[0], request_id)
    decision = most_severe([b.policy for b in bases])
    if decision is not None:
        info["policy"] = public_decision(decision)
    exchange = new_exchange(state, api, engine, body, http, request_id, info["watermark"]["spec_id"])
    exchange.policy = decision
    group = open_group(engine, requests, exchange, n_prompt)
    head = {
        "id": request_id,
        "created": int(time.time()),
        "model": engine.name,
        "system_fingerprint": engine.fingerprint,
    }
    if body.stream:
        events = _stream(api, engine, group, body, head, info, n_prompt, exchange)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    results = await collect(group, http, exchange, n_prompt)
    if results is None:
        return Response(status_code=499)
    response = {
        **head,
        "object": api.object,
        "choices": [api.choice(engine, i, r, body) for i, r in enumerate(results)],
        "usage": usage(n_prompt, results),
        "timings": results[0].timings.to_dict(),
        "hallmark": final_provenance(engine, info, results),
    }
    exchange.finish(Outcome.COMPLETED, 200, results, n_prompt, response=response)
    return JSONResponse(response, headers=headers)


async def _stream(
    api: Endpoint,
    engine: ModelEngine,
    group: SequenceGroup,
    body: SamplingFields,
    head: dict[str, Any],
    info: dict[str, Any],
    n_prompt: int,
    exchange: Exchange,
) -> AsyncIterator[str]:
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    n = len(group.requests)
    results: list[GenerationResult | None] = [None] * n
    texts = [""] * n
    base = {**head, "object": api.chunk_object}
    extra = {"usage": None} if include_usage else {}
    provenance_sent = False

    def chunk(choices: list[dict[str, Any]]) -> str:
        nonlocal provenance_sent
        more = {} if provenance_sent else {"hallmark": info}  # the first chunk says what this is
        provenance_sent = True
        return sse({**base, "choices": choices, **extra, **more})

    status, error = Outcome.CANCELLED, "client disconnected"
    http_status = 499
    sent = 0  # tokens whose chunks went to the client: what a cut stream's log row counts
    try:
        opening = api.opening_choices(n, body)
        if opening is not None:
            yield chunk(opening)
        async for i, piece in group:
            exchange.token_arrived()
            for choice in api.stream_choices(engine, i, piece, texts[i], body):
                yield chunk([choice])
            sent += len(piece.token_ids)
            texts[i] += piece.text
            if piece.final is not None:
                results[i] = piece.final
        final_info = final_provenance(engine, info, results)
        if include_usage:
            yield sse({**base, "choices": [], "usage": usage(n_prompt, results), "hallmark": final_info})
        else:
            yield sse({**base, "choices": [], "hallmark": final_info})
        yield sse("[DONE]")
        status, error, http_status = Outcome.COMPLETED, None, 200
    except HallmarkError as e:
        err = to_api_error(e, api.prompt_param)
        # The server shutting down cuts the stream short: that is a cancellation, not a failure.
        status = Outcome.CANCELLED if isinstance(e, EngineStopped) else Outcome.ERROR
        error, http_status = err.message, err.status
        yield sse(err.body())
    finally:
        group.close()
        response = {
            **head,
            "object": api.object,
            "choices": [
                api.partial_choice(i, t, r, body) for i, (t, r) in enumerate(zip(texts, results, strict=True))
            ],
            "usage": usage(n_prompt, results),
        }
        exchange.finish(
            status, http_status, results, n_prompt, response=response, error=error, partial=texts, sent=sent
        )


def new_exchange(
    state: ServerState,
    api: Endpoint,
    engine: ModelEngine,
    body: SamplingFields,
    http: HTTPRequest,
    request_id: str,
    spec_id: str | None = None,
) -> Exchange:
    return Exchange(
        state,
        api.path,
        request_id,
        engine.name,
        http.client.host if http.client else None,
        body.user,
        prompt=api.log_prompt(body),
        # by_alias: fields as the client named them (response_format's "schema").
        params=body.model_dump(exclude={api.prompt_param}, exclude_none=True, by_alias=True),
        spec_id=spec_id,
        http=http,
    )


def _engine_requests(api: Endpoint, engine: ModelEngine, body: Any, params: SamplingParams) -> list[Request]:
    """The endpoint's requests, tokenized and checked against the context window (on a worker thread)."""
    requests = api.prompt_requests(engine, body, params)
    for request in requests:
        request.validate(engine.model.n_ctx, engine.model.n_vocab)
        check_fits(len(request.prompt_ids), engine.model.n_ctx, params.max_tokens)
    return requests


def choice_requests(base: Request, n: int) -> list[Request]:
    """n requests for one prompt; with a seed, choice i uses seed + i so choices differ but repeat."""
    if n == 1:
        return [base]
    seed = base.params.seed
    return [
        base.copy_with(base.params if seed is None else base.params.with_overrides(seed=seed + i))
        for i in range(n)
    ]


# -- policy ---------------------------------------------------------------------------------------
def most_severe(decisions: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The request's policy decision: of several prompts', the most severe (then highest score)."""
    known = [d for d in decisions if d is not None]
    return max(known, key=lambda d: rank(d["action"], d["score"])) if known else None


def public_decision(decision: dict[str, Any]) -> dict[str, Any]:
    """What a response tells its client of the policy: which one screened it, and a flag with its
    category. A `log` decision reads as `allow`: logging quietly is the operator's choice."""
    out = {"name": decision["policy"], "sha256": decision["policy_sha256"]}
    if decision["action"] == "flag":
        return {**out, "action": "flag", "category": decision["category"], "score": decision["score"]}
    return {**out, "action": "allow"}


# -- provenance -------------------------------------------------------------------------------------
def provenance(
    engine: ModelEngine, request: Request, request_id: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """The `hallmark` extension object and response headers that mark a response as AI-generated."""
    spec = engine.model.watermark_spec  # the key was loaded (or created) when the server started
    spec_id = spec.spec_id if spec is not None else None
    applied = watermark_applies(engine.model.watermark, request.params)
    disclosure = ai_disclosure(engine.name, spec_id, applied, request.params.greedy)
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


def final_provenance(
    engine: ModelEngine, info: dict[str, Any], results: list[GenerationResult | None]
) -> dict[str, Any]:
    """The provenance object once generation ended: per-choice watermark facts and signed manifests."""
    choices = []
    for i, r in enumerate(results):
        if r is not None and r.watermark is not None:
            choices.append(
                {
                    "index": i,
                    **r.watermark.to_dict(),
                    "human_claims_replaced": r.human_claims_replaced,
                    "disclosure_added": r.disclosure_added,
                }
            )
    # One signed manifest per finished choice (hallmark.provenance): verify with `hallmark verify`.
    manifests = [
        engine.model.sign(r, request_id=info["request_id"], disclosure=info["disclosure"]) if r else None
        for r in results
    ]
    return {**info, "watermark": {**info["watermark"], "choices": choices}, "provenance": manifests}


# -- running --------------------------------------------------------------------------------------
class ClientGone(Exception):
    """The client disconnected before the response was ready."""


async def run_to_completion(
    group: SequenceGroup, http: HTTPRequest, exchange: Exchange
) -> list[GenerationResult]:
    """Final results of all requests; a client that disconnects cancels them (freeing their slots)."""
    results: list[GenerationResult | None] = [None] * len(group.requests)

    async def consume() -> None:
        async for i, chunk in group:
            exchange.token_arrived()  # time to first token, for non-streaming requests too
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
    return in_order(results)


def open_group(
    engine: ModelEngine, requests: list[Request], exchange: Exchange, n_prompt: int
) -> SequenceGroup:
    """Submit the requests; a refusal (full queue, shutdown) is logged and raised as an APIError."""
    try:
        return engine.open(requests)
    except HallmarkError as e:
        err = to_api_error(e)
        exchange.finish(Outcome.ERROR, err.status, [], n_prompt, response=err.body(), error=err.message)
        raise err from e


async def collect(
    group: SequenceGroup, http: HTTPRequest, exchange: Exchange, n_prompt: int
) -> list[GenerationResult] | None:
    """Final results for a non-streaming response; None if the client left (logged as cancelled)."""
    try:
        return await run_to_completion(group, http, exchange)
    except ClientGone:
        exchange.finish(Outcome.CANCELLED, 499, [], n_prompt, error="client disconnected")
        return None
    except HallmarkError as e:
        err = to_api_error(e)
        status = Outcome.CANCELLED if isinstance(e, EngineStopped) else Outcome.ERROR
        exchange.finish(status, err.status, [], n_prompt, response=err.body(), error=err.message)
        raise err from e


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
    policy: dict[str, Any] | None = None  # the request policy's decision, logged with the request
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
        status: Outcome,
        http_status: int,
        results: list[GenerationResult | None],
        prompt_tokens: int | None,
        response: dict[str, Any] | None = None,
        error: str | None = None,
        partial: list[str] | None = None,
        sent: int | None = None,
    ) -> None:
        """Count and log the request's end, once. `partial`: each choice's text as far as it went;
        `sent`: the tokens a stream delivered (the completion tokens of a stream cut short)."""
        if self.done:
            return
        self.done = True
        elapsed = time.perf_counter() - self.t0
        finished = [r for r in results if r is not None]  # a cancelled stream has unfinished choices
        texts = partial if partial is not None else [r.text for r in finished]
        completion = sent if sent is not None else sum(r.completion_tokens for r in finished)
        m = self.state.metrics
        if m:
            m.requests.labels(self.endpoint, self.model, status).inc()
            m.duration.labels(self.endpoint).observe(elapsed)
            m.prompt_tokens.labels(self.model).inc(prompt_tokens or 0)
            m.generated_tokens.labels(self.model).inc(completion)
            m.watermarked_tokens.labels(self.model).inc(
                sum(r.watermark.watermarked_tokens for r in finished if r.watermark)
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
            output=(texts[0] if len(texts) == 1 else json.dumps(texts, ensure_ascii=False))
            if texts
            else None,
            response=response,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            duration_ms=elapsed * 1e3,
            timings=[r.timings.to_dict() for r in finished] or None,
            watermark_spec=self.spec_id,
            error=error,
            policy=self.policy,
        )
        try:
            self.state.request_log.write(record)
        except Exception:  # the log must never break serving
            log.exception("could not write the request log")
