"""Timing and statistics: run a command and time it, medians, percentiles, ratios, round orders. Pure where
it can be: the statistics take numbers, the round order takes the round number."""

from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class MeasureError(Exception):
    """A measurement could not be taken (a command failed, a copy was wrong); the row shows the message."""


@dataclass(frozen=True, slots=True)
class Timed:
    seconds: float
    returncode: int
    max_rss: int  # bytes: the child's peak resident memory (getrusage of that one child)


def timed_command(
    command: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, timeout: float = 1800
) -> Timed:
    """Run `command` with stdout and stderr appended to `log`; wall seconds from start to exit, and its peak RSS."""
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(command)}\n".encode())
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, env=env)  # noqa: S603
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode == -signal.SIGKILL and elapsed >= timeout:
            raise MeasureError(f"{command[0]} did not finish within {timeout:.0f} s (log: {log})")
        return Timed(elapsed, proc.returncode, usage.ru_maxrss * 1024)


def require_ok(result: Timed, what: str, log: Path) -> float:
    if result.returncode != 0:
        raise MeasureError(f"{what} exited {result.returncode}: {tail(log)}")
    return result.seconds


def tail(log: Path, lines: int = 3, width: int = 300) -> str:
    """The last lines of a log, on one line, for an error cell."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"(no log at {log})"
    return " | ".join(line.strip() for line in text[-lines:])[-width:]


def rotate(items: Sequence[T], round_no: int) -> list[T]:
    """The order of round `round_no` (0-based): each item goes first once every len(items) rounds."""
    if not items:
        return []
    shift = round_no % len(items)
    return [*items[shift:], *items[:shift]]


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of nothing")
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest value with at least pct% of the values at or below it."""
    if not values:
        raise ValueError("percentile of nothing")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: how far apart the rounds were."""
    mid = median(values)
    return (max(values) - min(values)) / mid if mid else 0.0


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs
