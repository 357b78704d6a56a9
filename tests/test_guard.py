"""The server's front door (hallmark.server.guard) on the fake backend: hosts, keys, body sizes,
bounded log rows for refusals, and a 500 that keeps the connection usable (a real uvicorn on
loopback for that one)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import uvicorn

from hallmark.server import app as app_module
from hallmark.server.guard import host_is_allowed
from tests.fake_server import FakeServer

KEY = "guard-test-key"
BODY = {"model": "fake", "prompt": "hi", "max_tokens": 2}


@pytest.fixture
def open_server(tmp_path):
    s = FakeServer(tmp_path, metrics=True, allowed_hosts=("mybox.local",))
    yield s
    s.close()


@pytest.fixture
def keyed_server(tmp_path):
    s = FakeServer(tmp_path, metrics=True, api_keys=(KEY,), max_body_size=4096)
    yield s
    s.close()


def test_hosts_a_rebinding_attacker_cannot_use():
    assert host_is_allowed("localhost:8000", frozenset())
    assert host_is_allowed("127.0.0.1:8000", frozenset()) and host_is_allowed("[::1]:8000", frozenset())
    assert host_is_allowed("192.168.1.20", frozenset()) and host_is_allowed("::1", frozenset())
    assert host_is_allowed("MyBox.Local.", frozenset({"mybox.local"}))
    assert not host_is_allowed("attacker.example:8000", frozenset())
    assert not host_is_allowed("127.0.0.1.attacker.example", frozenset())


def test_without_a_key_only_local_hosts_and_origins_are_answered(open_server):
    evil, local, named, origin, page = open_server.requests(
        ("POST", "/v1/completions", {"json": BODY, "headers": {"host": "attacker.example"}}),
        ("POST", "/v1/completions", {"json": BODY, "headers": {"host": "127.0.0.1:8000"}}),
        ("POST", "/v1/completions", {"json": BODY, "headers": {"host": "mybox.local:8000"}}),
        ("POST", "/v1/completions", {"json": BODY, "headers": {"origin": "https://attacker.example"}}),
        ("POST", "/v1/completions", {"json": BODY, "headers": {"origin": "http://localhost:8000"}}),
    )
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "host_not_allowed"
    assert origin.status_code == 403
    assert local.status_code == named.status_code == page.status_code == 200
    statuses = sorted(r["http_status"] for r in open_server.log_rows())
    assert statuses == [200, 200, 200, 403, 403]  # the refusals are logged too


def test_with_a_key_nothing_behind_it_reads_the_body(keyed_server):
    auth = {"authorization": f"Bearer {KEY}"}
    malformed, wrong, health, metrics, schema, metrics_ok = keyed_server.requests(
        # Before the fix a malformed body without a key got 400: the body was parsed before auth.
        (
            "POST",
            "/v1/completions",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
        ),
        ("POST", "/v1/chat/completions", {"json": BODY, "headers": {"authorization": "Bearer nope"}}),
        ("GET", "/health", {}),
        ("GET", "/metrics", {}),
        ("GET", "/openapi.json", {}),
        ("GET", "/metrics", {"headers": auth}),
    )
    assert malformed.status_code == 401 and malformed.json()["error"]["code"] == "missing_api_key"
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert health.status_code == 200
    assert metrics.status_code == schema.status_code == 401
    assert (
        metrics_ok.status_code == 200
        and 'hallmark_refusals_total{endpoint="/v1/completions"' in metrics_ok.text
    )
    rows = keyed_server.log_rows()
    assert sorted(r["http_status"] for r in rows) == [401, 401]
    assert all(r["prompt"] is None for r in rows)  # an unauthenticated body is never stored


def test_bodies_are_capped_and_refused_bodies_logged_as_an_excerpt(keyed_server):
    auth = {"authorization": f"Bearer {KEY}"}

    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    big = json.dumps({**BODY, "prompt": "y" * 5000}).encode()
    bad = json.dumps({**BODY, "temperature": 5, "user": "z" * 3900}).encode()
    declared, streamed, rejected = keyed_server.requests(
        ("POST", "/v1/completions", {"content": big, "headers": auth}),
        ("POST", "/v1/completions", {"content": chunks(), "headers": auth}),  # no Content-Length
        (
            "POST",
            "/v1/completions",
            {"content": bad, "headers": {**auth, "content-type": "application/json"}},
        ),
    )
    assert declared.status_code == streamed.status_code == 413
    assert declared.json()["error"]["code"] == "request_too_large"
    assert rejected.status_code == 400
    rows = {r["http_status"]: r for r in keyed_server.log_rows()}
    assert rows[413]["prompt"] is None
    logged = rows[400]["prompt"]
    assert logged.startswith('{"model": "fake"') and len(logged) < 4096 + 100
    assert rows[400]["model"] == "fake"


def test_deeply_nested_json_is_a_logged_400(open_server):
    nested = b'{"model": "fake", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    (r,) = open_server.requests(
        ("POST", "/v1/completions", {"content": nested, "headers": {"content-type": "application/json"}})
    )
    assert r.status_code == 400 and "error" in r.json()
    (row,) = open_server.log_rows()
    assert row["http_status"] == 400 and row["model"] == "fake"


def _read_response(sock: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length body (b'' if the server closed the connection)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_500_is_openai_json_logged_and_the_connection_stays_usable(tmp_path, monkeypatch):
    served = FakeServer(tmp_path)

    async def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app_module, "serve_completion", broken)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(served.app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        # A raw socket, so that "the same connection" is certain (httpx would quietly reconnect).
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            body = json.dumps(BODY).encode()
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            first = _read_response(sock)
            assert first.startswith(b"HTTP/1.1 500") and b'"type":"server_error"' in first.replace(b" ", b"")
            assert b"connection: close" not in first.lower()
            # Before the fix uvicorn closed this connection after the 500 (Starlette re-raises).
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _read_response(sock).startswith(b"HTTP/1.1 200")
        (row,) = served.log_rows()
        assert row["http_status"] == 500 and row["status"] == "error"
    finally:
        server.should_exit = True
        thread.join(10)
        served.close()
