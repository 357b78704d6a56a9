"""The FastAPI app: thin routes over the serving modules, plus auth, health, metrics and detect.

hallmark serve smollm2-135m-instruct gemma-3-270m --api-key s3cret --metrics
hallmark serve smollm2 --lora tuned=./tuned.gguf   # the base and its adapter, one model loaded

Each model file is loaded once: served names on the same file (a base, its `--lora` adapters and
registered fine-tuned names of that base) are views of one loaded model (Model.with_adapters) and
share its engine thread, so their requests batch together; /v1/models names an adapter's base as
its `parent` and `root`, as vLLM does for LoRA modules.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from hallmark import __version__
from hallmark.engine.speculative import SpeculativeConfig
from hallmark.errors import HallmarkError, ModelFileError, WatermarkSpecError
from hallmark.model import Model
from hallmark.provenance import public_keys, signing_key
from hallmark.requestlog import LogRecord, Outcome, RequestLog
from hallmark.server.config import ServerConfig
from hallmark.server.engine import ModelEngine
from hallmark.server.errors import APIError, install_handlers, to_api_error
from hallmark.server.guard import RequestGuard
from hallmark.server.metrics import Metrics
from hallmark.server.protocol import ChatCompletionRequest, CompletionRequest, DetectRequest
from hallmark.server.serving import ServerState, new_id, serve_completion
from hallmark.server.serving_chat import CHAT
from hallmark.server.serving_completions import COMPLETIONS
from hallmark.server.web import install_web

log = logging.getLogger("hallmark.server")


def load_state(config: ServerConfig) -> ServerState:
    """Load every model and start its engine thread (errors surface here, before the port opens).

    A model file is loaded once: a name that resolves to a file already loaded (a registered
    adapter of a served base, say) is a view of that model with its own adapters; so is each
    `--lora` adapter, on the served model it was made for.
    """
    from hallmark.catalog import DEFAULT_MODEL, resolve
    from hallmark.gguf_info import read_adapter_info
    from hallmark.model import load, parse_lora_arg
    from hallmark.policy import load_policy

    policy = load_policy(config.policy)  # a bad policy file fails before any model loads
    served_lora = [parse_served_lora(spec, parse_lora_arg) for spec in config.lora]
    infos = [read_adapter_info(path) for _, path, _ in served_lora]  # bad files fail before loading
    models: list[Model] = []
    try:
        for name in config.models or [os.environ.get("HALLMARK_MODEL", DEFAULT_MODEL)]:
            resolved = resolve(name)
            loaded = next((m for m in models if m.path == resolved.path), None)
            if loaded is not None:  # the file is loaded already: share it
                models.append(loaded.with_adapters(resolved.adapters, resolved.name, resolved.registry))
                continue
            models.append(
                load(
                    name,
                    n_ctx=config.n_ctx,
                    max_sequences=config.max_sequences,
                    n_threads=config.n_threads,
                    n_gpu_layers=config.n_gpu_layers,
                    watermark=config.watermark,
                    watermark_key=config.watermark_key,
                    policy=policy,
                    speculative=SpeculativeConfig(
                        max_draft=config.draft_max, adaptive=config.draft_mode == "adaptive"
                    )
                    if config.draft_max
                    else False,
                )
            )
        for (name, path, scale), info in zip(served_lora, infos, strict=True):
            base = base_for_adapter(info, models)
            models.append(base.with_adapters([(path, scale)], name or Path(path).stem))
        return build_state(models, config)
    except BaseException:
        for model in models:
            model.close()
        raise


def parse_served_lora(spec: str, parse_lora_arg: Any) -> tuple[str | None, str, float]:
    """'[NAME=]PATH[:SCALE]' -> (NAME or None, PATH, SCALE). A '=' inside a path (after a path
    separator) is part of the path."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or "/" in name or os.sep in name:
        name, rest = "", spec
    path, scale = parse_lora_arg(rest)
    return name or None, path, scale


def base_for_adapter(info: Any, models: list[Model]) -> Model:
    """The served model a `--lora` adapter runs on: the one whose file hash the adapter records
    (hallmark.base.sha256), else the first of its architecture. One-line error if none fits."""
    bases = [m for i, m in enumerate(models) if all(m.backend is not o.backend for o in models[:i])]
    if info.base_sha256 is not None:
        match = next((m for m in bases if m.sha256 == info.base_sha256), None)
        if match is None:
            raise ModelFileError(
                f"the LoRA adapter {info.path.name} was trained on a base model (sha256 "
                f"{info.base_sha256[:12]}...) that is not served here; serving: "
                + ", ".join(f"{m.base_name} ({m.sha256[:12]}...)" for m in bases)
            )
        return match
    match = next((m for m in bases if m.architecture == info.architecture), None)
    if match is None:
        raise ModelFileError(
            f"the LoRA adapter {info.path.name} is for {info.architecture}, and no served model is; "
            "serving: " + ", ".join(f"{m.base_name} ({m.architecture})" for m in bases)
        )
    return match


def build_state(models: list[Model], config: ServerConfig) -> ServerState:
    """The server's state for loaded models: an engine thread each, the log, metrics and keys."""
    from hallmark.catalog import find_entry

    names = [m.name for m in models]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise HallmarkError(f"model {twice} is listed twice")
    signing_key()  # create or load the provenance key now: a bad one fails here, not per request
    for model in models:
        if config.watermark is not None:
            _ = model.watermark  # create or load the key now, not during the first request
        _ = model.sha256  # hashing a model file the first time takes ~0.5 s per 250 MB
        if model.policy is not None and model.policy.enabled:
            model.policy.screen("warm up")  # load the classifier now (~0.3 s), not in the first request
    # Rows go to a writer thread: a locked log (another process writing) must never stall the event
    # loop, and a row that cannot be written yet is retried, not dropped (see /health's "log").
    request_log = RequestLog(config.log_db, background=True) if config.log_requests else None
    engines: dict[str, ModelEngine] = {}
    aliases: dict[str, str] = {}
    for model in models:
        # Names on one loaded model share its engine thread: one batch, one KV cache.
        shared = next((e for e in engines.values() if e.model.backend is model.backend), None)
        engines[model.name] = ModelEngine(
            model,
            config.max_waiting,
            config.prefill_chunk,
            config.prefix_cache,
            config.batch_wait_ms / 1e3,
            shares=shared,
        )
        if model.adapters:  # a catalog model's aliases and file name mean it without adapters
            continue
        entry = find_entry(model.name)
        aliases.update({a: model.name for a in entry.aliases} if entry else {})
        if model.path is not None:
            aliases.setdefault(Path(model.path).name, model.name)
    hidden = next((n for n in engines if aliases.get(n, n) != n), None)
    if hidden is not None:
        raise HallmarkError(f"{hidden} cannot be a served name: it is another name of {aliases[hidden]}")
    metrics = Metrics() if config.metrics else None
    if metrics and request_log is not None:
        metrics.watch_log(request_log.stats)
    if metrics:
        for e in engines.values():
            if e.owner is e:  # a shared engine's queue is counted once, under its first name
                metrics.watch_engine(
                    e.name, lambda e=e: e.scheduler.n_running, lambda e=e: e.scheduler.n_waiting
                )
    return ServerState(
        engines,
        aliases,
        request_log,
        metrics,
        api_keys=tuple(config.api_keys),
        max_body_size=config.max_body_size,
        allowed_hosts=tuple(config.allowed_hosts),
        zero_shot=config.zero_shot,
        zero_shot_threads=config.n_threads,
    )


def serve_forever(state: ServerState, config: ServerConfig) -> None:
    """Run the app with uvicorn until Ctrl-C or SIGTERM, then shut down gracefully."""
    uv_config = uvicorn.Config(
        create_app(state),
        host=config.host,
        port=config.port,
        log_level="warning",
        timeout_graceful_shutdown=config.shutdown_timeout,
    )
    GracefulServer(uv_config, state, config.shutdown_timeout).run()


# Seconds before the shutdown grace period ends at which the engines stop: enough for the handlers
# to send their errors and log their rows before uvicorn cancels what is left.
STOP_MARGIN = 1.0


class GracefulServer(uvicorn.Server):
    """uvicorn's server with hallmark's shutdown.

    On the first Ctrl-C or SIGTERM uvicorn stops accepting connections and waits up to
    `--shutdown-timeout` for the requests in flight; `/health` (on a connection still open) answers
    503 from that moment. A moment before the wait ends the engines stop, so every request still
    running ends with OpenAI's error JSON (503 `shutting_down`) or a stream error event, and a
    `cancelled` log row with the tokens it was sent, instead of being cut off by uvicorn with a
    plain-text 500 and no row.
    """

    def __init__(self, config: uvicorn.Config, state: ServerState, grace: float):
        super().__init__(config)
        self.state = state
        self.grace = grace
        self._stopper: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._stopper is None:
            self.state.draining = True
            margin = min(STOP_MARGIN, self.grace / 2)
            self._stopper = threading.Timer(self.grace - margin, self._stop_engines)
            self._stopper.daemon = True
            self._stopper.start()
        super().handle_exit(sig, frame)

    def _stop_engines(self) -> None:
        for engine in self.state.engines.values():
            engine.stop()


def create_app(state: ServerState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Shutdown: uvicorn has already let in-flight requests finish (or cancelled them after the
        # grace period, which logged them as cancelled). Stop the engines, then close the log.
        state.draining = True
        for engine in state.engines.values():
            await asyncio.to_thread(engine.stop)
        if state.request_log is not None:
            await asyncio.to_thread(state.request_log.close, LOG_CLOSE_TIMEOUT)

    app = FastAPI(title="hallmark", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    install_handlers(app, on_error=lambda request, err: _log_rejection(state, request, err))
    app.add_middleware(
        RequestGuard,
        api_keys=state.api_keys,
        max_body_size=state.max_body_size,
        allowed_hosts=state.allowed_hosts,
        on_refusal=lambda scope, err: _log_refusal(state, scope, err),
    )

    @app.get("/health")
    async def health() -> JSONResponse:
        status = "shutting_down" if state.draining else "ok"
        return JSONResponse(
            {
                "status": status,
                "models": {
                    e.name: {
                        "running": e.scheduler.n_running,
                        "waiting": e.scheduler.n_waiting,
                        "slots": e.scheduler.n_slots,
                    }
                    for e in state.engines.values()
                },
                "uptime_s": round(time.time() - state.started, 1),
                # What the web page needs to know before its first call: ask for a key? offer zero-shot?
                "api_key_required": bool(state.api_keys),
                "zero_shot": state.zero_shot,
                "log": state.request_log.stats() if state.request_log is not None else None,
            },
            status_code=503 if state.draining else 200,
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        if state.metrics is None:
            raise APIError(404, "metrics are off; start the server with --metrics", type="not_found_error")
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/provenance/keys")
    async def provenance_keys() -> JSONResponse:
        """The public keys that sign this server's provenance manifests (a JWKS): no API key needed."""
        return JSONResponse(public_keys(create=False))

    @app.get("/v1/models")
    async def list_models() -> JSONResponse:
        data = []
        for e in state.engines.values():
            spec = e.model.watermark_spec
            data.append(
                {
                    "id": e.name,
                    "object": "model",
                    "created": int(state.started),
                    "owned_by": "hallmark",
                    # vLLM's fields for LoRA modules: an adapter's parent is the model it runs on.
                    "root": e.model.base_name,
                    "parent": e.model.base_name if e.model.adapters else None,
                    "hallmark": {
                        # The file's name, not its path: the layout of the server's disk is its own.
                        "file": e.model.path.name if e.model.path else None,
                        "n_ctx": e.model.n_ctx,
                        "slots": e.scheduler.n_slots,
                        "chat_template": e.model.chat_template is not None,
                        "watermark_spec": spec.spec_id if spec else None,
                        "adapters": [{"name": a.name, "scale": a.scale} for a in e.model.adapters],
                    },
                }
            )
        return JSONResponse({"object": "list", "data": data})

    @app.post(CHAT.path)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await serve_completion(state, CHAT, body, request)

    @app.post(COMPLETIONS.path)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await serve_completion(state, COMPLETIONS, body, request)

    @app.post("/v1/detect")
    async def detect(body: DetectRequest) -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(_detect, state, body))

    install_web(app, state)  # the web page at /, the log and manifest verification it uses
    return app


LOGGED_ENDPOINTS = (CHAT.path, COMPLETIONS.path)
LOG_CLOSE_TIMEOUT = 30.0  # seconds the log's writer gets to store the queued rows at shutdown
# A refused request is logged with at most this much of its body: enough to see what was sent,
# never a copy of whatever an attacker posts (5 MB bodies once grew the log by 315 MB in 6 s).
LOGGED_EXCERPT = 4096
_MODEL_FIELD = re.compile(r'"model"\s*:\s*"((?:[^"\\]|\\.){1,200})"')


async def _log_rejection(state: ServerState, request: Request, err: APIError) -> None:
    """Log a generation request refused after its body was read (bad input, overload), once."""
    if request.url.path not in LOGGED_ENDPOINTS or getattr(request.state, "logged", False):
        return  # not a generation endpoint, or the serving code logged it already
    request.state.logged = True
    try:
        body = await request.body()
    except Exception:  # the client may be gone
        body = b""
    client = request.client.host if request.client else None
    await _write_refusal(state, request.url.path, client, err, body)


async def _log_refusal(state: ServerState, scope: dict, err: APIError) -> None:
    """Log a generation request the guard refused before reading its body (auth, size, host)."""
    if scope["path"] in LOGGED_ENDPOINTS:
        client = scope.get("client")
        await _write_refusal(state, scope["path"], client[0] if client else None, err, b"")


async def _write_refusal(
    state: ServerState, endpoint: str, client: str | None, err: APIError, body: bytes
) -> None:
    if state.metrics is not None:
        state.metrics.requests.labels(endpoint, "", Outcome.ERROR).inc()
        state.metrics.refusals.labels(endpoint, str(err.status)).inc()
    if state.request_log is None:
        return
    text = body[:LOGGED_EXCERPT].decode("utf-8", "replace")
    if len(body) > LOGGED_EXCERPT:
        text += f"... [{len(body) - LOGGED_EXCERPT} more bytes not logged]"
    # The model named in the body, found without parsing it (it may be nested 100,000 deep).
    match = _MODEL_FIELD.search(text)
    record = LogRecord(
        id=new_id("rejected"),
        endpoint=endpoint,
        model=match.group(1)[:200] if match else None,
        client=client,
        status=Outcome.ERROR,
        http_status=err.status,
        prompt=text or None,
        response=err.body(),
        error=err.message,
    )
    try:
        state.request_log.write(record)  # queued for the writer thread: returns at once
    except Exception:
        log.exception("could not write the request log")


def _detect(state: ServerState, body: DetectRequest) -> dict:
    """Same answer as `hallmark detect`. With a spec: the served model its tokenizer fingerprint
    names (unless `model` says) and that spec; with a model: its tokenizer and its own spec; with
    neither: every served tokenizer x every served (scheme, key), the best match reported with its
    p-value multiplied by their number (Bonferroni), as `hallmark detect` does with local keys."""
    from dataclasses import replace

    from hallmark.watermark.api import detector_for
    from hallmark.watermark.detect import MultiDetector
    from hallmark.watermark.keys import find_key
    from hallmark.watermark.spec import WatermarkSpec

    if body.zero_shot and not state.zero_shot:
        raise APIError(
            400, "this server runs without the zero-shot detector (--no-zero-shot)", param="zero_shot"
        )
    try:
        engines = list(state.engines.values())
        if body.spec or body.model:
            engine = state.engine(body.model) if body.model else engines[0]
            spec = WatermarkSpec.parse(body.spec) if body.spec else engine.model.watermark_spec
            if body.spec and not body.model:
                engine = next((e for e in engines if e.model.fingerprint == spec.tokenizer), engine)
            if spec is None:
                raise APIError(400, f"{engine.name} is served without a watermark; pass a spec", param="spec")
            # reveal=False: a client learns neither the key store's path nor the names of its keys.
            key = find_key(spec.key_id, reveal=False)
            detectors = [detector_for(engine.model.tokenizer, engine.name, spec, key=key)]
        else:
            by_tokenizer: dict[str, Any] = {}
            for e in engines:
                by_tokenizer.setdefault(e.model.fingerprint, e)  # the first served model of each
            served = {s.spec_id: s for e in engines if (s := e.model.watermark_spec) is not None}
            if not served:
                raise APIError(400, "no model here is served with a watermark; pass a spec", param="spec")
            # One hypothesis per served tokenizer and served (scheme, key): a served model's own
            # spec, and the other served keys and schemes on its tokenizer.
            hypotheses = {
                (fp, s.scheme, s.key_id, s.context_width, s.gamma, s.delta): (e, replace(s, tokenizer=fp))
                for fp, e in by_tokenizer.items()
                for s in served.values()
            }
            detectors = [
                detector_for(e.model.tokenizer, e.name, spec, key=find_key(spec.key_id, reveal=False))
                for e, spec in hypotheses.values()
            ]
        result = MultiDetector(detectors).detect(
            body.text,
            fpr=body.fpr,
            windowed=body.windowed,
            reference=body.reference,
            token_scores=body.token_scores,
        )
        if body.zero_shot is not False and state.zero_shot:
            result.zero_shot = state.zero_shot_detector().assess(body.text, body.zs_fpr)
    except HallmarkError as e:
        err = to_api_error(e)
        if isinstance(e, WatermarkSpecError) and body.spec:
            err.param = "spec"  # the spec the client sent is what is wrong
        raise err from e
    return {"object": "watermark.detection", **result.to_dict()}
