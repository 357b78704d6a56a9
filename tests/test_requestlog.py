"""The request log's schema migrations and status values, on real SQLite files."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time

import pytest

from hallmark import requestlog
from hallmark.errors import HallmarkError
from hallmark.requestlog import MIGRATIONS, LogRecord, Outcome, RequestLog, schema_version

# The schema exactly as hallmark wrote it before migrations existed (user_version left at 0).
V1_SCHEMA = """
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


def _v1_log(path):
    """A log as the first version left it: its schema, WAL mode, one request, user_version 0."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(V1_SCHEMA)
    with db:
        db.execute(
            "INSERT INTO requests (id, created, endpoint, model, status, http_status, prompt, params, "
            "output, prompt_tokens, completion_tokens, duration_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                "chatcmpl-old1",
                1700000000.5,
                "/v1/chat/completions",
                "smollm2-135m-instruct",
                "completed",
                200,
                "Hi",
                json.dumps({"temperature": 0}),
                "Hello!",
                3,
                2,
                41.5,
            ),
        )
    db.close()


def _user_version(path) -> int:
    db = sqlite3.connect(path)
    try:
        return schema_version(db)
    finally:
        db.close()


def _tables(path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()


def test_a_log_written_before_migrations_opens_is_stamped_and_keeps_its_rows(tmp_path):
    path = tmp_path / "logs.db"
    _v1_log(path)
    assert _user_version(path) == 0

    log = RequestLog(path)
    row = log.get("chatcmpl-old1")
    assert row["output"] == "Hello!" and row["params"] == {"temperature": 0}
    assert row["status"] == "completed" and row["duration_ms"] == 41.5
    log.write(LogRecord(id="chatcmpl-new1", endpoint="/v1/completions", status="error", http_status=400))
    assert log.count() == 2
    assert [r["id"] for r in log.recent()] == ["chatcmpl-new1", "chatcmpl-old1"]
    log.close()
    assert _user_version(path) == len(MIGRATIONS)


def test_a_new_log_gets_every_migration(tmp_path):
    path = tmp_path / "sub" / "logs.db"
    RequestLog(path).close()
    assert _user_version(path) == len(MIGRATIONS) >= 1
    assert "requests" in _tables(path)


def test_migrations_run_in_order_and_only_once(tmp_path, monkeypatch):
    path = tmp_path / "logs.db"
    _v1_log(path)
    applied: list[str] = []

    def add_note_column(db: sqlite3.Connection) -> None:
        applied.append("note")
        db.execute("ALTER TABLE requests ADD COLUMN note TEXT")

    def fill_notes(db: sqlite3.Connection) -> None:
        applied.append("fill")
        db.execute("UPDATE requests SET note = 'migrated'")  # needs the column of the step before

    monkeypatch.setattr(requestlog, "MIGRATIONS", [*MIGRATIONS, add_note_column, fill_notes])
    for _ in range(3):  # open, write, close: the steps run on the first open only
        log = RequestLog(path)
        log.close()
    assert applied == ["note", "fill"]
    assert _user_version(path) == len(MIGRATIONS) + 2
    db = sqlite3.connect(path)
    assert db.execute("SELECT id, note FROM requests").fetchall() == [("chatcmpl-old1", "migrated")]
    db.close()


def test_a_failing_migration_leaves_the_log_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "logs.db"
    RequestLog(path).close()

    def half_done(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE extra (x INTEGER)")
        db.execute("SELECT * FROM no_such_table")  # fails after the first statement took effect

    monkeypatch.setattr(requestlog, "MIGRATIONS", [*MIGRATIONS, half_done])
    with pytest.raises(HallmarkError, match="cannot open the request log"):
        RequestLog(path)
    assert _user_version(path) == len(MIGRATIONS)
    assert "extra" not in _tables(path)  # rolled back with the version stamp


def test_a_log_from_a_newer_hallmark_is_refused_untouched(tmp_path):
    path = tmp_path / "logs.db"
    _v1_log(path)
    newer = len(MIGRATIONS) + 1
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {newer}")
    db.close()

    with pytest.raises(HallmarkError) as err:
        RequestLog(path)
    message = str(err.value)
    assert "newer hallmark" in message and f"schema version {newer}" in message
    assert "\n" not in message
    assert _user_version(path) == newer


def test_status_is_a_str_enum_and_plain_strings_are_accepted(tmp_path):
    assert Outcome("cancelled") is Outcome.CANCELLED
    assert [s.value for s in Outcome] == ["completed", "error", "cancelled", "refused"]
    record = LogRecord(id="x1", endpoint="/v1/completions", status="cancelled", http_status=499)
    assert record.status is Outcome.CANCELLED and record.status == "cancelled"
    assert LogRecord(id="x2", endpoint="/v1/completions").status is Outcome.COMPLETED
    with pytest.raises(ValueError):
        LogRecord(id="x3", endpoint="/v1/completions", status="exploded")

    log = RequestLog(tmp_path / "logs.db")
    log.write(record)
    row = log.get("x1")
    log.close()
    assert type(row["status"]) is str and row["status"] == "cancelled"
    assert json.dumps({"status": record.status}) == '{"status": "cancelled"}'


# -- writing in the background: never blocking the caller, never dropping a row silently -----------
def _record(request_id: str) -> LogRecord:
    return LogRecord(id=request_id, endpoint="/v1/completions", prompt="p", output="o")


def _lock(path) -> sqlite3.Connection:
    """Another connection (as another process would) holding the log's write lock until released."""
    holder = sqlite3.connect(path, isolation_level=None, timeout=0, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def _release(holder: sqlite3.Connection) -> None:
    holder.execute("ROLLBACK")
    holder.close()


def _ids_in_order(path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT id FROM requests ORDER BY rowid")]
    finally:
        db.close()


def test_a_background_write_returns_at_once_while_the_log_is_locked_and_lands_later(tmp_path):
    # Before: write() ran on the server's event loop, blocked it for sqlite's 10 s timeout while
    # another process held the write lock, and the row was then lost.
    path = tmp_path / "logs.db"
    log = RequestLog(path, background=True)
    holder = _lock(path)
    try:
        started = time.monotonic()
        for i in range(3):
            log.write(_record(f"req-{i}"))
        assert time.monotonic() - started < 0.2  # the lock is held for 1.5 s
        time.sleep(0.5)
        stats = log.stats()
        assert stats["pending"] == 3 and stats["written"] == 0 and stats["failed"] == 0
        time.sleep(1.0)
    finally:
        _release(holder)
    assert log.flush(timeout=10)
    stats = log.stats()
    assert stats["pending"] == 0 and stats["written"] == 3 and stats["failed"] == 0
    assert _ids_in_order(path) == ["req-0", "req-1", "req-2"]  # in the order they were written
    log.close()


def test_a_row_the_log_refuses_for_longer_than_give_up_after_is_counted_as_failed(tmp_path):
    path = tmp_path / "logs.db"
    log = RequestLog(path, background=True, give_up_after=0.5)
    holder = _lock(path)
    try:
        started = time.monotonic()
        log.write(_record("lost"))
        assert log.flush(timeout=10)  # the queue empties once the row is given up
        assert 0.5 <= time.monotonic() - started < 5
        stats = log.stats()
        assert stats["pending"] == 0 and stats["written"] == 0 and stats["failed"] == 1
        assert "locked" in stats["last_error"]
    finally:
        _release(holder)
    log.write(_record("kept"))
    assert log.flush(timeout=10)
    stats = log.stats()
    assert stats["written"] == 1 and stats["failed"] == 1 and "locked" in stats["last_error"]
    log.close()
    assert _ids_in_order(path) == ["kept"]


def test_close_waits_for_the_queued_rows(tmp_path):
    path = tmp_path / "logs.db"
    log = RequestLog(path, background=True)
    holder = _lock(path)
    threading.Timer(0.8, _release, (holder,)).start()
    for i in range(5):
        log.write(_record(f"req-{i}"))
    assert log.close(timeout=30)
    assert _ids_in_order(path) == [f"req-{i}" for i in range(5)]
    stats = log.stats()
    assert stats["pending"] == 0 and stats["written"] == 5
    log.write(_record("after-close"))  # never raises in background mode, but is counted
    assert log.stats()["failed"] == 1 and "closed" in log.stats()["last_error"]


def test_close_past_its_timeout_counts_the_rows_it_could_not_write(tmp_path):
    path = tmp_path / "logs.db"
    log = RequestLog(path, background=True, give_up_after=60)
    holder = _lock(path)
    try:
        for i in range(3):
            log.write(_record(f"req-{i}"))
        started = time.monotonic()
        assert not log.close(timeout=0.5)
        assert time.monotonic() - started < 5
        stats = log.stats()
        assert stats["pending"] == 0 and stats["written"] == 0 and stats["failed"] == 3
        assert "closed" in stats["last_error"]
    finally:
        _release(holder)
    assert _ids_in_order(path) == []


def test_the_default_is_synchronous(tmp_path):
    path = tmp_path / "logs.db"
    log = RequestLog(path)
    log.write(_record("now"))
    assert _ids_in_order(path) == ["now"]  # written before write() returned
    assert log.stats() == {"pending": 0, "written": 1, "failed": 0, "last_error": None}
    assert log.flush(timeout=0)
    log.close()


# -- file permissions ---------------------------------------------------------------------------------
def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_log_and_its_wal_files_are_owner_only_in_a_directory_it_creates_owner_only(tmp_path):
    # Before: logs.db, -wal and -shm 0644 in a 0755 directory, although they hold every prompt and answer.
    path = tmp_path / "new-dir" / "logs.db"
    log = RequestLog(path)
    log.write(_record("r1"))
    wal, shm = path.with_name("logs.db-wal"), path.with_name("logs.db-shm")
    assert wal.exists() and shm.exists()  # WAL mode, and the connection is still open
    assert {p.name: _mode(p) for p in (path, wal, shm)} == {p.name: 0o600 for p in (path, wal, shm)}
    assert _mode(path.parent) == 0o700
    log.close()


def test_an_existing_log_and_directory_keep_their_modes(tmp_path):
    path = tmp_path / "logs.db"
    sqlite3.connect(path).close()
    path.chmod(0o640)
    tmp_path.chmod(0o755)
    log = RequestLog(path)
    log.write(_record("r1"))
    log.close()
    assert _mode(path) == 0o640 and _mode(tmp_path) == 0o755  # the user's choice, not changed


# -- looking a request up by id ------------------------------------------------------------------------
def test_get_matches_an_id_prefix_literally(tmp_path):
    # Before: '%' was dropped and '_' was a LIKE wildcard, and LIKE ignored case.
    log = RequestLog(tmp_path / "logs.db")
    for request_id in ("chatcmpl-a%b", "chatcmpl-abc", "x_1", "xy1", "back\\slash"):
        log.write(_record(request_id))
    assert log.get("chatcmpl-a%")["id"] == "chatcmpl-a%b"
    assert log.get("chatcmpl-ab")["id"] == "chatcmpl-abc"
    assert log.get("x_")["id"] == "x_1"
    assert log.get("back\\")["id"] == "back\\slash"
    with pytest.raises(HallmarkError, match="more than one"):
        log.get("chatcmpl-a")
    for missing in ("CHATCMPL-ABC", "%", "_", "x%"):
        with pytest.raises(HallmarkError, match="no logged request"):
            log.get(missing)
    log.close()


@pytest.mark.parametrize("request_id", ["a" * 100_000, "a" * 201, "", "a\udcff"])
def test_get_refuses_an_id_that_cannot_be_one_with_one_line(tmp_path, request_id):
    # Before: a 100k-character id gave sqlite3.OperationalError "LIKE or GLOB pattern too complex".
    log = RequestLog(tmp_path / "logs.db")
    log.write(_record("r1"))
    with pytest.raises(HallmarkError) as e:
        log.get(request_id)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300
    log.close()


def test_get_finds_an_exact_id_that_longer_ids_start_with(tmp_path):
    # Before: the two newest prefix matches came back (LIMIT 2), the exact id was not among them,
    # and `hallmark logs req-1` answered "matches more than one".
    log = RequestLog(tmp_path / "logs.db")
    for request_id in ("req-1", "req-10", "req-11"):
        log.write(_record(request_id))
    assert log.get("req-1")["id"] == "req-1"
    with pytest.raises(HallmarkError, match="more than one"):
        log.get("req-")
    log.close()


def test_a_row_beyond_max_pending_is_counted_at_once_not_queued(tmp_path):
    path = tmp_path / "logs.db"
    log = RequestLog(path, background=True, max_pending=2)
    holder = _lock(path)
    try:
        for i in range(3):
            log.write(_record(f"req-{i}"))
        stats = log.stats()
        assert stats["pending"] == 2 and stats["failed"] == 1 and "2 rows already wait" in stats["last_error"]
    finally:
        _release(holder)
    assert log.close(timeout=30)
    assert _ids_in_order(path) == ["req-0", "req-1"]


def test_migration_two_adds_the_policy_column_to_an_old_log(tmp_path):
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.execute(
        "INSERT INTO requests (id, created, endpoint, status, http_status) "
        "VALUES ('old', 1.0, '/v1/x', 'completed', 200)"
    )
    db.commit()
    db.close()
    log = RequestLog(path)
    try:
        log.write(
            LogRecord(
                id="new",
                endpoint="/v1/completions",
                status="refused",
                http_status=400,
                policy={"action": "refuse", "category": "disinformation", "score": 0.97},
            )
        )
        old, new = log.get("old"), log.get("new")
        assert old["policy"] is None and old["status"] == "completed"  # the old row kept, column added
        assert new["policy"]["category"] == "disinformation" and new["status"] == "refused"
        assert schema_version(log._db) == len(MIGRATIONS) == 2
    finally:
        log.close()
