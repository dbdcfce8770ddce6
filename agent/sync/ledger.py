"""The engine's bookkeeping, without I/O: what is in the mount, what is pending, ready, in flight or to delete.

Observations (a fresh stat of a path, or its absence) come in with the time they were taken; copy jobs, delete
candidates and facts come out; copy and delete results go back in. The engine (engine.py) does the stats,
copies and deletes in threads and feeds this from the event loop thread only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.backoff import backoff_delay
from agent.facts import Fact, FileChanged, FileDeleted, FileSynced
from agent.sync.copier import SMALL, CopyJob, CopyResult, Outcome
from agent.sync.plan import FolderIndex, needs_confirm, row_key
from agent.sync.scan import differs, under_any
from agent.sync.settle import FileStat, Settler
from agent.sync.statedb import Row

MARKER_WAIT = 60.0
"""Seconds a marker waits at most for the other files of its folder before it is copied all the same."""


@dataclass(slots=True)
class Counters:
    copies: int = 0
    bytes: int = 0
    deletes: int = 0
    errors: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    path: str
    error: str
    attempt: int
    retry_at: float | None
    mount_side: bool
    conflict: bool = False


@dataclass(slots=True)
class Ledger:
    """State of one engine. `mirror` is False in `keep` mode (nothing is ever deleted from the mount)."""

    rows: dict[str, Row]
    settle: float
    mirror: bool
    on_fact: Callable[[Fact], None]
    retry_base: float = 0.5
    retry_cap: float = 30.0
    markers: frozenset[str] = frozenset()  # marker file names: each is copied after the rest of its folder
    under: dict[str, int] = field(default_factory=dict)  # with markers: copies queued or running, per folder above
    counted: set[str] = field(default_factory=set)  # the copies `under` counts
    settler: Settler = field(init=False)
    ready: dict[str, CopyJob] = field(default_factory=dict)
    inflight: set[str] = field(default_factory=set)
    moving: set[str] = field(default_factory=set)
    absent: dict[str, Row] = field(default_factory=dict)
    absent_keys: dict[tuple[int, int, int], str] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    restoring: dict[str, Row] = field(default_factory=dict)  # rows the mount lost, until copied again (drop_rows)
    failures: dict[str, int] = field(default_factory=dict)
    not_before: dict[str, float] = field(default_factory=dict)
    last_absent: float = 0.0
    counters: Counters = field(default_factory=Counters)
    _folders: FolderIndex | None = None

    def __post_init__(self) -> None:
        self.settler = Settler(self.settle)

    # -- observations ---------------------------------------------------------------------------------------

    def observe(self, rel: str, sig: FileStat | None, at: float, since: float | None = None) -> None:
        """A fresh stat of `rel` taken at `at` (None: not there, or not a file we sync)."""
        row = self.rows.get(rel)
        settler = self.settler
        if sig is None:
            if row is None or not self.mirror:
                if rel in self.inflight:
                    settler.observe(rel, None, at)  # looked at again when its copy comes back
                elif rel in settler:
                    self._drop(rel)
                return
            settler.observe(rel, None, at, since=since)
            self._unready(rel)
            if rel not in self.absent:
                self.absent[rel] = row
                self.absent_keys[row_key(row)] = rel
                self.last_absent = max(self.last_absent, at if since is None else min(at, since))
            return
        self._unabsent(rel)
        self.held.discard(rel)
        if row is not None and not differs(row, sig):
            if rel in settler and rel not in self.inflight:
                self._drop(rel)
            return
        old, watch = settler.note(rel, sig, at, since=since, schedule=False)
        if (old is None or old.sig is None) and not self._restoring(rel, sig):
            self.on_fact(FileChanged(rel, at))
        if rel in self.ready:
            if self.ready[rel].expect.key == sig.key:
                return
            self._unready(rel)
        if at - watch.since >= self.settle and rel not in self.inflight and rel not in self.moving:
            self._enqueue(rel, sig)
        elif watch is not old:
            settler.schedule(rel, watch.since + self.settle)

    def observe_gone_under(
        self, folder: str, at: float, seen: Iterable[str] = (), *, keep_under: Sequence[str] = ()
    ) -> None:
        """`folder` went away (or was replaced): each file under it not in `seen` is absent, whether synced,
        pending or being copied right now (a folder renamed away brings no event for its files). Files under a
        folder of `keep_under` (one the walk could not read) are not known to be gone: they stay as they are."""
        if self._folders is None:
            self._folders = FolderIndex(self.rows)
        keep = set(seen)
        prefix = folder + "/"
        tracked = [rel for rel, _ in self.settler.items() if rel.startswith(prefix)]
        for rel in [*self._folders.under(folder, list(self.rows)), *tracked]:
            if rel not in keep and not (keep_under and under_any(rel, keep_under)):
                self.observe(rel, None, at)

    def busy(self, rel: str) -> bool:
        """A copy, a delete or a move is working on `rel` right now: nothing else may start on it."""
        return rel in self.inflight or rel in self.moving

    def due(self, now: float) -> list[str]:
        """Present paths to stat again now (settle time reached, or a retry). Absent ones wait for the delete
        pass, which stats them again itself."""
        out = []
        for rel in self.settler.due(now):
            watch = self.settler.get(rel)
            if watch is not None and watch.sig is not None and not self.busy(rel) and rel not in self.ready:
                out.append(rel)
        return out

    def next_wake(self, now: float, *, deletes: bool = True) -> float | None:
        """When there will next be something to do without a new event (`deletes`: count delete passes)."""
        times = [t for t in (self.settler.next_due(),) if t is not None]
        if deletes and self.mirror:
            waits = [
                max(self.last_absent + self.settle, self.not_before.get(rel, 0.0))
                for rel in self.absent
                if rel not in self.held and rel not in self.moving
            ]
            if waits:
                times.append(min(waits))
        return min(times) if times else None

    def waiting(self) -> int:
        """Present files tracked but neither ready nor in flight (not settled yet, or waiting for a retry)."""
        return sum(
            1
            for rel, watch in self.settler.items()
            if watch.sig is not None and rel not in self.ready and rel not in self.inflight
        )

    def pending(self) -> Mapping[str, float]:
        return self.settler.pending()

    def pending_deletes(self) -> Mapping[str, float]:
        """Files gone from the source whose delete from the mount is still to come (refused ones aside) -> when
        their absence was first seen."""
        if not self.absent:
            return {}
        return {
            rel: watch.first_seen
            for rel, watch in self.settler.items()
            if watch.sig is None and rel in self.absent and rel not in self.held
        }

    def refused_deletes(self) -> Mapping[str, float]:
        """Files gone from the source whose delete the rail refused (held until the next full scan) -> when their
        absence was first seen."""
        return {
            rel: watch.first_seen
            for rel in self.held
            if (watch := self.settler.get(rel)) is not None and watch.sig is None and rel in self.absent
        }

    # -- copies ---------------------------------------------------------------------------------------------

    def _enqueue(self, rel: str, sig: FileStat) -> None:
        row = self.rows.get(rel)
        markers = self.markers
        marker = bool(markers) and rel.rpartition("/")[2] in markers
        old = self.absent_keys.get(sig.key) if row is None and self.mirror else None
        if old is not None and old not in self.moving and old not in self.inflight:
            self.ready[rel] = CopyJob(rel, sig, None, move_from=old, move_row=self.absent[old], marker=marker)
            self.moving.add(old)
        else:
            self.ready[rel] = CopyJob(rel, sig, row, confirm=needs_confirm(row, sig), marker=marker)
        if markers and rel not in self.counted:
            self.counted.add(rel)
            self._count(rel, 1)

    def take_batch(
        self, workers: int, max_files: int, max_bytes: int, *, big_ok: bool = True, now: float | None = None
    ) -> list[CopyJob]:
        """The next jobs for one worker: one big file, or up to `max_files` small ones (spread over workers).

        With `big_ok` False a big file is taken only when no small one is ready: the caller keeps some workers
        on small files while others stream big ones, so a drop of both is bounded by the larger, not the sum."""
        if not self.ready:
            return []
        target = max(1, min(max_files, math.ceil(len(self.ready) / max(1, workers))))
        batch: list[CopyJob] = []
        size = 0
        first_big: CopyJob | None = None
        for job in self.ready.values():
            if job.marker and self._marker_waits(job.path, now):
                continue
            if job.expect.size > SMALL:
                if not batch and big_ok:
                    batch.append(job)
                    break
                first_big = first_big or job
                continue
            batch.append(job)
            size += job.expect.size
            if len(batch) >= target or size >= max_bytes:
                break
        if not batch and first_big is not None:
            batch.append(first_big)
        for job in batch:
            del self.ready[job.path]
            self.inflight.add(job.path)
        return batch

    def _marker_waits(self, marker: str, now: float | None) -> bool:
        """A marker (`_SUCCESS`) goes into the mount after the other files of its folder (and below) that are
        queued or being copied: a job reading the mount that waits for the marker then finds the folder complete
        (a producer writes it last; a scan queues it last, `Pipeline._marker_last`). So do files whose copy failed
        and is retried (a full disk, a quota). Files still settling do not hold it, and none holds it longer than
        MARKER_WAIT after it was first seen: a producer that never stops writing under its folder cannot keep it
        out (nor its snapshot)."""
        if not self.under.get(marker.rpartition("/")[0]):
            return False
        watch = self.settler.get(marker)
        return now is None or watch is None or now - watch.first_seen < MARKER_WAIT

    def _count(self, rel: str, step: int) -> None:
        """Count a copy for every folder above it (a marker from the folder above its own: one beside it does
        not hold it), so a marker's wait is one look-up however many files and markers there are."""
        folder, _, name = rel.rpartition("/")
        if name in self.markers:
            if not folder:
                return
            folder = folder.rpartition("/")[0]
        under = self.under
        while True:
            left = under.get(folder, 0) + step
            if left:
                under[folder] = left
            else:
                under.pop(folder, None)
            if not folder:
                return
            folder = folder.rpartition("/")[0]

    def give_up(self, rel: str) -> None:
        """`once` stops retrying `rel`: it settles no more, nor holds its folder's marker."""
        self.settler.forget(rel)
        self._uncount(rel)

    def _uncount(self, rel: str) -> None:
        if rel in self.counted:
            self.counted.discard(rel)
            self._count(rel, -1)

    def release(self, jobs: Iterable[CopyJob]) -> None:
        """Jobs that never ran (the engine stopped): forget they were in flight; `due()` hands them out again."""
        for job in jobs:
            self.inflight.discard(job.path)
            self._uncount(job.path)
            if job.path in self.settler:
                self.settler.schedule(job.path, 0.0)
            if job.move_from is not None:
                self.moving.discard(job.move_from)

    def apply(self, jobs: list[CopyJob], results: list[CopyResult], now: float) -> list[Failure]:
        """Copy results (already recorded in the DB when done). Returns the failures, retries scheduled."""
        failures: list[Failure] = []
        for job, result in zip(jobs, results, strict=True):
            rel = job.path
            self.inflight.discard(rel)
            self._uncount(rel)
            if job.move_from is not None:
                self.moving.discard(job.move_from)
                if result.moved_from is None:
                    self._settle_again_or_forget(job.move_from, keep=True)
            if result.done and result.row is not None and result.stat is not None:
                self._synced(rel, result, now)
            elif result.outcome is Outcome.CHANGED:
                self.observe(rel, result.stat, now)
                self.settler.schedule(rel, now + max(self.settle, 0.05))
            elif result.outcome is Outcome.VANISHED:
                self.settler.schedule(rel, now)  # stat it again: it may be back already (a newer event)
            elif result.error == "stopped":
                continue
            else:
                failure = self._failed(rel, result, now)
                watch = self.settler.get(rel)
                coming = failure.retry_at is not None and watch is not None and watch.sig is not None
                if coming and self.markers and result.mount_side and not failure.conflict:
                    self.counted.add(rel)  # a full disk, a quota: still to come, it holds its folder's marker
                    self._count(rel, 1)
                failures.append(failure)
        return failures

    def _synced(self, rel: str, result: CopyResult, now: float) -> None:
        row = result.row
        stat = result.stat
        assert row is not None and stat is not None
        had_row = rel in self.rows
        if result.moved_from is not None:
            old = result.moved_from
            self._forget_row(old)
            self._unabsent(old)
            self._settle_again_or_forget(old)
            self.on_fact(FileDeleted(old, now, moved_to=rel))
        self.rows[rel] = row
        if self._folders is not None:
            self._folders.add(rel)
        self.failures.pop(rel, None)
        self.counters.copies += 1
        self.counters.bytes += result.bytes
        # found: the bytes were there and the agent had no record of them (a claimed intent of a killed agent has
        # a row: its file is the agent's own work, and its facts, a marker's trigger among them, come now)
        found = result.outcome is Outcome.ADOPTED and not had_row
        restored = self._restoring(rel, stat)  # copied again, unchanged, after the mount lost it
        self.restoring.pop(rel, None)
        self.on_fact(
            FileSynced(
                rel, stat.size, now, result.first_line, moved_from=result.moved_from, adopted=found, restored=restored
            )
        )
        watch = self.settler.get(rel)
        if watch is None or (watch.sig is not None and not differs(row, watch.sig)):
            self.settler.forget(rel)
        elif watch.sig is None:
            self.settler.forget(rel)  # it left the source while we copied: now a synced file that is absent
            self.observe(rel, None, watch.since)
        else:
            self.settler.schedule(rel, watch.since + self.settle)  # it changed again while we copied

    def _failed(self, rel: str, result: CopyResult, now: float) -> Failure:
        attempt = self.failures.get(rel, 0) + 1
        self.failures[rel] = attempt
        error = result.error or result.outcome.value
        self.counters.errors += 1
        self.counters.last_error = f"{rel}: {error}"
        retry_at = None
        if rel in self.settler:
            retry_at = now + backoff_delay(attempt, base=self.retry_base, cap=self.retry_cap)
            self.settler.schedule(rel, retry_at)
        return Failure(rel, error, attempt, retry_at, result.mount_side, result.outcome is Outcome.CONFLICT)

    # -- deletes --------------------------------------------------------------------------------------------

    def deletable(self, now: float) -> list[str]:
        """Absent files ready for a delete pass: settled, and no new absence for `settle` (a storm is one pass)."""
        if not self.mirror or now - self.last_absent < self.settle:
            return []
        return [
            rel
            for rel in self.absent
            if rel not in self.held
            and rel not in self.moving
            and self.not_before.get(rel, 0.0) <= now
            and self.settler.is_settled(rel, now)
        ]

    def start_deletes(self, paths: Iterable[str]) -> None:
        """A delete pass is about to remove these: they are busy until `apply_deletes`."""
        self.inflight.update(paths)

    def refuse(self, paths: Iterable[str]) -> None:
        """The rail refused these deletes: hold them until the next full scan judges them again."""
        self.held.update(paths)

    def apply_deletes(self, results: Iterable[tuple[str, str | None]], now: float) -> list[Failure]:
        failures: list[Failure] = []
        for rel, error in results:
            self.inflight.discard(rel)
            if error is None:
                self._forget_row(rel)
                self._unabsent(rel)
                self._settle_again_or_forget(rel)
                self.not_before.pop(rel, None)
                self.counters.deletes += 1
                self.on_fact(FileDeleted(rel, now))
            else:
                failure = self._failed(rel, CopyResult(rel, Outcome.FAILED, error=error, mount_side=True), now)
                if failure.retry_at is not None:
                    self.not_before[rel] = failure.retry_at
                failures.append(failure)
        return failures

    def claim(self, rows: Mapping[str, Row]) -> None:
        """Files a killed agent renamed into the mount but never recorded: the agent's own from now on."""
        for rel, row in rows.items():
            if rel not in self.rows and self._folders is not None:
                self._folders.add(rel)
            self.rows[rel] = row

    def drop_rows(self, paths: Iterable[str]) -> None:
        """The mount no longer holds these files as recorded: forget the rows (a rescan copies them again). Each
        is `restoring` until then: copied again unchanged, it is no new data (no FileChanged; FileSynced
        `restored`)."""
        for rel in paths:
            row = self.rows.get(rel)
            if row is not None:
                self.restoring[rel] = row
            self._forget_row(rel)
            self._unabsent(rel)
            if rel not in self.inflight:
                self.settler.forget(rel)
                self._unready(rel)

    # -- helpers --------------------------------------------------------------------------------------------

    def _restoring(self, rel: str, sig: FileStat) -> bool:
        """`rel` is being copied again, unchanged, after the mount lost it (`drop_rows`)."""
        row = self.restoring.get(rel)
        return row is not None and not differs(row, sig)

    def _forget_row(self, rel: str) -> None:
        if self.rows.pop(rel, None) is not None and self._folders is not None:
            self._folders.remove(rel)
        self.failures.pop(rel, None)

    def _unabsent(self, rel: str) -> None:
        self.not_before.pop(rel, None)
        row = self.absent.pop(rel, None)
        if row is not None:
            key = row_key(row)
            if self.absent_keys.get(key) == rel:
                del self.absent_keys[key]

    def _settle_again_or_forget(self, rel: str, *, keep: bool = False) -> None:
        """A delete or move of `rel` finished; if `rel` came back in the source meanwhile, it is copied anew.
        `keep`: leave an absent watch alone (the move did not happen, the delete is still to do)."""
        watch = self.settler.get(rel)
        if watch is None or watch.sig is None:
            if not keep:
                self.settler.forget(rel)
        else:
            self.settler.schedule(rel, watch.since + self.settle)

    def _unready(self, rel: str) -> None:
        """Take a queued job back (its file changed or left); a move gives its old path back to the deletes."""
        job = self.ready.pop(rel, None)
        self._uncount(rel)
        if job is not None and job.move_from is not None:
            self.moving.discard(job.move_from)

    def _drop(self, rel: str) -> None:
        self.restoring.pop(rel, None)
        self.settler.forget(rel)
        self._unready(rel)
        self._unabsent(rel)
        self.failures.pop(rel, None)
