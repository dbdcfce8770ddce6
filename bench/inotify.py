"""Wait for a file to arrive in a folder: inotify through ctypes (Linux), else a tight stat loop.

The latency case writes a file into the source and waits here for the agent to land it, complete, in the mount.
inotify wakes the harness within microseconds of the agent's rename without burning a core on polling.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import time
from pathlib import Path
from types import TracebackType

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
EVENT = struct.Struct("iIII")


class FolderWatch:
    """`with FolderWatch(folder) as watch: t = watch.wait_for(name, content, timeout)`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd = -1
        self._arrived: dict[str, float] = {}  # name -> monotonic time of its last event

    def __enter__(self) -> FolderWatch:
        name = ctypes.util.find_library("c")
        if name is None:
            return self
        libc = ctypes.CDLL(name, use_errno=True)
        if not hasattr(libc, "inotify_init1"):
            return self
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return self
        mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        if libc.inotify_add_watch(fd, os.fsencode(self.folder), mask) < 0:
            os.close(fd)
            return self
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @property
    def uses_inotify(self) -> bool:
        return self._fd >= 0

    def _drain(self, timeout: float) -> None:
        ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        if not ready:
            return
        now = time.monotonic()
        try:
            data = os.read(self._fd, 1 << 16)
        except BlockingIOError:
            return
        offset = 0
        while offset + EVENT.size <= len(data):
            _, _, _, length = EVENT.unpack_from(data, offset)
            raw = data[offset + EVENT.size : offset + EVENT.size + length]
            self._arrived[os.fsdecode(raw.rstrip(b"\0"))] = now
            offset += EVENT.size + length

    def _complete(self, name: str, content: bytes) -> bool:
        try:
            return (self.folder / name).read_bytes() == content
        except OSError:
            return False

    def wait_for(self, name: str, content: bytes, timeout: float) -> float | None:
        """Monotonic time at which `name` was seen in the folder with exactly `content`; None on timeout."""
        deadline = time.monotonic() + timeout
        if not self.uses_inotify:
            while time.monotonic() < deadline:
                polled = time.monotonic()
                if self._complete(name, content):
                    return polled
                time.sleep(0.001)
            return None
        if self._complete(name, content):  # arrived before the watch saw it (should not happen)
            return time.monotonic()
        while (left := deadline - time.monotonic()) > 0:
            self._drain(left)
            arrived = self._arrived.pop(name, None)
            if arrived is not None and self._complete(name, content):
                return arrived
        return None
