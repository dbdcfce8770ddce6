"""Moving bytes from one open file to another: the kernel does it when it can (`copy_file_range`, else
`sendfile`), else a loop with one 1 MiB buffer. Never the whole file in memory. Blocking."""

from __future__ import annotations

import errno as E
import os
import threading

from agent.failpoints import failpoint

CHUNK = 8 << 20
BUFFER = 1 << 20
SPARSE_MIN = 1 << 20  # smaller files are copied whole, holes and all (one fstat less per small file)
_KERNEL_COPY_FALLBACK = frozenset({E.EXDEV, E.EINVAL, E.ENOSYS, E.EOPNOTSUPP, E.ENOTSUP, E.EBADF, E.EPERM})


class Halted(Exception):
    """The engine is stopping: the copy in progress is abandoned (its temp file removed)."""


def stream(fi: int, fo: int, halt: threading.Event | None = None, size: int | None = None) -> int:
    """Copy fi's bytes from offset 0 into fo, `size` of them (None: to EOF); the kernel moves them when it can.

    Returns the count. When the file is shorter than `size` the copy stops at its end; the caller compares
    the count (and a second stat) with what it expected. A sparse file (fewer blocks than its size) is copied
    region by region (SEEK_DATA / SEEK_HOLE), so its holes stay holes in the copy.
    """
    if size is not None and size >= SPARSE_MIN:
        st = os.fstat(fi)
        if st.st_blocks * 512 < size:
            copied = _sparse(fi, fo, size, halt)
            if copied is not None:
                return copied
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


def _sparse(fi: int, fo: int, size: int, halt: threading.Event | None) -> int | None:
    """Copy only the data regions of fi into fo at the same offsets, then set fo's length: the holes stay
    holes. Returns where the copy got to (`size` when complete, less when the file shrank meanwhile); None
    when the filesystem cannot tell data from holes (the caller copies it whole)."""
    offset = 0
    try:
        while offset < size:
            try:
                start = os.lseek(fi, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == E.ENXIO:  # no data after `offset`: the rest is a hole
                    break
                raise
            end = min(size, os.lseek(fi, start, os.SEEK_HOLE))
            position = start
            while position < end:
                if halt is not None and halt.is_set():
                    raise Halted
                n = _copy_range(fi, fo, position, min(CHUNK, end - position))
                if n == 0:
                    return position  # it shrank while we copied
                position += n
                failpoint("copy.mid")
            offset = end
    except OSError as exc:
        if offset == 0 and exc.errno in (E.EINVAL, E.EOPNOTSUPP, E.ENOTSUP, E.ENXIO):
            return None
        raise
    end_of_file = os.fstat(fi).st_size
    if end_of_file < size:
        return end_of_file  # cut shorter meanwhile: the rest is not a hole
    os.ftruncate(fo, size)
    return size


def _copy_range(fi: int, fo: int, offset: int, count: int) -> int:
    """`count` bytes at `offset` of fi to the same offset of fo: by the kernel when it can, else read and write."""
    try:
        return os.copy_file_range(fi, fo, count, offset, offset)
    except OSError as exc:
        if exc.errno not in _KERNEL_COPY_FALLBACK:
            raise
    data = os.pread(fi, min(count, BUFFER), offset)
    written = 0
    while written < len(data):
        written += os.pwrite(fo, data[written:], offset + written)
    return len(data)


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
