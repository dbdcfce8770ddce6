"""The state DB's `files` and `installing` tables: what the agent put (or is putting) in the mount, per path.

Table `files` (other parts keep their own tables in the same `state.db`):

    path      TEXT  primary key: the relative '/'-separated path (a BLOB of its bytes when not valid UTF-8)
    size      INTEGER  bytes
    mtime_ns  INTEGER  the source's (and the mount copy's) mtime
    ino       INTEGER  the source inode it was copied from (a replaced file has a new inode)
    mode      INTEGER  permission bits
    synced_at REAL     epoch seconds

A row is written only after the copy was renamed into place (and made durable, with `dataset.durability:
batch`; see flushmark.py for the default). Rows are written in one transaction per batch of copies; with WAL
and `synchronous=NORMAL` a commit costs no fsync (the WAL is synced at checkpoints), and a crash can lose at
most the last commits, which the next start-up scan redoes: the copies are already in the mount and are
recognised (same size and mtime) without copying them again.

No content hash is stored: a stored hash costs a full read of every file copied, and size + mtime + inode
decide nearly every case (as rsync's quick check does). Where doubt remains (the inode changed but size and
mtime did not: a file replaced by a same-size copy with its mtime preserved, a restored tree) the copier
compares the source's bytes with the mount's copy, so the read is paid only where it earns its cost.

Table `files_image`: the whole `files` table in one `marshal` blob, which loads in a quarter of the time of
reading 100,000 rows one by one (what a `once` with nothing to do spends most of its start on). `load` takes it
when the table has not changed since, else reads the rows and stores a new image (`once` and the dry run; the
daemon, which loads once per start, reads the table); triggers on `files` drop
the image in the same transaction as any change to it, so a stale image cannot be read.

Table `installing` (same columns but `synced_at`): the intents of the copy batches under way. A batch writes
its intents (the row each file will get) in one transaction before its first rename into the mount, and the
commit of its rows clears them in the same transaction. Intents left at start-up are from an agent killed
between a rename and its commit: the engine turns those whose file the mount holds as intended into rows
(`mount.claimed_rows`), so the normal scan decides (still in the source -> compared and kept, gone -> deleted in
mirror mode), and clears them.
Without this, such a file would have no row and would never be deleted. The intent commit is synced
(`synchronous=FULL` for that one transaction: one WAL fsync per batch of up to 1,024 files).

All methods block; call them from a worker thread. One connection, guarded by a lock.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sqlite3
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from agent.errors import StateError

Row = bytes
"""(size, mtime_ns, ino, mode bits) of a file in the mount, packed in 26 bytes: 100k of them live in memory, and
a packed row is a third of a tuple of four ints. Make one with `make_row`, read one with `row_fields`."""

_ROW = struct.Struct("<QqQH")
_pack = _ROW.pack
ROW_PACK = _pack
"""`make_row` without the call around it and the mode mask (the scan's hot loop masks the mode itself)."""


class RowFields(NamedTuple):
    size: int
    mtime_ns: int
    ino: int
    mode: int


def make_row(size: int, mtime_ns: int, ino: int, mode: int) -> Row:
    return _pack(size, mtime_ns, ino, mode & 0o7777)


def row_fields(row: Row) -> RowFields:
    return RowFields._make(_ROW.unpack(row))


def _rows(conn: sqlite3.Connection) -> dict[str, Row]:
    fsdecode, pack = os.fsdecode, _pack
    cursor = conn.execute("SELECT path, size, mtime_ns, ino, mode FROM files")
    return {(p if type(p) is str else fsdecode(p)): pack(s, m, i, mo) for p, s, m, i, mo in cursor}


Image = tuple[bytes, dict[str, Row]]
"""The files table's image as one load read it: the stored `marshal` blob, and the rows it holds."""


def _from_image(found: tuple[bytes] | None) -> dict[str, Row] | None:
    """The rows kept in `files_image`; None when there is none (or it cannot be read: then the table is read)."""
    if found is None:
        return None
    try:
        rows = marshal.loads(found[0])  # noqa: S302 - written by this module into the agent's own state DB
    except (EOFError, ValueError, TypeError):
        return None
    return rows if isinstance(rows, dict) else None


def _key(path: str) -> str | bytes:
    """How a path is stored: as TEXT when it is valid UTF-8, else as a BLOB of its bytes (always the same way
    for the same path, so the primary key stays unique)."""
    if path.isascii():
        return path
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


_ROW_COLUMNS = """
    path PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    mode INTEGER NOT NULL"""
"""A row's columns: the synced files (`files`, with `synced_at`), the intents of the batches under way
(`installing`) and the rows the mount lost until their files are back (`restoring`)."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS files ({_ROW_COLUMNS},
    synced_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS installing ({_ROW_COLUMNS}
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS restoring ({_ROW_COLUMNS}
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files_image (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    image BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS files_image_on_insert AFTER INSERT ON files BEGIN DELETE FROM files_image; END;
CREATE TRIGGER IF NOT EXISTS files_image_on_update AFTER UPDATE ON files BEGIN DELETE FROM files_image; END;
CREATE TRIGGER IF NOT EXISTS files_image_on_delete AFTER DELETE ON files BEGIN DELETE FROM files_image; END;
"""


class StateDB:
    """The `files` table of `state.db`."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """Open (and create, or bring up to date) the DB; `read_only` opens an existing one only to read it, and
        writes nothing (the dry run), so only `load(image=False)` and `intents` may be called."""
        self.path = path
        self._lock = threading.Lock()
        self._lost = 0  # rows in `restoring`: copies of the puts are taken out of it only while there are any
        if read_only:
            try:
                uri = path.absolute().as_uri() + "?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise StateError(f"state DB {path} cannot be opened ({exc}): check state_dir") from None
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._lost = self._conn.execute("SELECT COUNT(*) FROM restoring").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"state DB {path} cannot be opened ({exc}): check state_dir") from None

    def load(self, *, image: bool = True, known: Image | None = None) -> dict[str, Row]:
        """Every row, by path: from the image when `files` has not changed since it was taken, else from the
        table (and then a new image is stored for the next start). `image=False` reads the table only: the
        daemon loads once per start, and the image's 5 MB buffers (per 100,000 rows) would stay in its heap.
        `known`: an image this process loaded before (`load_image`); when it is still the stored one, its rows
        are copied instead of unmarshalled again (`once` loads them for its early walk, then for the engine)."""
        if not image:
            return self._read_rows()
        return self.load_image(known)[1]

    def load_image(self, known: Image | None = None) -> Image:
        """`load` with the image: (the stored blob, the rows it holds)."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")  # no writer between the read and the image taken of it
                try:
                    found = conn.execute("SELECT image FROM files_image").fetchone()
                    if found is not None and known is not None and found[0] == known[0]:
                        blob, rows = known[0], dict(known[1])
                    else:
                        blob, loaded = (found[0], _from_image(found)) if found is not None else (b"", None)
                        if loaded is None:
                            loaded = _rows(conn)
                            blob = marshal.dumps(loaded)
                            conn.execute("INSERT OR REPLACE INTO files_image (id, image) VALUES (0, ?)", (blob,))
                        rows = loaded
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("PRAGMA shrink_memory")  # the read filled SQLite's page cache: the rows are here
                return blob, rows
            except sqlite3.Error as exc:
                raise StateError(f"state DB {self.path} cannot be read ({exc})") from None

    def _read_rows(self) -> dict[str, Row]:
        with self._lock:
            try:
                rows = _rows(self._conn)
                self._conn.execute("PRAGMA shrink_memory")
                return rows
            except sqlite3.Error as exc:
                raise StateError(f"state DB {self.path} cannot be read ({exc})") from None

    def intents(self) -> dict[str, Row]:
        """The intents left by batches that never committed (an agent killed mid-batch), by path."""
        return self._table("installing")

    def restoring(self) -> dict[str, Row]:
        """The rows of files the mount lost (`record(lose=...)`), not copied again yet, by path."""
        return self._table("restoring")

    def _table(self, name: str) -> dict[str, Row]:
        with self._lock:
            try:
                cursor = self._conn.execute(f"SELECT path, size, mtime_ns, ino, mode FROM {name}")
                return {(p if type(p) is str else os.fsdecode(p)): _pack(s, m, i, mo) for p, s, m, i, mo in cursor}
            except sqlite3.Error as exc:
                if "no such table" in str(exc):  # a dry run over a DB from an older version
                    return {}
                raise StateError(f"state DB {self.path} cannot be read ({exc})") from None

    def intend(self, items: Iterable[tuple[str, Row]]) -> None:
        """Record, durably and in one transaction, the rows a batch is about to put in the mount."""
        rows = [(_key(path), *_ROW.unpack(row)) for path, row in items]
        if not rows:
            return
        with self._transaction(durable=True) as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO installing (path, size, mtime_ns, ino, mode) VALUES (?, ?, ?, ?, ?)", rows
            )

    def record(
        self,
        put: Iterable[tuple[str, Row]] = (),
        drop: Iterable[str] = (),
        at: float = 0.0,
        done: Iterable[str] = (),
        *,
        lose: Iterable[tuple[str, Row]] = (),
        found: Iterable[str] = (),
        durable: bool = False,
    ) -> None:
        """Upsert `put` and delete `drop` in one transaction, clearing the intents of the paths in `done`. `lose`:
        rows whose file the mount lost, kept in `restoring` until the file is put again (or `found` gone from
        the source), so a file copied again unchanged is no new data after a restart too. `durable` syncs it
        (rows dropped so their files are copied again must not come back after a crash)."""
        puts = [(_key(path), *_ROW.unpack(row), at) for path, row in put]
        losts = list({_key(path): (_key(path), *_ROW.unpack(row)) for path, row in lose}.values())
        drops = [(_key(path),) for path in drop] + [lost[:1] for lost in losts]
        dones = [(_key(path),) for path in done]
        founds = [(_key(path),) for path in found]
        if not puts and not drops and not dones and not founds:
            return
        with self._transaction(durable=durable) as conn:
            lost = self._lost
            if losts or founds or (puts and lost):
                before = conn.total_changes
                conn.executemany("DELETE FROM restoring WHERE path = ?", [*founds, *(p[:1] for p in puts), *drops])
                lost -= conn.total_changes - before
                conn.executemany(
                    "INSERT INTO restoring (path, size, mtime_ns, ino, mode) VALUES (?, ?, ?, ?, ?)", losts
                )
                lost += len(losts)
            if dones:
                conn.executemany("DELETE FROM installing WHERE path = ?", dones)
            if drops:
                conn.executemany("DELETE FROM files WHERE path = ?", drops)
            if puts:
                conn.executemany(
                    "INSERT OR REPLACE INTO files (path, size, mtime_ns, ino, mode, synced_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    puts,
                )
        self._lost = lost  # once committed (a rollback leaves the count as it was)

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock, rolled back on any error; `durable` syncs the WAL at commit."""
        with self._lock:
            conn = self._conn
            try:
                if durable:
                    conn.execute("PRAGMA synchronous=FULL")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield conn
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                finally:
                    if durable:
                        conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise StateError(f"state DB {self.path} cannot be written ({exc})") from None

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()
