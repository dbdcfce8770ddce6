"""When the mount's writes are made durable (`dataset.durability`), and how a crash of the host is caught.

`batch`: every batch of copies is flushed to disk before its files count as copied (copier.py: `syncfs` before
and after the renames, or an fsync per file and folder).

`snapshot` (the default): copies are written as rsync and cp write them, into the page cache, and the kernel
writes them back. The mount is flushed (one `syncfs`) before each snapshot is taken (`SyncEngine.fence`),
once the copies have been quiet for `IDLE_FLUSH` seconds (and every `FLUSH_EVERY` while they go on), and when
the daemon stops. A reader of the mount
still sees the old file or the new one, never a part: that is the rename's doing, not the flush's.

What the flush guards against is a crash of the host (a power cut, a kernel panic) before the kernel wrote the
copies back: a file the state DB records as copied can then be empty or short in the mount. A kill -9 of the
agent loses nothing (the page cache is the kernel's). So before the first copy after a flush, `FlushMark`
writes `<state_dir>/unflushed` with this boot's id (`/proc/sys/kernel/random/boot_id`), durably, and a flush
that nothing overlapped removes it. At start, a mark left by another boot means the host went down with copies
not flushed: the engine then checks every recorded file's size and mtime in the mount (`mount.stale_rows`, all
rows), removes the agent's torn copies from the mount and copies them again, and writes the mark anew with this
boot's id. A mark left by this boot
(a `once`, which leaves the write-back to the kernel, or a killed agent) needs no check: the page cache still
holds the copies. Until the check is done (the mount may be away at start), no snapshot is taken.

A flush that fails (an I/O error writing back) means copies made since the last good flush may never reach the
disk, although the page cache shows them whole: the engine removes them from the mount, drops their rows and
copies them again, and a snapshot waits for that (pipeline.py `Pipeline._flush`). The kernel reports such an
error once to each descriptor opened before it, and the flush opens the mount when it flushes: a `syncfs` by
someone else in between (a delete pass over many folders, another program) can take the report. A descriptor
held open from the first copy would keep it, but would also keep the mount busy (umount fails with EBUSY).

Thread-safe: batches begin and end in worker threads while a flush runs in another.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from agent.errors import StateError
from agent.sync.mountfs import syncfs

MARK_NAME = "unflushed"
IDLE_FLUSH = 2.0
"""Seconds without a copy after which the daemon flushes the mount and removes the mark."""
FLUSH_EVERY = 60.0
"""Seconds: while copies go on without a pause, the daemon flushes at least this often."""
FLUSH_RETRY = 1.0
"""Seconds a snapshot waits, the fence lifted, before it tries the flush again (see SyncEngine.fence)."""
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_id(path: str = BOOT_ID) -> str:
    """This boot's id; "" where the kernel does not give one (then any mark left is taken for a crash)."""
    try:
        with open(path, encoding="ascii") as handle:  # noqa: PTH123 - a proc file, read once
            return handle.read().strip()
    except (OSError, ValueError):
        return ""


class FlushMark:
    """The `unflushed` mark of one mount's copies (see the module's docstring)."""

    def __init__(self, state_dir: Path, mount: str, *, boot: str | None = None) -> None:
        self.path = state_dir / MARK_NAME
        self.mount = mount
        self.boot = boot_id() if boot is None else boot
        self._lock = threading.Lock()
        self._generation = 0  # batches begun so far: a flush clears the mark only when none began meanwhile
        self._in_flight = 0
        try:
            left = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            left = None
        except (OSError, ValueError):
            left = ""  # unreadable: taken for a crash (a check costs a stat per file, a missed tear costs data)
        self._marked = left is not None
        self.crashed = left is not None and (not left or left != self.boot)
        """A mark from another boot: the host went down with copies not flushed; check the mount (`checked`)."""

    @property
    def marked(self) -> bool:
        return self._marked

    def checked(self) -> None:
        """The mount was checked after a crash (and the torn files' rows dropped, durably): the mark now speaks
        for this boot (a later `once` need not check again), and a flush may remove it."""
        with self._lock:
            self.crashed = False
            if self._marked:
                with contextlib.suppress(OSError):  # kept as it was: the next start checks once more
                    self._write()

    def begin(self) -> None:
        """Before a batch writes to the mount: the mark is on disk (raises StateError when it cannot be)."""
        with self._lock:
            self._generation += 1
            self._in_flight += 1
            if self._marked:
                return
            try:
                self._write()
            except OSError as exc:
                self._in_flight -= 1
                raise StateError(f"state dir {self.path.parent} is not writable ({exc.strerror})") from None
            self._marked = True

    def end(self) -> None:
        """After the batch (whatever its outcome)."""
        with self._lock:
            self._in_flight -= 1

    def flush(self) -> bool:
        """Flush the mount's filesystem; remove the mark when no batch ran meanwhile and none is under way. True
        when the mark is gone. Raises OSError when the flush fails (the mark stays)."""
        with self._lock:
            if not self._marked:
                return True
            generation, busy = self._generation, self._in_flight
        if not syncfs(self.mount):
            os.sync()  # no syncfs here: the whole system's
        with self._lock:
            if busy or self._in_flight or generation != self._generation or self.crashed:
                return False
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._marked = False
            return True

    def _write(self) -> None:
        temp = self.path.with_name(f".{MARK_NAME}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, (self.boot or "unknown").encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        temp.replace(self.path)
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
