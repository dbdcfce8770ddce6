"""Streaming bytes between files: kernel copies first, fallbacks, exact sizes, halting, helpers."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from agent.sync.transfer import Halted, first_line, same_bytes, stream


def copy_with_stream(src: Path, dst: Path, size: int | None = None, halt: threading.Event | None = None) -> int:
    fi = os.open(src, os.O_RDONLY)
    fo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        return stream(fi, fo, halt, size)
    finally:
        os.close(fi)
        os.close(fo)


def test_kernel_copy_fallbacks(src: Path, mnt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When copy_file_range is refused the bytes go by sendfile, and when that is refused by a bounded buffer."""
    data = os.urandom(2_500_000)
    (src / "big").write_bytes(data)

    def refuse(*args: object) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    assert copy_with_stream(src / "big", mnt / "one") == len(data)
    assert (mnt / "one").read_bytes() == data
    monkeypatch.setattr(os, "sendfile", refuse)
    assert copy_with_stream(src / "big", mnt / "two") == len(data)
    assert (mnt / "two").read_bytes() == data


def test_stream_copies_exactly_size_bytes_or_to_eof(src: Path, mnt: Path) -> None:
    """With a size the copy stops there (a grown file is caught by the caller's second stat); without, at EOF."""
    (src / "f").write_bytes(b"0123456789")
    assert copy_with_stream(src / "f", mnt / "part", size=4) == 4
    assert (mnt / "part").read_bytes() == b"0123"
    assert copy_with_stream(src / "f", mnt / "all") == 10
    assert copy_with_stream(src / "f", mnt / "short", size=50) == 10


def test_halt_stops_the_stream(src: Path, mnt: Path) -> None:
    """A set halt event stops the copy before any byte moves."""
    (src / "f").write_bytes(b"x" * 100)
    halt = threading.Event()
    halt.set()
    with pytest.raises(Halted):
        copy_with_stream(src / "f", mnt / "f", halt=halt)


def test_same_bytes_and_first_line(src: Path) -> None:
    """`same_bytes` compares contents exactly; `first_line` reads the first line without its line ending."""
    (src / "a").write_bytes(b"run-7\r\nrest")
    (src / "b").write_bytes(b"run-7\r\nrest")
    (src / "c").write_bytes(b"run-7\r\nresT")
    fd = os.open(src / "a", os.O_RDONLY)
    try:
        assert same_bytes(fd, str(src / "b"))
        assert not same_bytes(fd, str(src / "c"))
        assert first_line(fd) == "run-7"
    finally:
        os.close(fd)


def _sparse_file(path: Path, size: int, regions: list[tuple[int, bytes]]) -> None:
    with path.open("wb") as handle:
        handle.truncate(size)
        for offset, data in regions:
            handle.seek(offset)
            handle.write(data)


@pytest.mark.parametrize("refuse_kernel_copy", [False, True])
def test_a_sparse_file_keeps_its_holes(
    src: Path, mnt: Path, monkeypatch: pytest.MonkeyPatch, refuse_kernel_copy: bool
) -> None:
    """A sparse file is copied region by region: same bytes, same size, and about as few blocks as the source
    (holes in the middle and at the end stay holes), also when the kernel copy is refused."""
    size = 64 << 20
    regions = [(0, b"head"), (10 << 20, os.urandom(1 << 20)), (40 << 20, b"middle")]
    _sparse_file(src / "sparse", size, regions)
    if refuse_kernel_copy:

        def refuse(*args: object) -> int:
            raise OSError(errno.EXDEV, "cross-device")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    assert copy_with_stream(src / "sparse", mnt / "sparse", size=size) == size
    assert (mnt / "sparse").stat().st_size == size
    assert same_bytes(os.open(src / "sparse", os.O_RDONLY), str(mnt / "sparse"))
    allocated = (mnt / "sparse").stat().st_blocks * 512
    assert allocated < 4 * (src / "sparse").stat().st_blocks * 512 + (1 << 20), allocated


def test_a_sparse_file_that_shrinks_during_the_copy_comes_back_short(src: Path, mnt: Path) -> None:
    """A sparse file cut shorter than the size asked for is reported short (the caller settles it again)."""
    size = 8 << 20
    _sparse_file(src / "cut", size, [(0, b"a"), (6 << 20, b"b" * 4096)])
    os.truncate(src / "cut", 6 << 20)  # the data region at 6 MiB is gone; the size asked for is still 8 MiB
    assert copy_with_stream(src / "cut", mnt / "cut", size=size) < size
