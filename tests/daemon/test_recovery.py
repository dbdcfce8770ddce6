"""Re-deriving markers that were synced but never handled (a kill between the state commit and the rules)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.recovery import Durable, unhandled_markers


def _state_db(path: Path, rows: list[tuple[str, int, float]]) -> Path:
    db = path / "state.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE files (path PRIMARY KEY, size, mtime_ns, ino, mode, synced_at)")
        conn.executemany("INSERT INTO files VALUES (?, ?, 0, 0, 0, ?)", rows)
    return db


def test_durable_round_trip_and_older_format() -> None:
    """The rules JSON and handled markers survive dumps/loads; old ones (rules JSON alone) still load; entries
    older than an hour are dropped."""
    durable = Durable('{"v":1}', {"a/_SUCCESS": 4000.0, "old/_SUCCESS": 10.0})
    back = Durable.loads(durable.dumps(now=5000.0))
    assert back.rules_json == '{"v":1}'
    assert back.markers_seen == {"a/_SUCCESS": 4000.0}
    assert back.saved_at == 5000.0
    assert Durable.loads('{"v":1,"rules":{}}').rules_json == '{"v":1,"rules":{}}'


def test_only_unhandled_recent_markers_come_back(tmp_path: Path) -> None:
    """A marker synced after it was last handled comes back with its first line; handled ones, old ones and
    other files do not."""
    mount = tmp_path / "mnt"
    (mount / "b").mkdir(parents=True)
    (mount / "b" / "_SUCCESS").write_text("run-7\nmore\n")
    db = _state_db(
        tmp_path,
        [("a/_SUCCESS", 0, 5000.0), ("b/_SUCCESS", 12, 5001.0), ("b/x.csv", 3, 5001.0), ("c/_SUCCESS", 0, 100.0)],
    )
    facts = unhandled_markers(db, mount, frozenset({"_SUCCESS"}), {"a/_SUCCESS": 5000.5}, now=5100.0)
    assert [(f.path, f.size, f.first_line) for f in facts] == [("b/_SUCCESS", 12, "run-7")]
    assert unhandled_markers(db, mount, frozenset(), {}, now=5100.0) == []
    assert unhandled_markers(tmp_path / "none.db", mount, frozenset({"_SUCCESS"}), {}, now=5100.0) == []


def test_a_long_outage_does_not_lose_the_marker_synced_before_the_crash(tmp_path: Path) -> None:
    """The look-back counts from when the handled list was saved: a marker synced just before a kill comes
    back even when the agent restarts hours later; one older than the hour before that save does not."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    db = _state_db(tmp_path, [("late/_SUCCESS", 0, 5001.0), ("early/_SUCCESS", 0, 1000.0)])
    hours_later = 5000.0 + 6 * 3600
    assert unhandled_markers(db, mount, frozenset({"_SUCCESS"}), {}, now=hours_later) == []
    facts = unhandled_markers(db, mount, frozenset({"_SUCCESS"}), {}, now=hours_later, saved_at=5000.0)
    assert [f.path for f in facts] == ["late/_SUCCESS"]
