"""Moving bytes from one open file to another: the kernel does it when it can (`copy_file_range`, else
`sendfile`), else a loop with one 1 MiB buffer. Never the whole file in memory. Blocking."""

from __future__ import annotations

import errno as E
import os
import threading

from agent.failpoints import failpoint

CHUNK = 8 << 20
BUFFER = 1 << 20
_KERNEL_COPY_FALLBACK = frozenset({E.EXDEV, E.EINVAL, E.ENOSYS, E.EOPNOTSUPP, E.ENOTSUP, E.EBADF, E.EPERM})


class Halted(Exception):
    """The engine is stopping: the copy in progress is abandoned (its temp file removed)."""


def stream(fi: int, fo: int, halt: threading.Event | None = None, size: int | None = None) -> int:
    """Copy fi's bytes from offset 0 into fo, `size` of them (None: to EOF); the kernel moves them when it can.

    Returns the count. When the file is shorter than `size` the copy stops at its end; the caller compares
    the count (and a second stat) with what it expected.
    """
    total = 0
    want = CHUNK if size is None else size
    try:
        while size is None or total < size:
            if halt is not None and halt.is_set():
                raise Halted
            n = os.copy_file_range(fi, fo, min(CHUNK, want - total) if size is not None else CHUNK)
            if n == 0:
                return total
            total += n
            failpoint("copy.mid")  # crash tests: bytes in the temp file, no fsync, no rename
        return total
    except OSError as exc:
        if total or exc.errno not in _KERNEL_COPY_FALLBACK:
            raise
    offset = 0
    try:
        while size is None or offset < size:
            if halt is not None and halt.is_set():
                raise Halted
            n = os.sendfile(fo, fi, offset, CHUNK if size is None else min(CHUNK, size - offset))
            if n == 0:
                return offset
            offset += n
        return offset
    except OSError as exc:
        if offset or exc.errno not in _KERNEL_COPY_FALLBACK:
            raise
    os.lseek(fi, 0, os.SEEK_SET)
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    total = 0
    while size is None or total < size:
        if halt is not None and halt.is_set():
            raise Halted
        n = os.readv(fi, [buf])
        if n == 0:
            return total
        written = 0
        while written < n:
            written += os.write(fo, view[written:n])
        total += n
    return total


def same_bytes(fi: int, other: str) -> bool:
    """fi's content equals the file at `other` (read in 1 MiB steps)."""
    fd = os.open(other, os.O_RDONLY | os.O_CLOEXEC)
    try:
        offset = 0
        while True:
            a = os.pread(fi, BUFFER, offset)
            b = os.pread(fd, BUFFER, offset)
            if a != b:
                return False
            if not a:
                return True
            offset += len(a)
    finally:
        os.close(fd)


def first_line(fd: int) -> str:
    head = os.pread(fd, 4096, 0)
    return head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
