"""The mount guard: missing, not a folder, not writable, or fine."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.sync import mount as mount_mod
from agent.sync.mount import (
    UNKNOWN_GEN,
    MountRecord,
    claimed_rows,
    current_record,
    mount_problem,
    read_record,
    updated_record,
    write_record,
)
from agent.sync.statedb import make_row, row_fields


def test_usable_mount_has_no_problem_and_no_leftover(mnt: Path) -> None:
    """A writable folder passes, and the probe file leaves nothing behind."""
    assert mount_problem(str(mnt)) is None
    assert list(mnt.iterdir()) == []


def test_missing_mount_is_reported_not_created(tmp_path: Path) -> None:
    """A missing mount is a problem ("missing") and is not created by the check."""
    gone = tmp_path / "gone"
    problem = mount_problem(str(gone))
    assert problem is not None and "missing" in problem
    assert not gone.exists()


def test_file_instead_of_folder(tmp_path: Path) -> None:
    """A file at the mount path is reported as not a folder."""
    (tmp_path / "file").write_text("x")
    problem = mount_problem(str(tmp_path / "file"))
    assert problem is not None and "not a folder" in problem


def test_failed_probe_write_is_not_writable(mnt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the probe write fails (read-only, permissions) the mount is reported not writable, with the errno."""

    def refuse(folder: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(mount_mod, "probe_write", refuse)
    problem = mount_problem(str(mnt))
    assert problem is not None and "not writable" in problem and "EROFS" in problem


def test_read_only_tmpfs_is_not_writable(tmpfs: Callable[..., Path]) -> None:
    """A real read-only filesystem fails both the probe and the cheap access check."""
    ro = tmpfs(readonly=True)
    assert "not writable" in (mount_problem(str(ro)) or "")
    assert "not writable" in (mount_problem(str(ro), probe=False) or "")


def test_claimed_rows_only_for_files_renamed_as_intended(mnt: Path) -> None:
    """An intent becomes a row (inode 0: compared before it counts as synced) only when the mount holds a
    regular file of the intended size and mtime (the rename happened); a missing file, another file or a folder
    gets none."""
    (mnt / "done").write_bytes(b"abc")
    (mnt / "other").write_bytes(b"different")
    (mnt / "dir").mkdir()
    st = (mnt / "done").stat()
    intents = {
        "done": make_row(3, st.st_mtime_ns, 4242, 0o600),
        "other": make_row(3, st.st_mtime_ns, 1, 0o644),
        "dir": make_row(3, st.st_mtime_ns, 2, 0o644),
        "missing": make_row(3, st.st_mtime_ns, 3, 0o644),
    }
    rows = claimed_rows(str(mnt), intents)
    assert set(rows) == {"done"}
    assert row_fields(rows["done"]) == (3, st.st_mtime_ns, 0, st.st_mode & 0o7777)


def test_mount_record_first_look_upgrade_and_remount() -> None:
    """The first look is recorded; a plain folder that becomes a mount point and a remount (another device)
    replace the record; the same mount point, or a plain folder seen again, keep it."""
    point = MountRecord("/m", True, 7)
    assert updated_record(None, point) == point
    assert updated_record(MountRecord("/other", True, 7), point) == point
    assert updated_record(point, point) is None
    assert updated_record(point, MountRecord("/m", True, 8)) == MountRecord("/m", True, 8)
    assert updated_record(MountRecord("/m", False, 7), point) == point
    assert updated_record(MountRecord("/m", False, 7), MountRecord("/m", False, 9)) is None
    swapped = MountRecord("/m", False, 7, ino=12)  # `mv m m.old; mkdir m`: another folder in its place
    assert updated_record(MountRecord("/m", False, 7, ino=11), swapped) == swapped
    remade = MountRecord("/m", False, 7, ino=12, gen=5)  # `rm -rf m; mkdir m`: the inode reused
    assert updated_record(MountRecord("/m", False, 7, ino=12, gen=4), remade) == remade
    assert updated_record(remade, remade) is None
    assert updated_record(remade, MountRecord("/m", False, 7, ino=12, gen=UNKNOWN_GEN)) is None  # a failed look


def test_mount_record_round_trips_and_a_bad_one_reads_as_none(tmp_path: Path) -> None:
    """The record survives a restart (a file in the state dir); a missing or garbled one reads as none."""
    assert read_record(tmp_path) is None
    record = current_record(str(tmp_path))
    write_record(tmp_path, record)
    assert read_record(tmp_path) == record and record.mount_point is False
    (tmp_path / "mount.json").write_text("{not json")
    assert read_record(tmp_path) is None


def test_unmounted_mount_point_is_a_problem_but_a_plain_folder_is_not(tmpfs: Callable[..., Path]) -> None:
    """A folder recorded as a mount point that no longer is one is reported and not probed (nothing written);
    a folder recorded as a plain folder passes as before."""
    point = tmpfs()
    record = current_record(str(point))
    assert record.mount_point and mount_problem(str(point), recorded=record) is None
    assert subprocess.run(["umount", str(point)], capture_output=True).returncode == 0
    problem = mount_problem(str(point), recorded=record)
    assert problem is not None and "no longer a mount point" in problem
    assert list(point.iterdir()) == []
    plain = MountRecord(str(point), False, record.dev)
    assert mount_problem(str(point), recorded=plain) is None
