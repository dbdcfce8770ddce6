"""SyncEngine: watch the source, settle, copy atomically into the mount, delete what left, never lose a file.

Two ways to run it:

* `await engine.run()`: the daemon. Watches the source (watchfiles), scans it fully at start, every
  `source.rescan` and after every 1,000 events (inotify can overflow silently in a storm), stats each changed
  path again when its settle time comes, copies complete files in batches on `copy_workers` threads, and
  applies deletes in passes. Until cancelled.
* `await engine.sync_once()`: burst mode. One full scan, wait for what is still being written to settle
  (polling at settle/4), copy everything, apply the deletes, return a `SyncReport`.

All bookkeeping lives in `Ledger` and is touched from the event loop thread only; stats, copies, deletes and
the state DB run in worker threads (the shared steps are in pipeline.py). Facts go to `on_fact` from the event
loop thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from agent.backoff import backoff_delay
from agent.errors import SourceError, StateError
from agent.logs import get_logger
from agent.sync.flushmark import FLUSH_EVERY, FLUSH_RETRY, MARK_NAME, FlushMark
from agent.sync.mount import mount_problem, read_record, stale_rows
from agent.sync.pipeline import CLEAN_MARKER, IDLE_WAKE, LARGE_BATCH, STORM_QUIET, Pipeline, unknown_because
from agent.sync.plan import Plan, plan_sync
from agent.sync.scan import ScanResult
from agent.sync.statedb import StateDB

log = get_logger("agent.sync")


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What `sync_once` did. `copied` counts files brought in sync (copied, moved, or found already there)."""

    copied: int
    bytes: int
    deleted: int
    skipped: int
    failed: tuple[tuple[str, str], ...]
    refused_delete: bool
    mount_problem: str | None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.refused_delete and self.mount_problem is None


class SyncEngine(Pipeline):
    """See the module docstring. Knobs after `*` exist so tests run fast; the defaults suit production."""

    # -- public API -----------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._scanned and self._mount_problem is None

    def pending(self) -> Mapping[str, float]:
        """relpath -> first time a not-yet-synced change to it was seen (epoch seconds)."""
        return self._ledger.pending()

    def pending_deletes(self) -> Mapping[str, float]:
        """relpath -> first time its absence from the source was seen, for files still to delete from the mount
        (mirror mode; deletes refused by max_delete aside)."""
        return self._ledger.pending_deletes()

    @property
    def last_scan_at(self) -> float | None:
        """When the last full scan that completed started (epoch seconds), or None before the first."""
        return self._last_scan_at

    @property
    def source_problem(self) -> str | None:
        """Why the source cannot be read now (unmounted, unreadable), or None; as in `status()`, without its cost."""
        return self._source_problem

    @property
    def last_error(self) -> str | None:
        """The last copy error while a file still fails, or None; as in `status()`, without its cost."""
        return self._ledger.counters.last_error if self._ledger.failures else None

    def refused_deletes(self) -> Mapping[str, float]:
        """relpath -> first time its absence was seen, for files whose delete max_delete refused."""
        return self._ledger.refused_deletes()

    def idle(self) -> bool:
        """Nothing pending, queued, in flight or waiting to be deleted (deletes held by the rail aside)."""
        ledger = self._ledger
        return (
            not ledger.settler.pending()
            and not ledger.ready
            and not ledger.inflight
            and not (set(ledger.absent) - ledger.held)
        )

    def status(self) -> dict[str, Any]:
        c = self._ledger.counters
        return {
            "ready": self.ready,
            "last_scan_at": self._last_scan_at,
            "last_scan_files": self._last_scan_files,
            "pending": len(self._ledger.pending()),
            "in_flight": len(self._ledger.inflight),
            "mount_ok": self._mount_problem is None,
            "mount_problem": self._mount_problem,
            "source_problem": self._source_problem,
            "mount_files": len(self._ledger.rows),
            "copies": c.copies,
            "bytes": c.bytes,
            "deletes": c.deletes,
            "delete_refused": len(self._ledger.held),
            "errors": c.errors,
            "last_error": self.last_error,
        }

    @contextlib.asynccontextmanager
    async def fence(self, poll: float = 0.05, *, flush: bool = True) -> AsyncIterator[None]:
        """Inside, no copy and no delete runs: batches and delete passes wait to start, the running ones finish
        first. A snapshot is taken inside, so it never holds a copy's temp file (a half-written file), a batch half
        renamed into place, or misses files deleted while Domino was still taking it (a folder removed right after
        its marker). With `flush`, the copies are on disk first (flushmark.py): the fence waits while the mount is
        away or unchecked after a crash of the host, and while a failed flush's files are copied again."""
        self._fenced += 1
        try:
            while flush:
                while self._running or self._busy:  # noqa: ASYNC110 - they end in worker threads; a poll is the simple wait
                    await anyio.sleep(poll)
                if await self._flush("snapshot") and self._recopied():  # what the snapshot holds is on disk
                    break
                # the mount is away or unchecked after a crash, or a flush failed: the fence lifts while what it
                # dropped is copied again, and the snapshot waits
                self._fenced -= 1
                self._poke()
                try:
                    await anyio.sleep(FLUSH_RETRY)
                finally:
                    self._fenced += 1
            if self._mount_problem is None:
                await self._clear_temps()  # a copy that failed on the mount's side may have left one: not in a snapshot
            yield
        finally:
            self._fenced -= 1
            self._poke()

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Close the state DB; note that no temp file of ours is left in the mount, when that is known."""
        if self._early_scan is not None:
            self._early_scan.close()
            self._early_scan = None
        if self._db is None:
            return
        if self._lost_gone:  # lost rows whose file left the source: not loaded as `restoring` again
            with contextlib.suppress(StateError):
                self._db.record(found=self._lost_gone)
            self._lost_gone = []
        if self._temps_clear and not self._batches.temps_left and self._busy == 0:
            try:
                marker = self._state_dir / CLEAN_MARKER
                marker.write_bytes(b"")
            except OSError:
                pass
        self._db.close()
        self._db = None

    async def plan(self) -> Plan:
        """What `sync_once` would do now, without doing it (no write to the mount, the DB or the source)."""
        if self._db is not None:
            rows = self._ledger.rows
        elif (self._state_dir / "state.db").exists():
            db = await anyio.to_thread.run_sync(lambda: StateDB(self._state_dir / "state.db", read_only=True))
            try:
                rows = await anyio.to_thread.run_sync(lambda: db.load(image=False))  # a dry run writes nothing
            finally:
                db.close()
        else:
            rows = {}
        opened, recorded = self._db is not None, self._mount_record

        def look() -> str | None:
            remembered = recorded if opened else read_record(self._state_dir)
            return mount_problem(self._mount, probe=False, recorded=remembered)

        problem = await anyio.to_thread.run_sync(look)
        if problem is None and not opened and (self._state_dir / MARK_NAME).exists():
            mark = await anyio.to_thread.run_sync(FlushMark, self._state_dir, self._mount)
            if mark.crashed:  # what the check after a crash of the host would copy again
                torn = set(await anyio.to_thread.run_sync(stale_rows, self._mount, rows, len(rows)))
                rows = {rel: row for rel, row in rows.items() if rel not in torn}
        if self.source.create and not os.path.lexists(self._root):
            scan = ScanResult()  # the agent makes it at start: an empty source, nothing to copy yet
        else:
            scan = await anyio.to_thread.run_sync(self._walker.scan, rows)
        now = self._clock()
        settle = self.source.settle
        settled = [rel for rel, fs in scan.changed.items() if now - fs.ctime_ns / 1e9 >= settle]
        plan = plan_sync(
            scan.changed,
            self._walker.missing(scan, rows),
            rows,
            delete=self.source.delete,
            max_delete=self.source.max_delete,
            settled=settled,
            skipped=scan.skipped,
        )
        return dataclasses.replace(plan, mount_problem=problem)

    # -- burst mode -----------------------------------------------------------------------------------------

    async def sync_once(self) -> SyncReport:
        """Full scan, wait for everything to settle, copy it all, apply the deletes, report."""
        self._prepare()
        self._burst = True
        await self._open()
        start_copies, start_bytes, start_deletes = (
            self._ledger.counters.copies,
            self._ledger.counters.bytes,
            self._ledger.counters.deletes,
        )
        problem = await self._check_mount(probe=True)
        if problem is not None:
            return self._report(0, problem, start_copies, start_bytes, start_deletes)
        started = self._clock()
        early, self._early_scan = self._early_scan, None
        try:
            scan = None
            if early is not None:  # `once`'s walk, started before the agent was assembled, when it still holds
                scan = await anyio.to_thread.run_sync(early.take, self._walker, self._ledger.rows, started)
                started = early.started if scan is not None else started
            if scan is None:
                scan = await anyio.to_thread.run_sync(self._walker.scan, self._ledger.rows)
        except SourceError as exc:
            self._final[""] = str(exc)
            log.error("sync.source_unavailable", error=str(exc))
            return self._report(0, None, start_copies, start_bytes, start_deletes)
        deadline = started + self._once_settle_limit
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await self._feed_scan(scan, started)
            self._last_scan_at, self._last_scan_files = started, scan.files  # the progress bar's total is known
            await self._burst_copies(deadline)
            if self._mount_problem is None and self._ledger.mirror:
                await self._delete_pass(self._clock(), burst=True)
                if self._conflicts and self._mount_problem is None:
                    looked = sorted(self._conflicts)
                    for rel in looked:
                        self._final.pop(rel, None)
                    states, sub = await self._stat(looked)
                    self._conflicts.clear()
                    self._note_unreadable(sub)
                    now = self._clock()
                    for rel in looked:
                        if rel not in states:  # its folder turned unreadable: reported, not forgotten
                            self._final[rel] = unknown_because(rel, sub)
                    for rel, fs in states.items():
                        self._ledger.observe(rel, fs, now, since=now - self.source.settle)
                    await self._burst_copies(deadline)
            self._tg = None
        for rel in self._conflicts:
            self._final.setdefault(rel, "a file or folder in the mount is in the way")
        report = self._report(len(scan.skipped), self._mount_problem, start_copies, start_bytes, start_deletes)
        log.info(
            "sync.once_done",
            copied=report.copied,
            bytes=report.bytes,
            deleted=report.deleted,
            failed=len(report.failed),
            refused_delete=report.refused_delete,
            ms=int((self._clock() - started) * 1000),
        )
        return report

    async def _burst_copies(self, deadline: float) -> None:
        ledger = self._ledger
        poll = max(0.01, self.source.settle / 4)
        while True:
            wake = self._wake = anyio.Event()
            due = ledger.due(self._clock())
            if due:
                await self._confirm(due)
            if self._mount_recheck:
                await self._check_mount(probe=True)
            if self._mount_problem is not None:
                if self._running == 0:
                    return
            else:
                self._start_batches()
            if self._running == 0 and not ledger.ready:
                waiting = ledger.waiting()
                if waiting == 0:
                    return
                if self._clock() >= deadline:
                    for rel, watch in list(ledger.settler.items()):
                        if watch.sig is not None and rel not in ledger.inflight:
                            self._final[rel] = "still changing when the settle limit ran out"
                            ledger.settler.forget(rel)
                    return
            with anyio.move_on_after(poll if self._running == 0 else 1.0):
                await wake.wait()

    def _report(self, skipped: int, problem: str | None, copies: int, nbytes: int, deletes: int) -> SyncReport:
        c = self._ledger.counters
        return SyncReport(
            copied=c.copies - copies,
            bytes=c.bytes - nbytes,
            deleted=c.deletes - deletes,
            skipped=skipped,
            failed=tuple(sorted(self._final.items())),
            refused_delete=self._refused,
            mount_problem=problem,
        )

    # -- daemon mode ----------------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch, settle, copy and delete until cancelled; `task_status.started()` after the first full scan."""
        self._prepare()
        self._burst = False
        await self._open()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._stopper)
            tg.start_soon(self._watch_loop)
            await self._check_mount(probe=True)
            await self._full_scan()
            task_status.started()
            tg.start_soon(self._mount_loop)
            tg.start_soon(self._scan_loop)
            tg.start_soon(self._flush_loop)
            await self._drive()

    async def finish(self, poll: float = 0.05) -> bool:
        """Daemon mode, before a stop: one more full scan, then wait until everything found is in the mount (and
        what left it deleted). True when nothing is left; False at once when the mount or the source is
        unavailable, or when all that is left are files whose copy keeps failing (they wait for the next start).
        Files still being written settle as usual first: the caller bounds the wait."""
        asked = self._clock()
        self.request_scan()
        while True:
            if self._mount_problem is not None or self._source_problem is not None:
                return False
            if self._last_scan_at is not None and self._last_scan_at >= asked and not self._running:
                ledger = self._ledger
                left = set(ledger.pending()) | set(ledger.ready) | ledger.inflight | (set(ledger.absent) - ledger.held)
                if not left:
                    return True
                if left <= set(ledger.failures):
                    return False
            await anyio.sleep(poll)

    async def _stopper(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            self._batches.copies.stop()  # sets _halt: copies under way stop (forked ones are killed)
            if self._stop is not None:
                self._stop.set()
            if self._watch_stop is not None:
                self._watch_stop.set()

    async def _drive(self) -> None:
        ledger = self._ledger
        while True:
            wake = self._wake = anyio.Event()
            if self._dirty:
                await self._process_events()
            due = ledger.due(self._clock())
            if due:
                await self._confirm(due)
            now = self._clock()
            if self._mount_problem is None:
                if ledger.mirror and ledger.absent and not self._fenced:
                    await self._delete_pass(now, burst=False)
                self._start_batches()
            next_at = ledger.next_wake(now, deletes=self._mount_problem is None and not self._fenced)
            delay = IDLE_WAKE if next_at is None else min(IDLE_WAKE, max(0.005, next_at - self._clock()))
            if not self._dirty:
                with anyio.move_on_after(delay):
                    await wake.wait()

    async def snapshot_blocker(self) -> str | None:
        """`once`, before its snapshots: None once every copy is flushed to disk (now), else why no snapshot may
        be taken in this run (the fence would wait for what only the daemon does: a check, copies again)."""
        if await self._flush("snapshot") and self._recopied():
            return None
        mark = self._flush_mark
        if mark is not None and mark.crashed:
            return "the host went down with copies not flushed, and the mount could not be checked since"
        if self._mount_problem is not None:
            return f"the copies cannot be flushed to disk: {self._mount_problem}"
        return "a flush of the mount failed: the copies made since the last good one are to be made again"

    async def flush(self) -> None:
        """Daemon mode, at a stop (often before a shutdown): the copies are flushed to disk (flushmark.py). `once`
        leaves them to the kernel, as rsync and cp do; the mark catches a crash of the host."""
        await self._flush("stop")

    async def _flush_loop(self) -> None:
        """Flush the mount once the copies have been quiet for `idle_flush` seconds, and at least every
        `FLUSH_EVERY` seconds while they go on (flushmark.py)."""
        while True:
            await anyio.sleep(self._idle_flush)
            mark = self._flush_mark
            now = time.monotonic()
            quiet = not self._running and now - self._copies_ended >= self._idle_flush
            if mark is not None and mark.marked and (quiet or now - self._flushed_at >= FLUSH_EVERY):
                await self._flush("idle")

    async def _watch_loop(self) -> None:
        assert self._stop is not None
        attempt = 0
        while not self._stop.is_set():
            self._watch_stop = stop = anyio.Event()
            try:
                async for batch in self._watcher_factory(self._root, stop):
                    attempt = 0
                    self._dirty |= batch
                    self._events_since_scan += len(batch)
                    self._last_event = time.monotonic()
                    if self._events_since_scan >= LARGE_BATCH and not self._scan_requested:
                        self.request_scan()  # inotify may have overflowed in a storm: trust a full scan
                        self._storm = True  # ...and once more when it is over (lost events are not counted)
                    self._poke()
            except Exception as exc:
                log.warning("sync.watch_failed", error=f"{exc.__class__.__name__}: {exc}")
            if self._stop.is_set():
                return
            if self._rewatch:
                self._rewatch = False
                continue
            attempt += 1
            self.request_scan()  # events may have been missed while the watcher was down
            await anyio.sleep(backoff_delay(attempt, base=0.5, cap=10.0))

    async def _scan_loop(self) -> None:
        last = time.monotonic()
        failures = 0
        while True:
            interval = self.source.rescan if failures == 0 else backoff_delay(failures, base=0.5, cap=5.0)
            while not self._scan_requested and time.monotonic() - last < interval:
                now = time.monotonic()
                if self._storm and now - self._last_event >= STORM_QUIET:
                    self._storm = False
                    break
                # woken at once by request_scan() from the loop; polls the flag each second for other threads
                wait = min(1.0, interval - (now - last))
                if self._storm:
                    wait = min(wait, self._last_event + STORM_QUIET - now)
                self._scan_wake = anyio.Event()
                with anyio.move_on_after(max(0.01, wait)):
                    await self._scan_wake.wait()
            self._scan_requested = False
            last = time.monotonic()
            failures = 0 if await self._full_scan() else failures + 1

    async def _mount_loop(self) -> None:
        attempt = 0
        while True:
            if self._mount_problem is None:
                if not self._mount_recheck:
                    self._mount_wake = anyio.Event()
                    with anyio.move_on_after(self._mount_poll):
                        await self._mount_wake.wait()
                probe = self._mount_recheck
            else:
                attempt += 1
                await anyio.sleep(backoff_delay(attempt, base=0.2, cap=self._mount_retry_cap))
                probe = True
            problem = await self._check_mount(probe=probe)
            if problem is None:
                attempt = 0

    # -- shared steps ---------------------------------------------------------------------------------------
