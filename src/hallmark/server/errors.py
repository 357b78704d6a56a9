"""Errors in OpenAI's format: {"error": {"message", "type", "param", "code"}} with the right status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hallmark.engine.scheduler import QueueFullError, StepError
from hallmark.engine.tools import ToolError
from hallmark.errors import (
    BackendError,
    ContextLengthError,
    EngineStopped,
    GrammarError,
    HallmarkError,
    InvalidSamplingError,
    TooManySequencesError,
    UnknownModelError,
)
from hallmark.policy import PolicyViolation
from hallmark.server.protocol import field_path

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


@dataclass(frozen=True)
class ErrorKind:
    """How one exception type is answered over HTTP."""

    status: int
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] | None = None


# Exception type -> HTTP status and OpenAI error type/code: the first matching row wins, so the
# more specific types come first. Every error the engine raises reaches the client through here.
ERROR_TABLE: tuple[tuple[type[Exception], ErrorKind], ...] = (
    (PolicyViolation, ErrorKind(400, code="content_policy_violation")),
    (ContextLengthError, ErrorKind(400, code="context_length_exceeded")),
    (QueueFullError, ErrorKind(503, "server_overloaded", "queue_full", headers={"Retry-After": "1"})),
    (EngineStopped, ErrorKind(503, "server_error", "shutting_down")),
    (TooManySequencesError, ErrorKind(400, code="too_many_sequences", param="n")),
    (UnknownModelError, ErrorKind(404, code="model_not_found", param="model")),
    (StepError, ErrorKind(500, "server_error")),
    (BackendError, ErrorKind(500, "server_error")),
    (InvalidSamplingError, ErrorKind(400, code="invalid_value")),
    # A schema or grammar that does not compile; to_api_error names the kind by the field
    # (invalid_json_schema, OpenAI's invalid_function_parameters for tools, invalid_grammar).
    (GrammarError, ErrorKind(400, code="invalid_grammar")),
    (ToolError, ErrorKind(400, code="invalid_value")),
    (HallmarkError, ErrorKind(400)),  # any other bad input
)


def to_api_error(e: Exception, prompt_param: str = "messages") -> APIError:
    """The HTTP form of an exception raised while serving (see ERROR_TABLE).

    `prompt_param` names the request field that holds the prompt ("messages" or "prompt"), for a
    prompt that does not fit the context window.
    """
    if isinstance(e, APIError):
        return e
    kind = next((k for cls, k in ERROR_TABLE if isinstance(e, cls)), None)
    if kind is None:
        raise e  # not an expected error: the internal-error handler logs it
    message, param = str(e), getattr(e, "param", None) or kind.param
    code = kind.code
    if isinstance(e, GrammarError) and param:
        if param.startswith("tools."):
            code = "invalid_function_parameters"
        elif param.startswith("response_format"):
            code = "invalid_json_schema"
    if isinstance(e, ContextLengthError):
        message = f"This model's maximum context length is {e.n_ctx} tokens. However, "
        if e.max_tokens is None:
            size = f"at least {e.prompt_tokens}" if e.at_least else str(e.prompt_tokens)
            message += f"your request has {size} prompt tokens. Please reduce the length of the prompt."
            param = prompt_param
        else:
            message += (
                f"you requested {e.prompt_tokens + e.max_tokens} tokens ({e.prompt_tokens} in the prompt, "
                f"{e.max_tokens} for the completion). "
                "Please reduce the length of the prompt or the completion."
            )
            param = "max_tokens"
    if isinstance(e, PolicyViolation):
        message = (
            f"This request was refused by the server's request policy ('{e.policy}'): it reads as a "
            f"request for {e.category} (score {e.score:.2f}). Questions about the topic, fiction and "
            "debunking are allowed; the server's operator can show the policy with `hallmark policy show`."
        )
        param = prompt_param
    return APIError(kind.status, message, type=kind.type, param=param, code=code, headers=kind.headers)


def _validation_error(exc: RequestValidationError) -> APIError:
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    if len(loc) > 1 and loc[0] in ("query", "path"):  # a URL's parameter (GET /v1/logs?limit=...)
        param = str(loc[1])
        return APIError(
            400,
            f"Invalid value for {loc[0]} parameter '{param}': {err.get('msg')}.",
            param=param,
            code="invalid_value",
        )
    param = field_path(loc)
    if err.get("type") == "extra_forbidden":
        # The unknown field's own name is the location's last element, which is no known field.
        param = ".".join(p for p in (field_path(loc[:-1]), str(loc[-1])) if p)
        return APIError(
            400,
            f"Unsupported parameter: '{param}' is not supported by this server (hallmark).",
            param=param,
            code="unsupported_parameter",
        )
    if err.get("type") == "json_invalid" or param is None:
        # Not a field's fault: the body itself is not JSON, or not an object of the right shape.
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
        return await respond(request, to_api_error(exc))

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
