"""SyncEngine in daemon mode (`run`): events, rescans, the mount guard, retries, the rail, status."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs
from sync.sync_kit import EngineFactory, refuse_listing, refuse_search, running, temps, tree, wait_for

from agent.facts import Fact, FileChanged, FileDeleted, FileSynced
from agent.sync import copier as copier_mod
from agent.sync import mount as mount_mod
from agent.sync import pipeline as pipeline_mod
from agent.sync.statedb import StateDB
from agent.sync.watcher import ScriptedWatcher


def write(path: Path, data: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)


async def test_changes_are_synced_within_moments(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """Files created, modified, renamed and deleted while the daemon runs reach the mount shortly after."""
    facts: list[Fact] = []
    write(src / "before", "already here")
    engine = make_engine(settle=0.1, max_delete=1.0, on_fact=facts.append)
    async with running(engine):
        assert engine.ready
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
        write(src / "a" / "new.txt", "new")
        write(src / "before", "changed")
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
        (src / "a").rename(src / "b")
        (src / "before").unlink()
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
    assert not (mnt / "a").exists() and temps(mnt) == []
    assert any(isinstance(f, FileChanged) and f.path == "a/new.txt" for f in facts)
    assert any(isinstance(f, FileSynced) and f.path == "b/new.txt" for f in facts)
    status = engine.status()
    assert status["mount_ok"] and status["errors"] == 0 and status["last_scan_files"] == 1


async def test_missed_events_are_caught_by_the_periodic_rescan(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """With a watcher that reports nothing, the periodic full scan still finds and syncs every change."""
    watcher = ScriptedWatcher()
    engine = make_engine(settle=0.05, rescan=0.3, watcher_factory=watcher)
    async with running(engine):
        write(src / "silent.txt", "no event for me")
        await wait_for(lambda: tree(mnt) == tree(src), 5)
    assert watcher.started


async def test_a_large_batch_triggers_a_full_scan(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """A batch of 1,000+ events (inotify may have overflowed) triggers a full scan that finds unreported files."""
    watcher = ScriptedWatcher()
    engine = make_engine(settle=0.05, rescan=3600, watcher_factory=watcher)
    async with running(engine):
        first_scan = engine.status()["last_scan_at"]
        write(src / "unreported.txt", "u")
        watcher.push([f"{src}/ghost-{i}" for i in range(1000)])
        await wait_for(lambda: (mnt / "unreported.txt").exists(), 5)
        assert engine.status()["last_scan_at"] > first_scan


async def test_request_scan_finds_unreported_files(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """`request_scan()` runs a full scan soon, without waiting for the rescan interval."""
    engine = make_engine(settle=0.05, rescan=3600, watcher_factory=ScriptedWatcher())
    async with running(engine):
        write(src / "x", "x")
        engine.request_scan()
        await wait_for(lambda: (mnt / "x").exists(), 5)


async def test_missing_then_returning_mount(src: Path, tmp_path: Path, make_engine: EngineFactory) -> None:
    """With the mount gone the daemon is not ready and creates nothing; when it returns, everything arrives."""
    mount = tmp_path / "dataset"
    write(src / "a" / "f1", "one")
    engine = make_engine(settle=0.05, mount=mount, mount_retry_cap=0.2)
    with capture_logs() as logs:
        async with running(engine):
            assert not engine.ready
            write(src / "a" / "f2", "two")
            await wait_for(lambda: "f2" in str(engine.pending()), 5)
            assert not mount.exists()
            assert "missing" in (engine.status()["mount_problem"] or "")
            mount.mkdir()
            await wait_for(lambda: tree(mount) == tree(src) and engine.idle(), 10)
            assert engine.ready
            shutil.rmtree(mount)
            write(src / "a" / "f3", "three")
            await wait_for(lambda: not engine.ready, 10)
            assert not mount.exists()
            mount.mkdir()
            await wait_for(lambda: tree(mount) == tree(src) and engine.idle(), 10)
    events = [e["event"] for e in logs]
    assert "sync.mount_unavailable" in events and "sync.mount_ok" in events


async def test_unmounted_mount_point_is_not_filled_and_a_remount_resumes(
    src: Path, make_engine: EngineFactory, tmpfs: Callable[..., Path]
) -> None:
    """A tmpfs unmounted under the running daemon leaves its empty folder: not ready, nothing created in it, and
    a new tmpfs mounted there (another st_dev) is accepted and filled with everything, old files included."""
    mount = tmpfs()
    write(src / "a" / "f1", "one")
    engine = make_engine(settle=0.05, mount=mount, mount_retry_cap=0.2, mount_poll=0.1)
    async with running(engine):
        await wait_for(lambda: tree(mount) == tree(src) and engine.idle(), 10)
        assert (await anyio.run_process(["umount", str(mount)], check=False)).returncode == 0
        write(src / "b" / "f2", "two")
        await wait_for(lambda: not engine.ready, 5)
        await wait_for(lambda: "f2" in str(engine.pending()) or bool(engine.status()["errors"]), 5)
        await anyio.sleep(0.5)
        assert "no longer a mount point" in (engine.status()["mount_problem"] or "")
        assert list(mount.iterdir()) == []
        mounted = await anyio.run_process(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=False)
        assert mounted.returncode == 0
        await wait_for(lambda: tree(mount) == tree(src) and engine.ready and engine.idle(), 10)


async def test_unwritable_mount_pauses_and_resumes(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When writes fail with EROFS and the probe fails too, the daemon reports not ready, then resumes."""
    broken = threading.Event()
    broken.set()
    real_probe = mount_mod.probe_write
    real_stream = copier_mod.stream

    def probe(folder: str) -> None:
        if broken.is_set():
            raise OSError(errno.EROFS, "Read-only file system")
        real_probe(folder)

    def stream(fi: int, fo: int, *rest: Any) -> int:
        if broken.is_set():
            raise OSError(errno.EROFS, "Read-only file system")
        return real_stream(fi, fo, *rest)

    monkeypatch.setattr(mount_mod, "probe_write", probe)
    monkeypatch.setattr(copier_mod, "stream", stream)
    write(src / "f", "x")
    engine = make_engine(settle=0.05, mount_retry_cap=0.2)
    async with running(engine):
        assert not engine.ready and "EROFS" in (engine.status()["mount_problem"] or "")
        await wait_for(lambda: bool(engine.pending()), 5)
        assert list(mnt.iterdir()) == []
        broken.clear()
        await wait_for(lambda: tree(mnt) == tree(src) and engine.ready, 10)


async def test_write_errors_are_retried_with_backoff(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC on write is retried with backoff, counted in status, and the file lands once space is back."""
    failures = []
    real_stream = copier_mod.stream

    def flaky(fi: int, fo: int, *rest: Any) -> int:
        if len(failures) < 2:
            failures.append(1)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_stream(fi, fo, *rest)

    monkeypatch.setattr(copier_mod, "stream", flaky)
    write(src / "f", "data")
    engine = make_engine(settle=0.05, retry_cap=0.3)
    async with running(engine):
        await wait_for(lambda: tree(mnt) == tree(src), 10)
    status = engine.status()
    assert status["errors"] == 2 and status["last_error"] is None  # shown only while a file still fails
    assert "No space" in (engine._ledger.counters.last_error or "")
    assert temps(mnt) == []


async def test_delete_rail_in_daemon_mode(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """Emptying most of the source is refused and reported in status, while new files keep arriving."""
    for i in range(10):
        write(src / f"f{i}", str(i))
    engine = make_engine(settle=0.1, max_delete=0.5)
    with capture_logs() as logs:
        async with running(engine):
            await wait_for(lambda: tree(mnt) == tree(src), 10)
            for i in range(8):
                (src / f"f{i}").unlink()
            await wait_for(lambda: engine.status()["delete_refused"] == 8, 10)
            write(src / "late", "still copied")
            await wait_for(lambda: (mnt / "late").exists(), 10)
    assert all((mnt / f"f{i}").exists() for i in range(10))
    assert any(e["event"] == "sync.delete_refused" for e in logs)


async def test_file_modified_mid_copy_ends_up_complete(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """A write during the copy discards the temp; the final content arrives once the file settles again."""
    hits: list[str] = []

    def modify_once(rel: str) -> None:
        if not hits:
            hits.append(rel)
            with (src / rel).open("a") as handle:
                handle.write("-more")

    write(src / "f", "data")
    engine = make_engine(settle=0.1, copy_hook=modify_once)
    async with running(engine):
        await wait_for(lambda: (mnt / "f").exists() and engine.idle(), 10)
    assert (mnt / "f").read_text() == "data-more"
    assert temps(mnt) == []


async def test_restart_resumes_without_recopying(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """A daemon restarted on the same state only copies what changed while it was down."""
    for i in range(20):
        write(src / f"f{i}", str(i))
    async with running(make_engine(settle=0.05)) as first:
        await wait_for(lambda: tree(mnt) == tree(src) and first.idle(), 10)
    write(src / "f0", "changed while down")
    second = make_engine(settle=0.05)
    async with running(second):
        await wait_for(lambda: tree(mnt) == tree(src) and second.idle(), 10)
    assert second.status()["copies"] == 1


async def test_source_folder_missing_is_reported_not_wiped(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """A source that disappears deletes nothing from the mount; it is reported and picked up when back."""
    write(src / "f", "x")
    engine = make_engine(settle=0.05, rescan=0.2, max_delete=1.0)
    async with running(engine):
        await wait_for(lambda: (mnt / "f").exists(), 5)
        shutil.rmtree(src)
        await wait_for(lambda: engine.status()["source_problem"] is not None, 10)
        assert (mnt / "f").exists()
        os.mkdir(src)
        write(src / "f", "x")
        write(src / "g", "y")
        await wait_for(lambda: (mnt / "g").exists() and engine.status()["source_problem"] is None, 15)
    assert (mnt / "f").exists()


async def test_the_fence_waits_for_running_copies_and_holds_new_ones(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """Inside `fence()` no copy runs: it is entered only once the running copy has renamed its file into place
    (no temp file is left in the mount), files that settle meanwhile wait, and they are copied after it."""
    release = threading.Event()
    entered = threading.Event()

    def hold_big(rel: str) -> None:
        if rel == "big":
            entered.set()
            release.wait(10)

    engine = make_engine(settle=0.05, copy_hook=hold_big)
    async with running(engine):
        write(src / "big", "b" * 100_000)
        await wait_for(entered.is_set, 10)
        assert temps(mnt)  # the copy's temp file sits in the mount
        inside = anyio.Event()

        async def take_snapshot() -> None:
            async with engine.fence():
                inside.set()
                assert temps(mnt) == []
                assert (mnt / "big").read_text() == "b" * 100_000
                write(src / "later", "l")
                await anyio.sleep(0.5)  # long past its settle time
                assert not (mnt / "later").exists()

        async with anyio.create_task_group() as tg:
            tg.start_soon(take_snapshot)
            await anyio.sleep(0.3)
            assert not inside.is_set()  # the big copy is still running
            release.set()
        assert inside.is_set()
        await wait_for(lambda: (mnt / "later").exists() and engine.idle(), 10)


async def test_the_fence_holds_deletes_too(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """A folder removed from the source right after its marker stays in the mount while the marker's snapshot is
    being taken (Domino takes it in the background, after the create call answered): the deletes wait for the
    fence to lift, then happen."""
    write(src / "run1" / "part-0.csv", "p0")
    write(src / "run1" / "_SUCCESS", "")
    write(src / "keep.csv", "k")
    engine = make_engine(settle=0.05, max_delete=1.0)
    async with running(engine):
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
        async with engine.fence():
            shutil.rmtree(src / "run1")
            engine.request_scan()
            await wait_for(lambda: "run1/part-0.csv" in engine._ledger.absent, 10)
            await anyio.sleep(0.5)  # long past the settle time: a delete pass would have run by now
            assert (mnt / "run1" / "part-0.csv").read_text() == "p0"
            assert (mnt / "run1" / "_SUCCESS").exists()
        await wait_for(lambda: not (mnt / "run1").exists() and engine.idle(), 10)
    assert tree(mnt) == {"keep.csv": b"k"}


async def test_a_rename_is_reported_as_a_move_not_a_copy_and_a_delete(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """A file renamed in the source is renamed in the mount, its facts name the move both ways, and the log says
    `sync.moved` (not a copy of zero bytes)."""
    facts: list[Fact] = []
    write(src / "old.csv", "payload")
    engine = make_engine(settle=0.05, max_delete=1.0, rescan=3600, on_fact=facts.append)
    async with running(engine):
        await wait_for(lambda: (mnt / "old.csv").exists() and engine.idle(), 10)
        inode = (mnt / "old.csv").stat().st_ino
        facts.clear()
        with capture_logs() as logs:
            (src / "old.csv").rename(src / "new.csv")
            await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
    assert (mnt / "new.csv").stat().st_ino == inode
    assert [(e["event"], e.get("moved_from")) for e in logs if e["event"] in ("sync.moved", "sync.copied")] == [
        ("sync.moved", "old.csv")
    ]
    synced = [f for f in facts if isinstance(f, FileSynced)]
    deleted = [f for f in facts if isinstance(f, FileDeleted)]
    assert [(f.path, f.moved_from) for f in synced] == [("new.csv", "old.csv")]
    assert [(f.path, f.moved_to) for f in deleted] == [("old.csv", "new.csv")]


async def test_unreadable_folder_is_warned_once_and_nothing_under_it_deleted(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a folder cannot be listed (opening it raises EACCES, as the kernel would for mode 000 without
    root), rescans warn once, delete nothing under it, and a note follows when it is readable again."""
    write(src / "locked" / "f.csv", "f")
    engine = make_engine(settle=0.05, max_delete=1.0, rescan=0.1)
    refused = threading.Event()
    refuse_listing(monkeypatch, "/locked", refused.is_set)
    with capture_logs() as logs:
        async with running(engine):
            await wait_for(lambda: (mnt / "locked" / "f.csv").exists() and engine.idle(), 10)
            refused.set()
            first = engine.status()["last_scan_at"]
            await wait_for(lambda: engine.status()["last_scan_at"] > first + 0.35, 10)  # several rescans
            assert (mnt / "locked" / "f.csv").read_text() == "f" and engine.idle()
            refused.clear()
            await wait_for(lambda: any(e["event"] == "sync.folder_readable" for e in logs), 10)
    warned = [e for e in logs if e["event"] == "sync.folder_unreadable"]
    assert [(e["folder"], e["error"], e["log_level"]) for e in warned] == [("locked", "permission denied", "warning")]
    assert (mnt / "locked" / "f.csv").read_text() == "f" and engine.status()["deletes"] == 0


@pytest.mark.parametrize("locks", [(refuse_listing, refuse_search), (refuse_search,)], ids=["mode 000", "mode r--"])
async def test_a_folder_that_becomes_unreadable_while_watched_keeps_its_copies(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch, locks: Any
) -> None:
    """A folder whose mode changes to 000 (not listable) or r-- (listable, its files not stat-able) while the agent
    runs brings a watch event for the folder: what is under it cannot be seen, so nothing is deleted from the
    mount (the stat by event, the delete pass and the rescans all keep it), and a note says why."""
    for name in ("g1", "g2", "g3"):
        write(src / "keep" / "sub" / name, name)
    write(src / "other.txt", "o")
    engine = make_engine(settle=0.05, max_delete=1.0, rescan=0.2)
    locked = threading.Event()
    for lock in locks:
        lock(monkeypatch, str(src / "keep" / "sub"), locked.is_set)
    with capture_logs() as logs:
        async with running(engine):
            await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
            locked.set()
            os.chmod(src / "keep" / "sub", 0o700)  # the event a chmod brings (root: the lock itself is simulated)
            os.chmod(src / "keep", 0o700)
            first = engine.status()["last_scan_at"]
            await wait_for(lambda: engine.status()["last_scan_at"] > first + 0.5, 10)  # events handled, rescans run
            assert sorted(p.name for p in (mnt / "keep" / "sub").iterdir()) == ["g1", "g2", "g3"]
            assert engine.status()["deletes"] == 0
    assert any(e["event"] == "sync.folder_unreadable" and e["folder"] == "keep/sub" for e in logs)


async def test_a_temp_file_a_failed_copy_could_not_remove_is_swept(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that fails on the mount's side may leave its temp file (the mount was moved away and back while it
    ran: the unlink missed it). The mount check that follows the failure sweeps it when no copy runs, a fence
    (a snapshot) sweeps first when one was left, and no clean marker is written before a sweep."""
    real_replace = os.replace
    broken = threading.Event()
    broken.set()

    def replace(a: Any, b: Any) -> None:
        if broken.is_set() and os.fsdecode(b).endswith("/big.bin"):
            raise OSError(errno.EROFS, "Read-only file system", b)
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(copier_mod, "unlink_quietly", lambda path: None)  # as when the temp moved with the mount
    write(src / "big.bin", "b" * 5000)
    engine = make_engine(settle=0.05, rescan=3600)
    with capture_logs() as logs:
        async with running(engine):
            await wait_for(lambda: any(e["event"] == "sync.temps_removed" for e in logs), 10)
            assert temps(mnt) == []
            broken.clear()
            await wait_for(lambda: (mnt / "big.bin").exists() and engine.idle(), 10)
            (mnt / ".left.domino-sync-0badf00d.tmp").write_text("half")  # as if a failed copy's sweep was not yet due
            engine._temps_clear = False
            async with engine.fence():
                assert temps(mnt) == []
            engine._temps_clear = False
        engine.close()
        assert not (engine._state_dir / "sync.clean").exists()  # no sweep since: the next start sweeps
    third = make_engine(settle=0.05, rescan=3600)
    async with running(third):
        await wait_for(lambda: third.idle(), 10)
    third.close()
    assert (third._state_dir / "sync.clean").exists() and temps(mnt) == []


async def test_a_mount_folder_swapped_for_an_empty_one_is_filled_again(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """`mv mount mount.old; mkdir mount` between two looks (same device, never missing at a look): the new
    folder is another inode, so the agent checks what it holds and copies everything again."""
    for i in range(5):
        write(src / "d" / f"f{i}.csv", str(i))
    engine = make_engine(settle=0.05, rescan=3600, mount_poll=0.1)
    with capture_logs() as logs:
        async with running(engine):
            await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
            mnt.rename(mnt.with_name("mnt.old"))
            mnt.mkdir()
            await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
    assert any(e["event"] == "sync.mount_changed" for e in logs)


async def test_files_copied_again_after_the_mount_lost_them_are_no_new_data(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """A wiped or swapped mount is filled again, but what is copied again unchanged is no new drop: no
    FileChanged, and FileSynced says `restored` (no marker fires again, no count grows); a file that did change
    in the source meanwhile is new data as usual."""
    for i in range(5):
        write(src / "run1" / f"part-{i}.csv", str(i))
    write(src / "run1" / "_SUCCESS", "run1")
    facts: list[Fact] = []
    engine = make_engine(settle=0.05, rescan=3600, mount_poll=0.1, on_fact=facts.append)
    async with running(engine):
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
        facts.clear()
        mnt.rename(mnt.with_name("mnt.old"))
        mnt.mkdir()
        write(src / "run1" / "part-0.csv", "changed")
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
    synced = {f.path: f for f in facts if isinstance(f, FileSynced)}
    assert sorted(synced) == sorted(tree(src))
    assert [p for p, f in synced.items() if not f.restored] == ["run1/part-0.csv"]
    assert [f.path for f in facts if isinstance(f, FileChanged)] == ["run1/part-0.csv"]
    assert engine._ledger.restoring == {}


async def test_a_mount_folder_removed_and_made_again_is_filled_again(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """`rm -rf mount; mkdir mount` gives ext4's folder the same inode again: its generation tells it apart."""
    if mount_mod.generation(str(mnt)) == 0:
        pytest.skip("this filesystem gives no inode generation (tmpfs)")
    for i in range(3):
        write(src / "d" / f"{i}.txt", str(i))
    engine = make_engine(settle=0.05, rescan=3600, mount_poll=0.1)
    async with running(engine):
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
        shutil.rmtree(mnt)
        mnt.mkdir()
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
    assert engine._mount_record is not None and engine._mount_record.gen == mount_mod.generation(str(mnt))


async def test_a_restart_in_the_middle_of_a_refill_is_no_new_data_either(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """The rows the mount lost are kept in the state DB until their files are copied again: an agent stopped in
    the middle of the refill (here: before it copied anything) still takes the rest for what it was."""
    for i in range(5):
        write(src / "run1" / f"part-{i}.csv", str(i))
    write(src / "run1" / "_SUCCESS", "run1")
    engine = make_engine(settle=0.05, rescan=3600, mount_poll=0.1)
    async with running(engine):
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
        engine._fenced += 1  # no copy starts: the agent stops before the refill
        mnt.rename(mnt.with_name("mnt.old"))
        mnt.mkdir()
        await wait_for(lambda: len(engine._ledger.restoring) == 6, 10)
    engine.close()
    (src / "run1" / "part-4.csv").unlink()  # its lost row is forgotten, in the DB too
    facts: list[Fact] = []
    again = make_engine(settle=0.05, rescan=3600, on_fact=facts.append)
    async with running(again):
        await wait_for(lambda: tree(mnt) == tree(src) and again.idle(), 10)
    again.close()
    synced = [f for f in facts if isinstance(f, FileSynced)]
    assert len(synced) == 5 and all(f.restored for f in synced)
    assert [f for f in facts if isinstance(f, FileChanged)] == []
    assert make_engine()._ledger.restoring == {} and StateDB(again._state_dir / "state.db").restoring() == {}


async def test_links_follow_an_edit_of_their_target_at_once(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """Editing a file updates the mount's copies of its hard link and of a symlink to it within moments (no
    rescan), and re-pointing or deleting the symlink updates the link index and the mount."""
    write(src / "target.txt", "v1")
    write(src / "other.txt", "o1")
    (src / "rel_link").symlink_to("target.txt")
    os.link(src / "target.txt", src / "hardlink.txt")
    engine = make_engine(settle=0.05, max_delete=1.0, rescan=3600)
    async with running(engine):
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 10)
        scans = engine.status()["last_scan_at"]
        links = engine._links
        assert links.links_to == {"target.txt": {"rel_link"}}
        assert sorted(links.inode_of) == ["hardlink.txt", "rel_link", "target.txt"]  # rel_link reads that inode
        with (src / "target.txt").open("w") as f:  # same inode: both links now read v2
            f.write("v2 (edited)")
        await wait_for(lambda: tree(mnt) == tree(src), 3)
        assert (mnt / "rel_link").read_text() == (mnt / "hardlink.txt").read_text() == "v2 (edited)"
        (src / "new_link").symlink_to("other.txt")
        (src / "new_link").replace(src / "rel_link")  # re-point rel_link at other.txt
        await wait_for(lambda: (mnt / "rel_link").read_text() == "o1", 3)
        assert links.links_to == {"other.txt": {"rel_link"}} and links.target_of == {"rel_link": "other.txt"}
        assert sorted(links.inode_of) == ["hardlink.txt", "target.txt"]
        (src / "other.txt").write_text("o2")
        await wait_for(lambda: tree(mnt) == tree(src), 3)
        (src / "rel_link").unlink()
        (src / "hardlink.txt").unlink()
        await wait_for(lambda: tree(mnt) == tree(src) and engine.idle(), 3)
        assert not links.target_of and not links.links_to and list(links.inode_of) == ["target.txt"]
        assert engine.status()["last_scan_at"] == scans  # all of it came from events, none from a rescan


async def test_the_sweep_after_a_failed_copy_never_takes_a_running_copy_s_temp_file(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep a mount-side failure calls for walks the whole mount (slowed here, as a big mount is): no copy
    starts while it walks, so no copy loses its temp file to it (found by review: ENOENT at the rename)."""
    real_remove = pipeline_mod.remove_temps
    sweeping = threading.Event()

    def slow_remove(mount: str) -> int:  # a big mount takes a while to walk
        sweeping.set()
        time.sleep(0.3)
        try:
            return real_remove(mount)
        finally:
            sweeping.clear()

    monkeypatch.setattr(pipeline_mod, "remove_temps", slow_remove)
    real_replace = os.replace
    fail_once = threading.Event()
    fail_once.set()

    def replace(a: Any, b: Any) -> None:
        if fail_once.is_set() and os.fsdecode(b).endswith("/bad.bin"):
            fail_once.clear()
            raise OSError(errno.EIO, "Input/output error", b)
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", replace)
    engine = make_engine(settle=0.02, rescan=3600, copy_hook=lambda rel: time.sleep(0.2))
    write(src / "seed.txt", "s")
    with capture_logs() as logs:
        async with running(engine):
            await wait_for(lambda: engine.idle() and (mnt / "seed.txt").exists(), 10)
            write(src / "bad.bin", "b")  # fails once on the mount side: _temps_clear = False, recheck
            await wait_for(lambda: not fail_once.is_set(), 10)
            await wait_for(lambda: sweeping.is_set(), 10)  # the sweep started (no copy was running)
            write(src / "new.txt", "n")  # a copy starts while the sweep walks the mount
            await wait_for(lambda: engine.idle() and tree(mnt) == tree(src), 15)
    failed = [e for e in logs if e["event"] == "sync.copy_failed"]
    assert [e["path"] for e in failed] == ["bad.bin"]  # new.txt kept its temp file


async def test_a_delete_whose_file_cannot_be_looked_at_waits_without_spinning(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file gone from the source whose folder turns r-- (or an NFS source answering EIO) before its delete
    pass is unknown: kept in the mount, looked at again every few seconds, not in a busy loop."""
    write(src / "a" / "f", "f")
    write(src / "a" / "g", "g")
    write(src / "other", "o")
    engine = make_engine(settle=0.3, rescan=3600, max_delete=1.0)
    locked = threading.Event()
    refuse_search(monkeypatch, str(src / "a"), locked.is_set)
    calls = [0]
    real = engine._walker.stat_paths

    def counting(*a: Any, **k: Any) -> Any:
        calls[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(engine._walker, "stat_paths", counting)
    async with running(engine):
        await wait_for(lambda: engine.idle() and tree(mnt) == tree(src), 10)
        (src / "a" / "f").unlink()
        await wait_for(lambda: "a/f" in engine._ledger.absent, 10)
        locked.set()  # the folder turns r-- (or the NFS source answers EIO/ESTALE) before the delete pass
        await anyio.sleep(0.5)
        before = calls[0]
        await anyio.sleep(1.0)
        assert calls[0] - before < 5
        assert (mnt / "a" / "f").exists()
