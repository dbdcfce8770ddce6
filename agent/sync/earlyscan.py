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

From the console, `once` starts it sooner still (`prestart`, called by cli/console.py before the CLI is
imported): it reads the four settings a walk needs from the YAML file as written, with the config's defaults,
and forks then, 0.15 s earlier (click, structlog and pydantic's config models are imported meanwhile, on the
other core), and for a first sync (no rows yet) the copy processes too (copyfork.py). `start`, called once
the config is validated, hands that walk over when it is the walk of the validated config, else stops it and
forks its own: a misreading costs a walk, never a wrong result.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from agent import defaults
from agent.sync.forks import collect, kill, spawn
from agent.sync.scan import ScanResult, Walker, source_walker
from agent.sync.statedb import Image, Row, StateDB

if TYPE_CHECKING:
    from agent.sync.scan import WalkedSource

MAX_AGE = 2.0
"""Seconds: an early walk started longer ago than this before the engine would walk is not used (files dropped
meanwhile would wait for the next run); the engine walks again."""

_Key = tuple[str, tuple[str, ...], frozenset[str]]

_prestarted: EarlyScan | None = None
"""The walk `prestart` forked, until `start` takes it over or stops it."""


def _key(walker: Walker) -> _Key:
    return (walker.root, walker.matcher.patterns, walker.prune)


class EarlyScan:
    """A full scan running in a child process; `take` its result once, `close` when it is not wanted."""

    def __init__(self, walker: Walker, rows: dict[str, Row], pid: int, fd: int, started: float) -> None:
        self._key = _key(walker)
        self._rows = rows
        self._child: tuple[int, int] | None = (pid, fd)
        self.started = started
        self.image: Image | None = None  # the row image the walk compared against, for the engine's own load

    @classmethod
    def start(cls, source: WalkedSource, mount: Path | None, state_dir: Path) -> EarlyScan | None:
        """Fork the scan of `source`, or take over the one `prestart` forked when it walks the same; None when
        it cannot be started here (no mount known yet: the mount comes from the dataset; no source folder; no
        fork)."""
        global _prestarted
        early, _prestarted = _prestarted, None
        if mount is None or not source.path.is_dir():
            if early is not None:
                early.close()
            return None
        walker = source_walker(source, mount, state_dir)
        if early is not None:
            if early._key == _key(walker):
                return early
            early.close()
        image: Image | None = None
        db_path = state_dir / "state.db"
        if db_path.is_file():
            try:
                db = StateDB(db_path)
            except Exception:  # the engine will report a DB it cannot open; no early scan then
                return None
            try:
                image = db.load_image()
            except Exception:
                return None
            finally:
                db.close()
        rows = image[1] if image is not None else {}
        started = time.time()
        child = spawn(lambda: walker.scan(rows))
        if child is None:
            return None
        early = cls(walker, rows, *child, started)
        early.image = image
        return early

    def take(self, walker: Walker, rows: Mapping[str, Row], now: float) -> ScanResult | None:
        """The child's result when it is the scan `walker` would make of `rows` now, else None (walk again).
        Blocks until the child is done; once only."""
        child, self._child = self._child, None
        self.image = None  # the engine has loaded its rows by now
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


class _Source(NamedTuple):
    path: Path
    ignore: tuple[str, ...]


def prestart(config_path: str) -> None:
    """Fork the walk of the config file at `config_path` for `start` to take over, reading it as plain YAML:
    `source.path`, `source.ignore`, `dataset.mount` and `state_dir`, with the config's defaults. Nothing
    happens when the file cannot be read that simply (it is validated, and errors reported, later): no mount
    named, a value of an unexpected type."""
    global _prestarted
    try:
        import yaml

        path = Path(config_path)
        if not stat.S_ISREG(path.stat().st_mode):  # a pipe (`--config <(envsubst < tmpl)`) is read once, by the CLI
            return
        with path.open(encoding="utf-8") as file:
            data = yaml.load(file, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - safe
        settings = _walk_settings(data)
        if settings is not None:
            _prestarted = EarlyScan.start(*settings)
        if _prestarted is not None and not _prestarted._rows:
            # a first sync: its copies' processes, forked while the interpreter is small (copyfork.py); a tree
            # synced before mostly holds still (a no-op resync takes 0.5 s), its few batches fork as they come
            from agent.sync.copyfork import prestart as prestart_copies

            prestart_copies(_copy_workers(data))
    except Exception:  # whatever it is, the validated config says it properly (one line, no traceback)
        if _prestarted is not None:
            _prestarted.close()
            _prestarted = None


def _walk_settings(data: Any) -> tuple[_Source, Path, Path] | None:
    """(source, mount, state_dir) as the config models would read them (strings stripped, `~` expanded)."""
    if not isinstance(data, dict):
        return None
    source, dataset = data.get("source"), data.get("dataset")
    if not (isinstance(source, dict) and isinstance(dataset, dict)):
        return None
    path, mount = _text(source.get("path")), _text(dataset.get("mount"))
    state_dir = _text(data.get("state_dir", str(defaults.STATE_DIR)))
    ignore = source.get("ignore", defaults.IGNORE)
    if path is None or mount is None or state_dir is None or not isinstance(ignore, list | tuple):
        return None
    patterns = tuple(pattern for pattern in map(_text, ignore) if pattern is not None)
    if len(patterns) != len(ignore):
        return None
    return _Source(_user_path(path), patterns), _user_path(mount), _user_path(state_dir)


def _copy_workers(data: dict[str, Any]) -> int:
    """`source.copy_workers` as written when it is valid, else the default (a wrong guess costs idle processes
    or batches copied in children forked for them, never a wrong copy)."""
    workers = data["source"].get("copy_workers", defaults.COPY_WORKERS)
    if isinstance(workers, str) and workers.strip().isdigit():
        workers = int(workers)  # as the config model reads it: "8" and 8.0 are 8
    elif isinstance(workers, float) and workers.is_integer():
        workers = int(workers)
    valid = isinstance(workers, int) and not isinstance(workers, bool) and 1 <= workers <= 64
    return workers if valid else defaults.COPY_WORKERS


def _text(value: Any) -> str | None:
    """A string as the config reads it (stripped); None for anything else, or nothing left."""
    return (value.strip() or None) if isinstance(value, str) else None


def _user_path(text: str) -> Path:
    return Path(text).expanduser()
