"""The request log: every served request and its response, one SQLite row each.

Rows are written once, when a request ends (completed, failed or cancelled), in a single
transaction, so the log never holds a half-written request. WAL mode lets `hallmark logs` read
while a server writes. Location: $HALLMARK_LOG_DB, else $XDG_DATA_HOME/hallmark/logs.db
(~/.local/share/hallmark/logs.db).

The schema changes only through MIGRATIONS, an ordered list of steps (as Simon Willison's `llm`
keeps its log): opening a log applies the steps it has not had yet, in order and in one
transaction, and records how many it has had in SQLite's `PRAGMA user_version`. So a log written by an older
hallmark opens in a newer one; a log from a newer hallmark (more steps than this code knows) is
refused with a HallmarkError rather than written to. Logs written before migrations existed have
user_version 0 and already hold the table of migration 1, which is why that step is idempotent.
"""

from __future__ import annotations

import enum
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hallmark.errors import HallmarkError


class Outcome(enum.StrEnum):
    """How a logged request ended. A str subclass: rows and JSON hold the plain strings."""

    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"


# -- schema migrations ------------------------------------------------------------------------------
Migration = Callable[[sqlite3.Connection], None]


def _m001_requests(db: sqlite3.Connection) -> None:
    """The first schema, exactly as logs were written before migrations existed."""
    db.execute(
        """
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
)"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS requests_created ON requests (created)")


# Applied in order; a log that has had the first N steps has user_version N. Append new steps at the
# end and never change or remove one that has shipped: logs in the wild have already run it.
MIGRATIONS: list[Migration] = [_m001_requests]


def schema_version(db: sqlite3.Connection) -> int:
    """How many migrations the database has had (SQLite's user_version; 0 for a new file)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, path: Path | str = "the request log") -> None:
    """Apply the migrations `db` has not had yet, in order, in one transaction with the version stamp.

    Raises HallmarkError for a database from a newer hallmark (a user_version above len(MIGRATIONS)).
    """
    if _check_version(db, path) == len(MIGRATIONS):
        return  # the common case: already current, and no write lock taken
    # BEGIN IMMEDIATE takes the write lock before reading the version again, so that two processes
    # opening a new log at once (a server and `hallmark logs`) do not both run a step.
    db.execute("BEGIN IMMEDIATE")
    try:
        done = _check_version(db, path)
        for number in range(done + 1, len(MIGRATIONS) + 1):
            MIGRATIONS[number - 1](db)
            # PRAGMA takes no parameters; `number` is an int we made, not input.
            db.execute(f"PRAGMA user_version = {number}")
        db.commit()
    except BaseException:
        db.rollback()
        raise


def _check_version(db: sqlite3.Connection, path: Path | str) -> int:
    version = schema_version(db)
    if version > len(MIGRATIONS):
        raise HallmarkError(
            f"the request log {path} was written by a newer hallmark (schema version {version}; this "
            f"version knows up to {len(MIGRATIONS)}); upgrade hallmark or use another log (--log-db)"
        )
    return version


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
    status: Outcome = Outcome.COMPLETED
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

    def __post_init__(self) -> None:
        # Callers (the server) may pass plain strings; an unknown one is a bug, so ValueError.
        self.status = Outcome(self.status)

    def row(self) -> tuple[Any, ...]:
        d = asdict(self)
        d["status"] = self.status.value  # the plain string, whatever sqlite3 makes of str subclasses
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
        except (OSError, sqlite3.Error) as e:
            raise HallmarkError(f"cannot open the request log {self.path}: {e}") from e
        try:
            migrate(self._db, self.path)  # first: a log from a newer hallmark is left untouched
            self._db.execute("PRAGMA journal_mode=WAL")
        except HallmarkError:
            self._db.close()
            raise
        except sqlite3.Error as e:
            self._db.close()
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
