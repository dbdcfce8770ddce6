"""Atomic copies: temp file then rename, mode and mtime kept, changes mid-copy and write errors handled."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sync.sync_kit import temps

from agent.sync import copier as copier_mod
from agent.sync import mountfs
from agent.sync.copier import Copier, CopyJob, Outcome
from agent.sync.scan import to_filestat
from agent.sync.statedb import make_row


def job(src: Path, rel: str, **kw: object) -> CopyJob:
    return CopyJob(rel, to_filestat(os.stat(src / rel)), **kw)  # type: ignore[arg-type]


def copy(src: Path, mnt: Path, jobs: list[CopyJob], **kw: object) -> list[copier_mod.CopyResult]:
    return Copier(str(src), str(mnt), **kw).run(jobs)  # type: ignore[arg-type]


def test_copy_keeps_bytes_mode_and_mtime(src: Path, mnt: Path) -> None:
    """A copied file has the source's bytes, permission bits and mtime (ns), under the same relative path."""
    (src / "a" / "b").mkdir(parents=True)
    path = src / "a" / "b" / "data.bin"
    path.write_bytes(os.urandom(5000))
    path.chmod(0o640)
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    [result] = copy(src, mnt, [job(src, "a/b/data.bin")])
    out = mnt / "a" / "b" / "data.bin"
    assert result.outcome is Outcome.COPIED and result.bytes == 5000
    assert out.read_bytes() == path.read_bytes()
    assert out.stat().st_mode & 0o7777 == 0o640
    assert out.stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert temps(mnt) == []


@pytest.mark.parametrize("syncfs_available", [True, False])
def test_batches_of_small_files(src: Path, mnt: Path, monkeypatch: pytest.MonkeyPatch, syncfs_available: bool) -> None:
    """A batch of small files lands whole, with one syncfs or with per-file fsyncs when syncfs is missing."""
    if not syncfs_available:
        monkeypatch.setattr(mountfs, "SYNCFS", None)
    for i in range(20):
        (src / f"d{i % 3}").mkdir(exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}").write_text(str(i) * i)
    rels = sorted(f"d{i % 3}/f{i}" for i in range(20))
    results = copy(src, mnt, [job(src, rel) for rel in rels])
    assert all(r.outcome is Outcome.COPIED for r in results)
    assert {rel: (mnt / rel).read_text() for rel in rels} == {rel: (src / rel).read_text() for rel in rels}


def test_source_modified_mid_copy_is_discarded(src: Path, mnt: Path) -> None:
    """If the source is written during the copy, the temp file is thrown away and nothing replaces the target."""
    (src / "f").write_text("first version")
    (mnt / "f").write_text("old")

    def write_more(rel: str) -> None:
        with (src / rel).open("a") as handle:
            handle.write(" and more")

    [result] = copy(src, mnt, [job(src, "f")], hook=write_more)
    assert result.outcome is Outcome.CHANGED
    assert result.stat is not None and result.stat.size == len("first version and more")
    assert (mnt / "f").read_text() == "old"
    assert temps(mnt) == []


def test_source_changed_before_copy_is_not_copied(src: Path, mnt: Path) -> None:
    """A file that no longer matches what settled is reported changed without writing anything."""
    (src / "f").write_text("a")
    stale = job(src, "f")
    (src / "f").write_text("a longer text")
    [result] = copy(src, mnt, [stale])
    assert result.outcome is Outcome.CHANGED
    assert not (mnt / "f").exists()


def test_vanished_source_is_not_an_error(src: Path, mnt: Path) -> None:
    """A source that disappears before or during its copy is reported vanished and leaves nothing behind."""
    (src / "before").write_text("x")
    (src / "during").write_text("y")
    early = job(src, "before")
    (src / "before").unlink()

    def remove(rel: str) -> None:
        (src / rel).unlink()

    [gone] = copy(src, mnt, [early])
    [mid] = copy(src, mnt, [job(src, "during")], hook=remove)
    assert gone.outcome is Outcome.VANISHED and mid.outcome is Outcome.VANISHED
    assert list(mnt.iterdir()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EACCES])
def test_write_errors_leave_no_temp_and_no_success(
    src: Path, mnt: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """ENOSPC, EIO or EACCES while writing fail the file on the mount side and remove the temp file."""
    (src / "f").write_text("data")

    def fail(fi: int, fo: int, *rest: Any) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(copier_mod, "stream", fail)
    [result] = copy(src, mnt, [job(src, "f")])
    assert result.outcome is Outcome.FAILED and result.errno == code and result.mount_side
    assert not result.done
    assert list(mnt.iterdir()) == []


def test_full_tmpfs_gives_enospc(src: Path, tmpfs: Callable[..., Path]) -> None:
    """On a real full filesystem the copy fails with ENOSPC and the partial temp file is removed."""
    small = tmpfs("1m")
    (src / "big").write_bytes(os.urandom(3 << 20))
    [result] = copy(src, small, [job(src, "big")])
    assert result.outcome is Outcome.FAILED and result.errno == errno.ENOSPC
    assert list(small.iterdir()) == []


def test_missing_mount_is_never_created(src: Path, tmp_path: Path) -> None:
    """With the mount folder gone, copies fail on the mount side and neither it nor its subfolders appear."""
    (src / "a").mkdir()
    (src / "a" / "f").write_text("x")
    (src / "top").write_text("y")
    gone = tmp_path / "unmounted"
    results = copy(src, gone, [job(src, "a/f"), job(src, "top")])
    assert all(r.outcome is Outcome.FAILED and r.mount_side for r in results)
    assert not gone.exists()


def test_existing_identical_copy_is_adopted(src: Path, mnt: Path) -> None:
    """When the mount already holds the file (same size and mtime), it is recorded without copying."""
    (src / "f").write_text("same")
    (mnt / "f").write_text("same")
    st = os.stat(src / "f")
    os.utime(mnt / "f", ns=(st.st_atime_ns, st.st_mtime_ns))
    ino = os.stat(mnt / "f").st_ino
    [result] = copy(src, mnt, [job(src, "f")])
    assert result.outcome is Outcome.ADOPTED
    assert os.stat(mnt / "f").st_ino == ino


def test_confirm_compares_bytes(src: Path, mnt: Path) -> None:
    """With only the inode changed, equal bytes are adopted and different bytes are copied."""
    for name, mount_text in (("same", "abcd"), ("diff", "wxyz")):
        (src / name).write_text("abcd")
        (mnt / name).write_text(mount_text)
        st = os.stat(src / name)
        os.utime(mnt / name, ns=(st.st_atime_ns, st.st_mtime_ns))
    results = copy(src, mnt, [job(src, "same", confirm=True), job(src, "diff", confirm=True)])
    assert [r.outcome for r in results] == [Outcome.ADOPTED, Outcome.COPIED]
    assert (mnt / "diff").read_text() == "abcd"


def test_move_renames_inside_the_mount_and_prunes_the_old_folder(src: Path, mnt: Path) -> None:
    """A moved file is renamed in the mount; the folder it leaves empty is removed."""
    (src / "new").mkdir()
    (src / "new" / "f").write_text("moved")
    st = os.stat(src / "new" / "f")
    (mnt / "old").mkdir()
    (mnt / "old" / "f").write_text("moved")
    os.utime(mnt / "old" / "f", ns=(st.st_atime_ns, st.st_mtime_ns))
    row = make_row(st.st_size, st.st_mtime_ns, st.st_ino, 0o644)
    [result] = copy(src, mnt, [job(src, "new/f", move_from="old/f", move_row=row)])
    assert result.outcome is Outcome.MOVED and result.moved_from == "old/f"
    assert (mnt / "new" / "f").read_text() == "moved"
    assert not (mnt / "old").exists()


def test_conflicts_are_reported(src: Path, mnt: Path) -> None:
    """A file where a folder is needed, or a folder where the file goes, is a conflict, not a crash."""
    (src / "a").mkdir()
    (src / "a" / "f").write_text("x")
    (src / "b").write_text("y")
    (mnt / "a").write_text("a file in the way")
    (mnt / "b").mkdir()
    (mnt / "b" / "inner").write_text("z")
    results = copy(src, mnt, [job(src, "a/f"), job(src, "b")])
    assert [r.outcome for r in results] == [Outcome.CONFLICT, Outcome.CONFLICT]
    assert temps(mnt) == []


def test_halt_abandons_the_copy(src: Path, mnt: Path) -> None:
    """When the engine stops, the copy in progress is abandoned and its temp file removed."""
    (src / "f").write_text("x")
    halt = threading.Event()
    halt.set()
    [result] = copy(src, mnt, [job(src, "f")], halt=halt)
    assert result.outcome is Outcome.FAILED and result.error == "stopped"
    assert list(mnt.iterdir()) == []


def test_marker_first_line_is_read(src: Path, mnt: Path) -> None:
    """For marker files the first line of the copied content comes back with the result."""
    (src / "_SUCCESS").write_text("drop-42\nmore\n")
    [result] = copy(src, mnt, [job(src, "_SUCCESS")], marker_names={"_SUCCESS"})
    assert result.first_line == "drop-42"
