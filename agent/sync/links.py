"""Which source paths share their content with another: hard links and symlinks inside the source.

A write to `target.txt` brings a watch event for `target.txt` only, yet the mount's copies of its hard links
(other names of the same inode) and of the symlinks that resolve to it are stale from then on. `LinkIndex`
remembers those pairs so the engine can look at the other paths at once. Only files whose `st_nlink` is above 1
and symlinks that resolve inside the source are kept: for a tree without links the index stays empty, and every
method returns at once.

The walk (scan.py) reports what it met in `ScanResult.hardlinks` and `ScanResult.symlinks`; a full scan replaces
the index, the stats of event paths update it. Pure bookkeeping, touched from the event loop thread only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

InodeKey = tuple[int, int]
K = TypeVar("K")
"""(st_dev, st_ino): one file, whatever its names."""


def _under(path: str, folder: str) -> bool:
    return path.startswith(folder + "/")


@dataclass(slots=True)
class LinkIndex:
    """inode -> names (for files with more than one name) and symlink target -> symlinks (both as source rel
    paths)."""

    by_inode: dict[InodeKey, set[str]] = field(default_factory=dict)
    inode_of: dict[str, InodeKey] = field(default_factory=dict)
    target_of: dict[str, str] = field(default_factory=dict)
    links_to: dict[str, set[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.inode_of or self.target_of)

    def replace(
        self, hardlinks: Mapping[str, InodeKey], symlinks: Mapping[str, str], keep_under: Iterable[str] = ()
    ) -> None:
        """A full walk met these: they are the whole truth, except under folders it could not read (`keep_under`),
        where what was known is kept."""
        kept = list(keep_under)
        old_inodes = {rel: key for rel, key in self.inode_of.items() if any(_under(rel, f) or not f for f in kept)}
        old_targets = {rel: to for rel, to in self.target_of.items() if any(_under(rel, f) or not f for f in kept)}
        self.by_inode, self.inode_of, self.target_of, self.links_to = {}, {}, {}, {}
        for rel, key in (*old_inodes.items(), *hardlinks.items()):
            self._add_name(rel, key)
        for rel, target in (*old_targets.items(), *symlinks.items()):
            self._add_link(rel, target)

    def update(
        self,
        looked: Mapping[str, object | None],
        hardlinks: Mapping[str, InodeKey],
        symlinks: Mapping[str, str],
    ) -> None:
        """Fresh stats of the paths in `looked` (None: not a file now; a folder's walk is in `hardlinks` and
        `symlinks` with the rest): forget what was known of them (and under those that are gone or folders) and
        learn what the stats showed."""
        if not (self or hardlinks or symlinks):
            return  # the common case: no links anywhere
        if self:
            gone = [rel for rel, state in looked.items() if state is None]
            doomed = set(looked)
            if gone:
                for rel in (*self.inode_of, *self.target_of):
                    if any(_under(rel, folder) for folder in gone):
                        doomed.add(rel)
            for rel in doomed:
                self._forget(rel)
        for rel, key in hardlinks.items():
            self._forget_name(rel)
            self._add_name(rel, key)
        for rel, target in symlinks.items():
            self._forget_link(rel)
            self._add_link(rel, target)

    def related(self, changed: Iterable[str]) -> list[str]:
        """Paths whose content is that of a path in `changed`: its other names and the symlinks to any of them
        (call after `update` with the stats that showed the change)."""
        if not self:
            return []
        out: set[str] = set()
        for rel in changed:
            key = self.inode_of.get(rel)
            names = self.by_inode.get(key, {rel}) if key is not None else {rel}
            for name in names | {rel}:
                if name != rel:
                    out.add(name)
                out |= self.links_to.get(name, set())
        out.difference_update(changed)
        return sorted(out)

    # -- helpers --------------------------------------------------------------------------------------------

    def _add_name(self, rel: str, key: InodeKey) -> None:
        self.inode_of[rel] = key
        self.by_inode.setdefault(key, set()).add(rel)

    def _add_link(self, rel: str, target: str) -> None:
        self.target_of[rel] = target
        self.links_to.setdefault(target, set()).add(rel)

    def _forget(self, rel: str) -> None:
        self._forget_name(rel)
        self._forget_link(rel)

    def _forget_name(self, rel: str) -> None:
        _unpair(self.inode_of, self.by_inode, rel)

    def _forget_link(self, rel: str) -> None:
        _unpair(self.target_of, self.links_to, rel)


def _unpair(forward: dict[str, K], backward: dict[K, set[str]], rel: str) -> None:
    """Drop `rel` from a name -> key map and from its key's set of names (and the set once it is empty)."""
    key = forward.pop(rel, None)
    if key is None:
        return
    names = backward.get(key)
    if names is not None:
        names.discard(rel)
        if not names:
            del backward[key]
