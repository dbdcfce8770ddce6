"""`once`'s full scan, started before the rest of the agent is: the walk runs in a forked child while this
process imports the daemon, checks the bootstrap and assembles the engine and the queue (a third of a second
of Python before the first file could be looked at, the same again as the walk of a 100,000-file tree).

`EarlyScan.start` runs right after the config is read, while the process is still single-threaded. It reads
the known rows from the state DB (nothing is written but the DB's own row image, see statedb.py) and forks a
child that walks the source as the engine's walker would, and sends the result back through a pipe.

The engine takes it (`take`) only when it is the scan it would have made: same root, ignore patterns and
pruned folders, the rows the engine holds when it would start its own walk (after recovering intents and
checking the mount) equal to those the child compared against, and started at most `MAX_AGE` before (not
when the agent first waited for a snapshot still being taken, or for a slow API). Otherwise, or when the
child failed, the engine walks itself: the early scan can cost a wasted walk, never a wrong one. A file that
changes after the child looked at it is what any scan meets: the copy checks each file against what the scan
saw.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from agent.sync.scan import ScanResult, Walker, source_walker
from agent.sync.scanfork import collect, kill, spawn
from agent.sync.statedb import Row, StateDB

if TYPE_CHECKING:
    from agent.config import SourceConfig

MAX_AGE = 2.0
"""Seconds: an early walk started longer ago than this before the engine would walk is not used (files dropped
meanwhile would wait for the next run); the engine walks again."""

_Key = tuple[str, tuple[str, ...], frozenset[str]]


def _key(walker: Walker) -> _Key:
    return (walker.root, walker.matcher.patterns, walker.prune)


class EarlyScan:
    """A full scan running in a child process; `take` its result once, `close` when it is not wanted."""

    def __init__(self, walker: Walker, rows: dict[str, Row], pid: int, fd: int, started: float) -> None:
        self._key = _key(walker)
        self._rows = rows
        self._child: tuple[int, int] | None = (pid, fd)
        self.started = started

    @classmethod
    def start(cls, source: SourceConfig, mount: Path | None, state_dir: Path) -> EarlyScan | None:
        """Fork the scan of `source`; None when it cannot be started here (no mount known yet: the mount comes
        from the dataset; no source folder; no fork)."""
        if mount is None or not source.path.is_dir():
            return None
        walker = source_walker(source, mount, state_dir)
        rows: dict[str, Row] = {}
        db_path = state_dir / "state.db"
        if db_path.is_file():
            try:
                db = StateDB(db_path)
            except Exception:  # the engine will report a DB it cannot open; no early scan then
                return None
            try:
                rows = db.load()
            except Exception:
                return None
            finally:
                db.close()
        started = time.time()
        child = spawn(lambda: walker.scan(rows))
        if child is None:
            return None
        return cls(walker, rows, *child, started)

    def take(self, walker: Walker, rows: Mapping[str, Row], now: float) -> ScanResult | None:
        """The child's result when it is the scan `walker` would make of `rows` now, else None (walk again).
        Blocks until the child is done; once only."""
        child, self._child = self._child, None
        if child is None:
            return None
        if now - self.started > MAX_AGE:  # the agent waited (a snapshot still being taken, a slow bootstrap)
            self._stop(child)
            return None
        (answer,) = collect([child])
        if not isinstance(answer, ScanResult) or _key(walker) != self._key or rows != self._rows:
            return None
        return answer

    def close(self) -> None:
        """Stop the child if its result was never taken (an agent that failed to start)."""
        child, self._child = self._child, None
        if child is not None:
            self._stop(child)

    @staticmethod
    def _stop(child: tuple[int, int]) -> None:
        pid, fd = child
        kill(pid)
        os.close(fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
