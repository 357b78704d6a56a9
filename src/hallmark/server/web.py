"""The web page (`GET /`) and the two endpoints it needs beyond OpenAI's API.

- `GET /` and `GET /ui/<file>`: the page, plain HTML, CSS and JavaScript from hallmark/web/ (no
  build step, no CDN, works offline). Only the files that directory held when the app was built
  are served, by exact name, so no path in a URL can reach another file. A strict
  Content-Security-Policy allows scripts from this origin only and no inline script, so even text
  that slipped into the page as HTML could not run.
- `GET /v1/logs` and `GET /v1/logs/{id}`: the request log, newest first, with filters. The log
  holds every prompt and answer, so with an API key the guard asks for it as for any /v1 path,
  and without one only a client on this machine (loopback) may read it.
- `POST /v1/provenance/verify`: a text and its manifest (or the response that carries it),
  checked as `hallmark verify` does against this server's signing keys.

The page is static files: a user who never opens it pays nothing, and no route it adds runs on
the generation path.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from hallmark.errors import HallmarkError
from hallmark.requestlog import MAX_ID_CHARS, LoggedRequestNotFound, Outcome
from hallmark.server.errors import APIError, to_api_error
from hallmark.server.protocol import VerifyRequest
from hallmark.server.serving import ServerState

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MEDIA_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # the page changes with hallmark's version; revalidate
}
MAX_LOG_ROWS = 200  # rows per page of the log
# Columns the log table shows; the whole row comes from /v1/logs/{id}.
SUMMARY = (
    "id",
    "created",
    "endpoint",
    "model",
    "client",
    "status",
    "http_status",
    "prompt_tokens",
    "completion_tokens",
    "duration_ms",
    "watermark_spec",
    "error",
)


def install_web(app: FastAPI, state: ServerState) -> None:
    files = {p.name: p for p in WEB_DIR.iterdir() if p.suffix in MEDIA_TYPES} if WEB_DIR.is_dir() else {}

    def page_file(name: str) -> FileResponse:
        path = files.get(name)
        if path is None:
            raise APIError(404, f"no such page file: {name[:100]}", type="not_found_error")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return page_file("index.html")

    @app.get("/ui/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        return page_file(name)

    @app.get("/v1/logs")
    async def list_logs(
        request: Request,
        limit: int = Query(50, ge=1, le=MAX_LOG_ROWS),
        offset: int = Query(0, ge=0, le=10_000_000),
        model: str | None = Query(None, max_length=MAX_ID_CHARS),
        status: Outcome | None = None,
        since: float | None = Query(None, ge=0, le=1e11),
        until: float | None = Query(None, ge=0, le=1e11),
    ) -> JSONResponse:
        log = _readable_log(state, request)
        rows = await asyncio.to_thread(log.recent, limit, model, status, since, until, offset)
        data = [{k: r.get(k) for k in SUMMARY} | {"output": _excerpt(r.get("output"))} for r in rows]
        return JSONResponse({"object": "list", "data": data, "limit": limit, "offset": offset})

    @app.get("/v1/logs/{request_id}")
    async def get_log(request: Request, request_id: str) -> JSONResponse:
        log = _readable_log(state, request)
        try:
            row = await asyncio.to_thread(log.get, request_id)
        except LoggedRequestNotFound:  # its message names the log's path: not the client's
            raise APIError(404, f"no logged request with id {request_id!r}", type="not_found_error") from None
        except HallmarkError as e:
            raise APIError(400, str(e), param="request_id") from None
        return JSONResponse(row)

    @app.post("/v1/provenance/verify")
    async def verify(body: VerifyRequest) -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(_verify, body))


def _readable_log(state: ServerState, request: Request) -> Any:
    if state.request_log is None:
        raise APIError(404, "the request log is off (the server runs with --no-log)", type="not_found_error")
    client = request.client.host if request.client else ""
    if not state.api_keys and not _is_loopback(client):
        raise APIError(
            403,
            "the request log is readable only from this machine when the server has no API key",
            type="permission_error",
        )
    return state.request_log


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _excerpt(text: str | None, limit: int = 200) -> str | None:
    return text if text is None or len(text) <= limit else text[: limit - 1] + "…"


def _verify(body: VerifyRequest) -> dict[str, Any]:
    from hallmark.provenance import find_manifest, parse_manifest_json, verify_manifest

    try:
        doc = parse_manifest_json(body.manifest) if isinstance(body.manifest, str) else body.manifest
        result = verify_manifest(body.text, find_manifest(doc, body.text))
    except HallmarkError as e:
        err = to_api_error(e)
        err.param = "manifest"
        raise err from e
    return {"object": "provenance.verification", **result.to_dict()}
