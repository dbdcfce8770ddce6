"""`dataset.durability`: copies left to the kernel's write-back (`snapshot`, the default) or flushed per batch
(`batch`); the `unflushed` mark, the flushes that remove it, and the check of the mount after a crash of the host."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs
from sync.sync_kit import EngineFactory, running, tree, wait_for

from agent.errors import StateError
from agent.facts import Fact, FileChanged, FileSynced
from agent.sync import flushmark, mountfs
from agent.sync.copier import Copier, CopyJob, Outcome
from agent.sync.flushmark import MARK_NAME, FlushMark, boot_id
from agent.sync.scan import to_filestat


def mark_of(state: Path) -> str | None:
    try:
        return (state / MARK_NAME).read_text().strip()
    except FileNotFoundError:
        return None


def test_a_batch_puts_the_mark_on_disk_and_a_quiet_flush_removes_it(tmp_path: Path, mnt: Path) -> None:
    mark = FlushMark(tmp_path, str(mnt), boot="boot-1")
    assert not mark.marked and not mark.crashed and mark_of(tmp_path) is None
    mark.begin()
    assert mark_of(tmp_path) == "boot-1" and mark.marked
    assert mark.flush() is False  # the batch is still under way: its later writes would not be covered
    mark.end()
    assert mark.flush() is True
    assert mark_of(tmp_path) is None and not mark.marked
    assert mark.flush() is True  # nothing to flush


def test_a_batch_that_begins_during_a_flush_keeps_the_mark(
    tmp_path: Path, mnt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = FlushMark(tmp_path, str(mnt), boot="boot-1")
    mark.begin()
    mark.end()

    def syncfs_while_a_batch_runs(path: str) -> bool:
        mark.begin()
        mark.end()
        return True

    monkeypatch.setattr(flushmark, "syncfs", syncfs_while_a_batch_runs)
    assert mark.flush() is False
    assert mark_of(tmp_path) == "boot-1"


def test_a_failed_flush_keeps_the_mark(tmp_path: Path, mnt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mark = FlushMark(tmp_path, str(mnt), boot="boot-1")
    mark.begin()
    mark.end()

    def eio(path: str) -> bool:
        raise OSError(5, "Input/output error", path)

    monkeypatch.setattr(flushmark, "syncfs", eio)
    with pytest.raises(OSError, match="Input/output"):
        mark.flush()
    assert mark_of(tmp_path) == "boot-1" and mark.marked


@pytest.mark.parametrize(
    ("left", "boot", "crashed"),
    [
        ("boot-1", "boot-1", False),  # a once, or a killed agent: the page cache still holds the copies
        ("boot-0", "boot-1", True),  # the host went down with copies not flushed
        ("", "boot-1", True),  # unreadable: taken for a crash
        ("unknown", "", True),  # no boot id on this kernel: any mark left is a crash
    ],
)
def test_a_mark_left_by_another_boot_is_a_crash(tmp_path: Path, mnt: Path, left: str, boot: str, crashed: bool) -> None:
    (tmp_path / MARK_NAME).write_text(left + "\n")
    mark = FlushMark(tmp_path, str(mnt), boot=boot)
    assert mark.marked and mark.crashed is crashed
    assert mark.flush() is not crashed  # after a crash the mark stays until the mount was checked
    if crashed:
        mark.checked()
        assert mark.flush() is True and mark_of(tmp_path) is None


def test_a_mark_that_cannot_be_written_fails_the_batch_and_leaks_nothing(tmp_path: Path, mnt: Path) -> None:
    mark = FlushMark(tmp_path / "gone", str(mnt), boot="boot-1")
    with pytest.raises(StateError, match="not writable"):
        mark.begin()
    assert not mark.marked and mark.flush() is True


def test_boot_id_is_the_kernel_s(tmp_path: Path) -> None:
    if Path(flushmark.BOOT_ID).exists():
        assert boot_id() == Path(flushmark.BOOT_ID).read_text().strip() != ""
    assert boot_id(str(tmp_path / "absent")) == ""


@pytest.mark.parametrize("durable", [True, False])
def test_only_a_durable_copier_flushes(src: Path, mnt: Path, monkeypatch: pytest.MonkeyPatch, durable: bool) -> None:
    """`batch` durability: syncfs around the renames of small files, an fsync per big file. `snapshot`: none."""
    calls: list[str] = []
    real_fsync = os.fsync

    def syncfs(path: str) -> bool:
        calls.append("syncfs")
        return True

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(mountfs, "syncfs", syncfs)
    monkeypatch.setattr(os, "fsync", fsync)
    for i in range(8):
        (src / f"small-{i}").write_bytes(os.urandom(100))
    (src / "big").write_bytes(os.urandom((1 << 20) + 1))
    rels = sorted(p.name for p in src.iterdir())
    jobs = [CopyJob(rel, to_filestat(os.stat(src / rel))) for rel in rels]
    results = Copier(str(src), str(mnt), durable=durable).run(jobs)
    assert all(r.outcome is Outcome.COPIED for r in results)
    assert tree(mnt) == tree(src)
    if durable:
        assert calls.count("syncfs") == 2 and calls.count("fsync") >= 1
    else:
        assert calls == []


async def test_once_leaves_its_copies_to_the_kernel_and_a_crash_of_the_host_is_caught(
    src: Path, mnt: Path, state: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `once` flushes nothing and leaves the mark; after a reboot (another boot id) every recorded file is
    checked (not a sample), and the ones the crash tore (short or empty in the mount) are copied again."""
    for i in range(400):
        (src / f"d{i % 4}").mkdir(exist_ok=True)
        (src / f"d{i % 4}" / f"f{i}").write_bytes(os.urandom(100 + i))
    monkeypatch.setattr(flushmark, "boot_id", lambda: "boot-1")
    report = await make_engine().sync_once()
    assert report.copied == 400 and not report.failed
    assert mark_of(state) == "boot-1"
    again = make_engine()  # the same boot: no check of every file (the page cache still holds the copies)
    with capture_logs() as logs:
        await again.sync_once()
    again.close()
    assert [e for e in logs if e["event"] == "sync.crash_check"] == [] and mark_of(state) == "boot-1"

    # the host went down before the kernel wrote two of the copies back
    (mnt / "d1" / "f5").write_bytes(b"")
    os.truncate(mnt / "d2" / "f6", 10)
    for torn in ("d1/f5", "d2/f6"):
        os.utime(mnt / torn, ns=(0, (src / torn).stat().st_mtime_ns))  # only the size tells
    monkeypatch.setattr(flushmark, "boot_id", lambda: "boot-2")
    with capture_logs() as logs:
        report = await make_engine().sync_once()
    assert report.copied == 2 and not report.failed
    assert tree(mnt) == tree(src)
    [check] = [e for e in logs if e["event"] == "sync.crash_check"]
    assert check["mount_files"] == 400 and check["torn"] == 2


async def test_batch_durability_leaves_no_mark(src: Path, state: Path, make_engine: EngineFactory) -> None:
    for i in range(10):
        (src / f"f{i}").write_text(str(i))
    report = await make_engine(durability="batch").sync_once()
    assert report.copied == 10 and mark_of(state) is None


async def test_the_daemon_flushes_before_a_snapshot_when_idle_and_at_a_stop(
    src: Path, mnt: Path, state: Path, make_engine: EngineFactory
) -> None:
    engine = make_engine(settle=0.05, idle_flush=3600)
    async with running(engine):
        (src / "a").write_text("a")
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
        assert mark_of(state) is not None
        async with engine.fence():  # a snapshot is taken inside
            assert mark_of(state) is None
        (src / "b").write_text("b")
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
        assert mark_of(state) is not None
        await engine.flush()  # the daemon's stop, within its drain
        assert mark_of(state) is None

    quick = make_engine(settle=0.05, idle_flush=0.1)
    async with running(quick):
        (src / "c").write_text("c")
        await wait_for(lambda: tree(mnt) == tree(src) and quick.idle(), 10)
        await wait_for(lambda: mark_of(state) is None, 10)


def test_marks_are_thread_safe(tmp_path: Path, mnt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches in many threads and flushes in between: the mark is gone only when a flush followed the last."""
    monkeypatch.setattr(flushmark, "syncfs", lambda path: True)
    mark = FlushMark(tmp_path, str(mnt), boot="boot-1")

    def batches() -> None:
        for _ in range(200):
            mark.begin()
            mark.end()

    threads = [threading.Thread(target=batches) for _ in range(4)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        mark.flush()
        assert mark.marked or mark_of(tmp_path) is None
    for thread in threads:
        thread.join()
    assert mark.flush() is True and mark_of(tmp_path) is None


def test_the_check_after_a_crash_makes_the_mark_this_boot_s(tmp_path: Path, mnt: Path) -> None:
    (tmp_path / MARK_NAME).write_text("boot-0\n")
    mark = FlushMark(tmp_path, str(mnt), boot="boot-1")
    assert mark.crashed
    mark.checked()
    assert mark_of(tmp_path) == "boot-1" and mark.marked
    assert not FlushMark(tmp_path, str(mnt), boot="boot-1").crashed  # a later `once` of this boot: no check


def first_flush_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next syncfs reports an I/O error writing back (as the kernel does, once); later ones work."""
    failures = [OSError(5, "Input/output error")]
    real_syncfs = flushmark.syncfs

    def syncfs(path: str) -> bool:
        if failures:
            raise failures.pop()
        return real_syncfs(path)

    monkeypatch.setattr(flushmark, "syncfs", syncfs)


async def crashed_with_a_torn_file(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five files copied by a `once` in boot-1; the host went down and came back as boot-2, `d/2` torn."""
    for i in range(5):
        (src / "d").mkdir(exist_ok=True)
        (src / "d" / str(i)).write_text(f"file {i} " * 100)
    monkeypatch.setattr(flushmark, "boot_id", lambda: "boot-1")
    engine = make_engine()
    assert (await engine.sync_once()).copied == 5
    engine.close()
    os.truncate(mnt / "d" / "2", 0)
    os.utime(mnt / "d" / "2", ns=(0, (src / "d" / "2").stat().st_mtime_ns))
    monkeypatch.setattr(flushmark, "boot_id", lambda: "boot-2")


async def test_a_snapshot_waits_until_the_mount_is_checked_and_the_torn_files_are_whole(
    src: Path, mnt: Path, tmp_path: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mount is away when the agent starts after the crash: no snapshot until it is back, checked, and the
    torn file copied again."""
    await crashed_with_a_torn_file(src, mnt, make_engine, monkeypatch)
    away = tmp_path / "away"
    mnt.rename(away)
    real_open, unreadable_until = os.open, [float("inf")]

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:  # d/2 cannot be read for a while
        if os.fsdecode(path).endswith("/src/d/2") and time.monotonic() < unreadable_until[0]:
            raise OSError(errno.EIO, "Input/output error", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    engine = make_engine(settle=0.05, mount_retry_cap=0.2, retry_cap=0.2)
    entered: list[dict[str, bytes]] = []
    async with running(engine):
        assert engine.status()["mount_problem"] is not None

        async def snapshot() -> None:
            async with engine.fence():
                entered.append(tree(mnt))

        async with anyio.create_task_group() as tg:
            tg.start_soon(snapshot)
            await anyio.sleep(1.5)
            assert entered == []
            away.rename(mnt)
            unreadable_until[0] = time.monotonic() + 2.5
            await anyio.sleep(2.0)
            assert entered == []  # checked, but d/2 is still torn
            await wait_for(lambda: bool(entered), 20)
    assert entered[0] == tree(src)
    assert (mnt / "d" / "2").read_text() == (src / "d" / "2").read_text()


async def test_once_takes_no_snapshot_it_cannot_flush(
    src: Path, mnt: Path, tmp_path: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`once` cannot wait for the check (no driver): with the mount away after a crash its snapshots wait for a
    later run. With the mount there, the check and the copies come first, and the flush clears the way."""
    await crashed_with_a_torn_file(src, mnt, make_engine, monkeypatch)
    mnt.rename(tmp_path / "away")
    engine = make_engine()
    report = await engine.sync_once()
    assert report.mount_problem is not None
    reason = await engine.snapshot_blocker()
    assert reason is not None and "host went down" in reason
    engine.close()
    (tmp_path / "away").rename(mnt)
    assert (await make_engine().plan()).copy == ("d/2",)  # the dry run knows what the check would find
    engine = make_engine()
    report = await engine.sync_once()
    assert report.copied == 1 and tree(mnt) == tree(src)
    assert await engine.snapshot_blocker() is None
    assert mark_of(engine._state_dir) is None


async def test_a_failed_flush_copies_again_what_it_may_have_lost(
    src: Path, mnt: Path, state: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error writing back: the page cache still shows the copies whole, the disk may never get them. Their
    rows go, they are copied again (no new data for the rules), and the snapshot waits for that."""
    facts: list[Fact] = []
    engine = make_engine(settle=0.05, idle_flush=3600, on_fact=facts.append)
    first_flush_fails(monkeypatch)
    async with running(engine):
        (src / "a").write_text("a")
        (src / "b").write_text("b")
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
        copies, written = engine.status()["copies"], engine.status()["bytes"]
        with capture_logs() as logs:
            async with engine.fence():
                assert engine.status()["copies"] == copies + 2  # both again, before the snapshot
                assert mark_of(state) is None
                # written anew: the page cache's version (whole to look at) was not adopted
                assert engine.status()["bytes"] == written + 2
                assert tree(mnt) == tree(src)
    assert engine.status()["errors"] == 1  # the errors metric counts it
    [failed] = [e for e in logs if e["event"] == "sync.flush_failed"]
    assert failed["copy_again"] == 2 and failed["before"] == "snapshot"
    again = [f for f in facts if isinstance(f, FileSynced) and f.restored]
    assert sorted(f.path for f in again) == ["a", "b"]
    assert sorted(f.path for f in facts if isinstance(f, FileChanged)) == ["a", "b"]  # once each: no new data


async def test_a_torn_copy_whose_source_left_is_not_left_behind(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer's rerun replaced its output while the host was down: the torn copy of a file that is no longer
    in the source leaves the mount (it was the agent's own), as the copy of any deleted file does."""
    await crashed_with_a_torn_file(src, mnt, make_engine, monkeypatch)
    (src / "d" / "2").unlink()
    (src / "d" / "5").write_text("the rerun's new part")
    report = await make_engine().sync_once()
    assert not report.failed
    assert tree(mnt) == tree(src) and not (mnt / "d" / "2").exists()


@pytest.mark.parametrize("durable", [True, False])
def test_a_move_in_the_mount_is_durable_in_every_mode(
    src: Path, mnt: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    """A rename lost in a crash would leave the old path behind with no row owning it: the folders a move
    touched are made durable with either durability."""
    made: list[set[str]] = []
    monkeypatch.setattr(mountfs, "make_folders_durable", lambda mount, folders, **_: made.append(set(folders)))
    (src / "new").mkdir()
    (src / "new" / "f").write_text("moved")
    (mnt / "old").mkdir()
    (mnt / "old" / "f").write_text("moved")
    st = os.stat(src / "new" / "f")
    os.utime(mnt / "old" / "f", ns=(st.st_atime_ns, st.st_mtime_ns))
    from agent.sync.statedb import make_row

    row = make_row(st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode & 0o7777)
    job = CopyJob("new/f", to_filestat(st), move_from="old/f", move_row=row)
    [result] = Copier(str(src), str(mnt), durable=durable).run([job])
    assert result.outcome is Outcome.MOVED and (mnt / "new" / "f").read_text() == "moved"
    assert not (mnt / "old").exists()
    assert made and {str(mnt), str(mnt / "new")} <= set().union(*made)


async def test_a_crash_check_removes_only_the_agent_s_own_torn_copies(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A torn copy is a regular file with the recorded mtime and another size. A file someone put at a recorded
    path (another mtime) is not the agent's to delete, even when its source left."""
    await crashed_with_a_torn_file(src, mnt, make_engine, monkeypatch)
    (src / "d" / "2").unlink()
    (src / "d" / "3").unlink()
    (mnt / "d" / "3").write_text("a user's own file")  # another size and mtime than the agent's copy
    report = await make_engine().sync_once()
    assert not report.failed
    assert not (mnt / "d" / "2").exists()
    assert (mnt / "d" / "3").read_text() == "a user's own file"


async def test_a_failed_flush_that_cannot_drop_the_rows_still_copies_again(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state DB refusing the write (a full disk) must not leave the mount without the files it removed."""
    engine = make_engine(settle=0.05, idle_flush=3600)
    first_flush_fails(monkeypatch)
    async with running(engine):
        (src / "a").write_text("a")
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
        db = engine._db
        assert db is not None
        real_record = db.record

        def record(*args: Any, **kwargs: Any) -> None:
            if kwargs.get("lose"):
                raise StateError("state DB cannot be written (database or disk is full)")
            real_record(*args, **kwargs)

        monkeypatch.setattr(db, "record", record)
        async with engine.fence():
            assert tree(mnt) == tree(src)


async def test_rows_taken_while_a_failed_flush_waits_are_no_error(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """What a failed flush copies again is looked up once no copy runs: a row a delete or a move took meanwhile
    is simply not there any more."""
    engine = make_engine(settle=0.05, idle_flush=3600)
    async with running(engine):
        (src / "a").write_text("a")
        (src / "b").write_text("b")
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
        engine._running += 1  # a batch still running
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine._copy_again, ["a", "b"])
            await anyio.sleep(0.2)
            engine._ledger.rows.pop("a")  # taken by a delete meanwhile
            engine._running -= 1
        assert "b" in engine._recopying or "b" in engine._ledger.rows
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
