# String paths and os.* calls on purpose: a Path object per file costs too much on 100k-file trees.
# ruff: noqa: PTH100
"""SyncEngine: watch the source, settle, copy atomically into the mount, delete what left, never lose a file.

Two ways to run it:

* `await engine.run()`: the daemon. Watches the source (watchfiles), scans it fully at start, every
  `source.rescan` and after every 1,000 events (inotify can overflow silently in a storm), stats each changed
  path again when its settle time comes, copies complete files in batches on `copy_workers` threads, and
  applies deletes in passes. Until cancelled.
* `await engine.sync_once()`: burst mode. One full scan, wait for what is still being written to settle
  (polling at settle/4), copy everything, apply the deletes, return a `SyncReport`.

All bookkeeping lives in `Ledger` and is touched from the event loop thread only; stats, copies, deletes and
the state DB run in worker threads. Facts go to `on_fact` from the event loop thread.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from agent.backoff import backoff_delay
from agent.config import SourceConfig
from agent.errors import SourceError, StateError
from agent.facts import Fact
from agent.failpoints import failpoint
from agent.logs import get_logger
from agent.sync.copier import Copier, CopyJob, CopyResult, Outcome, delete_files, remove_temps
from agent.sync.ledger import Failure, Ledger
from agent.sync.mount import mount_problem, stale_rows
from agent.sync.plan import Plan, delete_allowed, plan_sync
from agent.sync.scan import IgnoreMatcher, ScanResult, Walker, under_any
from agent.sync.statedb import StateDB
from agent.sync.watcher import WatcherFactory, watchfiles_changes

log = get_logger("agent.sync")

LARGE_BATCH = 1000  # events since the last full scan that call for another (inotify may overflow)
STORM_QUIET = 1.0  # seconds without events after such a storm before the closing full scan
IDLE_WAKE = 5.0  # the driver sleeps at most this long when nothing is due (events and results wake it)
CLEAN_MARKER = "sync.clean"


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


def _in_loop_thread() -> bool:
    try:
        anyio.get_current_task()
    except RuntimeError:
        return False
    return True


def _ignore_fact(fact: Fact) -> None:
    return None


def _inside(path: Path, root: str) -> str | None:
    """`path` relative to `root` when it lies inside it (the agent's own state, or the mount), else None."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real.startswith(real_root + "/"):
        return real[len(real_root) + 1 :]
    return None


class SyncEngine:
    """See the module docstring. Knobs after `*` exist so tests run fast; the defaults suit production."""

    def __init__(
        self,
        source: SourceConfig,
        mount: Path,
        state_dir: Path,
        *,
        on_fact: Callable[[Fact], None] = _ignore_fact,
        marker_names: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.time,
        watcher_factory: WatcherFactory | None = None,
        copy_hook: Callable[[str], None] | None = None,
        batch_files: int = 1024,
        batch_bytes: int = 64 << 20,
        retry_cap: float = 30.0,
        mount_retry_cap: float = 5.0,
        mount_poll: float = 2.0,
        once_attempts: int = 3,
        once_settle_limit: float | None = None,
    ) -> None:
        self.source = source
        self._root = os.path.abspath(source.path)
        self._mount = os.path.abspath(mount)
        self._state_dir = Path(state_dir)
        prune = [rel for rel in (_inside(self._state_dir, self._root), _inside(Path(mount), self._root)) if rel]
        self._walker = Walker(self._root, IgnoreMatcher(source.ignore), prune)
        self._on_fact = on_fact
        self._marker_names = marker_names
        self._clock = clock
        self._watcher_factory: WatcherFactory = watcher_factory or watchfiles_changes
        self._copy_hook = copy_hook
        self._batch_files = batch_files
        self._batch_bytes = batch_bytes
        self._mount_retry_cap = mount_retry_cap
        self._mount_poll = mount_poll
        self._once_attempts = once_attempts
        self._once_settle_limit = once_settle_limit if once_settle_limit is not None else max(30.0, 5 * source.settle)
        self._ledger = Ledger({}, source.settle, source.delete == "mirror", self._emit, retry_cap=retry_cap)
        self._db: StateDB | None = None
        self._halt = threading.Event()
        self._busy = 0
        self._temps_clear = False
        self._scanned = False
        self._scan_requested = False
        self._mount_problem: str | None = "not checked yet"
        self._mount_recheck = False
        self._source_problem: str | None = None
        self._last_scan_at: float | None = None
        self._last_scan_files: int | None = None
        self._dirty: set[str] = set()
        self._logged_skips: set[str] = set()
        self._running = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._wake: anyio.Event | None = None
        self._stop: anyio.Event | None = None
        self._scan_wake: anyio.Event | None = None
        self._mount_wake: anyio.Event | None = None
        self._watch_stop: anyio.Event | None = None
        self._rewatch = False
        self._events_since_scan = 0
        self._last_event = 0.0
        self._storm = False
        self._limiter: anyio.CapacityLimiter | None = None
        self._burst = False
        self._final: dict[str, str] = {}
        self._conflicts: set[str] = set()
        self._refused = False

    # -- public API -----------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._scanned and self._mount_problem is None

    def pending(self) -> Mapping[str, float]:
        """relpath -> first time a not-yet-synced change to it was seen (epoch seconds)."""
        return self._ledger.pending()

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
            "last_error": c.last_error,
        }

    def request_scan(self) -> None:
        """Ask for a full scan soon. From the event loop it starts at once; from another thread the flag is
        seen within a second."""
        self._scan_requested = True
        if self._scan_wake is not None and _in_loop_thread():
            self._scan_wake.set()

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Close the state DB; note that no temp file of ours is left in the mount, when that is known."""
        if self._db is None:
            return
        if self._temps_clear and self._busy == 0:
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
            db = await anyio.to_thread.run_sync(StateDB, self._state_dir / "state.db")
            try:
                rows = await anyio.to_thread.run_sync(db.load)
            finally:
                db.close()
        else:
            rows = {}
        problem = await anyio.to_thread.run_sync(lambda: mount_problem(self._mount, probe=False))
        scan = await anyio.to_thread.run_sync(self._walker.scan, rows)
        now = self._clock()
        settle = self.source.settle
        settled = [rel for rel, fs in scan.changed.items() if now - fs.ctime_ns / 1e9 >= settle]
        plan = plan_sync(
            scan.changed,
            scan.missing(rows),
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
        try:
            scan = await anyio.to_thread.run_sync(self._walker.scan, self._ledger.rows)
        except SourceError as exc:
            self._final[""] = str(exc)
            log.error("sync.source_unavailable", error=str(exc))
            return self._report(0, None, start_copies, start_bytes, start_deletes)
        self._apply_scan(scan, started, burst=True)
        deadline = started + self._once_settle_limit
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await self._burst_copies(deadline)
            if self._mount_problem is None and self._ledger.mirror:
                await self._delete_pass(self._clock(), burst=True)
                if self._conflicts and self._mount_problem is None:
                    for rel in sorted(self._conflicts):
                        self._final.pop(rel, None)
                    states, _ = await self._stat(sorted(self._conflicts))
                    self._conflicts.clear()
                    now = self._clock()
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
            await self._drive()

    async def _stopper(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            self._halt.set()
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
                if ledger.mirror and ledger.absent:
                    await self._delete_pass(now, burst=False)
                self._start_batches()
            next_at = ledger.next_wake(now, deletes=self._mount_problem is None)
            delay = IDLE_WAKE if next_at is None else min(IDLE_WAKE, max(0.005, next_at - self._clock()))
            if not self._dirty:
                with anyio.move_on_after(delay):
                    await wake.wait()

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

    def _restart_watcher(self) -> None:
        """The source came back (perhaps as a new folder): watch it afresh."""
        self._rewatch = True
        if self._watch_stop is not None:
            self._watch_stop.set()

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

    def _prepare(self) -> None:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.source.copy_workers)
        self._wake = anyio.Event()
        self._stop = anyio.Event()
        self._halt.clear()
        self._final = {}
        self._conflicts = set()
        self._refused = False

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _emit(self, fact: Fact) -> None:
        try:
            self._on_fact(fact)
        except Exception as exc:
            log.error("sync.fact_handler_failed", error=f"{exc.__class__.__name__}: {exc}")

    async def _open(self) -> None:
        if self._db is not None:
            return
        db = await anyio.to_thread.run_sync(StateDB, self._state_dir / "state.db")
        try:
            self._ledger.rows = await anyio.to_thread.run_sync(db.load)
            self._temps_clear = await anyio.to_thread.run_sync(self._take_clean_marker)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _take_clean_marker(self) -> bool:
        """True when the last run ended cleanly (no temp files of ours in the mount); the marker is consumed."""
        marker = self._state_dir / CLEAN_MARKER
        try:
            marker.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StateError(f"state dir {self._state_dir} is not writable ({exc.strerror})") from None
        fd = os.open(self._state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    async def _check_mount(self, *, probe: bool) -> str | None:
        problem = await anyio.to_thread.run_sync(lambda: mount_problem(self._mount, probe=probe))
        self._mount_recheck = False
        if problem is None and not self._temps_clear:
            try:
                removed = await anyio.to_thread.run_sync(remove_temps, self._mount)
            except OSError as exc:
                problem = f"mount {self._mount}: temp files cannot be cleared ({exc.strerror})"
            else:
                self._temps_clear = True
                if removed:
                    log.info("sync.temps_removed", count=removed, mount=self._mount)
        if problem != self._mount_problem:
            if problem is None:
                log.info("sync.mount_ok", mount=self._mount)
                await self._verify_mount()
            else:
                log.warning("sync.mount_unavailable", mount=self._mount, problem=problem)
            self._mount_problem = problem
            self._poke()
        return problem

    async def _verify_mount(self) -> None:
        """The mount (re)appeared: forget rows whose file it no longer holds, so they are copied again."""
        rows = dict(self._ledger.rows)
        stale = await anyio.to_thread.run_sync(stale_rows, self._mount, rows)
        if not stale:
            return
        log.warning("sync.mount_rows_stale", files=len(stale), mount_files=len(rows), first=stale[0])
        if self._db is not None:
            await anyio.to_thread.run_sync(lambda: self._db.record(drop=stale) if self._db else None)
        self._ledger.drop_rows(stale)
        self.request_scan()

    async def _full_scan(self) -> bool:
        started = self._clock()
        self._events_since_scan = 0
        try:
            scan = await anyio.to_thread.run_sync(self._walker.scan, self._ledger.rows)
        except SourceError as exc:
            if self._source_problem != str(exc):
                log.error("sync.source_unavailable", error=str(exc))
            self._source_problem = str(exc)
            return False
        if self._source_problem is not None:
            log.info("sync.source_ok", source=self._root)
            self._restart_watcher()
        self._source_problem = None
        self._apply_scan(scan, started, burst=False)
        self._scanned = True
        self._last_scan_at = started
        self._last_scan_files = scan.files
        log.info(
            "sync.scan_done",
            files=scan.files,
            changed=len(scan.changed),
            pending=len(self._ledger.pending()),
            ms=int((self._clock() - started) * 1000),
        )
        self._poke()
        return True

    def _apply_scan(self, scan: ScanResult, at: float, *, burst: bool) -> None:
        """Feed a full scan: absences first (so moves pair up), then changed files."""
        ledger = self._ledger
        self._log_skips(scan.skipped)
        since = at - self.source.settle if burst else None
        ledger.held.clear()
        for rel in scan.missing(list(ledger.rows)):
            ledger.observe(rel, None, at, since=since)
        for rel, watch in list(ledger.settler.items()):
            if (
                watch.sig is not None
                and rel not in scan.seen
                and rel not in ledger.rows
                and not under_any(rel, scan.unreadable)
            ):
                ledger.observe(rel, None, at)
        for rel in sorted(scan.changed):  # path order: a folder's files one after another, as on disk
            ledger.observe(rel, scan.changed[rel], at)

    async def _stat(self, rels: list[str]) -> tuple[dict[str, Any], ScanResult]:
        return await anyio.to_thread.run_sync(self._walker.stat_paths, rels, self._ledger.rows)

    async def _confirm(self, due: list[str]) -> None:
        """Stat due paths again; the ledger queues those that held still."""
        at = self._clock()
        states, sub = await self._stat(due)
        self._log_skips(sub.skipped)
        for rel, fs in states.items():
            if fs is None:
                self._ledger.observe(rel, None, at)
        for rel, fs in states.items():
            if fs is not None:
                self._ledger.observe(rel, fs, at)
        for rel, fs in sub.changed.items():
            self._ledger.observe(rel, fs, at)

    async def _process_events(self) -> None:
        root = self._root + "/"
        rels: list[str] = []
        for path in self._dirty:
            if path == self._root:
                self._scan_requested = True
            elif path.startswith(root):
                rel = path[len(root) :]
                if not self._walker.excluded(rel):
                    rels.append(rel)
        self._dirty = set()
        if not rels:
            return
        at = self._clock()
        states, sub = await self._stat(rels)
        self._log_skips(sub.skipped)
        ledger = self._ledger
        folders = set(sub.folders)
        for rel, fs in states.items():
            if fs is None:
                ledger.observe(rel, None, at)
                if rel not in ledger.rows or rel in folders:
                    ledger.observe_gone_under(rel, at, sub.seen if rel in folders else ())
        for rel, fs in states.items():
            if fs is not None:
                ledger.observe(rel, fs, at)
        for rel, fs in sub.changed.items():
            ledger.observe(rel, fs, at)

    def _start_batches(self) -> None:
        ledger = self._ledger
        workers = self.source.copy_workers
        while self._tg is not None and ledger.ready and self._running < workers:
            batch = ledger.take_batch(workers, self._batch_files, self._batch_bytes)
            if not batch:
                return
            self._running += 1
            self._tg.start_soon(self._run_batch, batch)

    async def _run_batch(self, jobs: list[CopyJob]) -> None:
        self._busy += 1
        results: list[CopyResult] | None = None
        try:
            results = await anyio.to_thread.run_sync(self._copy_and_record, jobs, limiter=self._limiter)
        finally:
            self._busy -= 1
            self._running -= 1
            if results is None:
                self._ledger.release(jobs)
            self._poke()
        now = self._clock()
        failures = self._ledger.apply(jobs, results, now)
        copied = [r for r in results if r.done]
        if copied:
            log.info("sync.copied", files=len(copied), bytes=sum(r.bytes for r in copied), first=copied[0].path)
        for result in results:
            if result.outcome is Outcome.CHANGED:
                log.info("sync.changed_during_copy", path=result.path)
        self._handle_failures(failures)

    def _copy_and_record(self, jobs: list[CopyJob]) -> list[CopyResult]:
        """Worker thread: copy a batch, then record what is done in one transaction."""
        copier = Copier(self._root, self._mount, marker_names=self._marker_names, hook=self._copy_hook, halt=self._halt)
        results = copier.run(jobs)
        failpoint("copy.after_rename")  # crash tests: renamed into the mount and durable, not yet in the state DB
        done = [r for r in results if r.done and r.row is not None]
        if not done or self._db is None:
            return results
        try:
            self._db.record(
                put=[(r.path, r.row) for r in done if r.row is not None],
                drop=[r.moved_from for r in done if r.moved_from is not None],
                at=self._clock(),
            )
        except StateError as exc:
            return [CopyResult(r.path, Outcome.FAILED, error=str(exc)) if r.done else r for r in results]
        return results

    def _handle_failures(self, failures: list[Failure]) -> None:
        for failure in failures:
            if failure.mount_side:
                self._mount_recheck = True
                if self._mount_wake is not None:
                    self._mount_wake.set()
            if self._burst and (failure.conflict or failure.attempt >= self._once_attempts):
                if failure.conflict:
                    self._conflicts.add(failure.path)
                self._final[failure.path] = failure.error
                self._ledger.settler.forget(failure.path)
            log.warning(
                "sync.copy_failed",
                path=failure.path,
                error=failure.error,
                attempt=failure.attempt,
                retry_in=None if failure.retry_at is None else round(failure.retry_at - self._clock(), 3),
            )

    async def _delete_pass(self, now: float, *, burst: bool) -> None:
        ledger = self._ledger
        candidates = ledger.deletable(now)
        if not candidates:
            return
        root_ok, (states, _) = await anyio.to_thread.run_sync(
            lambda: (self._walker.root_ok(), self._walker.stat_paths(candidates, self._ledger.rows))
        )
        if not root_ok:
            self.request_scan()  # reports the source problem; nothing is deleted while the source is away
            return
        at = self._clock()
        gone = [rel for rel in candidates if states.get(rel) is None]
        for rel in candidates:
            fs = states.get(rel)
            if fs is not None:
                ledger.observe(rel, fs, at)
        gone = [rel for rel in gone if rel in ledger.absent and rel not in ledger.moving]
        if not gone:
            return
        total = len(ledger.rows)
        if not delete_allowed(len(gone), total, self.source.max_delete):
            ledger.refuse(gone)
            self._refused = True
            log.warning(
                "sync.delete_refused",
                deletes=len(gone),
                mount_files=total,
                max_delete=self.source.max_delete,
                hint="raise source.max_delete or delete from the mount by hand if this is intended",
            )
            return
        self._busy += 1
        ledger.start_deletes(gone)
        try:
            results = await anyio.to_thread.run_sync(self._delete_and_record, gone, limiter=self._limiter)
        except BaseException:
            ledger.inflight.difference_update(gone)
            raise
        finally:
            self._busy -= 1
        failures = ledger.apply_deletes(results, self._clock())
        deleted = sum(1 for _, error in results if error is None)
        if deleted:
            log.info("sync.deleted", files=deleted, first=gone[0])
        if burst:
            for failure in failures:
                self._final[failure.path] = failure.error
                ledger.settler.forget(failure.path)
        self._handle_failures([] if burst else failures)

    def _delete_and_record(self, paths: list[str]) -> list[tuple[str, str | None]]:
        results = delete_files(self._mount, paths)
        done = [rel for rel, error in results if error is None]
        out = [(rel, None if error is None else f"mount: {error.strerror}") for rel, error in results]
        if done and self._db is not None:
            try:
                self._db.record(drop=done)
            except StateError as exc:
                return [(rel, str(exc)) for rel, _ in results]
        return out

    def _log_skips(self, skipped: list[tuple[str, str]]) -> None:
        for rel, why in skipped:
            if rel not in self._logged_skips:
                self._logged_skips.add(rel)
                log.info("sync.skipped", path=rel, why=why)
