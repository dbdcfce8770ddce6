"""A copy batch's work in a worker thread (the pipeline runs one per batch, up to `copy_workers` at once):
record the batch's intents, copy it (in a forked process when it is big enough, copyfork.py), recover a forked
copy that gave no answer, then record what is done and clear the intents, in one transaction.

Crash safety rests on the order: the intents are durable before any rename, the rows are written after the
renames (after they are durable, with `dataset.durability: batch`); a kill anywhere in between leaves intents
that the next start claims (statedb.py). With the default `snapshot` durability the batch first puts the
`unflushed` mark on disk, so a crash of the host before the kernel wrote the copies back is caught at the next
start (flushmark.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection

from agent.errors import StateError
from agent.failpoints import failpoint
from agent.logs import get_logger
from agent.sync.copier import Copier, CopyJob, CopyResult, Outcome
from agent.sync.copyfork import CopyForks
from agent.sync.flushmark import FlushMark
from agent.sync.mount import claimed_rows
from agent.sync.mountfs import mount_inodes, prune_empty, remove_temps_of, syncfs
from agent.sync.statedb import Row, StateDB, make_row

log = get_logger("agent.sync")

UNMOUNTED = "mount: no longer a mount point (unmounted?)"

Outcomes = tuple[list[CopyResult], dict[str, Row]]
"""A batch's results, in job order, and the rows claimed for a lost forked copy's files."""


class BatchCopier:
    """Copies batches into the mount and records them in the state DB; `copies.stop()` halts them."""

    def __init__(
        self,
        root: str,
        mount: str,
        halt: threading.Event,
        *,
        marker_names: Collection[str] = (),
        hook: Callable[[str], None] | None = None,
        mount_gone: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
        flush_mark: FlushMark | None = None,
    ) -> None:
        self.root = root
        self.mount = mount
        self.halt = halt
        self.marker_names = marker_names
        self.hook = hook
        self.mount_gone = mount_gone  # checked before every write: the mount point was unmounted
        self.clock = clock
        self.flush_mark = flush_mark  # None: every batch is durable before it counts (`dataset.durability: batch`)
        self.copies = CopyForks(halt)  # big batches copy in forked processes
        self.temps_left = False  # a lost forked copy's temp files could not all be removed: no clean marker

    def run(self, db: StateDB | None, jobs: list[CopyJob]) -> Outcomes:
        """Record the batch's intents, copy it, then record what is done and clear the intents in one
        transaction. Also returns the rows claimed for a lost forked copy (`_recover`)."""
        if self.mount_gone():
            return [CopyResult(j.path, Outcome.FAILED, error=UNMOUNTED, mount_side=True) for j in jobs], {}
        mark = self.flush_mark
        if mark is not None:
            try:  # on disk before any write to the mount: a crash of the host is then caught at the next start
                mark.begin()
            except StateError as exc:
                return [CopyResult(j.path, Outcome.FAILED, error=str(exc)) for j in jobs], {}
        try:
            return self._copy(db, jobs)
        finally:
            if mark is not None:
                mark.end()

    def _copy(self, db: StateDB | None, jobs: list[CopyJob]) -> Outcomes:
        intents = {j.path: make_row(j.expect.size, j.expect.mtime_ns, j.expect.ino, j.expect.mode) for j in jobs}
        if db is not None:
            try:  # one durable transaction per batch, before any rename: a crash cannot orphan a file
                db.intend(intents.items())
            except StateError as exc:
                return [CopyResult(j.path, Outcome.FAILED, error=str(exc)) for j in jobs], {}
        claimed: dict[str, Row] = {}
        copier = self._copier()
        tags = copier.temp_tags(len(jobs))
        present = mount_inodes(self.mount, intents) if self.copies.forks(copier, jobs) else {}  # before a child
        results = self.copies.run(copier, jobs)
        if results is None:
            results, claimed = self._recover(jobs, intents, tags, present)
        failpoint("copy.after_rename")  # crash tests: renamed into the mount, not yet in the state DB
        if db is None:
            return results, claimed
        done = [r for r in results if r.done]
        try:
            db.record(
                put=[*claimed.items(), *((r.path, row) for r in done if (row := r.row) is not None)],
                drop=[r.moved_from for r in done if r.moved_from is not None],
                at=self.clock(),
                done=[j.path for j in jobs],
            )
        except StateError as exc:  # the intents stay: the next start claims what is in the mount
            return [CopyResult(r.path, Outcome.FAILED, error=str(exc)) if r.done else r for r in results], {}
        return results, claimed

    def _copier(self) -> Copier:
        durable = self.flush_mark is None
        return Copier(
            self.root, self.mount, marker_names=self.marker_names, hook=self.hook, halt=self.halt, durable=durable
        )

    def _recover(self, jobs: list[CopyJob], intents: dict[str, Row], tags: range, present: dict[str, int]) -> Outcomes:
        """A forked copy gave no answer (copyfork.py; killed by a stop, by the OOM killer). As after a crash: its
        temp files go (those with its temp tags), and the files it renamed into the mount (a new inode at the
        path since the batch began: not one it found there and adopted) are claimed from the intents, rows with
        inode 0 (a scan compares them with the source, or deletes them in mirror mode when the source lost
        them). Unless the engine is stopping, the batch is then copied here, where those files are found and
        adopted."""
        if not remove_temps_of(self.mount, intents, tags):
            self.temps_left = True  # no clean marker at close: the next start sweeps the whole mount
        now_present = mount_inodes(self.mount, intents)
        renamed = {rel: row for rel, row in intents.items() if now_present.get(rel, 0) != present.get(rel, 0)}
        claimed = claimed_rows(self.mount, renamed)
        stopping = self.halt.is_set()
        log.warning("sync.copy_process_lost", files=len(jobs), in_mount=len(claimed), stopping=stopping)
        if stopping:
            for job in jobs:  # folders the child made for files it never renamed
                if job.path not in claimed and "/" in job.path:
                    prune_empty(self.mount, job.path.rpartition("/")[0])
            return [CopyResult(j.path, Outcome.FAILED, error="stopped") for j in jobs], claimed
        failed: str | None = None
        errno: int | None = None
        if self.mount_gone():
            failed = UNMOUNTED
        else:
            try:
                if claimed:
                    syncfs(self.mount)  # the child may have died between its renames and its barrier
            except OSError as exc:  # claimed only (compared byte for byte by a later scan); the batch is retried
                failed, errno = f"mount: {exc.strerror or exc.__class__.__name__}", exc.errno
        if failed is None:
            return self._copier().run(jobs), claimed
        return [CopyResult(j.path, Outcome.FAILED, error=failed, errno=errno, mount_side=True) for j in jobs], claimed
