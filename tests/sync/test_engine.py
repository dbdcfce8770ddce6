"""SyncEngine in burst mode (`sync_once`): copies, deletes, the rail, faults, odd files, facts, dry runs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs
from sync.sync_kit import EngineFactory, empty_folders, refuse_listing, refuse_search, temps, tree

from agent.facts import Fact, FileChanged, FileDeleted, FileSynced
from agent.sync import copier as copier_mod
from agent.sync import mount as mount_mod
from agent.sync import pipeline as pipeline_mod
from agent.sync.ledger import Ledger
from agent.sync.mountfs import temp_name
from agent.sync.statedb import StateDB


def write(path: Path, data: str | bytes = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


async def test_once_copies_everything_including_odd_names(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """Spaces, unicode, newlines, 255-byte names, 40-deep folders and in-root symlinks arrive byte for byte;
    FIFOs, sockets and links out of the root are skipped."""
    names = ["with space.txt", "ünïcødé-文件.txt", "new\nline.txt", "x" * 255, "a/b/c.csv"]
    for name in names:
        write(src / name, name * 3)
    deep = "/".join(f"d{i}" for i in range(40)) + "/bottom.txt"
    write(src / deep, "deep")
    (src / "link").symlink_to("a/b/c.csv")
    (src / "escape").symlink_to("/etc/hostname")
    os.mkfifo(src / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    try:
        report = await make_engine().sync_once()
    finally:
        sock.close()
    assert report.ok and report.copied == len(names) + 2
    assert report.skipped == 3
    expected = tree(src, skip=lambda rel: rel in ("escape", "pipe", "sock"))
    assert tree(mnt) == expected
    assert not (mnt / "link").is_symlink()
    assert temps(mnt) == []


async def test_unchanged_tree_is_not_copied_again_even_after_restart(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """A second pass, in the same engine or a new one on the same state, copies nothing and touches no file."""
    for i in range(30):
        write(src / f"d{i % 3}" / f"f{i}", str(i))
    first = await make_engine().sync_once()
    inodes = {p: p.stat().st_ino for p in mnt.rglob("*") if p.is_file()}
    again = await make_engine().sync_once()
    assert first.copied == 30
    assert again.copied == 0 and again.bytes == 0 and again.ok
    assert {p: p.stat().st_ino for p in mnt.rglob("*") if p.is_file()} == inodes


async def test_changes_made_while_down_are_found(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """A restart compares the tree with the state DB: modified, added and deleted files are all handled."""
    for i in range(6):
        write(src / f"f{i}", str(i))
    await make_engine().sync_once()
    write(src / "f0", "modified, longer")
    write(src / "new", "n")
    (src / "f1").unlink()
    report = await make_engine().sync_once()
    assert (report.copied, report.deleted) == (2, 1)
    assert tree(mnt) == tree(src)


async def test_mirror_deletes_and_prunes_empty_folders(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """What left the source leaves the mount, with the folders it leaves empty; keep mode deletes nothing."""
    for rel in ["keep/a", "keep/b", "gone/deep/c", "gone/d", "e", "f"]:
        write(src / rel, rel)
    await make_engine(max_delete=1.0).sync_once()
    for rel in ["gone/deep/c", "gone/d"]:
        (src / rel).unlink()
    report = await make_engine(max_delete=1.0).sync_once()
    assert report.deleted == 2
    assert tree(mnt) == tree(src)
    assert not (mnt / "gone").exists() and empty_folders(mnt) == []
    (src / "e").unlink()
    kept = await make_engine(delete="keep").sync_once()
    assert kept.deleted == 0 and (mnt / "e").exists()


async def test_max_delete_rail_refuses_and_keeps_copying(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """Deleting more than max_delete of the mount is refused, logged and reported, and new files still arrive."""
    for i in range(10):
        write(src / f"f{i}", str(i))
    await make_engine().sync_once()
    for i in range(6):
        (src / f"f{i}").unlink()
    write(src / "new", "n")
    engine = make_engine(max_delete=0.5)
    with capture_logs() as logs:
        report = await engine.sync_once()
    assert report.refused_delete and not report.ok and report.deleted == 0
    assert (mnt / "new").read_text() == "n"
    assert all((mnt / f"f{i}").exists() for i in range(6))
    refused = [e for e in logs if e["event"] == "sync.delete_refused"]
    assert refused and refused[0]["deletes"] == 6 and refused[0]["mount_files"] == 11
    assert engine.status()["delete_refused"] == 6


async def test_renamed_folder_arrives_at_new_path_and_leaves_old(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """Renaming a folder that holds the whole dataset moves the copies in the mount, with no rail tripped."""
    for i in range(8):
        write(src / "old" / "sub" / f"f{i}", str(i) * 100)
    await make_engine().sync_once()
    inode = (mnt / "old" / "sub" / "f3").stat().st_ino
    (src / "old").rename(src / "new")
    report = await make_engine().sync_once()
    assert report.ok and report.deleted == 0 and report.bytes == 0
    assert tree(mnt) == tree(src)
    assert not (mnt / "old").exists()
    assert (mnt / "new" / "sub" / "f3").stat().st_ino == inode


async def test_state_dir_inside_source_is_never_synced(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """The agent's own state folder, when it lives in the source, never reaches the mount."""
    write(src / "data.csv", "d")
    report = await make_engine(state_dir=src / ".domino-sync" / "state").sync_once()
    assert report.ok and set(tree(mnt)) == {"data.csv"}


async def test_missing_mount_creates_and_fills_nothing(src: Path, tmp_path: Path, make_engine: EngineFactory) -> None:
    """With the mount missing, once reports why and creates nothing."""
    write(src / "a/b", "x")
    gone = tmp_path / "not-mounted"
    report = await make_engine(mount=gone).sync_once()
    assert report.mount_problem is not None and "missing" in report.mount_problem
    assert not report.ok and report.copied == 0
    assert not gone.exists()


async def test_read_only_mount_is_refused(
    src: Path, make_engine: EngineFactory, tmpfs: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only mount (a real ro tmpfs) is reported not writable and nothing is attempted."""
    write(src / "f", "x")
    ro = tmpfs(readonly=True)
    report = await make_engine(mount=ro).sync_once()
    assert report.mount_problem is not None and "not writable" in report.mount_problem
    assert report.copied == 0


async def test_enospc_is_reported_and_never_recorded(
    src: Path, mnt: Path, state: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full mount fails the file after retries, leaves no temp file and no row; the next pass succeeds."""
    write(src / "f", "data")
    calls = []

    def full(fi: int, fo: int, *rest: Any) -> int:
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(copier_mod, "stream", full)
    engine = make_engine(once_attempts=2)
    report = await engine.sync_once()
    engine.close()
    assert [path for path, _ in report.failed] == ["f"] and "No space" in report.failed[0][1]
    assert len(calls) == 2
    assert list(mnt.iterdir()) == []
    db = StateDB(state / "state.db")
    assert db.load() == {}
    db.close()
    monkeypatch.undo()
    again = await make_engine().sync_once()
    assert again.ok and (mnt / "f").read_text() == "data"


async def test_real_enospc_on_a_small_tmpfs(src: Path, make_engine: EngineFactory, tmpfs: Callable[..., Path]) -> None:
    """On a real full filesystem the big file fails with ENOSPC, small files still land, no temp is left."""
    small = tmpfs("1m")
    write(src / "big", os.urandom(2 << 20))
    write(src / "small", "s")
    # one copy at a time: the big file's temp must not take the small one's room while both run
    report = await make_engine(mount=small, once_attempts=1, copy_workers=1).sync_once()
    assert [path for path, _ in report.failed] == ["big"]
    assert (small / "small").read_text() == "s" and not (small / "big").exists()
    assert temps(small) == []


async def test_file_modified_mid_copy_settles_again(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """A file written during its copy is not installed half-way: the final version arrives after it settles."""
    write(src / "f", "first")
    hits: list[str] = []

    def modify_once(rel: str) -> None:
        if not hits:
            hits.append(rel)
            with (src / rel).open("a") as handle:
                handle.write(" second")

    with capture_logs() as logs:
        report = await make_engine(settle=0.1, copy_hook=modify_once).sync_once()
    assert report.ok and hits == ["f"]
    assert (mnt / "f").read_text() == "first second"
    assert any(e["event"] == "sync.changed_during_copy" for e in logs)


async def test_vanished_file_is_not_an_error(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """A file deleted while it is being copied is simply not synced; the pass is still ok."""
    write(src / "f", "x")
    write(src / "g", "y")

    def remove_f(rel: str) -> None:
        if rel == "f":
            (src / rel).unlink()

    report = await make_engine(copy_hook=remove_f).sync_once()
    assert report.ok and tree(mnt) == {"g": b"y"}


async def test_crash_leftover_temps_are_removed_at_start(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """Temp files a crash left in the mount are removed before anything is copied."""
    write(src / "f", "x")
    write(mnt / "deep" / temp_name("half.csv"), "partial")
    report = await make_engine().sync_once()
    assert report.ok and temps(mnt) == []


async def test_files_that_never_settle_fail_the_pass(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """A file still being written when the settle limit runs out is reported, not copied half-way."""
    write(src / "log", "start\n")
    write(src / "ok", "fine")
    stop = threading.Event()

    def append() -> None:
        while not stop.wait(0.03):
            with (src / "log").open("a") as handle:
                handle.write("more\n")

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, append)
        try:
            report = await make_engine(settle=0.3, once_settle_limit=0.6).sync_once()
        finally:
            stop.set()
    assert [path for path, _ in report.failed] == ["log"]
    assert "still changing" in report.failed[0][1]
    assert (mnt / "ok").read_text() == "fine" and not (mnt / "log").exists()


async def test_facts_are_emitted(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """FileChanged, then FileSynced (with the first line of marker files), then FileDeleted are reported."""
    facts: list[Fact] = []
    write(src / "data.csv", "1,2")
    write(src / "out" / "_SUCCESS", "run-7\n")
    await make_engine(on_fact=facts.append, marker_names=frozenset({"_SUCCESS"})).sync_once()
    changed = {f.path for f in facts if isinstance(f, FileChanged)}
    synced = {f.path: f for f in facts if isinstance(f, FileSynced)}
    assert changed == {"data.csv", "out/_SUCCESS"}
    assert synced["out/_SUCCESS"].first_line == "run-7" and synced["data.csv"].first_line is None
    assert synced["data.csv"].size == 3
    (src / "data.csv").unlink()
    facts.clear()
    await make_engine(on_fact=facts.append, max_delete=1.0).sync_once()
    assert [f.path for f in facts if isinstance(f, FileDeleted)] == ["data.csv"]


async def test_plan_is_a_dry_run(src: Path, mnt: Path, state: Path, make_engine: EngineFactory) -> None:
    """`plan()` lists copies, moves and deletes and changes nothing in the mount, the source or the state."""
    write(src / "a", "a")
    write(src / "b", "b")
    await make_engine().sync_once()
    (src / "a").rename(src / "a2")
    (src / "b").unlink()
    write(src / "c", "c")
    before = tree(mnt)
    kept = [
        p for p in state.iterdir() if not p.name.endswith("-shm")
    ]  # SQLite's index in shared memory: readers mark it
    state_before = {p.name: p.read_bytes() for p in kept}
    plan = await make_engine(max_delete=1.0).plan()
    assert plan.copy == ("c",) and plan.move == (("a", "a2"),) and plan.delete == ("b",)
    assert not plan.refused_delete and plan.mount_problem is None
    assert tree(mnt) == before and list(mnt.iterdir())
    assert {p.name: p.read_bytes() for p in kept} == state_before  # not a byte of the state DB
    db = StateDB(state / "state.db")
    assert set(db.load()) == {"a", "b"}
    db.close()


async def test_probe_failure_blocks_everything(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the writability probe fails, once reports the mount problem and writes nothing."""
    write(src / "f", "x")

    def refuse(folder: str) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(mount_mod, "probe_write", refuse)
    report = await make_engine().sync_once()
    assert report.mount_problem is not None and "EACCES" in report.mount_problem
    assert list(mnt.iterdir()) == []


ONCE_AS_UNPRIVILEGED_ROOT = """
import asyncio, json, sys
from pathlib import Path
from agent.config import SourceConfig
from agent.sync.engine import SyncEngine

async def main() -> None:
    engine = SyncEngine(SourceConfig(path=sys.argv[1], settle=0, max_delete=1.0), Path(sys.argv[2]), Path(sys.argv[3]))
    try:
        report = await engine.sync_once()
    finally:
        engine.close()
    print("REPORT " + json.dumps({"failed": report.failed, "deleted": report.deleted, "ok": report.ok}))

asyncio.run(main())
"""


async def test_unreadable_folder_fails_the_pass_and_keeps_its_copies(
    src: Path, mnt: Path, state: Path, make_engine: EngineFactory
) -> None:
    """A folder the kernel refuses to list (mode 000, run without root's DAC override) fails `once` and is logged,
    and nothing under it is deleted from the mount."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop the DAC override capabilities")
    write(src / "locked" / "data.csv", "secret")
    write(src / "ok.csv", "ok")
    assert (await make_engine(max_delete=1.0).sync_once()).ok
    write(src / "new.csv", "new")
    (src / "locked").chmod(0)
    try:
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [
                    "setpriv",
                    "--bounding-set=-dac_override,-dac_read_search",
                    "--inh-caps=-dac_override,-dac_read_search",
                    sys.executable,
                    "-c",
                    ONCE_AS_UNPRIVILEGED_ROOT,
                    str(src),
                    str(mnt),
                    str(state),
                ],
                check=False,
            )
    finally:
        (src / "locked").chmod(0o755)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    [line] = [line for line in out.splitlines() if line.startswith("REPORT ")]
    report = json.loads(line.removeprefix("REPORT "))
    assert report == {"failed": [["locked", "source: permission denied"]], "deleted": 0, "ok": False}
    assert out.count("sync.folder_unreadable") == 1 and "locked" in out
    assert (mnt / "locked" / "data.csv").read_text() == "secret" and (mnt / "new.csv").read_text() == "new"


async def test_unreadable_folder_is_reported_once_per_pass(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With listing refused for one folder (opening it raises EACCES, as the kernel would), `once` lists the
    folder in `failed` with the reason, warns once, deletes nothing under it and copies the rest."""
    write(src / "a" / "locked" / "f.csv", "f")
    assert (await make_engine(max_delete=1.0).sync_once()).ok
    write(src / "b.csv", "b")
    refuse_listing(monkeypatch, "/a/locked")
    with capture_logs() as logs:
        report = await make_engine(max_delete=1.0).sync_once()
    assert report.failed == (("a/locked", "source: permission denied"),) and not report.ok
    assert report.deleted == 0 and report.copied == 1
    warned = [e for e in logs if e["event"] == "sync.folder_unreadable"]
    assert [(e["folder"], e["error"], e["log_level"]) for e in warned] == [("a/locked", "permission denied", "warning")]
    monkeypatch.undo()
    assert tree(mnt) == tree(src)


async def test_the_plan_of_a_source_the_agent_will_create_is_empty(
    tmp_path: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """With source.create and no source yet, the dry-run plan is empty instead of an error (a run would create it)."""
    from agent.config import SourceConfig
    from agent.sync.engine import SyncEngine

    engine = SyncEngine(SourceConfig(path=tmp_path / "later", create=True), mnt, tmp_path / "plan-state")
    plan = await engine.plan()
    assert (plan.copy, plan.delete, plan.mount_problem) == ((), (), None)
    engine.close()


async def test_once_starts_copying_before_the_whole_scan_is_fed(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`once` feeds its scan to the ledger a slice at a time and starts copies between slices: the first copy
    does not wait for the last file of a big first sync to be looked at, and everything still arrives."""
    monkeypatch.setattr(pipeline_mod, "FEED_SLICE", 8)
    for i in range(64):
        write(src / f"d{i // 16}" / f"f{i:02}.txt", str(i))
    observed: list[str] = []
    real_observe = Ledger.observe

    def observe(self: Ledger, rel: str, *args: Any, **kwargs: Any) -> None:
        observed.append(rel)
        real_observe(self, rel, *args, **kwargs)

    real_take = Ledger.take_batch
    at_first_batch: list[int] = []

    def take_batch(self: Ledger, *args: Any, **kwargs: Any) -> list[Any]:
        batch = real_take(self, *args, **kwargs)
        if batch and not at_first_batch:
            at_first_batch.append(len(observed))
        return batch

    monkeypatch.setattr(Ledger, "observe", observe)
    monkeypatch.setattr(Ledger, "take_batch", take_batch)
    report = await make_engine().sync_once()
    assert report.ok and report.copied == 64 and tree(mnt) == tree(src)
    assert len(set(observed)) == 64
    assert at_first_batch == [8]  # the first batch went to a worker after the first slice


@pytest.mark.parametrize("feed_slice", [pipeline_mod.FEED_SLICE, 5])
async def test_a_marker_lands_in_the_mount_after_the_rest_of_its_folder(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch, feed_slice: int
) -> None:
    """A job that reads the mount and waits for `_SUCCESS` (Spark's, Hadoop's convention) finds its folder
    complete: the marker is renamed into the mount after every other file under its folder, across batches and
    workers, in a first sync (where a plain path sort puts `out/_SUCCESS` before `out/year=2026/...`), also
    when the scan is fed to the ledger in slices with copies starting in between."""
    monkeypatch.setattr(pipeline_mod, "FEED_SLICE", feed_slice)
    for folder in ("out", "logs"):
        for i in range(60):
            (src / folder / f"year={2000 + i % 3}").mkdir(parents=True, exist_ok=True)
            (src / folder / f"year={2000 + i % 3}" / f"part-{i:03}.csv").write_text(f"{i}\n")
        (src / folder / "_SUCCESS").write_text("")
    landed: list[str] = []
    real_replace = os.replace

    def replace(a: Any, b: Any) -> None:
        real_replace(a, b)
        landed.append(os.path.relpath(os.fsdecode(b), mnt))

    monkeypatch.setattr(os, "replace", replace)
    engine = make_engine(
        batch_files=16,
        copy_hook=lambda rel: None,
        marker_names=frozenset({"_SUCCESS"}),  # hooked: copied here
    )
    report = await engine.sync_once()
    assert report.copied == 122 and tree(mnt) == tree(src)
    for folder in ("out", "logs"):
        marker = landed.index(f"{folder}/_SUCCESS")
        assert all(
            landed.index(rel) < marker for rel in landed if rel.startswith(folder + "/") and rel != landed[marker]
        )


async def test_once_does_not_wait_for_a_file_whose_folder_turns_unreadable(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file still settling when `once` scanned, whose folder turns r-- (or answers EIO) before it is looked at
    again, is reported with its folder's error at once, not as "still changing" after the settle limit."""
    write(src / "a" / "new.csv", "1\n")
    write(src / "b.csv", "2\n")
    locked = threading.Event()
    refuse_search(monkeypatch, str(src / "a"), locked.is_set)

    def on_fact(fact: Fact) -> None:
        if isinstance(fact, FileChanged) and fact.path == "a/new.csv":
            locked.set()  # seen by the scan, still settling: its folder turns unreadable now

    report = await make_engine(settle=0.3, once_settle_limit=30.0, on_fact=on_fact).sync_once()
    assert dict(report.failed) == {"a": "source: permission denied", "a/new.csv": "source: permission denied"}
    assert tree(mnt) == {"b.csv": b"2\n"}


async def test_once_names_a_file_that_fails_to_be_looked_at_in_a_readable_folder(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file still settling when `once` scanned that answers EIO when looked at again is reported by name, its
    neighbours copied."""
    write(src / "a" / "bad.csv", "1")
    write(src / "a" / "good.csv", "2")
    armed = threading.Event()
    real_lstat = os.lstat

    def lstat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if armed.is_set() and os.fsdecode(path).endswith("a/bad.csv"):
            raise OSError(errno.EIO, "Input/output error", path)
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)

    def on_fact(fact: Fact) -> None:
        if isinstance(fact, FileChanged) and fact.path == "a/bad.csv":
            armed.set()

    report = await make_engine(settle=0.3, once_settle_limit=30.0, on_fact=on_fact).sync_once()
    assert dict(report.failed)["a/bad.csv"] == "source: input/output error"
    assert tree(mnt) == {"a/good.csv": b"2"}


async def test_once_reports_a_conflict_whose_folder_turns_unreadable_before_its_second_look(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file kept out of the mount by a folder in its way is looked at again after the delete pass; when its
    source folder cannot be read by then, it stays in the report (it used to vanish from it: `ok` with the mount
    out of sync)."""
    write(src / "a" / "x.csv", "1")
    (mnt / "a" / "x.csv").mkdir(parents=True)
    (mnt / "a" / "x.csv" / "keep").write_text("k")
    locked = threading.Event()
    refuse_search(monkeypatch, str(src / "a"), locked.is_set)
    engine = make_engine(delete="mirror")
    real_pass = engine._delete_pass

    async def delete_pass(*args: Any, **kwargs: Any) -> None:
        locked.set()  # after the copies, before the conflict's second look
        await real_pass(*args, **kwargs)

    monkeypatch.setattr(engine, "_delete_pass", delete_pass)
    report = await engine.sync_once()
    assert not report.ok
    assert dict(report.failed)["a/x.csv"] == "source: permission denied"


async def test_once_reports_a_delete_it_could_not_decide(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mirror mode: a file that left the source, whose folder cannot be searched when the delete pass looks at
    it, stays in the mount (it may be there still) and `once` says so instead of reporting everything in sync."""
    write(src / "a" / "old.csv", "1")
    write(src / "a" / "keep.csv", "2")
    assert (await make_engine(delete="mirror", max_delete=1.0).sync_once()).ok
    (src / "a" / "old.csv").unlink()
    locked = threading.Event()
    refuse_search(monkeypatch, str(src / "a"), locked.is_set)
    engine = make_engine(delete="mirror", max_delete=1.0)
    real_pass = engine._delete_pass

    async def delete_pass(*args: Any, **kwargs: Any) -> None:
        locked.set()  # after the scan saw old.csv gone, before the delete pass looks at it again
        await real_pass(*args, **kwargs)

    monkeypatch.setattr(engine, "_delete_pass", delete_pass)
    report = await engine.sync_once()
    assert not report.ok
    assert dict(report.failed)["a/old.csv"] == "source: permission denied"
    assert (mnt / "a" / "old.csv").exists()


async def test_once_knows_its_total_once_the_scan_is_fed(src: Path, make_engine: EngineFactory) -> None:
    """The progress bar's total (`last_scan_at` set, files counted) is there while `once` copies, not only at
    the end: it reads the engine's status."""
    for i in range(40):
        write(src / f"f{i:02}.txt", str(i))
    seen: list[bool] = []
    engine = make_engine(batch_files=4, copy_hook=lambda rel: seen.append(engine._last_scan_at is not None))
    report = await engine.sync_once()
    assert report.copied == 40 and seen and seen[-1]
    assert engine.status()["last_scan_files"] == 40


async def test_once_says_so_when_a_snapshot_fence_keeps_its_deletes_back(
    src: Path, mnt: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deletes wait while a snapshot is being taken; `once` never fences itself, but if it met a fence it would
    report the deletes it did not make instead of saying everything is in sync."""
    for name in ("a", "b", "c"):
        write(src / name, name)
    assert (await make_engine(max_delete=1.0).sync_once()).ok
    (src / "a").unlink()
    engine = make_engine(max_delete=1.0)
    real_pass = engine._delete_pass

    async def fenced_pass(*args: Any, **kwargs: Any) -> None:
        engine._fenced += 1  # as if the queue's fence went up while the pass looked at the candidates
        try:
            await real_pass(*args, **kwargs)
        finally:
            engine._fenced -= 1

    monkeypatch.setattr(engine, "_delete_pass", fenced_pass)
    report = await engine.sync_once()
    assert dict(report.failed) == {"a": "not deleted: a snapshot was being taken"}
    assert (mnt / "a").exists()


async def test_a_lost_row_whose_file_left_the_source_is_not_kept_as_restoring(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """Rows the mount lost are remembered until their files are copied again; one whose source file is gone by
    the next full scan is forgotten (it is never coming back)."""
    write(src / "d" / "f0.csv", "0")
    write(src / "d" / "f1.csv", "1")
    engine = make_engine()
    assert (await engine.sync_once()).ok
    (src / "d" / "f0.csv").unlink()
    engine._ledger.drop_rows(["d/f0.csv", "d/f1.csv"])
    assert sorted(engine._ledger.restoring) == ["d/f0.csv", "d/f1.csv"]
    assert (await engine.sync_once()).ok
    assert engine._ledger.restoring == {}
