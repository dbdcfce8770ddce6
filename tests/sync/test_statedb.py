"""The state DB's `files` table: WAL, round trips of any name, one transaction per batch, clear errors."""

from __future__ import annotations

import marshal
import os
import sqlite3
from pathlib import Path

import pytest

from agent.errors import StateError
from agent.sync.statedb import StateDB, make_row


def test_rows_round_trip_with_any_name(tmp_path: Path) -> None:
    """Rows survive a reopen, including names with newlines, unicode and bytes that are not UTF-8."""
    odd = os.fsdecode(b"bad-\xff-name")
    db = StateDB(tmp_path / "state.db")
    db.record(
        put=[
            ("a/b.txt", make_row(3, 10, 5, 0o644)),
            ("new\nline ü", make_row(1, 2, 3, 0o600)),
            (odd, make_row(4, 4, 4, 0o644)),
        ]
    )
    db.close()
    again = StateDB(tmp_path / "state.db")
    assert again.load() == {
        "a/b.txt": make_row(3, 10, 5, 0o644),
        "new\nline ü": make_row(1, 2, 3, 0o600),
        odd: make_row(4, 4, 4, 0o644),
    }
    again.close()


def test_record_upserts_and_drops_in_one_call(tmp_path: Path) -> None:
    """`record` replaces existing rows and deletes dropped ones together."""
    db = StateDB(tmp_path / "state.db")
    db.record(put=[("a", make_row(1, 1, 1, 0o644)), ("b", make_row(2, 2, 2, 0o644))])
    db.record(put=[("a", make_row(9, 9, 9, 0o600))], drop=["b"])
    assert db.load() == {"a": make_row(9, 9, 9, 0o600)}
    db.close()


def test_wal_mode_and_only_our_table(tmp_path: Path) -> None:
    """The DB runs in WAL mode and this module creates only its `files`, `installing`, `restoring` and
    `files_image` tables, leaving others' tables alone."""
    path = tmp_path / "state.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE queue (id INTEGER PRIMARY KEY)")
    other.commit()
    db = StateDB(path)
    db.record(put=[("x", make_row(1, 1, 1, 0o644))])
    tables = {row[0] for row in other.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    mode = other.execute("PRAGMA journal_mode").fetchone()[0]
    other.close()
    db.close()
    assert tables == {"queue", "files", "installing", "restoring", "files_image"}
    assert mode == "wal"


def test_unopenable_db_raises_state_error(tmp_path: Path) -> None:
    """A state path that cannot hold a DB raises StateError naming state_dir."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StateError, match="state_dir"):
        StateDB(blocker / "state.db")


def test_intents_survive_a_reopen_until_their_commit_clears_them(tmp_path: Path) -> None:
    """A batch's intents outlive the connection (a killed agent) and the commit of its rows clears exactly
    the intents of that batch."""
    db = StateDB(tmp_path / "state.db")
    db.intend([("a", make_row(1, 10, 7, 0o644)), ("b", make_row(2, 20, 8, 0o644))])
    db.close()
    db = StateDB(tmp_path / "state.db")
    assert db.intents() == {"a": make_row(1, 10, 7, 0o644), "b": make_row(2, 20, 8, 0o644)}
    db.record(put=[("a", make_row(1, 10, 7, 0o644))], done=["a"], at=1.0)
    left, rows = db.intents(), db.load()
    db.close()
    assert left == {"b": make_row(2, 20, 8, 0o644)}
    assert rows == {"a": make_row(1, 10, 7, 0o644)}


def _image(path: Path) -> bytes | None:
    conn = sqlite3.connect(path)
    try:
        found = conn.execute("SELECT image FROM files_image").fetchone()
    finally:
        conn.close()
    return None if found is None else bytes(found[0])


def test_load_keeps_an_image_that_any_change_to_the_rows_drops(tmp_path: Path) -> None:
    """A load stores the rows as one image and the next load answers from it; a change to `files`, by this module
    or by anyone writing the table directly, drops the image in the same transaction, so a load never answers
    from rows that are out of date. Odd names survive the image too."""
    path = tmp_path / "state.db"
    odd = os.fsdecode(b"bad-\xff-name")
    db = StateDB(path)
    db.record(put=[("a", make_row(1, 1, 1, 0o644)), (odd, make_row(2, 2, 2, 0o600))])
    assert _image(path) is None
    first = db.load()
    assert _image(path) is not None
    assert db.load() == first == {"a": make_row(1, 1, 1, 0o644), odd: make_row(2, 2, 2, 0o600)}
    db.record(drop=["a"])
    assert _image(path) is None
    assert db.load() == {odd: make_row(2, 2, 2, 0o600)}
    other = sqlite3.connect(path)
    other.execute("UPDATE files SET size = 7")
    other.commit()
    assert _image(path) is None
    assert db.load() == {odd: make_row(7, 2, 2, 0o600)}
    other.execute("INSERT INTO files VALUES ('b', 3, 3, 3, 420, 0.0)")
    other.commit()
    other.close()
    assert db.load() == {odd: make_row(7, 2, 2, 0o600), "b": make_row(3, 3, 3, 0o644)}
    db.close()


def test_a_damaged_image_is_ignored_and_replaced(tmp_path: Path) -> None:
    """An image that cannot be read back as rows is not trusted: the rows are read from the table and a good
    image replaces it."""
    path = tmp_path / "state.db"
    db = StateDB(path)
    db.record(put=[("a", make_row(1, 1, 1, 0o644))])
    db.load()
    for damage in (b"\x00garbage", b"N"):  # torn bytes; a valid marshal of something that is not a dict
        other = sqlite3.connect(path)
        other.execute("UPDATE files_image SET image = ?", (damage,))
        other.commit()
        other.close()
        assert db.load() == {"a": make_row(1, 1, 1, 0o644)}
        assert _image(path) not in (None, damage)
    db.close()


def test_the_daemon_load_neither_reads_nor_stores_an_image(tmp_path: Path) -> None:
    """`load(image=False)` reads the table: no image is stored, and a stored one is not what it answers from."""
    path = tmp_path / "state.db"
    db = StateDB(path)
    db.record(put=[("a", make_row(1, 1, 1, 0o644))])
    assert db.load(image=False) == {"a": make_row(1, 1, 1, 0o644)} and _image(path) is None
    db.load()
    other = sqlite3.connect(path)
    other.execute("UPDATE files_image SET image = ?", (marshal.dumps({"stale": b"x"}),))
    other.commit()
    other.close()
    assert db.load(image=False) == {"a": make_row(1, 1, 1, 0o644)}
    db.close()


def test_a_read_only_open_writes_nothing(tmp_path: Path) -> None:
    """The dry run's view: an existing DB opened read-only loads its rows and changes no byte of the file
    (no image stored, no schema brought up to date)."""
    path = tmp_path / "state.db"
    db = StateDB(path)
    db.record(put=[("a", make_row(1, 1, 1, 0o644))])
    db.close()
    before = path.read_bytes()
    ro = StateDB(path, read_only=True)
    assert ro.load(image=False) == {"a": make_row(1, 1, 1, 0o644)}
    assert ro.intents() == {}
    with pytest.raises(StateError):
        ro.record(put=[("b", make_row(2, 2, 2, 0o644))])
    ro.close()
    assert path.read_bytes() == before and _image(path) is None


def test_a_known_image_still_stored_is_copied_not_unmarshalled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`once` loads the rows for its early walk, then for the engine: the second load copies the first one's
    rows while the stored image is the same, and reads the table again once a change dropped it."""
    db = StateDB(tmp_path / "state.db")
    db.record(put=[(f"f{i}", make_row(i, i, i, 0o644)) for i in range(50)])
    known = db.load_image()
    other = StateDB(tmp_path / "state.db")  # the engine's own connection
    unmarshalled: list[int] = []
    real_loads = marshal.loads
    monkeypatch.setattr(marshal, "loads", lambda data: unmarshalled.append(len(data)) or real_loads(data))
    rows = other.load(known=known)
    assert rows == known[1] and rows is not known[1] and unmarshalled == []
    other.record(put=[("f0", make_row(9, 9, 9, 0o644))])
    assert other.load(known=known)["f0"] == make_row(9, 9, 9, 0o644)
    other.close()
    db.close()


def test_rows_the_mount_lost_are_kept_until_their_file_is_put_again(tmp_path: Path) -> None:
    """`lose` moves rows from `files` to `restoring` (kept across a reopen); a put of the path, or `found`,
    takes them out again."""
    db = StateDB(tmp_path / "state.db")
    rows = {name: make_row(i + 1, i, i, 0o644) for i, name in enumerate(["a", "b", "c", "d/é"])}
    db.record(put=rows.items())
    db.record(lose=[(name, rows[name]) for name in ("a", "b", "d/é")], durable=True)
    assert db.load(image=False) == {"c": rows["c"]}
    db.close()
    db = StateDB(tmp_path / "state.db")
    assert db.restoring() == {name: rows[name] for name in ("a", "b", "d/é")}
    db.record(put=[("a", make_row(9, 9, 9, 0o644))])
    db.record(found=["b"])
    assert db.restoring() == {"d/é": rows["d/é"]}
    db.record(lose=[("c", rows["c"]), ("c", rows["c"])])  # twice in one call: one row
    assert set(db.restoring()) == {"c", "d/é"}
    db.record(put=[("c", rows["c"]), ("d/é", rows["d/é"])])
    assert db.restoring() == {} and db._lost == 0
    db.close()
