"""hallmark's server app on the deterministic fake backend, in-process, for the serving unit tests.

Requests go through httpx's ASGI transport (the official openai client rides on the same httpx
client), so no port or model file is involved; `log_rows()` reads the request log back once the
server's log writer has stored everything queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai

from hallmark.backends.fake import FakeBackend
from hallmark.model import Model
from hallmark.policy import load_policy
from hallmark.requestlog import RequestLog
from hallmark.server.app import build_state, create_app
from hallmark.server.config import ServerConfig

MODEL = "fake"


class FakeServer:
    """The app serving one fake model; `backend` takes FakeBackend's arguments, the rest ServerConfig's
    (`policy`: the request policy the model screens with, none by default)."""

    def __init__(self, tmp_path: Path, backend: dict[str, Any] | None = None, **config: Any):
        self.backend = FakeBackend(**{"n_ctx": 512, "max_sequences": 2, **(backend or {})})
        # No zero-shot detector (it loads both shipped models) unless a test asks for one.
        config = {"zero_shot": False, **config}
        self.config = ServerConfig(log_db=str(tmp_path / "log.db"), batch_wait_ms=0, **config)
        # The request policy only when asked for (policy="default" or a file): most tests need none.
        policy = load_policy(self.config.policy) if self.config.policy else None
        self.model = Model(self.backend, MODEL, policy=policy)
        self.state = build_state([self.model], self.config)
        self.app = create_app(self.state)

    def call(self, fn: Callable[[openai.AsyncOpenAI, httpx.AsyncClient], Awaitable[Any]]) -> Any:
        """Run `fn(client, http)` with an openai AsyncOpenAI client and an httpx client on the app."""

        async def main() -> Any:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                client = openai.AsyncOpenAI(
                    base_url="http://localhost/v1", api_key="none", http_client=http, max_retries=0
                )
                return await fn(client, http)

        return asyncio.run(main())

    def requests(self, *calls: tuple[str, str, dict[str, Any]]) -> list[httpx.Response]:
        """Run (method, url, httpx keyword arguments) calls in order on one client; the responses."""

        async def send(_: openai.AsyncOpenAI, http: httpx.AsyncClient) -> list[httpx.Response]:
            return [await http.request(method, url, **kw) for method, url, kw in calls]

        return self.call(send)

    def log_rows(self) -> list[dict[str, Any]]:
        assert self.state.request_log.flush(10)  # the server writes its rows from a queue
        log = RequestLog(self.config.log_db)
        try:
            return log.recent(100)
        finally:
            log.close()

    def close(self) -> None:
        for engine in self.state.engines.values():
            engine.stop()
        self.state.request_log.close()
        self.model.close()
