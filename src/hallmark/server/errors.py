"""Errors in OpenAI's format: {"error": {"message", "type", "param", "code"}} with the right status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hallmark.engine.scheduler import QueueFullError
from hallmark.errors import ContextLengthError, HallmarkError, UnknownModelError

log = logging.getLogger("hallmark.server")


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_hallmark_error(e: HallmarkError) -> APIError:
    """The HTTP form of an error raised by the engine for bad input or overload."""
    if isinstance(e, ContextLengthError):
        return APIError(
            400,
            f"This model's maximum context length is {e.n_ctx} tokens. However, your request has "
            f"{e.prompt_tokens} prompt tokens. Please reduce the length of the prompt.",
            param="messages",
            code="context_length_exceeded",
        )
    if isinstance(e, QueueFullError):
        return APIError(
            503, str(e), type="server_overloaded", code="queue_full", headers={"Retry-After": "1"}
        )
    if isinstance(e, UnknownModelError):
        return APIError(404, str(e), param="model", code="model_not_found")
    return APIError(400, str(e))


def _validation_error(exc: RequestValidationError) -> APIError:
    err = exc.errors()[0]
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    if err.get("type") == "extra_forbidden":
        return APIError(
            400,
            f"Unsupported parameter: '{param}' is not supported by this server (hallmark).",
            param=param,
            code="unsupported_parameter",
        )
    if err.get("type") in ("json_invalid", "model_attributes_type") or not loc:
        return APIError(400, f"The request body is not valid JSON for this endpoint: {err.get('msg')}")
    if err.get("type") == "missing":
        return APIError(
            400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )
    return APIError(400, f"Invalid value for '{param}': {err.get('msg')}.", param=param, code="invalid_value")


OnError = Callable[[Request, APIError], Awaitable[None]]


def install_handlers(app: FastAPI, on_error: OnError | None = None) -> None:
    """Every error becomes OpenAI's JSON; `on_error` sees each one (the server logs rejections)."""

    async def respond(request: Request, err: APIError) -> JSONResponse:
        if on_error is not None:
            await on_error(request, err)
        return err.response()

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return await respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await respond(request, _validation_error(exc))

    @app.exception_handler(HallmarkError)
    async def _hallmark(request: Request, exc: HallmarkError) -> JSONResponse:
        return await respond(request, from_hallmark_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return await respond(
            request, APIError(exc.status_code, str(exc.detail), type=kind, headers=exc.headers)
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return await respond(
            request, APIError(500, f"internal server error: {type(exc).__name__}", type="server_error")
        )
