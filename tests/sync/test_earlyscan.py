"""`once`'s early scan: a walk forked before the agent is assembled, used only when it is the walk the engine
would make, and stopped when the agent never gets to it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sync.sync_kit import EngineFactory

from agent.config import SourceConfig
from agent.sync.earlyscan import MAX_AGE, EarlyScan
from agent.sync.scan import ScanResult, Walker, source_walker
from agent.sync.statedb import StateDB, make_row


def fill(src: Path, folders: int = 20) -> None:
    for i in range(folders):
        (src / f"d{i:02d}").mkdir()
        (src / f"d{i:02d}" / "f.csv").write_text(str(i))
        (src / f"d{i:02d}" / "x.tmp").write_text("ignored")


def test_the_early_result_is_the_walk_the_engine_would_make(src: Path, mnt: Path, state: Path) -> None:
    """Same walker and same rows: `take` hands over exactly what a walk now finds (rows from the state DB)."""
    fill(src)
    state.mkdir()
    db = StateDB(state / "state.db")
    st = (src / "d00" / "f.csv").stat()
    db.record(put=[("d00/f.csv", make_row(st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode))])
    rows = db.load()
    db.close()
    source = SourceConfig(path=src)
    early = EarlyScan.start(source, mnt, state)
    assert early is not None
    walker = source_walker(source, mnt, state)
    taken = early.take(walker, rows, time.time())
    assert isinstance(taken, ScanResult)
    fresh = walker.scan(rows)
    assert taken.changed == fresh.changed and taken.hits == fresh.hits == {"d00": 1}
    assert (taken.files, taken.bytes) == (fresh.files, fresh.bytes) == (20, sum(len(str(i)) for i in range(20)))
    assert early.take(walker, rows, time.time()) is None  # once only
    early.close()


def test_a_different_walk_or_other_rows_are_not_taken(src: Path, mnt: Path, state: Path) -> None:
    """Rows that changed since the child compared against them (intents claimed, stale rows dropped), other
    walk settings, or a walk older than MAX_AGE (the agent waited for a snapshot being taken): the engine walks
    again."""
    fill(src)
    source = SourceConfig(path=src)
    early = EarlyScan.start(source, mnt, state)
    assert early is not None
    rows = {"d00/f.csv": make_row(1, 1, 1, 0o644)}
    assert early.take(source_walker(source, mnt, state), rows, time.time()) is None
    other = EarlyScan.start(source, mnt, state)
    assert other is not None
    csv_ignored = source_walker(SourceConfig(path=src, ignore=("*.csv",)), mnt, state)
    assert other.take(csv_ignored, {}, time.time()) is None
    late = EarlyScan.start(source, mnt, state)
    assert late is not None
    pid = late._child[0] if late._child else 0
    assert late.take(source_walker(source, mnt, state), {}, late.started + MAX_AGE + 1) is None  # too old
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # and its child stopped


def test_close_stops_a_child_whose_result_is_never_taken(src: Path, mnt: Path, state: Path) -> None:
    fill(src)
    early = EarlyScan.start(SourceConfig(path=src), mnt, state)
    assert early is not None
    pid = early._child[0] if early._child else 0
    early.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped
    early.close()


def test_nothing_starts_without_a_known_mount_or_a_source_folder(src: Path, mnt: Path, state: Path) -> None:
    assert EarlyScan.start(SourceConfig(path=src), None, state) is None  # the mount comes from the dataset
    assert EarlyScan.start(SourceConfig(path=src / "missing"), mnt, state) is None


async def test_once_uses_the_early_walk_and_copies_what_it_found(
    src: Path, mnt: Path, state: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine handed an early scan that holds copies from it, without walking the source itself."""
    fill(src)
    early = EarlyScan.start(SourceConfig(path=src), mnt, state)
    assert early is not None

    def no_walk(*_: object, **__: object) -> ScanResult:
        raise AssertionError("the engine walked the source itself")

    monkeypatch.setattr(Walker, "scan", no_walk)  # in this process only: the child forked before
    report = await make_engine(early_scan=early, delete="keep").sync_once()
    assert report.ok and report.copied == 20
    assert sorted(p.name for p in mnt.rglob("*.csv")) == ["f.csv"] * 20


async def test_an_early_walk_that_does_not_hold_is_replaced(
    src: Path, mnt: Path, state: Path, make_engine: EngineFactory
) -> None:
    """Here the early walk used other rows than the engine holds (a row written after it started): the engine
    walks itself, and the file the row names is not copied again."""
    fill(src)
    early = EarlyScan.start(SourceConfig(path=src), mnt, state)
    assert early is not None
    (mnt / "d00").mkdir()
    (mnt / "d00" / "f.csv").write_text("0")
    st = (src / "d00" / "f.csv").stat()
    os.utime(mnt / "d00" / "f.csv", ns=(st.st_atime_ns, st.st_mtime_ns))
    db = StateDB(state / "state.db")
    db.record(put=[("d00/f.csv", make_row(st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode))])
    db.close()
    report = await make_engine(early_scan=early).sync_once()
    assert report.ok and report.copied == 19
