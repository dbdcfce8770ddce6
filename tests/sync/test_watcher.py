"""Watchers: the watchfiles-based default reports real changes (and survives names that are not UTF-8); the
scripted stand-in replays batches."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import watchfiles
from structlog.testing import capture_logs

from agent.sync.watcher import (
    ScriptedWatcher,
    rust_debug_bytes,
    sole_cause,
    undecodable_path,
    watchfiles_changes,
)

LATIN1_NAME = b"caf\xe9.csv"  # "café" in Latin-1: not valid UTF-8


async def collect_until(
    root: Path, stop: anyio.Event, done: Callable[[set[str]], bool], **kwargs: Any
) -> tuple[list[set[str]], set[str]]:
    """Watch `root` until `done(everything seen)`; returns the batches and their union."""
    batches: list[set[str]] = []
    seen: set[str] = set()
    with anyio.fail_after(5):
        async for batch in watchfiles_changes(str(root), stop, **kwargs):
            batches.append(batch)
            seen |= batch
            if done(seen):
                stop.set()
    return batches, seen


async def test_watchfiles_reports_created_files_quickly(src: Path) -> None:
    """A file written into the watched folder shows up in a batch, as an absolute path, well within a second."""
    stop = anyio.Event()
    target = str(src / "new.txt")

    async def write_soon() -> None:
        await anyio.sleep(0.2)
        (src / "new.txt").write_text("x")

    async with anyio.create_task_group() as tg:
        tg.start_soon(write_soon)
        _, seen = await collect_until(src, stop, lambda seen: target in seen)
    assert target in seen


async def test_watchfiles_stops_promptly_on_stop_event(src: Path) -> None:
    """Setting the stop event ends the iteration without waiting for a change."""
    stop = anyio.Event()

    async def stop_soon() -> None:
        await anyio.sleep(0.1)
        stop.set()

    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_soon)
            async for _ in watchfiles_changes(str(src), stop):
                pass
    assert stop.is_set()


async def test_undecodable_name_is_reported_and_watching_goes_on(src: Path) -> None:
    """A file named with invalid UTF-8 bytes comes out as its os.fsdecode path (which stats) plus the root (a
    rescan), with one clear warning naming the real cause, and later normal files still arrive."""
    stop = anyio.Event()
    bad_bytes = os.path.join(os.fsencode(src), LATIN1_NAME)
    bad = os.fsdecode(bad_bytes)
    later = str(src / "later.txt")

    async def write_soon() -> None:
        await anyio.sleep(0.2)
        with open(bad_bytes, "wb") as fh:
            fh.write(b"x")
        await anyio.sleep(0.5)
        (src / "later.txt").write_text("y")

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_soon)
            _, seen = await collect_until(src, stop, lambda seen: later in seen, restart_gap=0.05)
    assert {bad, str(src), later} <= seen
    assert os.lstat(bad).st_size == 1  # the engine's stat of the reported path finds the file
    warnings = [e for e in logs if e["event"] == "sync.watch_undecodable" and e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "Unable to decode path" in warnings[0]["error"]
    assert "caf\\xE9.csv" in warnings[0]["error"]
    assert not [e for e in logs if e["event"] == "sync.watch_failed"]


async def test_undecodable_file_read_and_written_repeatedly(src: Path) -> None:
    """Repeated reads and writes of a file whose name is not UTF-8 (as copies and a writer do) keep the
    watcher alive, warn once, restart no more often than the restart gap, and normal events still arrive."""
    stop = anyio.Event()
    bad_bytes = os.path.join(os.fsencode(src), LATIN1_NAME)
    marker = str(src / "marker.txt")
    restarts: list[float] = []

    async def write_soon() -> None:
        await anyio.sleep(0.2)
        for _ in range(4):
            with open(bad_bytes, "ab") as fh:
                fh.write(b"x")
            await anyio.sleep(0.05)
            with open(bad_bytes, "rb") as fh:
                fh.read()
            await anyio.sleep(0.1)
        await anyio.sleep(0.4)
        (src / "marker.txt").write_text("m")

    batches: list[set[str]] = []
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_soon)
            with anyio.fail_after(8):
                async for batch in watchfiles_changes(str(src), stop, restart_gap=0.3):
                    batches.append(batch)
                    if str(src) in batch:
                        restarts.append(anyio.current_time())
                    if marker in batch:
                        stop.set()
    seen = set().union(*batches)
    assert os.fsdecode(bad_bytes) in seen
    assert marker in seen
    assert len(restarts) >= 2
    assert all(b - a >= 0.25 for a, b in itertools.pairwise(restarts))
    warnings = [e for e in logs if e["event"] == "sync.watch_undecodable" and e["log_level"] == "warning"]
    assert len(warnings) == 1


async def test_undecodable_folder_falls_back_to_scans_until_renamed(src: Path) -> None:
    """A folder whose name is not UTF-8 (which no watchfiles watcher survives) turns the watcher into a
    periodic full-scan request with one warning, and once it is renamed, change events flow again."""
    stop = anyio.Event()
    folder = os.path.join(os.fsencode(src), b"dir\xff")
    os.mkdir(folder)
    with open(os.path.join(folder, b"inner\xe9.bin"), "wb") as fh:
        fh.write(b"x")
    marker = str(src / "marker.txt")
    scans = 0

    async def rename_then_write() -> None:
        await anyio.sleep(0.6)
        os.rename(folder, os.path.join(os.fsencode(src), b"dir_ok"))
        await anyio.sleep(0.4)
        (src / "marker.txt").write_text("m")

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(rename_then_write)
            with anyio.fail_after(8):
                async for batch in watchfiles_changes(str(src), stop, fallback_scan=0.1):
                    scans += batch == {str(src)}
                    if marker in batch:
                        stop.set()
    assert scans >= 3  # roughly every 0.1 s for 0.6 s
    warnings = [e for e in logs if e["event"] == "sync.watch_undecodable" and e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "dir\\xFF" in warnings[0]["error"]
    assert "full scan every 0.1 s" in warnings[0]["effect"]


async def test_stop_during_fallback_scans_ends_promptly(src: Path) -> None:
    """A stop set while an undecodable folder holds the watcher in fallback scans ends it without delay."""
    stop = anyio.Event()
    os.mkdir(os.path.join(os.fsencode(src), b"dir\xff"))

    async def stop_soon() -> None:
        await anyio.sleep(0.3)
        stop.set()

    batches: list[set[str]] = []
    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_soon)
            async for batch in watchfiles_changes(str(src), stop, fallback_scan=60):
                batches.append(batch)
    assert batches == [{str(src)}]


async def test_stop_during_restart_gap_ends_promptly(src: Path) -> None:
    """A stop set while the watcher waits out the restart gap ends the iteration without waiting it out."""
    stop = anyio.Event()
    bad_bytes = os.path.join(os.fsencode(src), LATIN1_NAME)
    started = anyio.current_time()

    async def write_then_stop() -> None:
        await anyio.sleep(0.2)
        for _ in range(3):
            with open(bad_bytes, "ab") as fh:
                fh.write(b"x")
            await anyio.sleep(0.15)
        stop.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_then_stop)
            async for _ in watchfiles_changes(str(src), stop, restart_gap=30):
                pass
    assert anyio.current_time() - started < 5


async def test_other_watch_errors_escape_as_their_real_cause(monkeypatch: pytest.MonkeyPatch, src: Path) -> None:
    """An error other than an undecodable name is raised as itself, not as awatch's one-item exception group."""

    async def broken_awatch(*_: Any, **__: Any) -> AsyncIterator[set[tuple[int, str]]]:
        nothing: list[set[tuple[int, str]]] = []
        for batch in nothing:
            yield batch
        raise ExceptionGroup("unhandled errors in a TaskGroup", [ExceptionGroup("inner", [OSError("boom")])])

    monkeypatch.setattr(watchfiles, "awatch", broken_awatch)
    with pytest.raises(OSError, match="boom"):
        async for _ in watchfiles_changes(str(src), anyio.Event()):
            pass


def test_undecodable_path_reads_back_rust_debug_escapes() -> None:
    """Rust's Debug form of a path (byte, char and unicode escapes) decodes to the os.fsdecode name."""
    message = r'Unable to decode path "/src/a \"q\" b\\c\tx\u{7f}é\xE9\xFF.csv" to string'
    assert undecodable_path(message) == os.fsdecode('/src/a "q" b\\c\tx\x7fé'.encode() + b"\xe9\xff.csv")
    assert rust_debug_bytes(r"caf\xE9.csv") == LATIN1_NAME


def test_undecodable_path_refuses_other_messages_and_malformed_forms() -> None:
    """Other watcher errors, stray quotes and unknown escapes give None rather than a wrong path."""
    assert undecodable_path("error in underlying watcher: queue overflow") is None
    assert undecodable_path(r'Unable to decode path "/a/b\q" to string') is None
    assert undecodable_path('Unable to decode path "/a/"b" to string') is None
    assert undecodable_path(r'Unable to decode path "/a/\u{d800}" to string') is None
    assert rust_debug_bytes(r"\xZZ") is None


def test_sole_cause_unwraps_single_item_groups_only() -> None:
    """Nested one-item groups unwrap to their exception; a group of several is kept as it is."""
    leaf = ValueError("x")
    assert sole_cause(ExceptionGroup("a", [ExceptionGroup("b", [leaf])])) is leaf
    several = ExceptionGroup("a", [leaf, KeyError("y")])
    assert sole_cause(several) is several
    assert sole_cause(leaf) is leaf


async def test_scripted_watcher_replays_batches() -> None:
    """Batches pushed into the scripted watcher come out in order, and the stop event ends it."""
    watcher = ScriptedWatcher()
    stop = anyio.Event()
    watcher.push(["/a", "/b"])
    watcher.push({"/c"})
    got: list[set[str]] = []
    with anyio.fail_after(3):
        async for batch in watcher("/", stop):
            got.append(batch)
            if len(got) == 2:
                stop.set()
    assert got == [{"/a", "/b"}, {"/c"}]
    assert watcher.started
