"""Mount-side file operations: temp names, crash cleanup, deletes that prune the folders they empty."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.sync.mountfs import TEMP_RE, delete_files, mount_inodes, remove_temps, remove_temps_of, temp_name


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


def test_remove_temps_of_takes_only_the_lost_batchs_temps(mnt: Path) -> None:
    """A forked batch that gave no answer: its temps go (their names made from its files' names and its tags),
    not those of a batch copying beside it in the same folder, even where long names cut to the same prefix."""
    long_a, long_b = "x" * 240 + "_run001.parquet", "x" * 240 + "_run002.parquet"
    (mnt / "d").mkdir()
    lost = [temp_name("a.csv", 0x10), temp_name(long_a, 0x11), temp_name("b.csv", 0xFFFFFFFF + 0x12)]
    beside = [temp_name(long_b, 0x7000), temp_name("a.csv", 0x7001), temp_name("a.csv.domino-sync-x", 0x12)]
    for name in (*lost, *beside, "a.csv"):
        (mnt / "d" / name).write_text("x")
    paths = ["d/a.csv", f"d/{long_a}", "d/b.csv", "gone/c.csv"]
    assert remove_temps_of(str(mnt), paths, range(0x10, 0x10 + 3))
    assert sorted(p.name for p in (mnt / "d").iterdir()) == sorted([*beside, "a.csv"])


def test_mount_inodes_stats_each_path_and_a_missing_folder_once(mnt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (mnt / "old").mkdir()
    (mnt / "old" / "a").write_text("a")
    calls: list[str] = []
    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda path, *a, **k: calls.append(str(path)) or real_lstat(path, *a, **k))
    paths = ["old/a", "old/b", *(f"new/f{i}" for i in range(50))]
    assert mount_inodes(str(mnt), paths) == {"old/a": (mnt / "old" / "a").stat().st_ino}
    assert len(calls) == 3  # old/a, old/b, and the first of the new folder's paths
