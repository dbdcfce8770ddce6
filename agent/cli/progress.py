"""A progress bar for people: the first scan and sync, shown on a TTY only (stderr), never in logs or pipes.

The line is worked out by pure functions (`progress_view`, `progress_line`) from the engine's status dict and
the seconds elapsed; `show_first_sync` only polls, redraws the line in place with a carriage return, and ends
it with a newline.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import anyio
import click

BAR_WIDTH = 30  # the widest the bar gets; it shrinks on a narrow terminal
MIN_BAR_WIDTH = 10  # below this the bar is left out and only the numbers are drawn


@dataclass(frozen=True, slots=True)
class ProgressView:
    """What the bar shows: a label, files done of total (None while the first scan runs), bytes, seconds."""

    label: str
    done: int
    total: int | None
    bytes: int
    elapsed: float
    final: bool = False


def progress_view(info: dict[str, Any], start_copies: int, finished: bool, elapsed: float) -> ProgressView:
    """The view for one status reading; `final` once the pass is over or the first scan left nothing pending.

    `start_copies` is the engine's copy count at the first reading, so files copied before the bar started
    are not counted; `finished` says the pass is over (burst mode), whatever the status says.
    """
    done = max(0, int(info.get("copies", 0)) - start_copies)
    pending = int(info.get("pending", 0)) + int(info.get("in_flight", 0))
    scanned = finished or info.get("last_scan_at") is not None
    size = int(info.get("bytes", 0))
    if finished or (scanned and pending == 0):
        label = "in sync" if pending == 0 else "finished"
        return ProgressView(label, done, done + pending, size, elapsed, final=True)
    if not scanned:
        return ProgressView("scanning", done, None, size, elapsed)
    return ProgressView("syncing", done, done + pending, size, elapsed)


def _elapsed(seconds: float) -> str:
    whole = int(max(0.0, seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _bar(view: ProgressView, width: int) -> str:
    inner = width - 2
    if view.total is None:  # unknown total: a short block sweeps back and forth
        block = min(3, inner)
        span = max(1, inner - block)
        step = int(view.elapsed * 8) % (2 * span)
        at = step if step <= span else 2 * span - step
        return "[" + "-" * at + "#" * block + "-" * (inner - block - at) + "]"
    filled = inner if view.total == 0 else min(inner, inner * view.done // view.total)
    return "[" + "#" * filled + "-" * (inner - filled) + "]"


def progress_line(view: ProgressView, columns: int = 80) -> str:
    """The plain text of the bar, never wider than `columns - 1` (so a carriage return redraws it in place).

    >>> progress_line(ProgressView("syncing", 12, 40, 3 * 2**20, 65.0), 80)
    'syncing   [########--------------------]  12/40  3.0 MiB  0:01:05'
    """
    count = f"{view.done}/{'?' if view.total is None else view.total}"
    numbers = f"{count}  {view.bytes / 2**20:,.1f} MiB  {_elapsed(view.elapsed)}"
    head = f"{view.label:<9} "
    room = columns - 1 - len(head) - len(numbers) - 2
    bar = f"{_bar(view, min(BAR_WIDTH, room))}  " if room >= MIN_BAR_WIDTH else ""
    line = f"{head}{bar}{numbers}"
    return line[: max(0, columns - 1)]


def _styled(line: str, view: ProgressView) -> str:
    """The label in bold (green once in sync); click.echo drops the codes where colour is not wanted."""
    label = view.label
    if not line.startswith(label):
        return line
    colour = "green" if view.label == "in sync" else ("yellow" if view.label == "finished" else None)
    return click.style(label, bold=True, fg=colour) + line[len(label) :]


def _columns(stream: TextIO) -> int:
    """The terminal's width: $COLUMNS, else the size of `stream`'s terminal, else that of stdout, else 80."""
    if os.environ.get("COLUMNS", "").isdigit() and int(os.environ["COLUMNS"]) > 0:
        return int(os.environ["COLUMNS"])
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):  # not a real terminal (a test's stream)
        columns = 0
    return columns or shutil.get_terminal_size().columns  # 0: a terminal that never set its size


def wants_progress(stream: TextIO | None = None) -> bool:
    """True when `stream` (stderr by default) is an interactive terminal."""
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except ValueError:  # a closed stream
        return False


async def show_first_sync(
    status: Callable[[], dict[str, Any] | None],
    finished: Callable[[], bool] = lambda: False,
    stream: TextIO | None = None,
    *,
    interval: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Draw the bar from the engine's status until the first scan is done and nothing is pending.

    `status` returns the sync engine's status dict (or None while the agent is still starting); `finished`
    says the pass is over (burst mode), whatever the status says. Draws nothing and returns at once when
    `stream` (stderr by default) is not a terminal. Cancelled mid-way, it ends the line it drew.
    """
    stream = stream or sys.stderr
    if not wants_progress(stream):
        return
    started = clock()
    start_copies: int | None = None
    drawn = 0  # visible width of the last line drawn, to blank what a shorter line leaves behind
    try:
        while True:
            over = finished()  # read before the status, so a pass seen over is never drawn from a stale status
            info = status()
            if info is not None:
                start_copies = int(info.get("copies", 0)) if start_copies is None else start_copies
                view = progress_view(info, start_copies, over, clock() - started)
                line = progress_line(view, _columns(stream))
                click.echo("\r" + _styled(line, view) + " " * max(0, drawn - len(line)), file=stream, nl=False)
                drawn = len(line)
                if view.final:
                    click.echo(file=stream)
                    drawn = 0
                    return
            await anyio.sleep(interval)
    finally:
        if drawn:  # stopped before the end (SIGTERM): what follows starts on a line of its own
            click.echo(file=stream)
