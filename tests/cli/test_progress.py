"""The first-sync progress bar: the view and the line it draws (pure), and the redraw loop on a stream."""

from __future__ import annotations

import io
import os
import pty
import re
import select
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from agent.cli.progress import ProgressView, progress_line, progress_view, show_first_sync, wants_progress

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class FakeTty(io.StringIO):
    """A stream that says it is a terminal, so the bar draws into it."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")


def _scripted(readings: list[dict[str, Any] | None]) -> Callable[[], dict[str, Any] | None]:
    """A status() that returns each reading in turn, then the last one for ever."""
    it: Iterator[dict[str, Any] | None] = iter(readings)
    last: list[dict[str, Any] | None] = [None]

    def status() -> dict[str, Any] | None:
        last[0] = next(it, last[0])
        return last[0]

    return status


def _ticks(step: float = 1.0) -> Callable[[], float]:
    now = [0.0]

    def clock() -> float:
        value = now[0]
        now[0] += step
        return value

    return clock


def _frames(text: str) -> list[str]:
    """The lines drawn, one per carriage return, without colour codes or the blanking spaces."""
    return [frame.rstrip() for frame in ANSI.sub("", text).replace("\n", "").split("\r") if frame]


# ---------------------------------------------------------------- the view (pure)


def test_view_scanning_has_no_total() -> None:
    """Before the first scan ends the total is unknown and the label says scanning."""
    view = progress_view({"copies": 2, "pending": 5, "bytes": 10}, start_copies=0, finished=False, elapsed=1.5)
    assert view == ProgressView("scanning", 2, None, 10, 1.5)


def test_view_syncing_counts_since_the_bar_started() -> None:
    """After the scan the total is done + pending + in flight, and copies before the first reading do not count."""
    info = {"copies": 15, "pending": 20, "in_flight": 2, "bytes": 4096, "last_scan_at": 100.0}
    view = progress_view(info, start_copies=5, finished=False, elapsed=3.0)
    assert view == ProgressView("syncing", 10, 32, 4096, 3.0)


def test_view_in_sync_when_scanned_and_nothing_pending() -> None:
    """A finished scan with nothing pending or in flight is the final view, labelled in sync."""
    view = progress_view({"copies": 7, "pending": 0, "last_scan_at": 1.0}, start_copies=0, finished=False, elapsed=2)
    assert (view.label, view.done, view.total, view.final) == ("in sync", 7, 7, True)


def test_view_finished_pass_with_files_left_is_final_but_not_in_sync() -> None:
    """When the pass is over (burst mode) with files still pending, the view is final and does not claim in sync."""
    view = progress_view({"copies": 38, "pending": 2}, start_copies=0, finished=True, elapsed=9)
    assert (view.label, view.done, view.total, view.final) == ("finished", 38, 40, True)


# ---------------------------------------------------------------- the line (pure)


def test_line_shows_bar_count_size_and_elapsed() -> None:
    """The line holds the label, a bar filled in proportion, files done of total, MiB and H:MM:SS elapsed."""
    line = progress_line(ProgressView("syncing", 12, 40, 3 * 2**20, 65.0), 80)
    assert line == "syncing   [########--------------------]  12/40  3.0 MiB  0:01:05"


def test_line_unknown_total_shows_a_question_mark_and_a_moving_block() -> None:
    """While scanning the count reads N/? and the bar's block moves as time passes."""
    first = progress_line(ProgressView("scanning", 5, None, 0, 0.0), 80)
    later = progress_line(ProgressView("scanning", 5, None, 0, 1.0), 80)
    assert "  5/?  " in first
    assert first.count("#") == later.count("#") == 3
    assert first != later


def test_line_in_sync_with_nothing_to_copy_is_a_full_bar() -> None:
    """0 of 0 files is a full bar, not an empty one or a division by zero."""
    line = progress_line(ProgressView("in sync", 0, 0, 0, 1.0, final=True), 80)
    assert "[" + "#" * 28 + "]  0/0  0.0 MiB  0:00:01" in line


@pytest.mark.parametrize("columns", [1, 5, 20, 40, 60, 80, 200])
def test_line_fits_the_terminal(columns: int) -> None:
    """The line is never wider than the terminal less one column, so a carriage return redraws it in place."""
    line = progress_line(ProgressView("syncing", 123456, 654321, 7 * 2**40, 360000.0), columns)
    assert len(line) <= columns - 1
    if columns >= 80:
        assert "123456/654321" in line
        assert "[" in line


# ---------------------------------------------------------------- drawing on a stream


def test_wants_progress_only_on_a_terminal() -> None:
    """The bar is wanted on a terminal and not on a pipe or a file."""
    assert wants_progress(FakeTty()) is True
    assert wants_progress(io.StringIO()) is False


async def test_nothing_drawn_off_a_terminal() -> None:
    """Off a terminal the bar returns at once, draws nothing and never reads the status."""
    out = io.StringIO()
    calls: list[int] = []

    def status() -> dict[str, Any]:
        calls.append(1)
        return {}

    with anyio.fail_after(5):
        await show_first_sync(status, stream=out)
    assert out.getvalue() == ""
    assert calls == []


async def test_draws_in_place_until_in_sync() -> None:
    """The bar waits for the engine, redraws with carriage returns as files are copied, and ends on its own line
    with the final count once the first scan is done and nothing is pending."""
    out = FakeTty()
    status = _scripted(
        [
            None,  # the agent is still starting
            {"copies": 0, "pending": 3, "bytes": 0},
            {"copies": 1, "pending": 2, "bytes": 2**20, "last_scan_at": 5.0},
            {"copies": 3, "pending": 0, "bytes": 3 * 2**20, "last_scan_at": 5.0},
        ]
    )
    with anyio.fail_after(5):
        await show_first_sync(status, stream=out, interval=0, clock=_ticks())
    text = out.getvalue()
    frames = _frames(text)
    assert frames[0].startswith("scanning") and "0/?" in frames[0]
    assert frames[1].startswith("syncing") and "1/3  1.0 MiB" in frames[1]
    assert frames[-1] == "in sync   [############################]  3/3  3.0 MiB  0:00:03"
    assert text.endswith("\n") and text.count("\n") == 1
    assert "\x1b[1m" in text  # the label is bold on a terminal


async def test_burst_mode_ends_when_the_pass_is_over() -> None:
    """In burst mode the bar ends when `finished` says so, with the count reached, even though the scan is not
    marked done."""
    out = FakeTty()
    over = anyio.Event()
    readings = [{"copies": 4, "pending": 1}, {"copies": 5, "pending": 0}]

    def status() -> dict[str, Any]:
        if len(readings) == 1:
            over.set()  # the pass ends after the last copy; the bar sees it at its next reading
        return readings.pop(0) if len(readings) > 1 else readings[0]

    with anyio.fail_after(5):
        await show_first_sync(status, over.is_set, stream=out, interval=0, clock=_ticks())
    frames = _frames(out.getvalue())
    assert frames[-1].startswith("in sync") and "1/1" in frames[-1]
    assert out.getvalue().endswith("\n")


async def test_a_shorter_line_blanks_what_the_longer_one_left() -> None:
    """When a redraw is shorter than the line before, spaces cover the rest, so no stale characters remain."""
    out = FakeTty()
    big = {"copies": 0, "pending": 99999, "bytes": 2**40, "last_scan_at": 1.0}
    small = {"copies": 0, "pending": 0, "bytes": 0, "last_scan_at": 1.0}
    with anyio.fail_after(5):
        await show_first_sync(_scripted([big, small]), stream=out, interval=0, clock=_ticks())
    first, second = ANSI.sub("", out.getvalue()).rstrip("\n").split("\r")[1:]
    assert len(second) >= len(first.rstrip())


async def test_cancelled_bar_ends_its_line() -> None:
    """Cancelled before the sync is done (the daemon stopping), the bar ends its line so what follows starts fresh."""
    out = FakeTty()
    status = _scripted([{"copies": 1, "pending": 5, "last_scan_at": 1.0}])
    with anyio.move_on_after(0.3):
        await show_first_sync(status, stream=out, interval=0.05, clock=_ticks())
    text = out.getvalue()
    assert "0/5" in text
    assert text.endswith("\n") and text.count("\n") == 1


async def test_a_terminal_without_a_size_gets_a_full_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a real pseudo-terminal that reports 0 columns and no $COLUMNS, the bar falls back to a usable width."""
    monkeypatch.delenv("COLUMNS")
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as stream:
            assert os.get_terminal_size(slave).columns == 0
            done = {"copies": 2, "pending": 0, "bytes": 0, "last_scan_at": 1.0}
            with anyio.fail_after(5):
                await show_first_sync(_scripted([{"copies": 0}, done]), stream=stream, interval=0, clock=_ticks())
        drawn = _read_all(master)
    finally:
        os.close(master)
        os.close(slave)
    assert "]  2/2  0.0 MiB  0:00:02" in ANSI.sub("", drawn)


def _read_all(fd: int) -> str:
    """Everything written to the pseudo-terminal so far: it may hand the bar's draws over in several reads."""
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()
