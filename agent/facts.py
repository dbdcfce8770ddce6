"""Facts: what the sync engine, the clock and people tell the rules engine. Plain frozen values.

Times are wall-clock seconds since the epoch (`time.time()`), passed in, never read by the rules engine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FileChanged:
    """A change to `path` (relative, '/'-separated) was seen; the file is pending until synced."""

    path: str
    at: float


@dataclass(frozen=True, slots=True)
class FileSynced:
    """`path` is now in the mount with `size` bytes. `first_line` is set for marker files. `moved_from` is set when
    the file was renamed inside the mount from that path (no bytes were copied; a `FileDeleted` with `moved_to`
    goes with it). `adopted` when the mount already held these exact bytes, nothing was written, and the agent had
    no record of the file (a new state folder over a filled mount): no new data for the rules. `restored` when
    it was copied again, unchanged, because the mount lost it (wiped, swapped, files removed by hand): written,
    but no new data for the rules either (no marker fires again, no count grows)."""

    path: str
    size: int
    at: float
    first_line: str | None = None
    moved_from: str | None = None
    adopted: bool = False
    restored: bool = False


@dataclass(frozen=True, slots=True)
class FileDeleted:
    """`path` was removed from the mount because it left the source. `moved_to` is set when it was not removed but
    renamed inside the mount to that path (the source file was renamed)."""

    path: str
    at: float
    moved_to: str | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: lets quiet and schedule triggers fire."""

    at: float


@dataclass(frozen=True, slots=True)
class ManualRequest:
    """Someone asked for a snapshot (POST /snapshot or `domino-sync snapshot`), with extra tags."""

    at: float
    tags: tuple[str, ...] = ()


Fact = FileChanged | FileSynced | FileDeleted | Tick | ManualRequest
