"""A full scan shared between forked processes answers exactly what one process walking alone answers."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sync.sync_kit import refuse_listing

from agent.defaults import IGNORE as DEFAULT_IGNORE
from agent.errors import SourceError
from agent.sync import forks, scanfork
from agent.sync.scan import SPLIT_AT, IgnoreMatcher, ScanResult, Walker
from agent.sync.scanfork import shares
from agent.sync.statedb import Row, make_row


def row_of(path: Path) -> Row:
    st = path.stat()
    return make_row(st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)


def build(src: Path) -> dict[str, Row]:
    """A tree wide enough to be shared (more folders than SPLIT_AT), with what a walk must report: changed and
    unchanged files, ignored names, an ignored folder, hard links and symlinks, a fifo, a socket; the known
    rows of half the files, one of them out of date, one for a file that is gone."""
    known: dict[str, Row] = {}
    for i in range(SPLIT_AT * 3):
        folder = src / f"d{i:03d}" / "deep"
        folder.mkdir(parents=True)
        for j in range(5):
            file = folder / f"f{j}.csv"
            file.write_text(f"{i}-{j}" * (j + 1))
            if j % 2 == 0:
                known[f"d{i:03d}/deep/f{j}.csv"] = row_of(file)
        (folder / "skip.tmp").write_text("t")
    (src / "d000" / "build").mkdir()
    (src / "d000" / "build" / "x").write_text("x")
    os.link(src / "d001" / "deep" / "f0.csv", src / "d040" / "hard.csv")
    (src / "d002" / "link.csv").symlink_to("../d003/deep/f1.csv")
    (src / "d004" / "out").symlink_to("/etc/hostname")
    os.mkfifo(src / "d005" / "pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(src / "d006" / "sock"))
    (src / "top.txt").write_text("top")
    known["d007/deep/f0.csv"] = make_row(999, 1, 1, 0o644)
    known["d008/deep/gone.csv"] = make_row(1, 1, 1, 0o644)
    return known


def walker(src: Path, workers: int) -> Walker:
    return Walker(str(src), IgnoreMatcher((*DEFAULT_IGNORE, "build/")), workers=workers)


def same(a: ScanResult, b: ScanResult) -> None:
    assert a.changed == b.changed
    assert a.hits == b.hits
    assert sorted(a.skipped) == sorted(b.skipped)
    assert sorted(a.unreadable) == sorted(b.unreadable) and a.why_unreadable == b.why_unreadable
    assert a.hardlinks == b.hardlinks and a.symlinks == b.symlinks
    assert (a.files, a.bytes) == (b.files, b.bytes)


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_a_shared_scan_answers_what_one_process_does(tmp_path: Path, workers: int) -> None:
    """Changed files, matches per folder, skipped entries, links, counts and what is missing: all the same."""
    known = build(tmp_path)
    alone = walker(tmp_path, 1)
    shared = walker(tmp_path, workers)
    one, many = alone.scan(known), shared.scan(known)
    same(one, many)
    assert "d007/deep/f0.csv" in many.changed and "d040/hard.csv" in many.hardlinks
    assert many.symlinks == {"d002/link.csv": "d003/deep/f1.csv"}
    assert shared.missing(many, known) == alone.missing(one, known) == ["d008/deep/gone.csv"]


def test_an_unreadable_folder_is_reported_by_the_process_that_met_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder that cannot be listed, met in a child's share, comes back reported with its reason."""
    known = build(tmp_path)
    refuse_listing(monkeypatch, "/d033/deep")
    many = walker(tmp_path, 2).scan(known)
    same(walker(tmp_path, 1).scan(known), many)
    assert many.unreadable == ["d033/deep"] and many.why_unreadable == {"d033/deep": "permission denied"}


def test_a_child_that_fails_has_its_share_walked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a child dies before its result is complete (here: it cannot serialise it), the parent walks that
    share itself: the answer is still whole."""
    known = build(tmp_path)
    expected = walker(tmp_path, 1).scan(known)

    def broken(*_: object, **__: object) -> bytes:
        raise RuntimeError("cannot pickle")

    monkeypatch.setattr(forks.pickle, "dumps", broken)
    same(expected, walker(tmp_path, 3).scan(known))


def test_without_fork_the_parent_walks_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed fork (no processes left) costs time, not files."""
    known = build(tmp_path)
    expected = walker(tmp_path, 1).scan(known)

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    same(expected, walker(tmp_path, 2).scan(known))


def test_small_trees_subtrees_and_one_worker_never_fork(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No process is started for a tree with fewer folders than SPLIT_AT, for a subtree (an event's folder), for
    a walk that keeps every name, or with one worker."""
    for i in range(SPLIT_AT - 2):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "f").write_text("f")

    def no_fork() -> int:
        raise AssertionError("forked")

    monkeypatch.setattr(os, "fork", no_fork)
    assert walker(tmp_path, 4).scan({}).files == SPLIT_AT - 2
    build(tmp_path / "big")
    assert walker(tmp_path, 4).scan({}, "big").files > 0
    assert walker(tmp_path, 4).scan({}, keep_seen=True).files > 0
    assert walker(tmp_path, 1).scan({}).files > 0


def test_shares_deal_folders_round_robin() -> None:
    folders = [(f"/r/{n}", f"{n}/") for n in "edcba"]
    assert shares(folders, 2) == [
        [("/r/a", "a/"), ("/r/c", "c/"), ("/r/e", "e/")],
        [("/r/b", "b/"), ("/r/d", "d/")],
    ]
    assert shares(folders[:1], 3) == [[("/r/e", "e/")]]


def test_children_forked_from_a_worker_thread_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon scans in a worker thread: children forked from there (their only thread, the main one there)
    reset their signal handling and answer; none falls back to the parent walking its share."""
    known = build(tmp_path)
    merged: list[ScanResult] = []
    real_merge = scanfork.merge
    monkeypatch.setattr(scanfork, "merge", lambda out, part: (merged.append(part), real_merge(out, part)))
    results: list[ScanResult] = []
    worker = threading.Thread(target=lambda: results.append(walker(tmp_path, 3).scan(known)))
    worker.start()
    worker.join(30)
    same(walker(tmp_path, 1).scan(known), results[0])
    assert len(merged) == 2  # both children's results came back


def test_a_halted_scan_stops_at_once_and_kills_its_children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Walker.halt` (a second stop signal): a shared walk under way raises SourceError (never a partial answer
    that would pass for deletions) soon, its children killed and reaped; later walks refuse at once."""
    known = build(tmp_path)
    real_scandir = os.scandir

    def slow(path: Any) -> Any:
        time.sleep(0.1)  # every folder a tenth of a second, in the children too (they inherit this patch)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", slow)
    shared = walker(tmp_path, 3)
    failures: list[BaseException] = []

    def scan() -> None:
        try:
            shared.scan(known)
        except BaseException as exc:  # recorded for the assertion below
            failures.append(exc)

    worker = threading.Thread(target=scan)
    worker.start()
    deadline = time.monotonic() + 10
    while not shared.children.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    children = shared.children.pids()
    assert children, "the walk forked"
    started = time.monotonic()
    shared.halt()
    worker.join(10)
    assert not worker.is_alive() and time.monotonic() - started < 2
    assert len(failures) == 1 and isinstance(failures[0], SourceError)
    for pid in children:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    with pytest.raises(SourceError):
        shared.scan(known)
