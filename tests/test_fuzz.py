"""Property-based fuzzing of the OpenAI-compatible server, in-process on the deterministic fake backend.

The contract, for every input, with and without an API key:

- the status is below 500 (a 500 is only for a failed backend step, which nothing here injects);
- a 4xx body is OpenAI's error JSON, `{"error": {"message", "type", "param", "code"}}` (a string
  message and type, param and code strings or null), and so is an error event inside a stream;
- no Python traceback in any response, and none logged by the server (an exception the server
  logs with its traceback is one it did not expect);
- an answer within HALLMARK_FUZZ_TIMEOUT seconds (default 20): no hang;
- each request to /v1/chat/completions and /v1/completions leaves exactly one new row in the
  request log, whose `http_status` is the status the client saw;
- a request to a /v1/ endpoint of a server that requires a key, sent without it or with a wrong
  one, is a 401 whatever its body (malformed, huge, nested);
- no request kills a model's engine thread (one that dies fails the request at once, not after
  the timeout, and the app is rebuilt for the next example);
- a field of the completion endpoints or /v1/detect sent with a value of the wrong JSON type (a
  string for a number, a bool for an integer, a number for a bool...) is a 400 naming that field:
  never silently coerced, as OpenAI refuses `"temperature": "0.5"` too.

Two sources of inputs: schemathesis loads the app's OpenAPI schema through its ASGI integration and
generates positive and negative requests for every operation in it, once per auth mode (no key
needed; the right key; no key; a wrong key); and the hypothesis strategies in fuzz_strategies.py
build raw bodies beyond the schema (lone surrogates, NUL, bidi and combining marks, control-token
text, 10,000-deep nesting, type confusion, huge numbers and sizes, bodies that are not JSON), plus
odd methods, paths, Host and Origin headers. Everything is sent as bytes through httpx's ASGI
transport (what the openai client would refuse to send), under one timeout and one watch on the
engine threads. The inputs that once broke the server are pinned as explicit @example()s.

Every run is seeded (derandomized) and bounded, so CI sees the same examples each time:

    pytest tests/test_fuzz.py                                   # 25 examples per test, well under 30 s
    HALLMARK_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py       # a longer hunt
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import reprlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import hypothesis.core
import hypothesis.vendor.pretty
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet

from hallmark.backends.fake import FakeBackend
from hallmark.model import Model
from hallmark.server.app import build_state, create_app
from hallmark.server.config import ServerConfig
from hallmark.server.serving import ServerState
from tests import fuzz_strategies as fs


def show_falsifying_examples() -> None:
    """Undo what schemathesis does to hypothesis for the whole process (its pytest plugin on load, or
    its first strategy): it swaps the printer of falsifying examples for one that prints nothing, a
    speed-up for its own huge cases, which leaves a failure here without its input."""
    pretty = getattr(hypothesis.vendor.pretty, "RepresentationPrinter", None)
    if pretty is not None and hasattr(hypothesis.core, "RepresentationPrinter"):
        hypothesis.core.RepresentationPrinter = pretty  # type: ignore[attr-defined]


show_falsifying_examples()

EXAMPLES = int(os.environ.get("HALLMARK_FUZZ_EXAMPLES", "25"))
TIMEOUT = float(os.environ.get("HALLMARK_FUZZ_TIMEOUT", "20"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

KEY = "fuzz-key-0123456789"
CHAT, COMPLETIONS, DETECT = "/v1/chat/completions", "/v1/completions", "/v1/detect"
LOGGED = (CHAT, COMPLETIONS)  # the endpoints whose every request is a row in the request log
TRACEBACK_MARKS = ("Traceback (most recent call last)", 'File "/', "During handling of the above exception")

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 160, 160, 8, 8, 6


def short(value: Any) -> str:
    """repr() that stays readable for a 1 MB prompt or 10,000 stop strings."""
    if isinstance(value, bytes):
        return repr(value[:300]) + (f"... [{len(value)} bytes]" if len(value) > 300 else "")
    return _short.repr(value)


@dataclass(frozen=True)
class Body:
    """A request body (a value to encode as JSON, or raw bytes) with a short repr for failure reports."""

    value: Any
    style: str = "ascii"

    def content(self) -> bytes:
        return self.value if isinstance(self.value, bytes) else fs.encode(self.value, self.style)

    def __repr__(self) -> str:
        return f"Body({short(self.value)}, style={self.style!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's reports use it
        printer.text(repr(self))


def bodies(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Body]:
    return st.builds(Body, values, fs.ENCODING_STYLES)


# -- the server under test ---------------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    content: bytes
    elapsed: float
    response: httpx.Response | None = None

    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class TracebackCatcher(logging.Handler):
    """Collects the server's log records that carry a traceback, and exceptions that end a thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.thread_errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.stack_info:
            self.records.append(record)

    def thread_died(self, args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread else "?"
        self.thread_errors.append(f"{name}: {args.exc_type.__name__}: {args.exc_value}")

    def clear(self) -> None:
        self.records.clear()
        self.thread_errors.clear()


CATCHER = TracebackCatcher()  # on the "hallmark" logger while the servers run; cleared before each request
HOST = "127.0.0.1"  # a server without a key answers only requests addressed to this machine
BASE_URL = f"http://{HOST}"


def without_lifespan(served: Served) -> Any:
    """The served app for schemathesis's ASGI client, whose pytest plugin ends every lifespan it started
    when a test ends: startup and shutdown are answered here, as the fixture that owns the app runs them."""

    async def asgi(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "lifespan":
            return await served.app(scope, receive, send)
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return asgi


class Served:
    """One app on the fake model, with its own event loop and log file. An engine thread that dies
    fails the request that killed it at once (not after TIMEOUT), and the app is rebuilt for the next."""

    def __init__(self, tmp: Path, api_keys: tuple[str, ...], metrics: bool):
        self.config = ServerConfig(
            log_db=str(tmp / "log.db"), batch_wait_ms=0, api_keys=api_keys, metrics=metrics
        )
        self.loop = asyncio.new_event_loop()
        self._schema: Any = None
        self._start()
        self.spec_id = self.model.watermark_spec.spec_id
        self.detect_bodies = fs.detect_bodies(self.spec_id)  # built once: it holds the served spec

    def _start(self) -> None:
        self.model = Model(FakeBackend(n_ctx=128, max_sequences=2), fs.MODEL)
        self.state = build_state([self.model], self.config)
        self.app = create_app(self.state)

    def dead_engines(self) -> list[str]:
        threads = {name: getattr(e, "_thread", None) for name, e in self.state.engines.items()}
        return [name for name, t in threads.items() if t is not None and not t.is_alive()]

    def send(self, method: str, path: str, content: bytes | None, headers: Mapping[str, Any]) -> Reply:
        if self.dead_engines():  # killed by an earlier (failed) example: start afresh
            self._stop()
            self._start()
        CATCHER.clear()

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
                request = asyncio.ensure_future(
                    client.request(method, path, content=content, headers=dict(headers))
                )
                deadline = time.perf_counter() + TIMEOUT
                while not request.done() and time.perf_counter() < deadline and not self.dead_engines():
                    await asyncio.wait({request}, timeout=0.05)
                if not request.done():
                    request.cancel()
                    dead = self.dead_engines()
                    why = (
                        f"the engine thread died ({CATCHER.thread_errors})"
                        if dead
                        else f"no answer in {TIMEOUT} s"
                    )
                    pytest.fail(f"{method} {path}: {why}", pytrace=False)
                return request.result()

        t0 = time.perf_counter()
        r = self.loop.run_until_complete(go())
        return Reply(r.status_code, r.headers, r.content, time.perf_counter() - t0, r)

    def schema(self) -> Any:
        """The app's OpenAPI schema, loaded by schemathesis through its ASGI integration."""
        if self._schema is None:
            self._schema = schemathesis.openapi.from_asgi(
                "/openapi.json", without_lifespan(self), headers={"Host": HOST, **KEYED.headers}
            )
        return self._schema

    def last_row(self) -> int:
        self._flush()
        with sqlite3.connect(self.config.log_db) as db:
            return int(db.execute("SELECT coalesce(max(rowid), 0) FROM requests").fetchone()[0])

    def rows_after(self, rowid: int) -> list[tuple[int, str, int]]:
        self._flush()
        with sqlite3.connect(self.config.log_db) as db:
            return db.execute(
                "SELECT rowid, endpoint, http_status FROM requests WHERE rowid > ? ORDER BY rowid", (rowid,)
            ).fetchall()

    def _flush(self) -> None:
        flush: Callable[..., Any] | None = getattr(self.state.request_log, "flush", None)
        if flush is not None:  # a log written by a background thread
            assert flush(10.0) is not False, "the request log did not write its queue within 10 s"

    def _stop(self) -> None:
        self.state.draining = True
        for engine in self.state.engines.values():
            engine.stop()
        if self.state.request_log is not None:
            self.state.request_log.close()
        self.model.close()

    def close(self) -> None:
        self._stop()
        self.loop.close()


@dataclass(frozen=True)
class Auth:
    """How a request authenticates against which app; `refused`: every /v1/ request must be a 401."""

    name: str
    keyed: bool
    headers: dict[str, str] = field(default_factory=dict)
    refused: bool = False


AUTHS = (
    Auth("open", keyed=False),
    Auth("key", keyed=True, headers={"Authorization": f"Bearer {KEY}"}),
    Auth("no-key", keyed=True, refused=True),
    Auth("wrong-key", keyed=True, headers={"Authorization": "Bearer not-the-key"}, refused=True),
)
# Authorization headers that are not the key, however close.
WRONG_AUTHORIZATION: tuple[bytes, ...] = (
    b"",
    b"Bearer",
    b"Bearer ",
    b"Basic " + KEY.encode(),
    b"Bearer " + KEY.encode() + b"x",
    b"Bearer " + KEY.encode()[:-1],
    b"Bearer " + KEY.upper().encode(),
    b"Bearer \xff\xfe",
    b"Bearer \xc3\xa9",
    b"Bearer " + b"k" * 100_000,
    KEY.encode(),
)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, Served]]:
    """The app without a key (metrics off) and with one (metrics on), by `keyed`."""
    apps = {
        False: Served(tmp_path_factory.mktemp("open"), (), metrics=False),
        True: Served(tmp_path_factory.mktemp("keyed"), (KEY,), metrics=True),
    }
    logging.getLogger("hallmark").addHandler(CATCHER)
    hook, threading.excepthook = threading.excepthook, CATCHER.thread_died
    yield apps
    threading.excepthook = hook
    logging.getLogger("hallmark").removeHandler(CATCHER)
    for served in apps.values():
        served.close()


# -- the properties ----------------------------------------------------------------------------------
def check_error_body(payload: Any, where: str) -> None:
    assert isinstance(payload, dict) and list(payload) == ["error"], f"{where}: not OpenAI error JSON"
    error = payload["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, (
        f"{where}: the error object has the fields {sorted(error) if isinstance(error, dict) else error!r}"
    )
    assert isinstance(error["message"], str) and error["message"], f"{where}: no error message"
    assert isinstance(error["type"], str) and error["type"], f"{where}: no error type"
    assert error["param"] is None or isinstance(error["param"], str), f"{where}: param {error['param']!r}"
    assert error["code"] is None or isinstance(error["code"], str), f"{where}: code {error['code']!r}"


# /v1/ endpoints that answer without the API key: the provenance public keys are for anyone.
PUBLIC = {"/v1/provenance/keys"}


def check_reply(
    served: Served, method: str, path: str, sent: str, reply: Reply, row_before: int, auth: Auth
) -> None:
    """The properties every answer must have (see the module docstring)."""
    where = f"{method} {path} [{auth.name}] with {sent} -> {reply.status} {short(reply.text()[:400])}"
    caught = CATCHER.records[:]
    assert not CATCHER.thread_errors, f"a server thread died ({CATCHER.thread_errors}): {where}"
    assert reply.status < 500, f"server error: {where}"
    assert reply.elapsed < TIMEOUT, f"took {reply.elapsed:.1f} s: {where}"
    assert not any(mark in reply.text() for mark in TRACEBACK_MARKS), f"a traceback in the response: {where}"
    assert not caught, (
        f"the server logged a traceback ({caught[0].getMessage()}, {caught[0].exc_info!r}): {where}"
    )
    if auth.refused and path.startswith("/v1/") and path not in PUBLIC:
        assert reply.status == 401, f"not refused for want of the key: {where}"
    if auth.refused and path in PUBLIC:
        assert reply.status != 401, f"a public endpoint asked for the key: {where}"
    content_type = reply.headers.get("content-type", "")
    if reply.status >= 400:
        assert content_type.startswith("application/json"), f"an error that is not JSON: {where}"
        check_error_body(json.loads(reply.content), where)
    elif content_type.startswith("application/json"):
        json.loads(reply.content)
    elif content_type.startswith("text/event-stream"):
        check_stream(reply.text(), where)
    if path in LOGGED:
        rows = served.rows_after(row_before)
        assert len(rows) == 1, f"{len(rows)} request-log rows ({rows}), not 1: {where}"
        assert rows[0][2] == reply.status, f"logged as {rows[0][2]}, answered {reply.status}: {where}"


def check_stream(text: str, where: str) -> None:
    events = [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]
    assert events, f"a stream without events: {where}"
    for event in events:
        if event == "[DONE]":
            continue
        chunk = json.loads(event)
        if "error" in chunk:
            check_error_body(chunk, f"an error event of {where}")


def post(
    served: Served, path: str, body: Body, auth: Auth, content_type: str | None = "application/json"
) -> Reply:
    """POST `body` and check every property; returns the reply for further checks."""
    headers = dict(auth.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    before = served.last_row()
    reply = served.send("POST", path, body.content(), headers)
    check_reply(served, "POST", path, repr(body), reply, before, auth)
    return reply


OPEN, KEYED = AUTHS[0], AUTHS[1]
ALPHABET = "abcdefghijklmnopqrstuvwxyz"


# -- schemathesis: every operation of the OpenAPI schema, in every auth mode -------------------------
def _operations() -> list[tuple[str, str]]:
    """(method, path) of every operation in the schema, read without starting a model: the routes do
    not depend on what is served."""
    paths = create_app(ServerState(engines={})).openapi()["paths"]
    return sorted((method.upper(), path) for path, item in paths.items() for method in item)


OPERATIONS = _operations()


@pytest.mark.parametrize("auth", AUTHS, ids=[a.name for a in AUTHS])
@pytest.mark.parametrize("operation", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_schemathesis(servers: dict[bool, Served], operation: tuple[str, str], auth: Auth) -> None:
    """schemathesis's positive and negative cases for one operation (of the schema it loaded through its
    ASGI integration), sent like every other request here: through httpx's ASGI transport, under the
    same timeout and the same watch on the engine threads."""
    served = servers[auth.keyed]
    method, path = operation
    op = served.schema()[path][method]
    strategy = st.one_of([op.as_strategy(generation_mode=mode) for mode in schemathesis.GenerationMode])
    show_falsifying_examples()

    @FUZZ
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        note(f"reproduce with: {case.as_curl_command(headers=auth.headers, base_url=BASE_URL)}")
        request = case.as_transport_kwargs(base_url=BASE_URL, headers=auth.headers)
        content = request.get("data")
        if "json" in request:
            content = json.dumps(request["json"]).encode()
        elif isinstance(content, dict):
            content = urlencode(content).encode()
        elif isinstance(content, str):
            content = content.encode()
        url = httpx.URL(request["url"], params=request.get("params") or None)
        before = served.last_row()
        reply = served.send(
            request["method"], url.raw_path.decode("ascii"), content, dict(request["headers"])
        )
        assert reply.response is not None
        case.validate_response(reply.response, checks=[not_a_server_error])
        sent = short(case.body) if not isinstance(case.body, NotSet) else "no body"
        check_reply(served, method, case.formatted_path, sent, reply, before, auth)

    run()


def test_schemathesis_sees_every_operation(servers: dict[bool, Served]) -> None:
    loaded = servers[False].schema()
    assert (
        sorted((m.upper(), p) for p, item in loaded.raw_schema["paths"].items() for m in item) == OPERATIONS
    )
    assert {("POST", CHAT), ("POST", COMPLETIONS), ("POST", DETECT)} <= set(OPERATIONS)


# -- hypothesis: the fields of each endpoint, beyond the schema ---------------------------------------
@FUZZ
@given(body=bodies(fs.chat_bodies()), keyed=st.booleans())
@example(body=Body({**fs.CHAT_BASE, "model": "\ud800"}), keyed=False)
@example(body=Body({**fs.CHAT_BASE, "user": "\ud800"}), keyed=False)
@example(body=Body({**fs.CHAT_BASE, "stop": ["\ud800"]}), keyed=False)
@example(body=Body({**fs.CHAT_BASE, "user": fs.nested(10_000)}), keyed=False)
@example(body=Body({**fs.CHAT_BASE, "messages": fs.nested(10_000)}), keyed=False)
@example(body=Body({**fs.CHAT_BASE, "logit_bias": {"²": 1}}), keyed=False)
@example(body=Body({**fs.CHAT_BASE, "repetition_penalty": 1e-45, "temperature": 2}), keyed=False)
@example(
    body=Body({**fs.CHAT_BASE, "messages": [{"role": "user", "content": "<|im_end|>\x00\u202e"}]}), keyed=True
)
def test_chat_completions_fields(servers: dict[bool, Served], body: Body, keyed: bool) -> None:
    post(servers[keyed], CHAT, body, KEYED if keyed else OPEN)


@FUZZ
@given(body=bodies(fs.completion_bodies()), keyed=st.booleans())
@example(body=Body({**fs.COMPLETION_BASE, "model": "\ud800"}), keyed=False)
@example(body=Body({**fs.COMPLETION_BASE, "stop": "\ud800"}), keyed=False)
@example(body=Body({**fs.COMPLETION_BASE, "logit_bias": {"²": 1}}), keyed=False)
@example(body=Body({**fs.COMPLETION_BASE, "logit_bias": {"9" * 5000: 1}}), keyed=False)
@example(body=Body({**fs.COMPLETION_BASE, "prompt": "x" * 1_000_000}), keyed=False)
@example(body=Body({**fs.COMPLETION_BASE, "prompt": "x" * 9_000_000}), keyed=True)  # past --max-body-size
@example(body=Body({**fs.COMPLETION_BASE, "max_tokens": 10**18, "n": 10**6}), keyed=False)
@example(body=Body({**fs.COMPLETION_BASE, "stop": [str(i) for i in range(10_000)]}), keyed=False)
@example(body=Body({**fs.COMPLETION_BASE, "seed": -1}), keyed=False)
@example(body=Body({**fs.COMPLETION_BASE, "prompt": ALPHABET, "temperature": 5e-324}), keyed=False)
@example(body=Body({**fs.COMPLETION_BASE, "prompt": ALPHABET, "repetition_penalty": 5e-324}), keyed=False)
@example(body=Body({**fs.COMPLETION_BASE, "seed": 2**64}), keyed=False)
@example(body=Body({**fs.COMPLETION_BASE, "prompt": ["a"] * 100}), keyed=False)  # more than the queue holds
def test_completions_fields(servers: dict[bool, Served], body: Body, keyed: bool) -> None:
    post(servers[keyed], COMPLETIONS, body, KEYED if keyed else OPEN)


@FUZZ
@given(data=st.data(), keyed=st.booleans(), style=fs.ENCODING_STYLES)
def test_detect_fields(servers: dict[bool, Served], data: st.DataObject, keyed: bool, style: str) -> None:
    served = servers[keyed]
    body = Body(data.draw(served.detect_bodies, label="body"), style)
    post(served, DETECT, body, KEYED if keyed else OPEN)


@pytest.mark.parametrize(
    "spec",
    [
        "{" * 10_000,
        '{"scheme": "gumbel", "context_width": ' + "[" * 10_000 + "]" * 10_000 + "}",
        "hm1-gumbel-w" + "9" * 5000 + "-kabcdef-tabcdef",
        "{}",
        '{"a": ' + "[" * 2000 + "]" * 2000 + "}",  # deeper than json's recursion limit, in 4 kB
    ],
    ids=["deep-braces", "deep-json", "huge-width", "empty-json", "deep-json-4kB"],
)
def test_detect_malformed_specs(servers: dict[bool, Served], spec: str) -> None:
    reply = post(servers[False], DETECT, Body({"text": "Once upon a time.", "spec": spec}), OPEN)
    assert reply.status == 400, reply.text()[:300]


@pytest.mark.parametrize("kind", ["near-valid", "served"])
def test_detect_specs_of_the_wrong_types(servers: dict[bool, Served], kind: str) -> None:
    """A JSON spec with the served key and tokenizer but fields of the wrong type is a 400."""
    served = servers[False]
    spec_id = served.spec_id
    base = {
        "scheme": "gumbel",
        "key_id": spec_id.rsplit("-k", 1)[-1].split("-t", 1)[0],
        "tokenizer": spec_id.rsplit("-t", 1)[-1],
        "context_width": 2,
        "version": 1,
    }
    if kind == "served":
        reply = post(served, DETECT, Body({"text": "Once upon a time.", "spec": json.dumps(base)}), OPEN)
        assert reply.status == 200, reply.text()[:300]
        return
    for change in ({"context_width": 2.5}, {"context_width": True}, {"version": 1.5}, {"version": True}):
        spec = json.dumps({**base, **change})
        reply = post(served, DETECT, Body({"text": "Once upon a time.", "spec": spec}), OPEN)
        assert reply.status == 400, f"{change}: {reply.status} {reply.text()[:300]}"


# -- type confusion: a value of the wrong JSON type is a 400 naming the field ------------------------
def confused_bodies() -> st.SearchStrategy[tuple[str, str, dict[str, Any]]]:
    cases: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        (CHAT, fs.CHAT_BASE, fs.CHAT_TYPES),
        (COMPLETIONS, fs.COMPLETION_BASE, fs.COMPLETION_TYPES),
        (DETECT, {"text": "Once upon a time."}, fs.DETECT_TYPES),
    ]

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
        path, base, types = draw(st.sampled_from(cases))
        name = draw(st.sampled_from(sorted(types)))
        return path, name, {**base, name: draw(fs.confused_value(types[name]))}

    return build()


@FUZZ
@given(case=confused_bodies())
@example(case=(COMPLETIONS, "temperature", {**fs.COMPLETION_BASE, "temperature": "0.5"}))
@example(case=(CHAT, "max_tokens", {**fs.CHAT_BASE, "max_tokens": True}))
@example(case=(CHAT, "stream", {**fs.CHAT_BASE, "stream": "yes"}))
@example(case=(DETECT, "fpr", {"text": "Once upon a time.", "fpr": "0.01"}))
@example(case=(COMPLETIONS, "stream_options", {**fs.COMPLETION_BASE, "stream_options": "{}"}))
@example(case=(COMPLETIONS, "stop", {**fs.COMPLETION_BASE, "stop": 5}))
def test_values_of_the_wrong_type_are_refused(
    servers: dict[bool, Served], case: tuple[str, str, dict]
) -> None:
    path, name, body = case
    reply = post(servers[False], path, Body(body), OPEN)
    assert reply.status == 400, (
        f"{name}={short(body[name])} was accepted: {reply.status} {reply.text()[:200]}"
    )
    param = json.loads(reply.content)["error"]["param"]
    assert param == name, f"{name}={short(body[name])}: param {param!r}, not {name!r}"


@FUZZ
@given(
    value=st.sampled_from(["user", 5, True, None, [], {}]),
    field_name=st.sampled_from(["role", "content"]),
    content=st.sampled_from([5, 0.5, True, {"text": "hi"}, [{"type": "text", "text": 5}], [{"text": "hi"}]]),
)
def test_messages_of_the_wrong_shape_are_refused(
    servers: dict[bool, Served], value: Any, field_name: str, content: Any
) -> None:
    message = {"role": "user", "content": "hi", field_name: value if field_name == "role" else content}
    if message == {"role": "user", "content": "hi"}:
        return
    reply = post(servers[False], CHAT, Body({**fs.CHAT_BASE, "messages": [message]}), OPEN)
    assert reply.status == 400, f"{message}: {reply.status} {reply.text()[:200]}"
    param = json.loads(reply.content)["error"]["param"]
    assert param in ("messages.0", f"messages.0.{field_name}"), f"{message}: param {param!r}"


# -- bodies that are not JSON, and requests without the key --------------------------------------------
NOT_AN_OBJECT: st.SearchStrategy[Body] = st.one_of(fs.invalid_json().map(Body), bodies(fs.not_objects()))


@FUZZ
@given(
    path=st.sampled_from([CHAT, COMPLETIONS, DETECT]),
    body=NOT_AN_OBJECT,
    content_type=st.sampled_from(fs.CONTENT_TYPES),
    keyed=st.booleans(),
)
@example(
    path=COMPLETIONS, body=Body(b"[" * 10_000 + b"]" * 10_000), content_type="application/json", keyed=False
)
@example(
    path=CHAT,
    body=Body(b'{"model": "fake", "prompt": "\xed\xa0\x80"}'),
    content_type="text/plain",
    keyed=False,
)
@example(
    path=DETECT, body=Body(b'{"text": "a", "fpr": 1' + b"0" * 5000 + b"}"), content_type=None, keyed=True
)
def test_bodies_that_are_not_a_json_object(
    servers: dict[bool, Served], path: str, body: Body, content_type: str | None, keyed: bool
) -> None:
    """Malformed JSON, invalid UTF-8, arrays, scalars, deep nesting, any content type: a 400."""
    reply = post(servers[keyed], path, body, KEYED if keyed else OPEN, content_type)
    assert reply.status == 400, f"{body}: {reply.status} {reply.text()[:200]}"


ANY_BODY: st.SearchStrategy[Body] = st.one_of(
    bodies(fs.chat_bodies()), bodies(fs.completion_bodies()), bodies(fs.json_values()), NOT_AN_OBJECT
)


@FUZZ
@given(
    path=st.sampled_from([CHAT, COMPLETIONS, DETECT, "/v1/models"]),
    body=ANY_BODY,
    authorization=st.one_of(st.none(), st.sampled_from(WRONG_AUTHORIZATION)),
)
@example(path=COMPLETIONS, body=Body(b"{bad"), authorization=None)
@example(path=CHAT, body=Body(b"[" * 10_000 + b"]" * 10_000), authorization=None)
@example(path=DETECT, body=Body({"text": 5}), authorization=b"Bearer wrong")
def test_without_the_key_everything_is_401(
    servers: dict[bool, Served], path: str, body: Body, authorization: bytes | None
) -> None:
    served = servers[True]
    headers: dict[str, Any] = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    method = "GET" if path == "/v1/models" else "POST"
    before = served.last_row()
    reply = served.send(method, path, body.content() if method == "POST" else None, headers)
    auth = Auth(f"authorization={short(authorization)}", keyed=True, refused=True)
    check_reply(served, method, path, repr(body), reply, before, auth)
    assert json.loads(reply.content)["error"]["code"] in ("missing_api_key", "invalid_api_key")


@pytest.mark.parametrize("keyed", [False, True], ids=["open", "key"])
@pytest.mark.parametrize(
    "path",
    [
        CHAT,
        COMPLETIONS,
        DETECT,
        "/v1/models",
        "/health",
        "/metrics",
        "/v1/nothing",
        "/v1/chat/completions/",
        "//v1/completions",
        "/v1/completions%00",
        "/v1/completions?stream=true",
        "/%ff",
        "/docs",
    ],
)
def test_any_method_on_any_path(servers: dict[bool, Served], path: str, keyed: bool) -> None:
    """Methods a route does not have, and paths that are not routes: an error in OpenAI's JSON."""
    served = servers[keyed]
    auth = KEYED if keyed else OPEN
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"):
        before = served.last_row()
        body = fs.encode(fs.COMPLETION_BASE) if method in ("POST", "PUT", "PATCH") else None
        reply = served.send(method, path, body, {**auth.headers, "Content-Type": "application/json"})
        if method == "HEAD":  # no body to check
            assert reply.status < 500, f"HEAD {path} -> {reply.status}"
            continue
        check_reply(served, method, path.split("?")[0], "a completion body", reply, before, auth)


HOSTS: tuple[bytes, ...] = (
    b"127.0.0.1",
    b"127.0.0.1:8000",
    b"localhost",
    b"LOCALHOST.",
    b"a.localhost",
    b"[::1]",
    b"[::1]:8000",
    b"::1",
    b"[::1",
    b"[",
    b"]",
    b"",
    b":",
    b"127.0.0.1:99999999999999999999",
    b"2130706433",
    b"0x7f.1",
    b"127.0.0.1.nip.io",
    b"evil.example",
    b"localhost@evil.example",
    b"evil.example#localhost",
    b"\xff\xfe",
    b"h" * 10_000,
)
ORIGINS: tuple[bytes, ...] = (
    b"null",
    b"http://localhost",
    b"http://127.0.0.1:8000",
    b"http://evil.example",
    b"http://[",
    b"http://[::1",
    b"http://]",
    b"http://[::1]:99999999999",
    b"http://localhost:port",
    b"://",
    b"file://",
    b"",
    b"\xff",
    b"http://" + b"o" * 10_000,
)


@FUZZ
@given(
    path=st.sampled_from([CHAT, COMPLETIONS, DETECT, "/v1/models", "/health", "/openapi.json"]),
    host=st.sampled_from(HOSTS),
    origin=st.one_of(st.none(), st.sampled_from(ORIGINS)),
    keyed=st.booleans(),
)
@example(path=COMPLETIONS, host=b"127.0.0.1", origin=b"http://[", keyed=False)
@example(path=CHAT, host=b"[::1", origin=None, keyed=False)
def test_any_host_and_origin(
    servers: dict[bool, Served], path: str, host: bytes, origin: bytes | None, keyed: bool
) -> None:
    """Whatever Host and Origin say (a server without a key refuses names that are not this machine)."""
    served = servers[keyed]
    auth = KEYED if keyed else OPEN
    headers: dict[str, Any] = {**auth.headers, "Host": host, "Content-Type": "application/json"}
    if origin is not None:
        headers["Origin"] = origin
    body = fs.CHAT_BASE if path == CHAT else fs.COMPLETION_BASE if path == COMPLETIONS else {"text": "Once."}
    method = "POST" if path in (CHAT, COMPLETIONS, DETECT) else "GET"
    before = served.last_row()
    reply = served.send(method, path, fs.encode(body) if method == "POST" else None, headers)
    check_reply(served, method, path, f"Host {short(host)}, Origin {short(origin)}", reply, before, auth)


def test_the_right_key_is_accepted_in_any_case_of_bearer(servers: dict[bool, Served]) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        auth = Auth(scheme, keyed=True, headers={"Authorization": f"{scheme} {KEY}"})
        reply = post(servers[True], COMPLETIONS, Body(fs.COMPLETION_BASE), auth)
        assert reply.status == 200, reply.text()[:200]
