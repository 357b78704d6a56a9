"""The request log's schema migrations and status values, on real SQLite files."""

from __future__ import annotations

import json
import sqlite3

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
    assert [s.value for s in Outcome] == ["completed", "error", "cancelled"]
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
