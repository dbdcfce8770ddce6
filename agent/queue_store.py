"""The SQLite side of the snapshot queue: jobs and the rules state in the agent's state DB. Blocking calls.

Tables (the sync engine keeps its own tables in the same file):
    queue_jobs   one row per snapshot job; `state` is waiting -> creating -> tagging -> done, or dead
    rules_state  one row: the rules engine's state as JSON (so `{seq}` survives restarts)

Every write is its own short transaction (autocommit mode, `BEGIN IMMEDIATE` for read-modify-write), WAL
journal, `synchronous=FULL`, so a job is on disk before `submit` returns and survives kill -9. One
connection guarded by a lock; `TaskQueue` calls these from worker threads or inline for the quick sync API.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent.errors import StateError
from agent.rules.engine import SnapshotRequest

T = TypeVar("T")

WAITING, CREATING, TAGGING, DONE, DEAD = "waiting", "creating", "tagging", "done", "dead"
ACTIVE = (WAITING, CREATING, TAGGING)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    state           TEXT    NOT NULL,
    rules           TEXT    NOT NULL,            -- JSON list
    tags            TEXT    NOT NULL,            -- JSON list; the first goes with the create call
    scopes          TEXT    NOT NULL,            -- JSON list
    requested_at    REAL    NOT NULL,
    submitted_at    REAL    NOT NULL,
    version         INTEGER NOT NULL DEFAULT 0,  -- bumped by every join, so a covered() check is not stale
    attempts        INTEGER NOT NULL DEFAULT 0,  -- failures since the last progress
    next_attempt_at REAL    NOT NULL DEFAULT 0,
    sent_at         REAL,                        -- first create call begun (crash recovery looks after it)
    last_sent_at    REAL,                        -- latest create call begun (a re-create waits past it)
    create_sends    INTEGER NOT NULL DEFAULT 0,  -- create calls begun; > 0 means look at the server first
    untagged        INTEGER NOT NULL DEFAULT 0,  -- create without a tag (first tag taken elsewhere: 409)
    snapshot_id     TEXT,
    tags_done       TEXT    NOT NULL DEFAULT '[]',
    last_error      TEXT,
    finished_at     REAL
);
CREATE INDEX IF NOT EXISTS queue_jobs_state ON queue_jobs (state, id);
CREATE TABLE IF NOT EXISTS rules_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    json       TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Job:
    """One row of queue_jobs."""

    id: int
    state: str
    request: SnapshotRequest
    submitted_at: float
    version: int
    attempts: int
    next_attempt_at: float
    sent_at: float | None
    last_sent_at: float | None
    create_sends: int
    untagged: bool
    snapshot_id: str | None
    tags_done: tuple[str, ...]
    last_error: str | None
    finished_at: float | None

    @property
    def first_tag(self) -> str | None:
        return self.request.tags[0] if self.request.tags else None

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly view for status and events."""
        return {
            "id": self.id,
            "state": self.state,
            "rules": list(self.request.rules),
            "tags": list(self.request.tags),
            "scopes": list(self.request.scopes),
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at or None,
            "snapshot_id": self.snapshot_id,
            "tags_done": list(self.tags_done),
            "last_error": self.last_error,
        }


class QueueStore:
    """The queue's tables behind one SQLite connection. Every method is blocking and thread-safe."""

    def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
            columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(queue_jobs)")}
            if "last_sent_at" not in columns:  # a state DB of 0.1.0
                self._conn.execute("ALTER TABLE queue_jobs ADD COLUMN last_sent_at REAL")
                self._conn.execute("UPDATE queue_jobs SET last_sent_at = sent_at WHERE state = ?", (CREATING,))
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open the state database {path}: {exc}") from None
        self._path = path

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                if immediate:
                    self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    if immediate:
                        self._conn.execute("ROLLBACK")
                    raise
                if immediate:
                    self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StateError(f"state database {self._path}: {exc}") from None

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._tx() as conn:
            return fn(conn)

    # --- jobs -------------------------------------------------------------------------------------------

    def submit(self, request: SnapshotRequest, now: float, rules_state: str | None = None) -> tuple[int, bool]:
        """Join the newest waiting job or add one. Returns (job id, joined). `rules_state` (the rules engine's
        state after the fire) is saved in the same transaction, so a crash never keeps one without the other."""
        with self._tx(immediate=True) as conn:
            if rules_state is not None:
                conn.execute(
                    "INSERT INTO rules_state (id, json, updated_at) VALUES (1, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at",
                    (rules_state, now),
                )
            row = conn.execute(
                "SELECT * FROM queue_jobs WHERE state = ? ORDER BY id DESC LIMIT 1", (WAITING,)
            ).fetchone()
            if row is not None:
                merged = _job(row).request.merge(request)
                conn.execute(
                    "UPDATE queue_jobs SET rules = ?, tags = ?, scopes = ?, requested_at = ?, version = version + 1"
                    " WHERE id = ?",
                    (*_request_columns(merged), row["id"]),
                )
                return int(row["id"]), True
            cur = conn.execute(
                "INSERT INTO queue_jobs (state, rules, tags, scopes, requested_at, submitted_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (WAITING, *_request_columns(request.merge(request)), now),
            )
            return int(cur.lastrowid or 0), False

    def head(self) -> Job | None:
        """The oldest unfinished job (jobs run strictly in order, so a moving tag ends on the newest)."""
        row = self._read(
            lambda c: c.execute(
                "SELECT * FROM queue_jobs WHERE state IN (?, ?, ?) ORDER BY id LIMIT 1", ACTIVE
            ).fetchone()
        )
        return None if row is None else _job(row)

    def get(self, job_id: int) -> Job:
        row = self._read(lambda c: c.execute("SELECT * FROM queue_jobs WHERE id = ?", (job_id,)).fetchone())
        if row is None:
            raise StateError(f"queue job {job_id} is missing from the state database")
        return _job(row)

    def jobs(self, states: tuple[str, ...] = ACTIVE) -> list[Job]:
        marks = ", ".join("?" for _ in states)
        rows = self._read(
            lambda c: c.execute(f"SELECT * FROM queue_jobs WHERE state IN ({marks}) ORDER BY id", states).fetchall()
        )
        return [_job(row) for row in rows]

    def counts(self) -> dict[str, int]:
        rows = self._read(lambda c: c.execute("SELECT state, COUNT(*) FROM queue_jobs GROUP BY state").fetchall())
        return {str(row[0]): int(row[1]) for row in rows}

    def last_done(self) -> Job | None:
        row = self._read(
            lambda c: c.execute(
                "SELECT * FROM queue_jobs WHERE state = ? ORDER BY finished_at DESC, id DESC LIMIT 1", (DONE,)
            ).fetchone()
        )
        return None if row is None else _job(row)

    def start_sending(self, job_id: int, version: int) -> bool:
        """waiting -> creating, unless a submit joined the job since `version` was read."""
        return self._update(
            "UPDATE queue_jobs SET state = ? WHERE id = ? AND state = ? AND version = ?",
            (CREATING, job_id, WAITING, version),
        )

    def begin_create(self, job_id: int, now: float) -> None:
        """Written before each create call: from now on the server may hold our snapshot."""
        self._update(
            "UPDATE queue_jobs SET sent_at = COALESCE(sent_at, ?), last_sent_at = ?, create_sends = create_sends + 1"
            " WHERE id = ?",
            (now, now, job_id),
        )

    def settle_send(self, job_id: int) -> None:
        """The latest create call was refused outright (4xx, 503): nothing of it can still be running."""
        self._update("UPDATE queue_jobs SET last_sent_at = NULL WHERE id = ?", (job_id,))

    def record_snapshot(self, job_id: int, snapshot_id: str, tags_done: tuple[str, ...]) -> None:
        self._update(
            "UPDATE queue_jobs SET state = ?, snapshot_id = ?, tags_done = ?, attempts = 0, next_attempt_at = 0,"
            " last_error = NULL WHERE id = ?",
            (TAGGING, snapshot_id, json.dumps(list(tags_done)), job_id),
        )

    def record_tag(self, job_id: int, tag: str) -> None:
        with self._tx(immediate=True) as conn:
            row = conn.execute("SELECT tags_done FROM queue_jobs WHERE id = ?", (job_id,)).fetchone()
            done = list(json.loads(row["tags_done"])) if row else []
            if tag not in done:
                done.append(tag)
            conn.execute(
                "UPDATE queue_jobs SET tags_done = ?, attempts = 0, next_attempt_at = 0, last_error = NULL"
                " WHERE id = ?",
                (json.dumps(done), job_id),
            )

    def finish(self, job_id: int, now: float) -> None:
        self._update("UPDATE queue_jobs SET state = ?, finished_at = ? WHERE id = ?", (DONE, now, job_id))

    def retry_later(self, job_id: int, attempts: int, at: float, error: str, *, untagged: bool = False) -> None:
        self._update(
            "UPDATE queue_jobs SET attempts = ?, next_attempt_at = ?, last_error = ?,"
            " untagged = MAX(untagged, ?) WHERE id = ?",
            (attempts, at, error, int(untagged), job_id),
        )

    def bury(self, job_id: int, attempts: int, error: str, now: float) -> None:
        self._update(
            "UPDATE queue_jobs SET state = ?, attempts = ?, last_error = ?, finished_at = ? WHERE id = ?",
            (DEAD, attempts, error, now, job_id),
        )

    def revive(self, job_id: int | None) -> int:
        """Dead jobs back in line, each resuming where it stopped. Returns how many."""
        with self._tx(immediate=True) as conn:
            if job_id is None:
                rows = conn.execute("SELECT * FROM queue_jobs WHERE state = ?", (DEAD,)).fetchall()
            else:
                rows = conn.execute("SELECT * FROM queue_jobs WHERE state = ? AND id = ?", (DEAD, job_id)).fetchall()
            for row in rows:
                job = _job(row)
                state = TAGGING if job.snapshot_id else CREATING if job.create_sends else WAITING
                conn.execute(
                    "UPDATE queue_jobs SET state = ?, attempts = 0, next_attempt_at = 0, finished_at = NULL"
                    " WHERE id = ?",
                    (state, job.id),
                )
            return len(rows)

    def recorded_snapshots(self, except_job: int) -> set[str]:
        """Snapshot ids other jobs own: never adopted by crash recovery."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT snapshot_id FROM queue_jobs WHERE snapshot_id IS NOT NULL AND id != ?", (except_job,)
            ).fetchall()
        )
        return {str(row[0]) for row in rows}

    def tags_set_after(self, job_id: int) -> set[str]:
        """Tags that later jobs already put on their snapshots (a revived old job must not move them back)."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT tags_done FROM queue_jobs WHERE id > ? AND snapshot_id IS NOT NULL", (job_id,)
            ).fetchall()
        )
        return {str(tag) for row in rows for tag in json.loads(row[0])}

    def prune(self, keep: int) -> None:
        """Forget all but the newest `keep` finished jobs."""
        self._update(
            "DELETE FROM queue_jobs WHERE state = ? AND id NOT IN"
            " (SELECT id FROM queue_jobs WHERE state = ? ORDER BY id DESC LIMIT ?)",
            (DONE, DONE, keep),
        )

    def _update(self, sql: str, params: tuple[Any, ...]) -> bool:
        with self._tx() as conn:
            return conn.execute(sql, params).rowcount > 0

    # --- rules state ------------------------------------------------------------------------------------

    def save_rules_state(self, text: str, now: float) -> None:
        self._update(
            "INSERT INTO rules_state (id, json, updated_at) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at",
            (text, now),
        )

    def load_rules_state(self) -> str | None:
        row = self._read(lambda c: c.execute("SELECT json FROM rules_state WHERE id = 1").fetchone())
        return None if row is None else str(row[0])


def _request_columns(request: SnapshotRequest) -> tuple[str, str, str, float]:
    return (
        json.dumps(list(request.rules)),
        json.dumps(list(request.tags)),
        json.dumps(list(request.scopes)),
        request.requested_at,
    )


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=int(row["id"]),
        state=str(row["state"]),
        request=SnapshotRequest(
            rules=tuple(json.loads(row["rules"])),
            tags=tuple(json.loads(row["tags"])),
            scopes=tuple(json.loads(row["scopes"])),
            requested_at=float(row["requested_at"]),
        ),
        submitted_at=float(row["submitted_at"]),
        version=int(row["version"]),
        attempts=int(row["attempts"]),
        next_attempt_at=float(row["next_attempt_at"]),
        sent_at=None if row["sent_at"] is None else float(row["sent_at"]),
        last_sent_at=None if row["last_sent_at"] is None else float(row["last_sent_at"]),
        create_sends=int(row["create_sends"]),
        untagged=bool(row["untagged"]),
        snapshot_id=row["snapshot_id"],
        tags_done=tuple(json.loads(row["tags_done"])),
        last_error=row["last_error"],
        finished_at=None if row["finished_at"] is None else float(row["finished_at"]),
    )
