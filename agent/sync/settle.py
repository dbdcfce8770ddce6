"""Settle: which observed files are complete. Pure logic: observations and the time come in, nothing is read.

A file is complete once its size and mtime held still for `settle` seconds. The evidence that they held still
since some moment is the earlier of two things:

* the first time we saw this exact signature (size, mtime_ns, ctime_ns, inode), and
* its ctime: the kernel sets ctime to "now" on every write, truncate, chmod and rename, and no program can set
  it back, so a file whose ctime is T has not been written since T.

So a file found by the start-up scan whose last write was an hour ago is complete at once, and a file being
written keeps moving its ctime forward and never looks complete while the writes go on. A change is only
declared complete from a *fresh* observation (the engine stats the file again when its due time comes).

An absent path (`sig is None`, a file that left the source) settles the same way from the first time it was
seen absent (there is no ctime to go by), unless the caller passes an earlier `since` (a burst-mode scan is a
snapshot: what it does not find is gone now).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class FileStat:
    """What the engine knows of a source file from one stat (a symlink inside the root: of its target)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    mode: int
    atime_ns: int = 0

    def __reduce__(self) -> tuple[type[FileStat], tuple[int, ...]]:
        """Pickled as its fields (forked walks and copies send many): half the time of the dataclass's way."""
        return FileStat, (self.size, self.mtime_ns, self.ctime_ns, self.ino, self.mode, self.atime_ns)

    @property
    def key(self) -> tuple[int, int, int]:
        """(inode, size, mtime_ns): how a moved file is recognised under its new name."""
        return (self.ino, self.size, self.mtime_ns)


@dataclass(frozen=True, slots=True)
class Watch:
    """A path whose change is not synced yet: its last signature, since when it held, and the episode start."""

    sig: FileStat | None
    since: float
    first_seen: float


def same_content_sig(a: FileStat | None, b: FileStat | None) -> bool:
    """Two observations describe the same file state (ctime included: it moves on every write)."""
    if a is None or b is None:
        return a is b
    return a.size == b.size and a.mtime_ns == b.mtime_ns and a.ctime_ns == b.ctime_ns and a.ino == b.ino


def held_since(sig: FileStat | None, seen_at: float) -> float:
    """The earliest moment the evidence says `sig` has held: first sighting, or its ctime if earlier."""
    if sig is None:
        return seen_at
    return min(seen_at, sig.ctime_ns / NS)


class Settler:
    """Tracks unsynced paths and tells which are complete.

    Every method takes the time as an argument. `due(now)` hands out the paths whose settle time has come so the
    caller can stat them again and confirm with `settled()`.
    """

    def __init__(self, settle: float) -> None:
        self.settle = max(0.0, settle)
        self._watch: dict[str, Watch] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._watch)

    def __contains__(self, path: object) -> bool:
        return path in self._watch

    def __iter__(self) -> Iterator[str]:
        return iter(self._watch)

    def get(self, path: str) -> Watch | None:
        return self._watch.get(path)

    def items(self) -> Iterator[tuple[str, Watch]]:
        return iter(self._watch.items())

    def observe(self, path: str, sig: FileStat | None, now: float, *, since: float | None = None) -> bool:
        """Record that `path` was seen as `sig` at `now`; True when this starts a new episode for the path."""
        return self.note(path, sig, now, since=since)[0] is None

    def note(
        self, path: str, sig: FileStat | None, now: float, *, since: float | None = None, schedule: bool = True
    ) -> tuple[Watch | None, Watch]:
        """`observe`, returning (the previous watch, the one now in force). With `schedule` False a new watch is
        not handed out by `due()`: the caller acts on it now or schedules it (a first sync's 100,000 settled
        files would otherwise each be popped from the heap again, to be skipped)."""
        old = self._watch.get(path)
        if old is not None and same_content_sig(old.sig, sig):
            return old, old
        start = held_since(sig, now) if since is None else min(since, held_since(sig, now))
        watch = Watch(sig, start, now if old is None else old.first_seen)
        self._watch[path] = watch
        if schedule:
            self.schedule(path, start + self.settle)
        return old, watch

    def is_settled(self, path: str, now: float) -> bool:
        """The last observation of `path` has held for `settle` by `now` (no new stat involved)."""
        watch = self._watch.get(path)
        return watch is not None and now - watch.since >= self.settle

    def settled(self, path: str, fresh: FileStat | None, now: float) -> bool:
        """Observe a fresh stat of `path` taken at `now`; True when it is complete (held still for `settle`)."""
        self.observe(path, fresh, now)
        return self.is_settled(path, now)

    def due_at(self, path: str) -> float | None:
        watch = self._watch.get(path)
        return None if watch is None else watch.since + self.settle

    def schedule(self, path: str, at: float) -> None:
        """Ask `due()` to hand out `path` again at `at` (a retry, or a path that was busy when it came due)."""
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, path))

    def due(self, now: float) -> list[str]:
        """Tracked paths with a scheduled time at or before `now`, each once."""
        out: list[str] = []
        seen: set[str] = set()
        while self._heap and self._heap[0][0] <= now:
            _, _, path = heapq.heappop(self._heap)
            if path in self._watch and path not in seen:
                seen.add(path)
                out.append(path)
        return out

    def next_due(self) -> float | None:
        """When `due()` will next have something (stale entries of forgotten paths are dropped here)."""
        while self._heap and self._heap[0][2] not in self._watch:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def forget(self, path: str) -> None:
        self._watch.pop(path, None)
        if not self._watch:
            self._heap.clear()

    def pending(self) -> Mapping[str, float]:
        """Present paths with an unsynced change -> when the episode was first seen."""
        return {path: w.first_seen for path, w in self._watch.items() if w.sig is not None}
