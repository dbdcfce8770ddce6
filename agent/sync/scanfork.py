"""A full scan spread over forked processes: on a big tree the walk is Python's work per file (an `lstat` and a
comparison with the row), one core's worth in one interpreter; shared by folder between processes it takes
each core's share. Threads would not help: the GIL serialises the per-file work between the syscalls.

The calling process keeps one share of the folders and forks one child per other share (forks.py). A child
inherits the known rows (copy-on-write: nothing is sent to it), walks its folders into its own `ScanResult`
and sends that back. The parent merges the results; a child that fails or dies (its share of the result never
completes) is walked again by the parent, so a failed fork costs time, never a wrong answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING

from agent.errors import SourceError
from agent.sync.statedb import Row

if TYPE_CHECKING:
    from agent.sync.scan import ScanResult, Walker

Share = list[tuple[str, str]]


def shares(folders: Share, count: int) -> list[Share]:
    """`folders` dealt round-robin into `count` shares (in name order, so neighbours spread out)."""
    ordered = sorted(folders, key=lambda item: item[1])
    return [ordered[i::count] for i in range(count) if ordered[i::count]]


def fan_out(walker: Walker, folders: Share, known: Mapping[str, Row], out: ScanResult) -> None:
    """Walk `folders` (and all below them) into `out`, the shares after the first in forked children."""
    from agent.sync.scan import ScanResult

    mine, *others = shares(folders, walker.workers)
    children: list[tuple[int, int, Share]] = []  # (pid, read end, share)
    try:
        for share in others:
            if walker.halted.is_set():
                break
            started = walker.children.start(partial(_walked, walker, share, known, ScanResult))  # halt kills it
            if started is None:
                walker._walk(share, known, out)  # could not fork: this process walks it
            else:
                children.append((*started, share))
        walker._walk(mine, known, out)
    finally:
        answers = walker.children.collect([(pid, fd) for pid, fd, _ in children])  # reaped even if this failed
    if walker.halted.is_set():
        raise SourceError("the scan was stopped (the agent is stopping)")  # a killed share is no answer
    for answer, (_, _, share) in zip(answers, children, strict=True):
        if isinstance(answer, ScanResult):
            merge(out, answer)
        else:
            walker._walk(list(share), known, out)


def _walked(walker: Walker, share: Share, known: Mapping[str, Row], result: type[ScanResult]) -> ScanResult:
    """A child's work: its share walked into a result of its own (no import here: a child imports nothing, in
    case another thread of the parent held the import lock when it forked)."""
    part = result()
    walker._walk(list(share), known, part)
    return part


def merge(out: ScanResult, part: ScanResult) -> None:
    """Add a share's result (disjoint folders) to `out`."""
    out.changed.update(part.changed)
    for folder, count in part.hits.items():
        out.hits[folder] = out.hits.get(folder, 0) + count
    out.skipped.extend(part.skipped)
    out.unreadable.extend(part.unreadable)
    out.why_unreadable.update(part.why_unreadable)
    out.folders.extend(part.folders)
    out.hardlinks.update(part.hardlinks)
    out.symlinks.update(part.symlinks)
    out.files += part.files
    out.bytes += part.bytes
