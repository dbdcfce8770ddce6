"""Sync decisions, pure: what to copy, move and delete given the source's state and the mount's rows.

* A file is copied when the mount's row differs from it in size, mtime, inode or permission bits; when only the
  inode differs the copier first compares bytes (`confirm`), see statedb.py.
* A new path whose (inode, size, mtime) equals that of a row that left the source is the same file moved:
  the mount's copy is renamed instead of copied again, and the move is not a delete (a renamed folder holding
  most of the dataset must not trip the delete rail).
* `mirror` deletes from the mount what left the source, `keep` never does; a pass deleting more than
  `max_delete` of the mount's files is refused whole (an emptied or unmounted source must not wipe a dataset).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.sync.settle import FileStat
from agent.sync.statedb import Row, row_fields


@dataclass(frozen=True, slots=True)
class Plan:
    """What a sync would do now (`once --dry-run`). When `refused_delete`, `delete` lists what the rail holds."""

    copy: tuple[str, ...]
    move: tuple[tuple[str, str], ...]
    delete: tuple[str, ...]
    refused_delete: bool
    unsettled: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    mount_files: int
    mount_problem: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.copy or self.move or self.delete or self.unsettled)


def delete_allowed(deletes: int, mount_files: int, max_delete: float) -> bool:
    """A pass of `deletes` deletions out of `mount_files` files in the mount stays within `max_delete`."""
    if deletes <= 0:
        return True
    return deletes <= max_delete * mount_files


def row_key(row: Row) -> tuple[int, int, int]:
    """(inode, size, mtime_ns) of a row: how a moved file is recognised (see FileStat.key)."""
    f = row_fields(row)
    return (f.ino, f.size, f.mtime_ns)


def needs_confirm(row: Row | None, fs: FileStat) -> bool:
    """Only the inode moved: same size and mtime; the bytes decide whether a copy is needed."""
    if row is None:
        return False
    f = row_fields(row)
    return f.size == fs.size and f.mtime_ns == fs.mtime_ns and f.ino != fs.ino


def match_moves(adds: Mapping[str, FileStat], gone: Mapping[str, Row]) -> dict[str, str]:
    """new path -> old path, for new files whose (inode, size, mtime) is that of exactly one vanished row."""
    by_key: dict[tuple[int, int, int], str | None] = {}
    for path, row in gone.items():
        key = row_key(row)
        by_key[key] = None if key in by_key else path
    moves: dict[str, str] = {}
    used: set[str] = set()
    for path, fs in adds.items():
        old = by_key.get(fs.key)
        if old is not None and old not in used:
            moves[path] = old
            used.add(old)
    return moves


def plan_sync(
    changed: Mapping[str, FileStat],
    missing: Iterable[str],
    rows: Mapping[str, Row],
    *,
    delete: str,
    max_delete: float,
    settled: Iterable[str] | None = None,
    skipped: Iterable[tuple[str, str]] = (),
) -> Plan:
    """The plan for a scan: `changed` files differ from `rows`, `missing` rows left the source.

    `settled` names the changed files that are complete (default: all); the others are listed as unsettled.
    """
    ready = set(changed) if settled is None else set(settled) & set(changed)
    gone = {path: rows[path] for path in missing if path in rows}
    adds = {path: changed[path] for path in sorted(ready) if path not in rows}
    moves = match_moves(adds, gone) if delete == "mirror" else {}
    moved_from = set(moves.values())
    copy = tuple(sorted(path for path in ready if path not in moves))
    deletes = tuple(sorted(path for path in gone if path not in moved_from)) if delete == "mirror" else ()
    refused = not delete_allowed(len(deletes), len(rows), max_delete)
    return Plan(
        copy=copy,
        move=tuple(sorted((old, new) for new, old in moves.items())),
        delete=deletes,
        refused_delete=refused,
        unsettled=tuple(sorted(set(changed) - ready)),
        skipped=tuple(skipped),
        mount_files=len(rows),
    )


def parents(path: str) -> list[str]:
    """The folders above `path`, nearest first ('a/b/c' -> ['a/b', 'a'])."""
    out: list[str] = []
    while "/" in path:
        path = path.rpartition("/")[0]
        out.append(path)
    return out


class FolderIndex:
    """How many tracked files sit under each folder, so 'a folder went away' finds its files without a full
    pass over every row."""

    def __init__(self, paths: Iterable[str] = ()) -> None:
        self._count: dict[str, int] = {}
        for path in paths:
            self.add(path)

    def add(self, path: str) -> None:
        for folder in parents(path):
            self._count[folder] = self._count.get(folder, 0) + 1

    def remove(self, path: str) -> None:
        for folder in parents(path):
            left = self._count.get(folder, 0) - 1
            if left > 0:
                self._count[folder] = left
            else:
                self._count.pop(folder, None)

    def __contains__(self, folder: object) -> bool:
        return folder in self._count

    def under(self, folder: str, paths: Iterable[str]) -> list[str]:
        """The paths (from `paths`) under `folder`, or nothing when the index knows no file there."""
        if folder not in self._count:
            return []
        prefix = folder + "/"
        return [path for path in paths if path.startswith(prefix)]
