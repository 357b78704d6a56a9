"""The request log: every served request and its response, one SQLite row each.

Rows are written once, when a request ends (completed, failed or cancelled), in a single
transaction, so the log never holds a half-written request. WAL mode lets `hallmark logs` read
while a server writes. Location: $HALLMARK_LOG_DB, else $XDG_DATA_HOME/hallmark/logs.db
(~/.local/share/hallmark/logs.db).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hallmark.errors import HallmarkError

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,          -- unix time the request arrived
    endpoint TEXT NOT NULL,         -- e.g. /v1/chat/completions
    model TEXT,
    client TEXT,                    -- client address
    user TEXT,                      -- the request's OpenAI `user` field
    status TEXT NOT NULL,           -- completed | error | cancelled
    http_status INTEGER NOT NULL,
    prompt TEXT,                    -- prompt text, or the chat messages as JSON
    params TEXT,                    -- the request's other fields, JSON
    output TEXT,                    -- the generated text; choices joined for n > 1, see response
    response TEXT,                  -- the full response (or error) as JSON
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    duration_ms REAL,
    timings TEXT,                   -- per-choice llama.cpp-style timings, JSON
    watermark_spec TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS requests_created ON requests (created);
"""

COLUMNS = (
    "id",
    "created",
    "endpoint",
    "model",
    "client",
    "user",
    "status",
    "http_status",
    "prompt",
    "params",
    "output",
    "response",
    "prompt_tokens",
    "completion_tokens",
    "duration_ms",
    "timings",
    "watermark_spec",
    "error",
)


def default_path() -> Path:
    if env := os.environ.get("HALLMARK_LOG_DB"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hallmark" / "logs.db"


@dataclass
class LogRecord:
    id: str
    endpoint: str
    created: float = field(default_factory=time.time)
    model: str | None = None
    client: str | None = None
    user: str | None = None
    status: str = "completed"
    http_status: int = 200
    prompt: str | None = None
    params: dict[str, Any] | None = None
    output: str | None = None
    response: dict[str, Any] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    duration_ms: float | None = None
    timings: list[dict[str, Any]] | None = None
    watermark_spec: str | None = None
    error: str | None = None

    def row(self) -> tuple[Any, ...]:
        d = asdict(self)
        for k in ("params", "response", "timings"):
            if d[k] is not None:
                d[k] = json.dumps(d[k], ensure_ascii=False)
        return tuple(d[c] for c in COLUMNS)


class RequestLog:
    """Thread-safe writer and reader of the request log."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path) if path is not None else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise HallmarkError(f"cannot open the request log {self.path}: {e}") from e
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()

    def write(self, record: LogRecord) -> None:
        placeholders = ", ".join("?" for _ in COLUMNS)
        with self._lock, self._db:  # one transaction: the row is written whole or not at all
            self._db.execute(
                f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({placeholders})", record.row()
            )

    def recent(self, limit: int = 20, model: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM requests"
        args: list[Any] = []
        if model:
            query += " WHERE model = ?"
            args.append(model)
        query += " ORDER BY created DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [_decode(r) for r in self._db.execute(query, args).fetchall()]

    def get(self, request_id: str) -> dict[str, Any]:
        """One request by id, or by a unique prefix of it."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM requests WHERE id = ? OR id LIKE ? ORDER BY created DESC LIMIT 2",
                (request_id, request_id.replace("%", "") + "%"),
            ).fetchall()
        exact = [r for r in rows if r["id"] == request_id]
        if exact:
            return _decode(exact[0])
        if not rows:
            raise HallmarkError(f"no logged request with id {request_id!r} in {self.path}")
        if len(rows) > 1:
            raise HallmarkError(f"{request_id!r} matches more than one logged request; give more of the id")
        return _decode(rows[0])

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for k in ("params", "response", "timings"):
        if d.get(k):
            d[k] = json.loads(d[k])
    return d
