# String paths and os.* calls on purpose: a Path object per file costs too much on 100k-file trees.
# ruff: noqa: PTH101, PTH102, PTH105, PTH120
"""Atomic copies into the mount. Blocking: one `Copier.run(jobs)` call per batch, in a worker thread.

For each file: open the source, check it is still what settled, write a hidden temp file next to the target
(`.<name>.domino-sync-<hex>.tmp`) with the bytes streamed by the kernel (`copy_file_range`, else `sendfile`,
else a 1 MiB buffer loop: never the whole file in memory), set mode and mtime, stat the source again (a
change of size, mtime, ctime, inode or mode means it was written during the copy: the temp is discarded and
the file settles again), make the data durable (with `durable`, see below), `os.replace` over the target, make the
folder durable (with `durable`).

Durability per batch (`durable`, `dataset.durability: batch`): with four or more small files, one `syncfs()` of
the mount before the renames and one after replaces an fsync per file and per folder (20,000 tiny files must
not cost 40,000 fsyncs); otherwise each temp file is fsynced before its rename and each touched folder after. A
result is "done" only after the second barrier. Without `durable` (the default `snapshot`) there is no barrier:
the mount is flushed before each snapshot instead, and a crash of the host is caught at the next start
(flushmark.py).

A reader of the mount sees the old file or the new one, never a part; a crash leaves at most temp files,
which `remove_temps` clears at the next start.
"""

from __future__ import annotations

import errno as E
import os
import secrets
import stat
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from enum import Enum

from agent.failpoints import failpoint
from agent.sync import mountfs
from agent.sync.mountfs import prune_empty, temp_name, unlink_quietly
from agent.sync.plan import parents
from agent.sync.scan import to_filestat
from agent.sync.settle import FileStat
from agent.sync.statedb import Row, make_row, row_fields
from agent.sync.transfer import Halted, first_line, same_bytes, stream

SMALL = 1 << 20  # files up to this size travel in batches behind one syncfs barrier


class Outcome(Enum):
    COPIED = "copied"  # new bytes are in the mount
    ADOPTED = "adopted"  # the mount already held this file (a crash after rename, or same bytes)
    MOVED = "moved"  # renamed inside the mount from `moved_from`
    CHANGED = "changed"  # the source changed before or during the copy: settle again
    VANISHED = "vanished"  # the source is gone (or no longer a regular file): not an error
    FAILED = "failed"  # an error; `errno` and `mount_side` say which
    CONFLICT = "conflict"  # a file stands where a folder is needed, or a folder where the file goes


@dataclass(frozen=True, slots=True)
class CopyJob:
    path: str
    expect: FileStat
    row: Row | None = None
    confirm: bool = False
    move_from: str | None = None
    move_row: Row | None = None
    marker: bool = False  # a marker file (`_SUCCESS`): copied after the rest of its folder (ledger.py)

    def __reduce__(self) -> tuple[type[CopyJob], tuple[object, ...]]:
        """Pickled as its fields (a batch sent to a copy process, copyfork.py): a third of the time of the
        dataclass's own state handling."""
        fields = (self.path, self.expect, self.row, self.confirm, self.move_from, self.move_row, self.marker)
        return CopyJob, fields


@dataclass(frozen=True, slots=True)
class CopyResult:
    path: str
    outcome: Outcome
    stat: FileStat | None = None
    bytes: int = 0
    error: str | None = None
    errno: int | None = None
    mount_side: bool = False
    first_line: str | None = None
    moved_from: str | None = None

    @property
    def done(self) -> bool:
        return self.outcome in (Outcome.COPIED, Outcome.ADOPTED, Outcome.MOVED)

    def __reduce__(self) -> tuple[type[CopyResult], tuple[object, ...]]:
        """Pickled as its fields (a forked batch's results, copyfork.py): half the time, both ways, of a frozen
        slots dataclass's own state handling."""
        fields = (self.path, self.outcome, self.stat, self.bytes, self.error, self.errno, self.mount_side)
        return CopyResult, (*fields, self.first_line, self.moved_from)

    @property
    def row(self) -> Row | None:
        s = self.stat
        return None if s is None else make_row(s.size, s.mtime_ns, s.ino, s.mode)


def _rebuilt(source: str, mount: str, marker_names: Collection[str], durable: bool, tag: int) -> Copier:
    copier = Copier(source, mount, marker_names=marker_names, durable=durable)
    copier._tag = tag
    return copier


class _Conflict(Exception):
    pass


def _same(a: FileStat, b: FileStat) -> bool:
    return (a.size, a.mtime_ns, a.ctime_ns, a.ino, a.mode) == (b.size, b.mtime_ns, b.ctime_ns, b.ino, b.mode)


def _failed(path: str, exc: OSError, mount_side: bool) -> CopyResult:
    what = exc.strerror or exc.__class__.__name__
    where = "mount" if mount_side else "source"
    return CopyResult(path, Outcome.FAILED, error=f"{where}: {what}", errno=exc.errno, mount_side=mount_side)


class Copier:
    """Copies one batch. Not thread-safe: one instance per batch (it caches the folders it made sure of)."""

    def __init__(
        self,
        source: str,
        mount: str,
        *,
        marker_names: Collection[str] = (),
        hook: Callable[[str], None] | None = None,
        halt: threading.Event | None = None,
        durable: bool = True,
    ) -> None:
        self.source = source
        self.durable = durable  # False: no barrier, the kernel writes back (`dataset.durability: snapshot`)
        self.mount = mount
        self.real_source = os.path.realpath(source)
        self.marker_names = marker_names
        self.hook = hook
        self.halt = halt
        self._folders: set[str] = set()
        self._created: set[str] = set()
        self._touched: set[str] = set()
        self._moved: set[str] = set()  # folders a move renamed in or out of: durable in every mode
        self._tag = secrets.randbits(32)

    def __reduce__(self) -> tuple[Callable[..., Copier], tuple[object, ...]]:
        """Pickled for a copy process (copyfork.py): its settings and temp tag. Not its hook (a batch with one
        is copied in the agent) nor its halt (a stop kills the process)."""
        return _rebuilt, (self.source, self.mount, self.marker_names, self.durable, self._tag)

    def temp_tags(self, count: int) -> range:
        """The tags of the temp names a `run` of `count` jobs starting now can give (see mountfs.temp_name)."""
        return range(self._tag + 1, self._tag + count + 1)

    def run(self, jobs: Sequence[CopyJob]) -> list[CopyResult]:
        """Copy every job; results in job order. A result is done once renamed into place (and, when `durable`,
        once that is on disk)."""
        durable = self.durable
        batch_sync = durable and len(jobs) >= 4 and mountfs.SYNCFS is not None
        if len(jobs) > 1:
            self._prefetch(jobs)
        results: list[CopyResult | None] = [None] * len(jobs)
        staged: list[tuple[int, str, str, CopyResult]] = []
        try:
            for i, job in enumerate(jobs):
                per_file_sync = durable and (not batch_sync or job.expect.size > SMALL)
                results[i] = self._one(job, i, staged, per_file_sync=per_file_sync)
            if staged and batch_sync:
                try:
                    mountfs.syncfs(self.mount)
                except OSError as exc:
                    for i, temp, _, _ in staged:
                        results[i] = _failed(jobs[i].path, exc, True)
                        unlink_quietly(temp)
                    staged = []
            renamed: list[tuple[int, CopyResult]] = []
            for i, temp, final, result in staged:
                try:
                    os.replace(temp, final)
                except OSError as exc:
                    unlink_quietly(temp)
                    results[i] = (
                        CopyResult(jobs[i].path, Outcome.CONFLICT, error="mount: a folder is in the way")
                        if exc.errno in (E.EISDIR, E.ENOTEMPTY, E.EEXIST)
                        else _failed(jobs[i].path, exc, True)
                    )
                    continue
                self._touched.add(os.path.dirname(final))
                renamed.append((i, result))
            staged = []
            try:
                if batch_sync and renamed:
                    mountfs.syncfs(self.mount)
                elif durable:
                    mountfs.make_folders_durable(self.mount, self._touched)
                elif self._moved:  # a move lost in a crash would leave the old path behind, no row owning it
                    mountfs.make_folders_durable(self.mount, self._moved, whole_fs=False)
            except OSError as exc:
                for i, _ in renamed:
                    results[i] = _failed(jobs[i].path, exc, True)
                for i, maybe in enumerate(results):
                    if maybe is not None and maybe.outcome is Outcome.MOVED:
                        results[i] = _failed(jobs[i].path, exc, True)
                renamed = []
            for i, result in renamed:
                results[i] = result
        finally:
            for _, temp, _, _ in staged:
                unlink_quietly(temp)
            for job, maybe in zip(jobs, results, strict=True):
                if (maybe is None or not maybe.done) and "/" in job.path:
                    prune_empty(self.mount, job.path.rpartition("/")[0])  # folders made for a copy that failed
        return [
            r if r is not None else CopyResult(j.path, Outcome.FAILED, error="internal")
            for r, j in zip(results, jobs, strict=True)
        ]

    def _prefetch(self, jobs: Sequence[CopyJob]) -> None:
        """Ask the kernel to start reading every small source of the batch now (POSIX_FADV_WILLNEED): the
        reads of a cold tree then run many at a time instead of one per copy, one disk round trip each."""
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
        source = self.source
        for job in jobs:
            if job.expect.size > SMALL or job.move_from is not None:
                continue
            try:
                fd = os.open(source + "/" + job.path, flags)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    def _one(
        self, job: CopyJob, index: int, staged: list[tuple[int, str, str, CopyResult]], per_file_sync: bool
    ) -> CopyResult | None:
        rel = job.path
        src = self.source + "/" + rel
        dst = self.mount + "/" + rel
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            try:
                fi = os.open(src, flags | os.O_NOFOLLOW)
            except OSError as exc:
                if exc.errno != E.ELOOP:
                    raise
                if not self._link_inside(src):  # a symlink: followed only to a file inside the source
                    return CopyResult(rel, Outcome.VANISHED)
                fi = os.open(src, flags)
        except (FileNotFoundError, NotADirectoryError):
            return CopyResult(rel, Outcome.VANISHED)
        except OSError as exc:
            return _failed(rel, exc, False)
        try:
            try:
                before = to_filestat(os.fstat(fi))
            except OSError as exc:
                return _failed(rel, exc, False)
            if not stat.S_ISREG(before.mode):
                return CopyResult(rel, Outcome.VANISHED)
            if before.key != job.expect.key:
                return CopyResult(rel, Outcome.CHANGED, stat=before)
            try:
                if job.move_from is not None:
                    moved = self._move(job, before)
                    if moved is not None:
                        return moved
                folder = self._ensure_folders(rel)
                if folder not in self._created:  # in a folder this batch created, nothing can be there yet
                    adopted = self._adopt(job, before, fi, dst)
                    if adopted is not None:
                        return adopted
            except _Conflict:
                return CopyResult(rel, Outcome.CONFLICT, error="mount: a file is in the way of a folder")
            except OSError as exc:
                return _failed(rel, exc, True)
            return self._write(job, fi, before, folder, dst, index, staged, per_file_sync)
        finally:
            os.close(fi)

    def _write(
        self,
        job: CopyJob,
        fi: int,
        before: FileStat,
        folder: str,
        dst: str,
        index: int,
        staged: list[tuple[int, str, str, CopyResult]],
        per_file_sync: bool,
    ) -> CopyResult | None:
        rel = job.path
        self._tag += 1
        temp = folder + "/" + temp_name(rel.rpartition("/")[2], self._tag)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            try:
                fo = os.open(temp, flags, 0o600)
            except FileNotFoundError:
                # a delete pass or a move in another worker pruned the folder after we made sure of it
                self._ensure_folders(rel, fresh=True)
                fo = os.open(temp, flags, 0o600)
        except _Conflict:
            return CopyResult(rel, Outcome.CONFLICT, error="mount: a file is in the way of a folder")
        except OSError as exc:
            return _failed(rel, exc, True)
        keep = False
        try:
            try:
                count = stream(fi, fo, self.halt, before.size)
                os.fchmod(fo, stat.S_IMODE(before.mode))
                os.utime(fo, ns=(before.atime_ns, before.mtime_ns))
                if per_file_sync:
                    os.fsync(fo)
            except Halted:
                return CopyResult(rel, Outcome.FAILED, error="stopped")
            except OSError as exc:
                return _failed(rel, exc, True)
            finally:
                os.close(fo)
            line = None
            if rel.rpartition("/")[2] in self.marker_names:
                try:
                    line = first_line(fi)
                except OSError as exc:
                    return _failed(rel, exc, False)
            failpoint("copy.before_rename")  # crash tests: the temp file is complete
            if self.hook is not None:
                self.hook(rel)
            try:
                st = os.fstat(fi)  # the inode we copied (a rename over its path brings its own event)
            except OSError as exc:
                return _failed(rel, exc, False)
            if st.st_nlink == 0:
                return CopyResult(rel, Outcome.VANISHED)  # deleted while we copied it
            after = to_filestat(st)
            if not _same(before, after) or count != before.size:
                return CopyResult(rel, Outcome.CHANGED, stat=after)
            keep = True
            staged.append(
                (index, temp, dst, CopyResult(rel, Outcome.COPIED, stat=before, bytes=count, first_line=line))
            )
            return None
        finally:
            if not keep:
                unlink_quietly(temp)

    def _link_inside(self, src: str) -> bool:
        target = os.path.realpath(src)
        return target.startswith(self.real_source + "/")

    def _adopt(self, job: CopyJob, fs: FileStat, fi: int, dst: str) -> CopyResult | None:
        """The mount already holds this exact file: record it without copying."""
        try:
            have = os.lstat(dst)
        except OSError:
            return None
        if not stat.S_ISREG(have.st_mode) or have.st_size != fs.size:
            return None
        if job.confirm:
            if not same_bytes(fi, dst):
                return None
        elif have.st_mtime_ns != fs.mtime_ns:
            return None
        if stat.S_IMODE(have.st_mode) != stat.S_IMODE(fs.mode):
            os.chmod(dst, stat.S_IMODE(fs.mode))
        line = first_line(fi) if job.path.rpartition("/")[2] in self.marker_names else None
        return CopyResult(job.path, Outcome.ADOPTED, stat=fs, first_line=line)

    def _move(self, job: CopyJob, fs: FileStat) -> CopyResult | None:
        """Rename the mount's copy of `move_from` to the job's path; None when it is not there as recorded."""
        assert job.move_from is not None
        old = self.mount + "/" + job.move_from
        row = job.move_row
        try:
            have = os.lstat(old)
        except OSError:
            return None
        if row is None or not stat.S_ISREG(have.st_mode):
            return None
        recorded = row_fields(row)
        if (have.st_size, have.st_mtime_ns) != (recorded.size, recorded.mtime_ns):
            return None
        folder = self._ensure_folders(job.path)
        dst = self.mount + "/" + job.path
        try:
            try:
                os.replace(old, dst)
            except FileNotFoundError:
                self._ensure_folders(job.path, fresh=True)
                os.replace(old, dst)
        except OSError as exc:
            if exc.errno in (E.EISDIR, E.ENOTEMPTY, E.EEXIST):
                raise _Conflict from None
            raise
        if stat.S_IMODE(have.st_mode) != stat.S_IMODE(fs.mode):
            os.chmod(dst, stat.S_IMODE(fs.mode))
        moved = {folder, os.path.dirname(old)}
        prune_empty(self.mount, job.move_from.rpartition("/")[0], moved)  # the folder left empty: its parent
        self._touched |= moved
        self._moved |= moved
        line = None
        if job.path.rpartition("/")[2] in self.marker_names:
            with open(dst, "rb") as handle:  # noqa: PTH123 - a file descriptor is what first_line reads
                line = first_line(handle.fileno())
        return CopyResult(job.path, Outcome.MOVED, stat=fs, moved_from=job.move_from, first_line=line)

    def _ensure_folders(self, rel: str, *, fresh: bool = False) -> str:
        """Create the folders above `rel` inside the mount (never the mount itself); the parent's path."""
        head = rel.rpartition("/")[0]
        if not head:
            return self.mount
        target = self.mount + "/" + head
        if fresh:
            self._folders.difference_update(self.mount + "/" + f for f in [head, *parents(head)])
        elif target in self._folders:
            return target
        current = self.mount
        for part in head.split("/"):
            current = current + "/" + part
            if current in self._folders:
                continue
            try:
                os.mkdir(current)
                self._touched.add(os.path.dirname(current))
                self._created.add(current)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(current).st_mode):
                    raise _Conflict from None
            except NotADirectoryError:
                raise _Conflict from None
            self._folders.add(current)
        return target
