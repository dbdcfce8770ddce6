"""Helpers for the sync tests (import as `from sync.sync_kit import ...`; pytest's pythonpath has tests/)."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio

from agent.sync.engine import SyncEngine
from agent.sync.mountfs import TEMP_RE

EngineFactory = Callable[..., SyncEngine]


def tree(root: Path, *, skip: Callable[[str], bool] = lambda rel: False) -> dict[str, bytes]:
    """Every regular file under `root` (symlinks read through) -> its bytes."""
    out: dict[str, bytes] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if skip(rel) or not path.is_file():
                continue
            try:
                out[rel] = path.read_bytes()
            except FileNotFoundError:
                continue  # a temp file renamed (or a file deleted) since the listing: the engine is at work
    return out


def temps(root: Path) -> list[str]:
    return [name for _, _, files in os.walk(root) for name in files if TEMP_RE.match(name)]


def empty_folders(root: Path) -> list[str]:
    return [folder for folder, dirs, files in os.walk(root) if not dirs and not files and Path(folder) != root]


async def wait_for(predicate: Callable[[], bool], within: float = 20.0, step: float = 0.05) -> None:
    """Poll `predicate` until true; fail the test after `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await anyio.sleep(step)


@contextlib.asynccontextmanager
async def running(engine: SyncEngine) -> AsyncIterator[SyncEngine]:
    """`engine.run()` in a task group for the duration of the block."""
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        try:
            yield engine
        finally:
            tg.cancel_scope.cancel()


def refuse_listing(monkeypatch: Any, suffix: str, when: Callable[[], bool] = lambda: True) -> None:
    """Make listing the folders whose path ends with `suffix` fail with EACCES, as the kernel does for a mode-000
    folder without root (tests run as root): opening it as a folder (how the scan lists) and `os.scandir` by
    path (how `Walker.missing` looks again)."""
    real_open, real_scandir = os.open, os.scandir

    def refused(path: Any) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).endswith(suffix) and when()

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_DIRECTORY and refused(path):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    def scandir(path: Any = ".") -> Any:
        if refused(path):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "scandir", scandir)


def refuse_search(monkeypatch: Any, suffix: str, when: Callable[[], bool] = lambda: True) -> None:
    """Make the folders whose path ends with `suffix` listable but not searchable, as the kernel does for a mode
    r-- folder without root (tests run as root): their names are listed, but a stat of anything in them fails
    with EACCES (through the listing's entries, `os.lstat` and `os.stat` by path)."""
    real_open, real_scandir, real_lstat, real_stat = os.open, os.scandir, os.lstat, os.stat
    searched: set[int] = set()

    def refused(path: Any) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).endswith(suffix) and when()

    def inside(path: Any) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and refused(os.path.dirname(os.fsdecode(path)))

    def denied(path: Any) -> PermissionError:
        return PermissionError(errno.EACCES, "Permission denied", path)

    class Entry:
        def __init__(self, entry: Any) -> None:
            self._entry, self.name, self.path = entry, entry.name, entry.path

        def is_dir(self, *, follow_symlinks: bool = True) -> bool:
            return bool(self._entry.is_dir(follow_symlinks=follow_symlinks))

        def is_symlink(self) -> bool:
            return bool(self._entry.is_symlink())

        def is_file(self, *, follow_symlinks: bool = True) -> bool:
            return bool(self._entry.is_file(follow_symlinks=follow_symlinks))

        def stat(self, *, follow_symlinks: bool = True) -> Any:
            raise denied(self.name)

    class Listing:
        def __init__(self, listing: Any) -> None:
            self._listing = listing

        def __enter__(self) -> Listing:
            return self

        def __exit__(self, *exc: object) -> None:
            self._listing.close()

        def __iter__(self) -> Any:
            return (Entry(entry) for entry in self._listing)

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_DIRECTORY and refused(path):
            searched.add(fd)
        else:
            searched.discard(fd)
        return fd

    def scandir(path: Any = ".") -> Any:
        listing = real_scandir(path)
        return Listing(listing) if (isinstance(path, int) and path in searched) or refused(path) else listing

    def lstat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if inside(path):
            raise denied(path)
        return real_lstat(path, *args, **kwargs)

    def stat_(path: Any, *args: Any, **kwargs: Any) -> Any:
        if inside(path):
            raise denied(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "stat", stat_)
