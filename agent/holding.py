"""What holds a snapshot request back before it may be sent: the rule behind `Agent.covered` (the queue asks it
every 0.2 s) and `Agent.waiting_for` (status and `once`'s summary say it). Pure: it reads the sync engine's view
(`SyncView`), changes nothing.

A request waits for
- a file under its scopes, changed before it was requested, that is not in the mount yet;
- a file that left the source before it was requested and has still to leave the mount, in any folder (a
  producer that rotates drops yesterday's folder, then writes today's and its marker);
- any file whose delete the rail refused (`source.max_delete`), whenever it left: a snapshot is of the whole
  dataset, it would hold two runs' files;
- in daemon mode, a full scan started after the request (the watcher may not have reported every file written
  before the trigger; `scan_wanted_at`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from agent.rules.engine import SnapshotRequest


class SyncView(Protocol):
    """What `holding` reads of the sync engine (sync/engine.py `SyncEngine`)."""

    @property
    def last_scan_at(self) -> float | None: ...

    def pending(self) -> Mapping[str, float]: ...

    def pending_deletes(self) -> Mapping[str, float]: ...

    def refused_deletes(self) -> Mapping[str, float]: ...


def holding(
    request: SnapshotRequest, sync: SyncView | None, scan_wanted_at: float | None, *, count: bool
) -> str | None:
    """What holds `request` (None: nothing). With `count` False it stops at the first file that holds it (the
    queue's poll); with `count` True it says how many files, and names the first in path order."""
    if sync is None:
        return "the agent to start"
    cutoff = request.requested_at
    if scan_wanted_at is not None:
        scanned = sync.last_scan_at
        if scanned is None or scanned < scan_wanted_at:
            return "a full scan of the source"
        cutoff = max(cutoff, scanned + 0.001)
    scopes = request.scopes
    waiting = (
        path
        for path, first_seen in sync.pending().items()
        if first_seen <= cutoff and any(s == "" or path == s or path.startswith(s + "/") for s in scopes)
    )
    leaving = (path for path, first_seen in sync.pending_deletes().items() if first_seen <= cutoff)
    refused = iter(sync.refused_deletes())
    for paths, what in (
        (waiting, "not in the mount yet"),
        (leaving, "to leave the mount (they left the source)"),
        (refused, "left the source, but deleting them was refused (source.max_delete)"),
    ):
        first = next(paths, None)
        if first is not None:
            return _told(first, paths, what) if count else what
    return None


def _told(first: str, rest: Iterator[str], what: str) -> str:
    others = list(rest)
    number = 1 + len(others)
    return f"{number} file{'s' if number > 1 else ''} {what}, such as {min([first, *others])}"
