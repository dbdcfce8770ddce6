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
