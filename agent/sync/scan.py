# String paths and os.* calls on purpose: a Path object per file costs too much on 100k-file trees.
# ruff: noqa: PTH100, PTH116
"""Walk the source folder: what regular files it holds, by relative '/'-separated path.

* `source.ignore` patterns have gitignore semantics (pathspec); an ignored folder is not descended.
* Symlinks are never followed out of the root: a symlink whose target resolves inside the root to a regular
  file is synced as that file's content (a copy, not a link; the dataset mount may not keep links); a symlink
  to a folder, to a path outside the root, or a broken one is skipped.
* FIFOs, sockets and devices are skipped (the caller logs each once).
* Folders that cannot be listed are reported (with the reason), so nothing under them is taken for deleted.
* Files with more than one name (st_nlink > 1) and symlinks resolving inside the root are reported too (see
  links.py: an edit must reach the mount's copies of their other names); a tree without links adds nothing.

The walk uses `os.scandir` and one `lstat` per file, and compares against the known rows as it goes. A full
walk keeps nothing per unchanged file, only a count per folder of the files that matched their row; when the
counts say some known file was not met (deletions), `Walker.missing` lists just the folders that came up short
again to name them. So a no-op rescan of 100,000 files builds no set of 100,000 names.

A full scan of a big tree (one whose breadth-first start finds `SPLIT_AT` folders) is shared by folder between
forked processes, one per core (scanfork.py): the walk is Python's work per file, one core's worth in one
interpreter. Folders are listed through a descriptor, so each entry's `lstat` is relative to it (no path walk
from the root per file).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pathspec

from agent.errors import SourceError
from agent.sync.forks import Children, default_workers
from agent.sync.scanfork import fan_out
from agent.sync.settle import FileStat
from agent.sync.statedb import ROW_PACK, Row, make_row

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
SPLIT_AT = 16
"""A full scan is shared between processes (scanfork.py) once its breadth-first start finds this many folders."""


def _affix(pattern: str) -> tuple[str, str] | None:
    """('suffix', '.tmp') for `*.tmp`, ('prefix', '~$') for `~$*`; None for anything else."""
    glob = set("*?[]\\!/")
    if pattern.startswith("*") and not glob & set(pattern[1:]) and len(pattern) > 1:
        return ("suffix", pattern[1:])
    if pattern.endswith("*") and not glob & set(pattern[:-1]) and len(pattern) > 1:
        return ("prefix", pattern[:-1])
    return None


class IgnoreMatcher:
    """gitignore-style patterns. Without negations all patterns fold into one regex (same answers, faster)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._spec = pathspec.GitIgnoreSpec.from_lines(self.patterns)
        regexes: list[str] = []
        simple = True
        for pattern in self._spec.patterns:
            regex = getattr(pattern, "regex", None)
            if pattern.include is None or regex is None:
                continue
            if pattern.include is False:
                simple = False
                break
            regexes.append("(?:" + regex.pattern.replace("(?P<ps_d>", "(?:") + ")")
        self._combined: re.Pattern[str] | None = None
        if simple:
            self._combined = re.compile("|".join(regexes), re.DOTALL) if regexes else None
        self._simple = simple
        lines = [p.strip() for p in self.patterns if p.strip() and not p.strip().startswith("#")]
        self.name_only = simple and all("/" not in p.rstrip("/") and "**" not in p for p in lines)
        # `*.tmp` and `~$*` style patterns (the defaults) decide by str.endswith/startswith: no regex per file
        self.affixes: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        if self.name_only and all(_affix(p) is not None for p in lines):
            pairs = [_affix(p) for p in lines]
            self.affixes = (
                tuple(text for kind, text in filter(None, pairs) if kind == "suffix"),
                tuple(text for kind, text in filter(None, pairs) if kind == "prefix"),
            )

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        """`rel` (or something above it) matches a pattern. Folders are tested with a trailing '/'."""
        probe = rel + "/" if is_dir else rel
        if self._simple:
            return self._combined is not None and self._combined.search(probe) is not None
        return self._spec.match_file(probe)

    def name_regex(self) -> re.Pattern[str] | None:
        """The one regex that decides for a file by its name alone, when the patterns allow it (else None)."""
        return self._combined if self.name_only else None

    def ignored_entry(self, rel: str, name: str, is_dir: bool) -> bool:
        """Like `ignored`, for an entry met while walking (its parents are known not to be ignored)."""
        if self.name_only:
            if self._combined is None:
                return False
            return self._combined.search(name + "/" if is_dir else name) is not None
        return self.ignored(rel, is_dir)


@dataclass(slots=True)
class ScanResult:
    """A walk compared with the known rows: what differs, what was seen, what was skipped or unreadable."""

    changed: dict[str, FileStat] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # every file met, only when the walk was asked to keep them
    hits: dict[str, int] = field(default_factory=dict)  # folder -> files that matched their row there
    seen_all: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    why_unreadable: dict[str, str] = field(default_factory=dict)  # folder in `unreadable` -> the OS's reason
    folders: list[str] = field(default_factory=list)
    hardlinks: dict[str, tuple[int, int]] = field(default_factory=dict)  # file with st_nlink > 1 -> (dev, inode)
    symlinks: dict[str, str] = field(default_factory=dict)  # symlink -> the path inside the root it resolves to
    files: int = 0
    bytes: int = 0

    def met(self, path: str) -> bool:
        """The walk met `path` and it differed from its row (or had none); with `seen_all`, met at all."""
        return path in self.seen if self.seen_all else path in self.changed


def under_any(path: str, folders: Iterable[str]) -> bool:
    return any(folder == "" or path == folder or path.startswith(folder + "/") for folder in folders)


def to_filestat(st: os.stat_result) -> FileStat:
    return FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode, st.st_atime_ns)


def differs(row: Row | None, fs: FileStat) -> bool:
    """The mount's copy (row) is not this file: size, mtime, inode or permission bits moved."""
    return row != make_row(fs.size, fs.mtime_ns, fs.ino, fs.mode)


class Walker:
    """Walks one source root; `scan()` for the whole tree, `stat_paths()` for paths named by watch events."""

    def __init__(
        self, root: str, matcher: IgnoreMatcher, prune: Iterable[str] = (), *, workers: int | None = None
    ) -> None:
        self.root = os.path.abspath(root)
        self.workers = default_workers() if workers is None else workers  # processes for a full scan
        self.halted = threading.Event()  # `halt`: walks stop with SourceError, their children killed
        self.children = Children(self.halted)  # the processes walking shares of a scan now (scanfork.py)
        self.real_root = os.path.realpath(self.root)
        self.matcher = matcher
        self.prune = frozenset(prune)

    def halt(self) -> None:
        """Stop every walk of this walker now (an agent told to stop at once): they raise SourceError, which no
        caller takes for an empty tree, and the processes walking shares are killed. For good: a halted walker
        walks no more."""
        self.halted.set()
        self.children.kill_all()

    def root_ok(self) -> bool:
        """The source root is there and a folder (when it is not, nothing under it counts as deleted)."""
        try:
            return stat.S_ISDIR(os.stat(self.root).st_mode)
        except OSError:
            return False

    def excluded(self, rel: str, is_dir: bool = False) -> bool:
        """Never synced: pruned (the agent's own state, the mount) or ignored by pattern."""
        if self.prune and any(rel == p or rel.startswith(p + "/") for p in self.prune):
            return True
        return self.matcher.ignored(rel, is_dir)

    def scan(
        self, known: Mapping[str, Row], subtree: str = "", result: ScanResult | None = None, *, keep_seen: bool = False
    ) -> ScanResult:
        """Walk the tree (or the folder `subtree`), comparing each file with `known`; `keep_seen` also collects
        every file met in `seen` (for small subtrees whose every file the caller needs to know)."""
        out = ScanResult(seen_all=keep_seen) if result is None else result
        top = self.root if not subtree else self.root + "/" + subtree
        if not subtree:
            try:
                if not stat.S_ISDIR(os.stat(self.root).st_mode):
                    raise SourceError(f"source {self.root} is not a folder")
            except OSError as exc:
                raise SourceError(f"source {self.root} cannot be read ({exc.strerror}): check source.path") from None
        stack = [(top, subtree + "/" if subtree else "")]
        if not subtree and result is None and not keep_seen and self.workers > 1:
            stack = self._walk(stack, known, out, until=SPLIT_AT)  # breadth first until there is enough to share
            if stack:
                fan_out(self, stack, known, out)
                return out
        self._walk(stack, known, out)
        return out

    def _walk(
        self, stack: list[tuple[str, str]], known: Mapping[str, Row], out: ScanResult, *, until: int = 0
    ) -> list[tuple[str, str]]:
        """Scan the folders on `stack` (path, relative prefix ending in '/') and all below them into `out`.

        With `until`, breadth first, and only until that many folders wait: returns them, not yet scanned (empty
        when the walk ended first)."""
        matcher, prune = self.matcher, self.prune
        # the hot loop of a no-op rescan: locals, d_type checks before the one lstat, one packed comparison
        ignored = matcher.ignored_entry
        combined = matcher.name_regex()
        suffixes, prefixes = matcher.affixes or ((), ())
        fast = matcher.affixes is not None
        changed, get, pack, hits, linked = out.changed, known.get, ROW_PACK, out.hits, out.hardlinks
        add = out.seen.add if out.seen_all else None
        is_reg = stat.S_ISREG
        files = size = 0
        halted = self.halted.is_set
        while stack:
            if halted():
                raise SourceError("the scan was stopped (the agent is stopping)")
            if until:
                if len(stack) >= until:
                    break
                folder, prefix = stack.pop(0)
            else:
                folder, prefix = stack.pop()
            matched = 0
            try:  # listed through a descriptor: each entry's lstat is then relative to it, no path walk
                fd = os.open(folder, DIR_FLAGS if prefix else DIR_FLAGS & ~os.O_NOFOLLOW)
            except OSError as exc:
                if exc.errno not in _GONE:  # otherwise it went away (or became a symlink)
                    out.unreadable.append(prefix[:-1])
                    out.why_unreadable[prefix[:-1]] = (exc.strerror or exc.__class__.__name__).lower()
                continue
            try:
                entries = os.scandir(fd)
            except OSError as exc:
                os.close(fd)
                out.unreadable.append(prefix[:-1])
                out.why_unreadable[prefix[:-1]] = (exc.strerror or exc.__class__.__name__).lower()
                continue
            with _closing(fd), entries:
                for entry in entries:
                    name = entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            rel = prefix + name
                            if rel in prune or ignored(rel, name, True):
                                continue
                            stack.append((folder + "/" + name, rel + "/"))
                            continue
                        if fast:
                            if name.endswith(suffixes) or name.startswith(prefixes):
                                continue
                        elif combined is not None:
                            if combined.search(name) is not None:
                                continue
                        elif ignored(prefix + name, name, False):
                            continue
                        st = entry.stat(follow_symlinks=False)
                        if not is_reg(st.st_mode):
                            if entry.is_symlink():
                                resolved = self._follow(folder + "/" + name, prefix + name, out)
                                if resolved is None:
                                    continue
                                st = resolved
                            else:
                                out.skipped.append((prefix + name, kind_of(st.st_mode)))
                                continue
                    except OSError as exc:
                        if exc.errno not in _GONE and prefix[:-1] not in out.why_unreadable:
                            # listed but not searchable (r without x), or an I/O error: what is under this folder
                            # cannot be known now, and unknown is not gone
                            out.unreadable.append(prefix[:-1])
                            out.why_unreadable[prefix[:-1]] = (exc.strerror or exc.__class__.__name__).lower()
                        continue  # vanished while we looked, or cannot be seen
                    rel = prefix + name
                    files += 1
                    size += st.st_size
                    if st.st_nlink > 1:
                        linked[rel] = (st.st_dev, st.st_ino)
                    if add is not None:
                        add(rel)
                    if get(rel) == pack(st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode & 0o7777):
                        matched += 1
                    else:
                        changed[rel] = to_filestat(st)
            if matched:
                hits[prefix[:-1]] = hits.get(prefix[:-1], 0) + matched
        out.files += files
        out.bytes += size
        return stack

    def missing(self, result: ScanResult, known: Mapping[str, Row]) -> list[str]:
        """Known paths the walk did not meet, except under folders it could not read and paths ignored now.

        Without `seen_all` the walk only counted, per folder, the files that matched their row: when the counts
        add up nothing is missing; otherwise the folders that came up short are listed again (cheaply: no stat
        per file) to name what is gone."""
        if result.seen_all:
            gone = [path for path in known if path not in result.seen]
        elif sum(result.hits.values()) + sum(1 for path in result.changed if path in known) == len(known):
            return []  # every known file was met: the usual rescan
        else:
            changed = result.changed
            short: dict[str, int] = {}
            for path in known:
                folder = path.rpartition("/")[0]
                short[folder] = short.get(folder, 0) + 1
            for path in changed:
                if path in known:
                    short[path.rpartition("/")[0]] -= 1
            for folder, count in result.hits.items():
                if folder in short:
                    short[folder] -= count
            present = {folder: self._names(folder) for folder, left in short.items() if left > 0}
            gone = []
            if present:
                for path in known:
                    folder, _, name = path.rpartition("/")
                    if folder in present and path not in changed:
                        names = present[folder]
                        if names is not None and name not in names:  # None: cannot tell now, keep it
                            gone.append(path)
        # a file that is ignored now (a pattern added since it was synced) is not gone: its copy stays as it is
        gone = [path for path in gone if not self.excluded(path)]
        if not result.unreadable:
            return gone
        return [path for path in gone if not under_any(path, result.unreadable)]

    def _names(self, folder: str) -> set[str] | None:
        """The names in `folder` the walk would have met as files: empty when the folder is gone, None when it
        cannot be listed now (then nothing there is taken for deleted)."""
        top = self.root if not folder else self.root + "/" + folder
        prefix = folder + "/" if folder else ""
        names: set[str] = set()
        try:
            entries = os.scandir(top)
        except (FileNotFoundError, NotADirectoryError):
            return names
        except OSError:
            return None
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        continue
                    rel = prefix + entry.name
                    if self.matcher.ignored_entry(rel, entry.name, False):
                        continue
                    if entry.is_file(follow_symlinks=False) or (
                        entry.is_symlink() and self._follow(entry.path, rel, ScanResult()) is not None
                    ):
                        names.add(entry.name)
                except OSError:
                    continue
        return names

    def _follow(self, path: str, rel: str, out: ScanResult) -> os.stat_result | None:
        """The stat of a symlink's target when it is a regular file inside the root, else None (and why)."""
        target = os.path.realpath(path)
        inside = target.startswith(self.real_root + "/")
        target_rel = target[len(self.real_root) + 1 :]
        if inside and self.prune:
            inside = not any(target_rel == p or target_rel.startswith(p + "/") for p in self.prune)
        if not inside:
            out.skipped.append((rel, "symlink out of the source"))
            return None
        out.symlinks[rel] = target_rel  # even when broken: the target may appear later
        try:
            st = os.stat(path)
        except OSError:
            out.skipped.append((rel, "broken symlink"))
            return None
        if not stat.S_ISREG(st.st_mode):
            out.skipped.append((rel, "symlink to a " + kind_of(st.st_mode)))
            return None
        return st

    def stat_paths(
        self, rels: Iterable[str], known: Mapping[str, Row]
    ) -> tuple[dict[str, FileStat | None], ScanResult]:
        """Fresh state of each path: a FileStat, None when absent (or no longer a syncable file).

        A path that is now a folder is walked (a folder created or moved in brings its files with it); its files
        land in the returned ScanResult's `changed`/`seen`, like a scan of that subtree.
        """
        states: dict[str, FileStat | None] = {}
        sub = ScanResult(seen_all=True)
        for rel in rels:
            path = self.root + "/" + rel
            try:
                st = os.lstat(path)
            except OSError as exc:
                if exc.errno in _GONE:
                    states[rel] = None
                else:  # EACCES on a folder above it, EIO: its state is unknown (left out), its folder unreadable
                    folder = rel.rpartition("/")[0]
                    if folder not in sub.why_unreadable:
                        sub.unreadable.append(folder)
                        sub.why_unreadable[folder] = (exc.strerror or exc.__class__.__name__).lower()
                continue
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                states[rel] = None
                sub.folders.append(rel)
                if not self.excluded(rel, True):
                    self.scan(known, rel, sub)
                continue
            if stat.S_ISLNK(mode):
                resolved = self._follow(path, rel, sub)
                states[rel] = None if resolved is None else to_filestat(resolved)
                if resolved is not None and resolved.st_nlink > 1:
                    sub.hardlinks[rel] = (resolved.st_dev, resolved.st_ino)
            elif stat.S_ISREG(mode):
                states[rel] = to_filestat(st)
                if st.st_nlink > 1:
                    sub.hardlinks[rel] = (st.st_dev, st.st_ino)
            else:
                sub.skipped.append((rel, kind_of(mode)))
                states[rel] = None
        return states, sub


_GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
"""What a failed stat or open says when the path is not there (or is no longer a folder): all else is unknown."""


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[None]:
    try:
        yield
    finally:
        os.close(fd)


class WalkedSource(Protocol):
    """What a walk needs of `source:` (a SourceConfig, or the early walk's reading of the file, earlyscan.py)."""

    @property
    def path(self) -> Path: ...

    @property
    def ignore(self) -> tuple[str, ...]: ...


def source_walker(source: WalkedSource, mount: Path, state_dir: Path) -> Walker:
    """The walker of `source`: its ignore patterns, and never into the agent's own state or the mount when they
    lie inside it."""
    root = os.path.abspath(source.path)
    prune = [rel for rel in (_inside(state_dir, root), _inside(mount, root)) if rel]
    return Walker(root, IgnoreMatcher(source.ignore), prune)


def _inside(path: Path, root: str) -> str | None:
    """`path` relative to `root` when it lies inside it, else None."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real.startswith(real_root + "/"):
        return real[len(real_root) + 1 :]
    return None


def kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "special file"
