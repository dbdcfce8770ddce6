"""One agent per state folder: `state_dir/agent.lock`, held with flock for the agent's life (and one emulator per
data folder: `data_dir/emulator.lock`).

Two agents on one state folder would copy the same files and snapshot the same drops twice, each trusting
rows the other is rewriting. The second one stops at start with a config error naming `state_dir` and the
holder's pid. The kernel releases the lock when its holder exits in any way, kill -9 included, so a crash
never leaves a stale lock to clean up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from agent.errors import ConfigError

LOCK_NAME = "agent.lock"


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state folder's lock until the block ends; ConfigError when another process holds it."""
    with folder_lock(state_dir, LOCK_NAME, "state_dir", "a state folder no other running agent uses"):
        yield


@contextlib.contextmanager
def folder_lock(folder: Path, name: str, key: str, expected: str, *, shared: bool = False) -> Iterator[None]:
    """Hold `folder/name` locked until the block ends; ConfigError on `key` when another process holds it (the
    emulator's data folder takes one too: two emulators serving one database would hand out the same ids). A
    `shared` lock admits other shared holders and no exclusive one."""
    path = folder / name
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError(key, str(folder), f"a folder this process can write ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise ConfigError(key, str(folder), f"{expected} (pid {holder} holds it)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
