"""The request log: every served request and its response, one SQLite row each.

Rows are written once, when a request ends (completed, failed or cancelled), in a single
transaction, so the log never holds a half-written request. WAL mode lets `hallmark logs` read
while a server writes. Location: $HALLMARK_LOG_DB, else $XDG_DATA_HOME/hallmark/logs.db
(~/.local/share/hallmark/logs.db).

Writing. `RequestLog(path)` writes synchronously: `write` returns once the row is committed and
raises if it cannot be (the CLI and tests). `RequestLog(path, background=True)` (the server) never
blocks the caller: `write` queues the row and returns; one writer thread commits the rows in the
order they were queued, retrying while SQLite refuses (another process holds the write lock, the
disk is full) with backoff. A row is given up only once it has waited `give_up_after` seconds
(60) unwritten and another attempt fails, or when more than `max_pending` rows wait; either way it
is counted in `stats()["failed"]` with the error, and logged, never dropped silently. `flush`
waits for the queue to empty; `close` drains it first, so a normal shutdown loses no row.

Privacy. The log holds every prompt and answer, so a log file hallmark creates is 0600 (SQLite
gives its -wal and -shm files the database file's mode) and a directory it creates for it 0700.
An existing file or directory keeps the mode its owner gave it: hallmark never chmods them.

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
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hallmark.errors import HallmarkError, check_unicode

log = logging.getLogger(__name__)

MAX_ID_CHARS = 200  # server ids are ~40 characters; a longer "id" is a mistake (or an attack)


class Outcome(enum.StrEnum):
    """How a logged request ended. A str subclass: rows and JSON hold the plain strings."""

    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"
    REFUSED = "refused"  # the request policy refused it (hallmark.policy)


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
def _m002_policy(db: sqlite3.Connection) -> None:
    """The request policy's decision for each request (hallmark.policy), as JSON."""
    db.execute("ALTER TABLE requests ADD COLUMN policy TEXT")


MIGRATIONS: list[Migration] = [_m001_requests, _m002_policy]


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
    "policy",
)
JSON_COLUMNS = ("params", "response", "timings", "policy")  # stored as JSON text


def default_path() -> Path:
    if env := os.environ.get("HALLMARK_LOG_DB"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hallmark" / "logs.db"


class LoggedRequestNotFound(HallmarkError, LookupError):
    """No logged request has that id. `request_id` is what was asked for; the message also names
    the log's file, which a server keeps from its clients."""

    def __init__(self, request_id: str, path: object):
        super().__init__(f"no logged request with id {request_id!r} in {path}")
        self.request_id = request_id


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
    policy: dict[str, Any] | None = None  # the request policy's decision (hallmark.policy)

    def __post_init__(self) -> None:
        # Callers (the server) may pass plain strings; an unknown one is a bug, so ValueError.
        self.status = Outcome(self.status)

    def row(self) -> tuple[Any, ...]:
        d = asdict(self)
        d["status"] = self.status.value  # the plain string, whatever sqlite3 makes of str subclasses
        for k in JSON_COLUMNS:
            if d[k] is not None:
                d[k] = json.dumps(d[k], ensure_ascii=False)
        return tuple(d[c] for c in COLUMNS)


def _create_private(path: Path) -> None:
    """Create the log's directory (0700) and an empty database file (0600) if they do not exist.

    SQLite would create the file with the umask's mode (0644 as a rule), and its -wal and -shm
    files copy the database file's mode, so making the file first makes all three owner-only.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # the user's file, mode and all
    os.close(fd)  # an empty file is an empty SQLite database


class RequestLog:
    """Thread-safe writer and reader of the request log; see the module docstring for the modes."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        background: bool = False,
        give_up_after: float = 60.0,
        max_pending: int = 10_000,
    ):
        self.path = Path(path) if path is not None else default_path()
        self.background = background
        self.give_up_after = give_up_after
        self.max_pending = max_pending
        # The writer thread retries itself, so each attempt waits only briefly for SQLite's lock;
        # a synchronous write waits up to 10 s, as it always has.
        busy_timeout = min(1.0, give_up_after) if background else 10.0
        try:
            _create_private(self.path)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=busy_timeout)
        except (OSError, sqlite3.Error) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e  # strerror: no path again
            raise HallmarkError(f"cannot open the request log {self.path}: {reason}") from e
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
        self._lock = threading.Lock()  # the connection
        # The queue, the counters and the closing flags; the writer waits on it for rows.
        self._cond = threading.Condition()
        self._queue: deque[tuple[tuple[Any, ...], float]] = deque()  # (row, give-up time); head in flight
        self._written = 0
        self._failed = 0
        self._last_error: str | None = None
        self._failing = False  # since the last row given up, nothing was written (log once per streak)
        self._closing = False  # close() began: take no more rows, drain the queue
        self._abandoned = False  # close() ran out of time: stop after the current attempt
        self._closed = False
        self._writer: threading.Thread | None = None
        if background:
            self._writer = threading.Thread(target=self._drain, name="hallmark-request-log", daemon=True)
            self._writer.start()

    # -- writing -------------------------------------------------------------------------------------
    def write(self, record: LogRecord) -> None:
        """Log `record`: committed before returning, or with background=True queued (never blocks)."""
        row = record.row()  # now, in the caller's thread: the record may change after we return
        if not self.background:
            try:
                self._insert(row)
            except Exception as e:
                with self._cond:
                    self._failed += 1
                    self._last_error = str(e)
                raise
            with self._cond:
                self._written += 1
            return
        with self._cond:
            if self._closing:
                self._give_up(1, "a request ended after the request log was closed")
            elif len(self._queue) >= self.max_pending:
                why = f": {self._last_error}" if self._last_error else ""
                self._give_up(1, f"{self.max_pending} rows already wait to be written{why}")
            else:
                self._queue.append((row, time.monotonic() + self.give_up_after))
                self._cond.notify_all()

    def _insert(self, row: tuple[Any, ...]) -> None:
        placeholders = ", ".join("?" for _ in COLUMNS)
        with self._lock, self._db:  # one transaction: the row is written whole or not at all
            self._db.execute(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({placeholders})", row)

    def _give_up(self, rows: int, error: str) -> None:
        """Count `rows` as lost (the caller holds self._cond); warn once until a write succeeds."""
        self._failed += rows
        self._last_error = error
        if not self._failing:
            log.warning("request log %s: gave up %d row(s): %s", self.path, rows, error)
        self._failing = True

    def _drain(self) -> None:
        """The writer thread: commit the queued rows in order until close() is done with it."""
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return  # closing, and everything is written
                row, give_up_at = self._queue[0]  # stays queued (counted as pending) while in flight
            error = self._write_until(row, give_up_at)
            with self._cond:
                if error is not None and self._abandoned:
                    return  # close() counts what is left, this row included
                self._queue.popleft()
                if error is None:
                    self._written += 1
                    if self._failing:
                        log.warning("request log %s: writing again (%d rows lost)", self.path, self._failed)
                    self._failing = False
                else:
                    self._give_up(1, error)
                self._cond.notify_all()

    def _write_until(self, row: tuple[Any, ...], give_up_at: float) -> str | None:
        """Insert `row`, retrying until `give_up_at`; None once written, else the last error."""
        backoff = 0.05
        while True:
            try:
                self._insert(row)
                return None
            except sqlite3.OperationalError as e:  # locked, busy, disk full, read-only: may pass
                error = str(e)
            except Exception as e:  # e.g. the id is logged already: it would fail forever
                return f"{type(e).__name__}: {e}"
            now = time.monotonic()
            if now >= give_up_at or self._abandoned:
                return error
            with self._cond:  # a sleep that close() can cut short
                self._cond.wait(min(backoff, give_up_at - now))
            if self._abandoned:
                return error
            backoff = min(2 * backoff, 1.0)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until no row waits to be written (written or given up); False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def stats(self) -> dict[str, Any]:
        """`pending` (queued, not yet written), `written`, `failed` (given up) and `last_error`."""
        with self._cond:
            return {
                "pending": len(self._queue),
                "written": self._written,
                "failed": self._failed,
                "last_error": self._last_error,
            }

    # -- reading ---------------------------------------------------------------------------------------
    def recent(
        self,
        limit: int = 20,
        model: str | None = None,
        status: str | None = None,
        since: float | None = None,
        until: float | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """The newest requests first, optionally only one model's, one outcome's, or those that
        arrived in [since, until) (unix times); `offset` skips that many (paging)."""
        where, args = [], []
        for clause, value in (
            ("model = ?", model),
            ("status = ?", status),
            ("created >= ?", since),
            ("created < ?", until),
        ):
            if value is not None and value != "":
                where.append(clause)
                args.append(value)
        query = "SELECT * FROM requests" + (" WHERE " + " AND ".join(where) if where else "")
        query += " ORDER BY created DESC LIMIT ? OFFSET ?"
        args += [limit, offset]
        with self._lock:
            return [_decode(r) for r in self._db.execute(query, args).fetchall()]

    def get(self, request_id: str) -> dict[str, Any]:
        """One request by id, or by a unique prefix of it (matched literally, case and all)."""
        if not request_id:
            raise HallmarkError("give a request id (or the start of one)")
        if len(request_id) > MAX_ID_CHARS:
            raise HallmarkError(
                f"a request id is at most {MAX_ID_CHARS} characters; this one has {len(request_id)}"
            )
        check_unicode(request_id, "the request id", HallmarkError)
        # substr, not LIKE: LIKE would read '%' and '_' as wildcards and ignore case. The exact id
        # sorts first, so that it is found even when longer ids start with it.
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM requests WHERE substr(id, 1, length(:id)) = :id "
                "ORDER BY id = :id DESC, created DESC LIMIT 2",
                {"id": request_id},
            ).fetchall()
        if rows and rows[0]["id"] == request_id:
            return _decode(rows[0])
        if not rows:
            raise LoggedRequestNotFound(request_id, self.path)
        if len(rows) > 1:
            raise HallmarkError(f"{request_id!r} matches more than one logged request; give more of the id")
        return _decode(rows[0])

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])

    def close(self, timeout: float | None = None) -> bool:
        """Write the queued rows (waiting up to `timeout` seconds; None: until done), then close.

        Returns False if rows were still unwritten when the time ran out; they are counted as
        failed. Closing twice is harmless.
        """
        with self._cond:
            if self._closed:
                return True
            self._closing = True
            self._cond.notify_all()
        drained = True
        if self._writer is not None:
            self._writer.join(timeout)
            if self._writer.is_alive():
                with self._cond:
                    self._abandoned = True
                    self._cond.notify_all()
                self._writer.join()  # at most the attempt in flight: one busy timeout
            with self._cond:
                if self._queue:
                    drained = False
                    left = len(self._queue)
                    why = f": {self._last_error}" if self._last_error else ""
                    self._give_up(left, f"the request log was closed with {left} rows unwritten{why}")
                    self._queue.clear()
                    self._cond.notify_all()
        with self._lock:
            self._db.close()
        with self._cond:
            self._closed = True
        return drained


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for k in JSON_COLUMNS:
        if d.get(k):
            d[k] = json.loads(d[k])
    return d
