"""The mount guard: missing, not a folder, not writable, or fine."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.sync import mount as mount_mod
from agent.sync.mount import mount_problem


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
