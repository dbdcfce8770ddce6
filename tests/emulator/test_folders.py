"""Dataset folders: read-only snapshot copies built aside, tag links that follow and vanish, renames, retirement."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.emulator.folders import Folders
from agent.errors import MountError


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    made = Folders(tmp_path / "mnt")
    made.ensure_root()
    made.create("ds")
    (made.dataset_path("ds") / "sub").mkdir()
    (made.dataset_path("ds") / "a.txt").write_text("alpha")
    (made.dataset_path("ds") / "sub" / "b.bin").write_bytes(b"\x00" * 10)
    return made


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_snapshot_is_a_read_only_copy(folders: Folders) -> None:
    """A snapshot copies every file, with files 0o444 and folders 0o555, and leaves no temp folder behind."""
    folders.snapshot("ds", "snapshot-000000000001")
    snap = folders.snapshot_path("ds", "snapshot-000000000001")
    assert (snap / "a.txt").read_text() == "alpha"
    assert (snap / "sub" / "b.bin").read_bytes() == b"\x00" * 10
    assert mode(snap / "a.txt") == 0o444 and mode(snap / "sub" / "b.bin") == 0o444
    assert mode(snap) == 0o555 and mode(snap / "sub") == 0o555
    assert sorted(p.name for p in folders.root.iterdir()) == ["ds", "ds@snapshot-000000000001"]


def test_snapshot_content_is_frozen(folders: Folders) -> None:
    """Writing, adding and deleting files in the live folder after a snapshot leaves the snapshot unchanged."""
    folders.snapshot("ds", "snapshot-000000000001")
    (folders.dataset_path("ds") / "a.txt").write_text("changed")
    (folders.dataset_path("ds") / "new.txt").write_text("new")
    (folders.dataset_path("ds") / "sub" / "b.bin").unlink()
    snap = folders.snapshot_path("ds", "snapshot-000000000001")
    assert (snap / "a.txt").read_text() == "alpha"
    assert not (snap / "new.txt").exists()
    assert (snap / "sub" / "b.bin").exists()


def test_snapshot_of_selected_paths(folders: Folders) -> None:
    """With relative paths, only those files and folders are copied."""
    folders.snapshot("ds", "snapshot-000000000002", ("sub",))
    snap = folders.snapshot_path("ds", "snapshot-000000000002")
    assert sorted(p.name for p in snap.iterdir()) == ["sub"]
    assert (snap / "sub" / "b.bin").exists()
    assert folders.missing("ds", ["sub", "nope.txt", ""]) == ["nope.txt"]


def test_snapshot_keeps_symlinks_as_links(folders: Folders) -> None:
    """A symlink in the dataset is copied as a link, not followed."""
    (folders.dataset_path("ds") / "link").symlink_to("/etc/hostname")
    folders.snapshot("ds", "snapshot-000000000003")
    copied = folders.snapshot_path("ds", "snapshot-000000000003") / "link"
    assert copied.is_symlink() and os.readlink(copied) == "/etc/hostname"


def test_snapshot_of_a_missing_folder_fails_cleanly(folders: Folders) -> None:
    """Snapshotting a dataset whose folder is gone raises MountError and leaves nothing behind."""
    with pytest.raises(MountError, match="missing"):
        folders.snapshot("gone", "snapshot-000000000004")
    assert sorted(p.name for p in folders.root.iterdir()) == ["ds"]


def test_tag_link_follows_and_disappears(folders: Folders) -> None:
    """A tag is a relative link to its snapshot folder, replaced when it moves and removed with the tag."""
    folders.snapshot("ds", "snapshot-000000000001")
    folders.snapshot("ds", "snapshot-000000000002")
    (folders.dataset_path("ds") / "a.txt").write_text("later")
    folders.point_tag("ds", "v1", "snapshot-000000000001")
    link = folders.tag_path("ds", "v1")
    assert os.readlink(link) == "ds@snapshot-000000000001"
    assert (link / "a.txt").read_text() == "alpha"
    folders.point_tag("ds", "v1", "snapshot-000000000002")
    assert os.readlink(link) == "ds@snapshot-000000000002"
    folders.drop_tag("ds", "v1")
    assert not os.path.lexists(link)
    assert not [p for p in folders.root.iterdir() if p.name.startswith(".")]


def test_rename_moves_folder_snapshots_and_tags(folders: Folders) -> None:
    """Renaming moves the live folder, each snapshot folder and each tag link to the new name."""
    folders.snapshot("ds", "snapshot-000000000001")
    folders.point_tag("ds", "v1", "snapshot-000000000001")
    folders.rename("ds", "renamed", ["snapshot-000000000001"], {"v1": "snapshot-000000000001"})
    names = sorted(p.name for p in folders.root.iterdir())
    assert names == ["renamed", "renamed@snapshot-000000000001", "renamed@v1"]
    assert (folders.tag_path("renamed", "v1") / "a.txt").read_text() == "alpha"


def test_retire_moves_everything_aside(folders: Folders) -> None:
    """Retiring a deleted dataset moves its folders under .deleted/<id>/ and drops its tag links."""
    folders.snapshot("ds", "snapshot-000000000001")
    folders.point_tag("ds", "v1", "snapshot-000000000001")
    grave = folders.retire("ds", "dataset-000000000001", ["snapshot-000000000001"], ["v1"])
    assert sorted(p.name for p in folders.root.iterdir()) == [".deleted"]
    assert sorted(p.name for p in grave.iterdir()) == ["ds", "ds@snapshot-000000000001"]
    assert mode(grave / "ds@snapshot-000000000001") == 0o555


def test_size_counts_regular_files_only(folders: Folders) -> None:
    """The size is the sum of regular file sizes, not following links; a missing folder is 0."""
    (folders.dataset_path("ds") / "link").symlink_to("a.txt")
    assert folders.size("ds") == 5 + 10
    assert folders.size("absent") == 0


def test_seed_from_snapshot_gives_a_writable_copy(folders: Folders) -> None:
    """A dataset seeded from a snapshot gets its content as writable files."""
    folders.snapshot("ds", "snapshot-000000000001")
    folders.create("copy")
    folders.seed_from("copy", folders.snapshot_path("ds", "snapshot-000000000001"))
    assert (folders.dataset_path("copy") / "a.txt").read_text() == "alpha"
    assert mode(folders.dataset_path("copy") / "a.txt") == 0o644
    assert not [p for p in folders.root.iterdir() if p.name.startswith(".")]
