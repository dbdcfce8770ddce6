"""The emulator's state in SQLite: datasets, snapshots, tags and grants. Synchronous; callers run it in threads.

One connection and one lock: every method holds the lock for its whole unit of work (writes in one
`BEGIN IMMEDIATE` transaction), so concurrent requests see and leave consistent state. Deleted datasets keep
their rows with `deleted_at` set and disappear from every read. sqlite3 errors become StateError here.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.api.models import Role
from agent.errors import StateError

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    project_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    deleted_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS datasets_live_name ON datasets(name) WHERE deleted_at IS NULL;
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    dataset_id TEXT NOT NULL REFERENCES datasets(id),
    created_at TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_dataset ON snapshots(dataset_id);
CREATE TABLE IF NOT EXISTS tags (
    dataset_id TEXT NOT NULL REFERENCES datasets(id),
    name TEXT NOT NULL,
    snapshot_id TEXT NOT NULL REFERENCES snapshots(id),
    PRIMARY KEY (dataset_id, name)
);
CREATE TABLE IF NOT EXISTS grants (
    dataset_id TEXT NOT NULL REFERENCES datasets(id),
    principal_type TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (dataset_id, principal_type, principal_id)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_DATASET_COLUMNS = "id, name, description, project_id, created_at, creator_id"


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    id: str
    name: str
    description: str
    project_id: str
    created_at: str
    creator_id: str
    snapshot_ids: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)  # tag name -> snapshot id
    size_bytes: int | None = None  # measured from the folder by the caller, not stored


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    id: str
    dataset_id: str
    created_at: str
    creator_id: str
    status: str = "active"
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GrantRecord:
    principal_type: str  # "user" or "organization"
    principal_id: str
    role: Role


class Store:
    """SQLite state under one lock. Open with `Store(path)`; `close()` when done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StateError(f"emulator state {path}: {exc}; check the data dir is writable") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StateError(f"emulator state {self.path}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StateError(f"emulator state {self.path}: {exc}") from exc

    # reads ---------------------------------------------------------------------------------------------------

    def dataset(self, dataset_id: str) -> DatasetRecord | None:
        """The live dataset with this id, with its snapshot ids and tags."""
        with self._read() as conn:
            found = self._datasets(conn, "AND id = ?", (dataset_id,))
        return found[0] if found else None

    def dataset_named(self, name: str) -> DatasetRecord | None:
        with self._read() as conn:
            found = self._datasets(conn, "AND name = ?", (name,))
        return found[0] if found else None

    def datasets(self) -> list[DatasetRecord]:
        """Every live dataset, oldest first."""
        with self._read() as conn:
            return self._datasets(conn, "", ())

    def snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        """The snapshot with this id, if its dataset is live."""
        with self._read() as conn:
            found = self._snapshots(conn, "AND s.id = ?", (snapshot_id,))
        return found[0] if found else None

    def snapshots(self, dataset_id: str) -> list[SnapshotRecord]:
        """The dataset's snapshots, oldest first, each with the tags that point at it."""
        with self._read() as conn:
            return self._snapshots(conn, "AND s.dataset_id = ?", (dataset_id,))

    def grants(self, dataset_id: str) -> list[GrantRecord]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT principal_type, principal_id, role FROM grants WHERE dataset_id = ? ORDER BY rowid",
                (dataset_id,),
            ).fetchall()
        return [GrantRecord(row[0], row[1], Role(row[2])) for row in rows]

    def role(self, dataset_id: str, user: str) -> Role | None:
        """The role `user` holds on the dataset through a user grant, if any."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT role FROM grants WHERE dataset_id = ? AND principal_type = 'user' AND principal_id = ?",
                (dataset_id, user),
            ).fetchone()
        return None if row is None else Role(row[0])

    def roles_of(self, user: str) -> dict[str, Role]:
        """dataset id -> the role `user` holds there through a user grant."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT dataset_id, role FROM grants WHERE principal_type = 'user' AND principal_id = ?", (user,)
            ).fetchall()
        return {row[0]: Role(row[1]) for row in rows}

    def meta(self, key: str) -> str | None:
        with self._read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # writes --------------------------------------------------------------------------------------------------

    def insert_dataset(self, record: DatasetRecord, grants: list[GrantRecord]) -> None:
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO datasets ({_DATASET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (record.id, record.name, record.description, record.project_id, record.created_at, record.creator_id),
            )
            for grant in grants:
                self._put_grant(conn, record.id, grant)

    def update_dataset(self, dataset_id: str, name: str, description: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE datasets SET name = ?, description = ? WHERE id = ?", (name, description, dataset_id))

    def mark_deleted(self, dataset_id: str, when: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE datasets SET deleted_at = ? WHERE id = ?", (when, dataset_id))

    def insert_snapshot(self, record: SnapshotRecord, tag: str | None) -> None:
        """Add a snapshot and, when `tag` is given, point that tag at it (moving it if it exists)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO snapshots (id, dataset_id, created_at, creator_id, status) VALUES (?, ?, ?, ?, ?)",
                (record.id, record.dataset_id, record.created_at, record.creator_id, record.status),
            )
            if tag is not None:
                self._set_tag(conn, record.dataset_id, tag, record.id)

    def set_status(self, snapshot_id: str, status: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE snapshots SET status = ? WHERE id = ?", (status, snapshot_id))

    def set_tag(self, dataset_id: str, tag: str, snapshot_id: str) -> None:
        with self._write() as conn:
            self._set_tag(conn, dataset_id, tag, snapshot_id)

    def remove_tag(self, dataset_id: str, tag: str) -> bool:
        with self._write() as conn:
            cursor = conn.execute("DELETE FROM tags WHERE dataset_id = ? AND name = ?", (dataset_id, tag))
            return cursor.rowcount > 0

    def put_grant(self, dataset_id: str, grant: GrantRecord) -> None:
        with self._write() as conn:
            self._put_grant(conn, dataset_id, grant)

    def remove_grant(self, dataset_id: str, principal_type: str, principal_id: str) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM grants WHERE dataset_id = ? AND principal_type = ? AND principal_id = ?",
                (dataset_id, principal_type, principal_id),
            )
            return cursor.rowcount > 0

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # helpers (lock held) -------------------------------------------------------------------------------------

    @staticmethod
    def _set_tag(conn: sqlite3.Connection, dataset_id: str, tag: str, snapshot_id: str) -> None:
        conn.execute(
            "INSERT INTO tags (dataset_id, name, snapshot_id) VALUES (?, ?, ?) "
            "ON CONFLICT (dataset_id, name) DO UPDATE SET snapshot_id = excluded.snapshot_id",
            (dataset_id, tag, snapshot_id),
        )

    @staticmethod
    def _put_grant(conn: sqlite3.Connection, dataset_id: str, grant: GrantRecord) -> None:
        conn.execute(
            "INSERT INTO grants (dataset_id, principal_type, principal_id, role) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (dataset_id, principal_type, principal_id) DO UPDATE SET role = excluded.role",
            (dataset_id, grant.principal_type, grant.principal_id, grant.role.value),
        )

    @staticmethod
    def _datasets(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> list[DatasetRecord]:
        rows = conn.execute(
            f"SELECT {_DATASET_COLUMNS} FROM datasets WHERE deleted_at IS NULL {where} ORDER BY rowid", params
        ).fetchall()
        if not rows:
            return []
        live = f"SELECT id FROM datasets WHERE deleted_at IS NULL {where}"
        snapshot_ids: dict[str, list[str]] = {}
        for dataset_id, snapshot_id in conn.execute(
            f"SELECT dataset_id, id FROM snapshots WHERE dataset_id IN ({live}) ORDER BY rowid", params
        ):
            snapshot_ids.setdefault(dataset_id, []).append(snapshot_id)
        tags: dict[str, dict[str, str]] = {}
        for dataset_id, name, snapshot_id in conn.execute(
            f"SELECT dataset_id, name, snapshot_id FROM tags WHERE dataset_id IN ({live}) ORDER BY name", params
        ):
            tags.setdefault(dataset_id, {})[name] = snapshot_id
        return [
            DatasetRecord(
                id=row[0],
                name=row[1],
                description=row[2],
                project_id=row[3],
                created_at=row[4],
                creator_id=row[5],
                snapshot_ids=tuple(snapshot_ids.get(row[0], ())),
                tags=tags.get(row[0], {}),
            )
            for row in rows
        ]

    @staticmethod
    def _snapshots(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> list[SnapshotRecord]:
        rows = conn.execute(
            "SELECT s.id, s.dataset_id, s.created_at, s.creator_id, s.status FROM snapshots s "
            f"JOIN datasets d ON d.id = s.dataset_id WHERE d.deleted_at IS NULL {where} ORDER BY s.rowid",
            params,
        ).fetchall()
        if not rows:
            return []
        tags: dict[str, list[str]] = {}
        for snapshot_id, name in conn.execute(
            "SELECT t.snapshot_id, t.name FROM tags t JOIN snapshots s ON s.id = t.snapshot_id "
            f"JOIN datasets d ON d.id = s.dataset_id WHERE d.deleted_at IS NULL {where} ORDER BY t.name",
            params,
        ):
            tags.setdefault(snapshot_id, []).append(name)
        return [
            SnapshotRecord(
                id=row[0],
                dataset_id=row[1],
                created_at=row[2],
                creator_id=row[3],
                status=row[4],
                tags=tuple(tags.get(row[0], ())),
            )
            for row in rows
        ]
