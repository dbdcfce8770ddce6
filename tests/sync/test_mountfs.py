"""Mount-side file operations: temp names, crash cleanup, deletes that prune the folders they empty."""

from __future__ import annotations

import os
from pathlib import Path

from agent.sync.mountfs import TEMP_RE, delete_files, remove_temps, temp_name


def test_temp_names_fit_and_match_the_cleanup_pattern() -> None:
    """Temp names stay within 255 bytes even for 255-byte or multibyte names, and the cleanup pattern knows them."""
    for name in ["x" * 255, "é" * 127, "plain.csv", "new\nline"]:
        temp = temp_name(name)
        assert len(os.fsencode(temp)) <= 255
        assert TEMP_RE.match(temp)
    assert not TEMP_RE.match("data.tmp")


def test_remove_temps_clears_only_our_leftovers(mnt: Path) -> None:
    """Crash leftovers matching the temp pattern are removed anywhere in the mount; other files stay."""
    (mnt / "deep" / "er").mkdir(parents=True)
    (mnt / "deep" / "er" / temp_name("x.csv")).write_text("partial")
    (mnt / ".domino-sync-probe-0011aabb.tmp").write_text("")
    (mnt / "keep.tmp").write_text("user file")
    (mnt / "deep" / "data.csv").write_text("d")
    assert remove_temps(str(mnt)) == 2
    assert sorted(p.name for p in mnt.rglob("*") if p.is_file()) == ["data.csv", "keep.tmp"]


def test_delete_files_prunes_empty_folders(mnt: Path) -> None:
    """Deleting files removes the folders they leave empty, never the mount; missing files are fine."""
    (mnt / "a" / "b").mkdir(parents=True)
    (mnt / "a" / "b" / "f").write_text("x")
    (mnt / "a" / "g").write_text("y")
    (mnt / "top").write_text("z")
    results = delete_files(str(mnt), ["a/b/f", "top", "never/was"])
    assert all(error is None for _, error in results)
    assert sorted(p.relative_to(mnt).as_posix() for p in mnt.rglob("*")) == ["a", "a/g"]
    delete_files(str(mnt), ["a/g"])
    assert mnt.exists() and list(mnt.iterdir()) == []
