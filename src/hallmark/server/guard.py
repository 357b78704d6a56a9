"""The server's front door: what must be decided before a request body is read or parsed.

An ASGI middleware around the routes. In order, for every HTTP request:

1. Without an API key, the server answers only requests addressed to this machine: a Host (and,
   from a browser, an Origin) that is localhost, an IP address or a name given with
   `--allowed-host`. That stops DNS rebinding and other web pages from using a local server.
2. With a key, `/v1/*`, `/metrics` and `/openapi.json` need it (`/health` and the provenance
   public key at `/v1/provenance/keys` do not): checked in
   constant time from the headers alone, so an unauthenticated body is never read (a 100 MB body
   without a key used to be read, parsed and logged whole).
3. The body is read here, up to `max_body_size` bytes (413 beyond, from Content-Length before a
   byte is read), and handed to the app from memory.
4. An unexpected exception becomes OpenAI's 500 JSON here, and the connection stays usable
   (Starlette's own handler re-raises, and uvicorn then drops the keep-alive connection); a
   generation request it ends is logged if the serving code had not logged it yet.

Refusals of the generation endpoints are written to the request log (without the body) and counted.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from hallmark.server.errors import APIError

log = logging.getLogger("hallmark.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
OnRefusal = Callable[[Scope, APIError], Awaitable[None]]

PROTECTED_PREFIXES = ("/v1/", "/metrics", "/openapi.json")
# Public even with a key: the provenance public key, so that anyone can verify a response.
PUBLIC_PATHS = frozenset({"/v1/provenance/keys"})
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})


def host_is_allowed(host: str, allowed: frozenset[str]) -> bool:
    """localhost, any IP literal, or a configured name (an attacker's DNS name is none of these)."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("["):  # [::1]:8000
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        name = name.rsplit(":", 1)[0]
    if name in LOCAL_NAMES or name in allowed or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        api_keys: tuple[str, ...],
        max_body_size: int,
        allowed_hosts: tuple[str, ...] = (),
        on_refusal: OnRefusal | None = None,
    ):
        self.app = app
        self.api_keys = tuple(k.encode() for k in api_keys)
        self.max_body_size = max_body_size
        self.allowed_hosts = frozenset(h.lower().rstrip(".") for h in allowed_hosts)
        self.on_refusal = on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        refusal = self._refusal(scope["path"], headers)
        if refusal is None:
            body, refusal = await self._read_body(headers, receive)
        if refusal is not None:
            if self.on_refusal is not None:
                await self.on_refusal(scope, refusal)
            await _respond(send, refusal)
            return
        await self._run(scope, _replay(body, receive), send)

    def _refusal(self, path: str, headers: dict[str, str]) -> APIError | None:
        if not self.api_keys:
            for header in ("host", "origin"):
                value = headers.get(header)
                if value is None or (header == "origin" and value == "null"):
                    continue
                try:
                    host = value if header == "host" else urlsplit(value).netloc
                except ValueError:  # "http://[" and the like: not a host of ours
                    host = ""
                if not host_is_allowed(host, self.allowed_hosts):
                    return APIError(
                        403,
                        f"{header.capitalize()} {value!r} is not allowed: a server without an API key "
                        "answers only requests addressed to localhost or an IP address; start it with "
                        "--allowed-host NAME or an API key",
                        type="permission_error",
                        code="host_not_allowed",
                    )
            return None
        if not path.startswith(PROTECTED_PREFIXES) or path in PUBLIC_PATHS:
            return None
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return APIError(
                401,
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                code="missing_api_key",
            )
        presented = token.strip().encode("latin-1")
        # Compare with every key, whatever matches, so that timing tells nothing about the keys.
        matches = [hmac.compare_digest(presented, key) for key in self.api_keys]
        if not any(matches):
            return APIError(401, "Incorrect API key provided.", code="invalid_api_key")
        return None

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> tuple[bytes, APIError | None]:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_size:
            return b"", self._too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_size:
                return b"", self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), None

    def _too_large(self) -> APIError:
        return APIError(
            413,
            f"The request body is larger than this server accepts ({self.max_body_size} bytes; "
            "--max-body-size).",
            code="request_too_large",
        )

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as e:  # a bug: answer as OpenAI would, keep the connection, log the traceback
            log.exception("internal error")
            err = APIError(500, f"internal server error: {type(e).__name__}", type="server_error")
            if self.on_refusal is not None and not scope.get("state", {}).get("logged"):
                await self.on_refusal(scope, err)  # no request ends without its log row
            if not started:
                await _respond(send, err)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields the body read by the guard once, then waits for the real client's
    next message (a disconnect, which handlers watch for)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(send: Send, err: APIError) -> None:
    response = err.response()
    await send(
        {"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers}
    )
    await send({"type": "http.response.body", "body": response.body})
