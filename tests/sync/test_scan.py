"""Walking the source: ignore patterns, pruned folders, symlinks, odd file types and odd names."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from sync.sync_kit import refuse_listing

from agent.defaults import IGNORE as DEFAULT_IGNORE
from agent.errors import SourceError
from agent.sync.scan import IgnoreMatcher, Walker
from agent.sync.statedb import make_row


def walker(root: Path, ignore: tuple[str, ...] = DEFAULT_IGNORE, prune: tuple[str, ...] = ()) -> Walker:
    return Walker(str(root), IgnoreMatcher(ignore), prune)


@pytest.mark.parametrize(
    ("patterns", "path", "is_dir", "expected"),
    [
        (DEFAULT_IGNORE, "a/b/report.tmp", False, True),
        (DEFAULT_IGNORE, "upload.part", False, True),
        (DEFAULT_IGNORE, "x/.~lock.doc#", False, True),
        (DEFAULT_IGNORE, "~$book.xlsx", False, True),
        (DEFAULT_IGNORE, "data.csv", False, False),
        (("build/",), "build", True, True),
        (("build/",), "build", False, False),
        (("build/",), "x/build/out.o", False, True),
        (("/top.txt",), "top.txt", False, True),
        (("/top.txt",), "sub/top.txt", False, False),
        (("*.log", "!keep.log"), "a/keep.log", False, False),
        (("*.log", "!keep.log"), "a/other.log", False, True),
        (("logs/**/*.gz",), "logs/2024/a.gz", False, True),
    ],
)
def test_ignore_patterns_have_gitignore_semantics(
    patterns: tuple[str, ...], path: str, is_dir: bool, expected: bool
) -> None:
    """Patterns match as in .gitignore: anchoring, folder-only patterns, negation, `**`, files under folders."""
    assert IgnoreMatcher(patterns).ignored(path, is_dir) is expected


def test_scan_lists_files_and_skips_ignored(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan finds regular files by '/'-path, leaves out ignored ones and does not descend ignored folders."""
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "x.csv").write_text("x")
    (src / "top.txt").write_text("t")
    (src / "half.part").write_text("p")
    (src / "build").mkdir()
    (src / "build" / "inner.txt").write_text("i")
    listed: list[str] = []
    real_open = os.open

    def spy(path: str, flags: int, *args: int) -> int:
        listed.append(path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", spy)
    result = walker(src, (*DEFAULT_IGNORE, "build/")).scan({})
    assert set(result.changed) == {"a/b/x.csv", "top.txt"}
    assert result.files == 2
    assert any(p.endswith("/a/b") for p in listed)
    assert not any(p.endswith("/build") for p in listed)


def test_scan_compares_with_known_rows(src: Path) -> None:
    """Files whose size, mtime, inode and mode match their row are seen but not reported as changed."""
    (src / "same").write_text("1")
    (src / "other").write_text("2")
    st = os.stat(src / "same")
    known = {
        "same": make_row(st.st_size, st.st_mtime_ns, st.st_ino, stat.S_IMODE(st.st_mode)),
        "gone": make_row(1, 1, 1, 0o644),
    }
    w = walker(src)
    result = w.scan(known)
    assert set(result.changed) == {"other"}
    assert result.hits == {"": 1} and result.seen == set()
    assert w.missing(result, known) == ["gone"]
    kept = w.scan(known, keep_seen=True)
    assert kept.seen == {"same", "other"}
    assert w.missing(kept, known) == ["gone"]


def test_pruned_folder_is_never_walked(src: Path) -> None:
    """The agent's own state folder inside the source is left out entirely."""
    (src / ".domino-sync" / "state").mkdir(parents=True)
    (src / ".domino-sync" / "state" / "state.db").write_text("db")
    (src / "data.txt").write_text("d")
    result = walker(src, prune=(".domino-sync/state",)).scan({})
    assert set(result.changed) == {"data.txt"}


def test_symlinks_inside_the_root_are_followed_to_files_only(src: Path, tmp_path: Path) -> None:
    """A link to a file inside the root is synced as that file; links out of the root, to folders or broken
    ones are skipped with a reason."""
    (src / "real.txt").write_text("content")
    (src / "sub").mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (src / "in-link").symlink_to("real.txt")
    (src / "out-link").symlink_to(outside)
    (src / "dir-link").symlink_to("sub")
    (src / "broken").symlink_to("nowhere")
    (src / "escape").symlink_to("../outside.txt")
    result = walker(src).scan({})
    assert set(result.changed) == {"real.txt", "in-link"}
    assert result.changed["in-link"].ino == os.stat(src / "real.txt").st_ino
    reasons = dict(result.skipped)
    assert reasons["out-link"] == "symlink out of the source"
    assert reasons["escape"] == "symlink out of the source"
    assert reasons["dir-link"] == "symlink to a folder"
    assert reasons["broken"] == "broken symlink"


def test_fifos_sockets_and_devices_are_skipped(src: Path) -> None:
    """Special files are reported as skipped with their kind, never listed as files."""
    os.mkfifo(src / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    try:
        kinds = {"pipe": "fifo", "sock": "socket"}
        try:
            os.mknod(src / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
            kinds["null"] = "character device"
        except PermissionError:
            pass
        (src / "plain").write_text("p")
        result = walker(src).scan({})
    finally:
        sock.close()
    assert set(result.changed) == {"plain"}
    assert dict(result.skipped) == kinds


def test_odd_names_and_deep_folders(src: Path) -> None:
    """Spaces, unicode, newlines, 255-byte names and 40-deep folders are listed with exact paths."""
    names = ["with space.txt", "ünïcødé-文件.txt", "new\nline.txt", "x" * 255]
    for name in names:
        (src / name).write_text(name)
    deep = src.joinpath(*[f"d{i}" for i in range(40)])
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("b")
    result = walker(src).scan({})
    deep_rel = "/".join(f"d{i}" for i in range(40)) + "/bottom.txt"
    assert set(result.changed) == {*names, deep_rel}


def test_unreadable_folder_is_reported_and_hides_nothing(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder that cannot be listed is reported, and rows under it are not taken for deleted."""
    (src / "locked").mkdir()
    (src / "locked" / "f").write_text("f")
    refuse_listing(monkeypatch, "/locked")
    w = walker(src)
    result = w.scan({})
    assert result.unreadable == ["locked"] and result.why_unreadable == {"locked": "permission denied"}
    assert w.missing(result, {"locked/f": make_row(1, 1, 1, 0o644), "gone": make_row(1, 1, 1, 0o644)}) == ["gone"]


def test_missing_source_raises_source_error(tmp_path: Path) -> None:
    """A source folder that is not there is a SourceError naming it, not an empty tree."""
    with pytest.raises(SourceError, match="cannot be read"):
        walker(tmp_path / "nope").scan({})


def test_stat_paths_walks_folders_named_by_events(src: Path) -> None:
    """A path that is now a folder is walked; files, absences and the folder itself are told apart."""
    (src / "newdir" / "deep").mkdir(parents=True)
    (src / "newdir" / "deep" / "f.txt").write_text("f")
    (src / "file.txt").write_text("x")
    states, sub = walker(src).stat_paths(["newdir", "file.txt", "gone.txt"], {})
    assert states["file.txt"] is not None and states["file.txt"].size == 1
    assert states["gone.txt"] is None
    assert sub.folders == ["newdir"]
    assert set(sub.changed) == {"newdir/deep/f.txt"}


def row_of(path: Path) -> bytes:
    st = os.stat(path)
    return make_row(st.st_size, st.st_mtime_ns, st.st_ino, stat.S_IMODE(st.st_mode))


def test_missing_names_only_what_left_the_folders_that_came_up_short(src: Path) -> None:
    """Without a set of every name, deletions are still found: a file deleted, a file replaced by a folder and a
    whole folder removed are missing; matched and changed files are not, nor a file ignored since it was synced
    (its copy stays as it was)."""
    for rel in ["a/keep", "a/gone", "a/becomes-dir", "a/now.tmp", "b/x", "b/y", "c/changed"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    known = {rel: row_of(src / rel) for rel in ["a/keep", "a/gone", "a/becomes-dir", "b/x", "b/y", "c/changed"]}
    known["a/now.tmp"] = make_row(1, 1, 1, 0o644)
    (src / "a/gone").unlink()
    (src / "a/becomes-dir").unlink()
    (src / "a/becomes-dir").mkdir()
    for rel in ["b/x", "b/y"]:
        (src / rel).unlink()
    (src / "b").rmdir()
    (src / "c/changed").write_text("longer now")
    w = walker(src)
    result = w.scan(known)
    assert set(result.changed) == {"c/changed"}
    assert result.hits == {"a": 1}
    assert sorted(w.missing(result, known)) == ["a/becomes-dir", "a/gone", "b/x", "b/y"]


def test_an_unchanged_tree_needs_no_second_look(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When every known file matched, `missing` lists no folder again."""
    for i in range(20):
        (src / f"d{i % 4}").mkdir(exist_ok=True)
        (src / f"d{i % 4}" / f"f{i}").write_text(str(i))
    known = {f"d{i % 4}/f{i}": row_of(src / f"d{i % 4}" / f"f{i}") for i in range(20)}
    w = walker(src)
    result = w.scan(known)
    assert not result.changed and sum(result.hits.values()) == 20

    def no_listing(path: str) -> None:
        raise AssertionError(f"listed {path} again")

    monkeypatch.setattr(os, "scandir", no_listing)
    assert w.missing(result, known) == []


def test_scan_and_stats_report_hard_links_and_symlinks_inside_the_source(src: Path) -> None:
    """The walk and event stats name files with several names by (device, inode) and symlinks by their target,
    broken ones too; a plain file is in neither."""
    (src / "t").write_text("t")
    (src / "plain").write_text("p")
    os.link(src / "t", src / "h")
    (src / "l").symlink_to("t")
    (src / "later").symlink_to("not-yet")
    w = walker(src)
    result = w.scan({})
    st = (src / "t").stat()
    assert result.hardlinks == {"t": (st.st_dev, st.st_ino), "h": (st.st_dev, st.st_ino), "l": (st.st_dev, st.st_ino)}
    assert result.symlinks == {"l": "t", "later": "not-yet"}
    states, sub = w.stat_paths(["t", "plain", "l", "later"], {})
    assert states["later"] is None and states["plain"] is not None
    assert sub.hardlinks == {"t": (st.st_dev, st.st_ino), "l": (st.st_dev, st.st_ino)}
    assert sub.symlinks == {"l": "t", "later": "not-yet"}
