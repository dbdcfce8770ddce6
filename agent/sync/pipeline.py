# String paths and os.* calls on purpose: a Path object per file costs too much on 100k-file trees.
# ruff: noqa: PTH100
"""The sync pipeline's shared steps: state, mount checks, full scans, event stats, copy batches, delete passes.

`SyncEngine` (engine.py) drives these in its two modes. Everything here that touches the `Ledger` runs on the
event loop thread; stats, copies, deletes and state DB writes run in worker threads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from agent.config import SourceConfig
from agent.errors import SourceError, StateError
from agent.facts import Fact
from agent.logs import get_logger
from agent.sync.batches import BatchCopier, Outcomes
from agent.sync.copier import SMALL, CopyJob, Outcome
from agent.sync.earlyscan import EarlyScan
from agent.sync.flushmark import IDLE_FLUSH, FlushMark
from agent.sync.ledger import Failure, Ledger
from agent.sync.links import LinkIndex
from agent.sync.mount import (
    MountRecord,
    claimed_rows,
    current_record,
    mount_problem,
    read_record,
    stale_rows,
    torn_copy,
    unmounted,
    updated_record,
    write_record,
)
from agent.sync.mountfs import delete_files, remove_temps
from agent.sync.plan import delete_allowed
from agent.sync.scan import ScanResult, differs, source_walker, under_any
from agent.sync.statedb import Row, StateDB
from agent.sync.watcher import WatcherFactory, watchfiles_changes

log = get_logger("agent.sync")

LARGE_BATCH = 1000  # events since the last full scan that call for another (inotify may overflow)
STORM_QUIET = 1.0  # seconds without events after such a storm before the closing full scan
IDLE_WAKE = 5.0  # the driver sleeps at most this long when nothing is due (events and results wake it)
CLEAN_MARKER = "sync.clean"
FEED_SLICE = 1024  # changed files of a scan `once` feeds to the ledger between looks at whether a batch can start
UNKNOWN_RETRY = 5.0  # seconds before a delete whose file could not be looked at (EACCES, EIO) is looked at again


def in_loop_thread() -> bool:
    """Called from the thread that runs the event loop (not from a worker or foreign thread)."""
    try:
        anyio.get_current_task()
    except RuntimeError:
        return False
    return True


def unknown_because(rel: str, sub: ScanResult) -> str:
    """Why `stat_paths` left `rel` out (an EACCES or EIO on it or its folder): the error, as `once` reports it."""
    return f"source: {sub.why_unreadable.get(rel.rpartition('/')[0], 'cannot be looked at')}"


def _ignore_fact(fact: Fact) -> None:
    return None


class Pipeline:
    """State and steps shared by the daemon and the burst mode. Knobs after `*` let tests run fast."""

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
        early_scan: EarlyScan | None = None,
        durability: Literal["snapshot", "batch"] = "snapshot",
        idle_flush: float = IDLE_FLUSH,
    ) -> None:
        self.source = source
        self._durability = durability
        self._idle_flush = idle_flush
        self._flush_mark: FlushMark | None = None  # read at open (flushmark.py)
        self._copies_ended = 0.0  # monotonic time the last batch ended: the daemon flushes once they are quiet
        self._flushed_at = time.monotonic()  # the last good flush (or the start)
        self._unflushed: list[str] = []  # copied since the last good flush (`snapshot` durability): a failed
        # flush has them copied again
        self._recopying: set[str] = set()  # dropped by a failed flush, not copied again yet: snapshots wait
        self._lost_gone: list[str] = []  # `restoring` rows whose file left the source: out of the DB at close
        self._root = os.path.abspath(source.path)
        self._mount = os.path.abspath(mount)
        self._state_dir = Path(state_dir)
        self._walker = source_walker(source, mount, self._state_dir)
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
        self._ledger = Ledger(
            {}, source.settle, source.delete == "mirror", self._emit, retry_cap=retry_cap, markers=marker_names
        )
        self._db: StateDB | None = None
        self._intents: dict[str, Row] = {}
        self._mount_record: MountRecord | None = None
        self._halt = threading.Event()
        self._batches = BatchCopier(
            self._root,
            self._mount,
            self._halt,
            marker_names=marker_names,
            hook=copy_hook,
            mount_gone=self._mount_gone,
            clock=clock,
        )  # a batch's copy and its records, in a worker thread (big batches in a forked process)
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
        self._logged_unreadable: set[str] = set()
        self._links = LinkIndex()  # hard links and symlinks in the source: edits reach their other names at once
        self._running = 0
        self._running_big = 0
        self._fenced = 0  # snapshots being taken: no copy or delete may start (see SyncEngine.fence)
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
        self._early_scan = early_scan  # `once`'s first walk, started before the agent was assembled

    def halt_scans(self) -> None:
        """Stop the walks under way and any to come (the agent stops at once): see Walker.halt."""
        self._walker.halt()

    def request_scan(self) -> None:
        """Ask for a full scan soon. From the event loop it starts at once; from another thread the flag is
        seen within a second."""
        self._scan_requested = True
        if self._scan_wake is not None and in_loop_thread():
            self._scan_wake.set()

    def _restart_watcher(self) -> None:
        """The source came back (perhaps as a new folder): watch it afresh."""
        self._rewatch = True
        if self._watch_stop is not None:
            self._watch_stop.set()

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
            known = self._early_scan.image if self._early_scan is not None else None
            self._ledger.rows = await anyio.to_thread.run_sync(lambda: db.load(image=self._burst, known=known))
            self._intents = await anyio.to_thread.run_sync(db.intents)
            self._ledger.restoring = await anyio.to_thread.run_sync(db.restoring)
            self._mount_record = await anyio.to_thread.run_sync(read_record, self._state_dir)
            self._temps_clear = await anyio.to_thread.run_sync(self._take_clean_marker)
            mark = await anyio.to_thread.run_sync(FlushMark, self._state_dir, self._mount)
        except BaseException:
            db.close()
            raise
        self._db = db
        self._flush_mark = mark  # also in `batch` mode: a mark an earlier run left still calls for the check
        self._batches.flush_mark = mark if self._durability == "snapshot" else None

    async def _flush(self, before: str) -> bool:
        """Flush the mount's copies to disk and remove the `unflushed` mark when nothing overlapped
        (flushmark.py). True when every copy recorded before the call is on disk and the mount was checked
        after a crash of the host; False while the mount is away or unchecked, or when the flush failed: the
        kernel could not write some copies back, which the page cache still shows whole, so the rows of every
        copy since the last good flush are dropped and those files copied again (`_recopying` until then)."""
        mark = self._flush_mark
        if mark is None or not mark.marked:
            return True
        if mark.crashed or self._mount_problem is not None:
            return False
        covered = len(self._unflushed)
        try:
            synced = await anyio.to_thread.run_sync(self._flush_mount, mark, abandon_on_cancel=True)
        except OSError as exc:
            lost, self._unflushed = self._unflushed[:covered], self._unflushed[covered:]
            error = exc.strerror or str(exc)
            log.error("sync.flush_failed", mount=self._mount, before=before, error=error, copy_again=len(lost))
            counters = self._ledger.counters  # the errors metric counts it (kind `sync`)
            counters.errors += 1
            counters.last_error = f"mount flush: {error}"
            await self._copy_again(lost)
            return False
        if synced:
            del self._unflushed[:covered]
            self._flushed_at = time.monotonic()
        return synced

    def _flush_mount(self, mark: FlushMark) -> bool:
        """Worker thread: flush, unless the mount point was unmounted since the last look (the path then holds
        another filesystem)."""
        if self._mount_gone():
            return False
        mark.flush()
        return True

    async def _copy_again(self, paths: list[str]) -> None:
        """Copies a flush could not make durable: their files leave the mount (what the page cache shows whole
        may never reach the disk: a copy adopted as it stands would stay corrupt) and their rows are forgotten,
        durably, so they are copied again; no new data for the rules. No copy runs meanwhile."""
        if self._db is None:
            return
        db = self._db
        self._fenced += 1
        try:
            while self._running or self._busy:  # noqa: ASYNC110 - they end in worker threads
                await anyio.sleep(0.05)
            rows = self._ledger.rows  # after the wait: a delete or a move may have taken some meanwhile
            lost = {rel: rows[rel] for rel in paths if rel in rows}
            if not lost:
                return
            await self._remove_suspect(list(lost))
            try:
                await anyio.to_thread.run_sync(lambda: db.record(lose=lost.items(), durable=True))
            except StateError as exc:  # copied again all the same (their puts fix the DB)
                log.error("sync.rows_not_dropped", files=len(lost), error=str(exc))
            self._ledger.drop_rows(lost)
            self._recopying.update(lost)
            self.request_scan()
        finally:
            self._fenced -= 1
            self._poke()

    async def _remove_suspect(self, paths: list[str], torn: Mapping[str, Row] | None = None) -> None:
        """Delete the agent's own copies whose bytes cannot be trusted (not written back, or with `torn` the
        rows a crash of the host tore: only a regular file with the recorded mtime and another size, the agent's
        copy cut short, not a file someone put there): copied again when the source still has them, and not
        left behind when it does not. With `delete: keep`, only those the source still has."""
        root, mount, mirror = self._root, self._mount, self._ledger.mirror

        def suspect(rel: str) -> bool:
            if not mirror and not os.path.lexists(root + "/" + rel):
                return False
            return torn is None or torn_copy(mount, rel, torn[rel])

        def remove() -> list[tuple[str, OSError | None]]:
            return delete_files(mount, [rel for rel in paths if suspect(rel)])

        results = await anyio.to_thread.run_sync(remove)
        failed = [(rel, exc) for rel, exc in results if exc is not None]
        if failed:
            rel, exc = failed[0]
            log.error("sync.suspect_not_removed", files=len(failed), first=rel, error=exc.strerror or str(exc))

    def _recopied(self) -> bool:
        """Every file a failed flush dropped is copied again (or left the source)."""
        restoring = self._ledger.restoring
        self._recopying = {rel for rel in self._recopying if rel in restoring}
        return not self._recopying

    async def _clear_temps(self) -> str | None:
        """Unless no temp file of ours can be in the mount (a clean last stop, or a sweep since, and no copy failed
        on the mount side since), remove them all. Call it with no copy running and the mount usable; returns the
        problem when they cannot be removed."""
        if self._temps_clear:
            return None
        try:
            removed = await anyio.to_thread.run_sync(remove_temps, self._mount)
        except OSError as exc:
            return f"mount {self._mount}: temp files cannot be cleared ({exc.strerror})"
        self._temps_clear = True
        if removed:
            log.info("sync.temps_removed", count=removed, mount=self._mount)
        return None

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
        recorded = self._mount_record
        problem, record = await anyio.to_thread.run_sync(self._look_at_mount, probe, recorded)
        remounted = record is not None and recorded is not None
        if record is not None:
            self._mount_record = record
        self._mount_recheck = False
        if problem is None and self._running == 0 and not self._temps_clear:
            # a sweep must not take the temp files of copies: none runs now, and none starts while it walks
            self._fenced += 1
            try:
                problem = await self._clear_temps()
            finally:
                self._fenced -= 1
                self._poke()
        if problem != self._mount_problem:
            if problem is None:
                log.info("sync.mount_ok", mount=self._mount)
                await self._claim_intents()
                await self._verify_mount(swapped=remounted)
            else:
                log.warning("sync.mount_unavailable", mount=self._mount, problem=problem)
            self._mount_problem = problem
            self._poke()
        elif problem is None and remounted:
            log.info("sync.mount_changed", mount=self._mount)
            await self._verify_mount(swapped=True)  # remounted between two looks: refill what the new one lacks
        return problem

    def _look_at_mount(self, probe: bool, recorded: MountRecord | None) -> tuple[str | None, MountRecord | None]:
        """Worker thread: the mount's problem, and the record to remember when it changed (see mount.py)."""
        problem = mount_problem(self._mount, probe=probe, recorded=recorded)
        if problem is not None:
            return problem, None
        try:
            record = updated_record(recorded, current_record(self._mount))
        except OSError as exc:
            return f"mount {self._mount} cannot be read ({exc.strerror})", None
        if record is not None:
            try:
                write_record(self._state_dir, record)
            except OSError as exc:  # still guarded for this run (the record is kept in memory)
                log.warning("sync.mount_record_failed", state_dir=str(self._state_dir), error=exc.strerror)
        return None, record

    def _mount_gone(self) -> bool:
        """Worker thread: the mount point was unmounted since the last look (checked before every write)."""
        return unmounted(self._mount, self._mount_record)

    async def _claim_intents(self) -> None:
        """Intents a killed agent left (see statedb.py): files it renamed into the mount and never recorded
        become rows, so the scan judges them as any other (deleted in mirror mode when the source lost them)."""
        intents, self._intents = self._intents, {}
        db = self._db
        if not intents or db is None:
            return
        rows = await anyio.to_thread.run_sync(claimed_rows, self._mount, intents)
        try:
            await anyio.to_thread.run_sync(lambda: db.record(put=rows.items(), at=self._clock(), done=intents))
        except StateError as exc:
            log.error("sync.intents_unclaimed", intents=len(intents), error=str(exc))
            return
        log.info("sync.intents_claimed", files=len(rows), intents=len(intents))
        if rows:
            self._ledger.claim(rows)
            if self._scanned:
                self.request_scan()

    async def _verify_mount(self, *, swapped: bool = False) -> None:
        """The mount (re)appeared: forget rows whose file it no longer holds, so they are copied again. After a
        crash of the host with copies not flushed (flushmark.py) every row is checked, else a sample first."""
        rows = dict(self._ledger.rows)
        mark = self._flush_mark
        crashed = mark is not None and mark.crashed
        stale = await anyio.to_thread.run_sync(stale_rows, self._mount, rows, len(rows) if crashed else 64)
        if crashed:
            log.warning("sync.crash_check", mount_files=len(rows), torn=len(stale), first=stale[0] if stale else None)
        if stale:
            log.warning("sync.mount_rows_stale", files=len(stale), mount_files=len(rows), first=stale[0])
            if crashed and not swapped:  # torn copies of ours: out of the mount, whatever becomes of their source
                await self._remove_suspect(stale, {rel: rows[rel] for rel in stale})
            if self._db is not None:  # durably after a crash: the mark goes once the check is done
                lost = [(rel, rows[rel]) for rel in stale]
                await anyio.to_thread.run_sync(
                    lambda: self._db.record(lose=lost, durable=crashed) if self._db else None
                )
            self._ledger.drop_rows(stale)
            if crashed:  # torn, not missing: no snapshot until they are whole again
                self._recopying.update(stale)
            self.request_scan()
        if crashed and mark is not None:
            await anyio.to_thread.run_sync(mark.checked)

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
        self._apply_scan(scan, started)
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

    def _apply_scan(self, scan: ScanResult, at: float) -> None:
        """Feed a full scan (daemon mode): absences first (so moves pair up), then changed files."""
        self._apply_absences(scan, at, burst=False)
        ledger = self._ledger
        for rel in self._scan_order(scan):
            ledger.observe(rel, scan.changed[rel], at)

    async def _feed_scan(self, scan: ScanResult, at: float) -> None:
        """`_apply_scan` for `once`, copying as it goes: the first batches start after the first slice of
        changed files is fed, while the rest is (a first sync's 20,000 files take the ledger a tenth of a second;
        the copies need not wait for the last of them). Needs the copy task group (`self._tg`)."""
        self._apply_absences(scan, at, burst=True)
        ledger, changed = self._ledger, scan.changed
        order = self._scan_order(scan)
        for start in range(0, len(order), FEED_SLICE):
            for rel in order[start : start + FEED_SLICE]:
                ledger.observe(rel, changed[rel], at)
            if self._mount_problem is None and not self._mount_recheck:  # else `_burst_copies` looks first
                self._start_batches()
            await anyio.lowlevel.checkpoint()  # the batches just started go to their threads

    def _scan_order(self, scan: ScanResult) -> list[str]:
        """Changed files in path order: a folder's files one after another, as on disk; a marker after
        everything under its folder."""
        changed = scan.changed
        return sorted(changed, key=self._marker_last) if self._marker_names else sorted(changed)

    def _apply_absences(self, scan: ScanResult, at: float, *, burst: bool) -> None:
        """What a full scan says besides its changed files: skips, unreadable folders, links, absences."""
        ledger = self._ledger
        if ledger.restoring:  # lost rows whose file the source no longer has are not coming back
            kept = ledger.restoring.items()
            ledger.restoring = {rel: row for rel, row in kept if scan.met(rel) or under_any(rel, scan.unreadable)}
            self._lost_gone.extend(rel for rel, _ in kept if rel not in ledger.restoring)  # from the DB at close
        self._log_skips(scan.skipped)
        self._note_unreadable(scan, full=True)
        self._links.replace(scan.hardlinks, scan.symlinks, keep_under=scan.unreadable)
        since = at - self.source.settle if burst else None
        ledger.held.clear()
        for rel in self._walker.missing(scan, ledger.rows):
            ledger.observe(rel, None, at, since=since)
        for rel, watch in list(ledger.settler.items()):
            if (
                watch.sig is not None
                and not scan.met(rel)
                and rel not in ledger.rows
                and not under_any(rel, scan.unreadable)
            ):
                ledger.observe(rel, None, at)

    def _marker_last(self, rel: str) -> str:
        """The sort key that puts a marker file after every other path under its folder."""
        head, sep, name = rel.rpartition("/")
        return f"{head}{sep}\U0010ffff{name}" if name in self._marker_names else rel

    async def _stat(self, rels: list[str]) -> tuple[dict[str, Any], ScanResult]:
        return await anyio.to_thread.run_sync(self._walker.stat_paths, rels, self._ledger.rows)

    async def _confirm(self, due: list[str]) -> None:
        """Stat due paths again; the ledger queues those that held still."""
        at = self._clock()
        states, sub = await self._stat(due)
        self._log_skips(sub.skipped)
        self._note_unreadable(sub)
        self._links.update(states, sub.hardlinks, sub.symlinks)
        for rel, fs in states.items():
            if fs is None:
                self._ledger.observe(rel, None, at)
        for rel, fs in states.items():
            if fs is not None:
                self._ledger.observe(rel, fs, at)
        for rel, fs in sub.changed.items():
            self._ledger.observe(rel, fs, at)
        if self._burst and sub.unreadable:  # `once` does not wait out its settle limit for what it cannot look at
            for rel in due:
                if rel not in states:
                    self._final[rel] = unknown_because(rel, sub)
                    self._ledger.give_up(rel)

    async def _process_events(self) -> None:
        root = self._root + "/"
        rels: list[str] = []
        ignored: list[str] = []  # not synced themselves, but a symlink may point at one
        for path in self._dirty:
            if path == self._root:  # the watcher lost events (or the root itself changed): scan now
                self.request_scan()
            elif path.startswith(root):
                rel = path[len(root) :]
                (ignored if self._walker.excluded(rel) else rels).append(rel)
        self._dirty = set()
        changed = await self._observe_paths(rels) if rels else []
        # the other names of what changed (hard links, symlinks to it) changed too, with no event of their own
        related = self._links.related([*changed, *ignored]) if changed or (ignored and self._links) else []
        if related:
            looked = set(rels)
            await self._observe_paths([rel for rel in related if rel not in looked])

    async def _observe_paths(self, rels: list[str]) -> list[str]:
        """Stat paths named by events and feed the ledger; returns those that differ from the mount or left."""
        at = self._clock()
        states, sub = await self._stat(rels)
        self._log_skips(sub.skipped)
        self._note_unreadable(sub)
        self._links.update(states, sub.hardlinks, sub.symlinks)
        ledger = self._ledger
        folders = set(sub.folders)
        for rel, fs in states.items():
            if fs is None:
                ledger.observe(rel, None, at)
                if rel not in ledger.rows or rel in folders:
                    seen = sub.seen if rel in folders else ()
                    ledger.observe_gone_under(rel, at, seen, keep_under=sub.unreadable)
        for rel, fs in states.items():
            if fs is not None:
                ledger.observe(rel, fs, at)
        for rel, fs in sub.changed.items():
            ledger.observe(rel, fs, at)
        if not self._links:
            return []
        rows = ledger.rows
        changed = [rel for rel, fs in states.items() if fs is None or differs(rows.get(rel), fs)]
        return changed + list(sub.changed)

    def _start_batches(self) -> None:
        ledger = self._ledger
        workers = self.source.copy_workers
        while self._tg is not None and ledger.ready and self._running < workers and not self._fenced:
            big_ok = self._running_big < max(1, workers // 2)  # the other half keeps small files moving
            batch = ledger.take_batch(workers, self._batch_files, self._batch_bytes, big_ok=big_ok, now=self._clock())
            if not batch:
                return
            big = len(batch) == 1 and batch[0].expect.size > SMALL
            self._running += 1
            self._running_big += big
            self._tg.start_soon(self._run_batch, batch, big)

    async def _run_batch(self, jobs: list[CopyJob], big: bool = False) -> None:
        self._busy += 1
        outcome: Outcomes | None = None
        try:
            outcome = await anyio.to_thread.run_sync(self._batches.run, self._db, jobs, limiter=self._limiter)
        finally:
            self._copies_ended = time.monotonic()
            self._busy -= 1
            self._running -= 1
            self._running_big -= big
            if outcome is None:
                self._ledger.release(jobs)
            self._poke()
        results, claimed = outcome
        if self._batches.flush_mark is not None:  # on disk once a flush succeeds (`_flush`)
            self._unflushed.extend(claimed)
            self._unflushed.extend(r.path for r in results if r.done)
        now = self._clock()
        if claimed:  # a lost forked copy's files in the mount (before the results: a copy made again wins)
            self._ledger.claim(claimed)
            if any(not r.done for r in results):
                self.request_scan()  # a claimed file whose source is gone is deleted there in mirror mode
        if any(r.mount_side for r in results):
            # a copy that failed on the mount's side (gone, read-only, full) may not have removed its temp file (a
            # mount moved away and back takes it along): sweep before the next snapshot, and no clean marker
            self._temps_clear = False
        failures = self._ledger.apply(jobs, results, now)
        copied = [r for r in results if r.done and r.moved_from is None]
        if copied:
            log.info("sync.copied", files=len(copied), bytes=sum(r.bytes for r in copied), first=copied[0].path)
        moved = [r for r in results if r.done and r.moved_from is not None]
        if moved:  # renamed inside the mount: no byte copied
            log.info("sync.moved", files=len(moved), first=moved[0].path, moved_from=moved[0].moved_from)
        for result in results:
            if result.outcome is Outcome.CHANGED:
                log.info("sync.changed_during_copy", path=result.path)
        self._handle_failures(failures)

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
                self._ledger.give_up(failure.path)
            # attempts 1, 2, 4, 8... at warning level: 200 files that stay unreadable must not flood the log
            attempt = failure.attempt
            (log.warning if attempt & (attempt - 1) == 0 else log.debug)(
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
        root_ok, (states, sub) = await anyio.to_thread.run_sync(
            lambda: (self._walker.root_ok(), self._walker.stat_paths(candidates, self._ledger.rows))
        )
        if not root_ok:
            self.request_scan()  # reports the source problem; nothing is deleted while the source is away
            return
        at = self._clock()
        gone: list[str] = []
        for rel in candidates:
            if rel not in states:  # unknown (its folder cannot be searched now): kept, and looked at again later
                ledger.not_before[rel] = at + UNKNOWN_RETRY
                if burst:  # `once` says so: the mount may still hold a file the source lost
                    self._final[rel] = unknown_because(rel, sub)
            elif (fs := states[rel]) is None:
                gone.append(rel)
            else:
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
                hint="if intended, raise source.max_delete and restart; if not, put the files back in the source",
            )
            return
        if self._fenced:  # a snapshot is being taken (it went up while we looked): the deletes wait until it is
            if burst:  # taken (the fence wakes the driver when it lifts); `once` does not fence, but would say so
                self._final.update((rel, "not deleted: a snapshot was being taken") for rel in gone)
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
                ledger.give_up(failure.path)
        self._handle_failures([] if burst else failures)

    def _delete_and_record(self, paths: list[str]) -> list[tuple[str, str | None]]:
        if self._mount_gone():
            return [(rel, "mount: no longer a mount point (unmounted?)") for rel in paths]
        results = delete_files(self._mount, paths)
        done = [rel for rel, error in results if error is None]
        out = [(rel, None if error is None else f"mount: {error.strerror}") for rel, error in results]
        if done and self._db is not None:
            try:
                self._db.record(drop=done)
            except StateError as exc:
                return [(rel, str(exc)) for rel, _ in results]
        return out

    def _note_unreadable(self, scan: ScanResult, *, full: bool = False) -> None:
        """Folders the walk could not list: a warning once per folder (again if it recovers and fails anew), and
        in burst mode a failure each (nothing under them is synced or deleted, so the pass is not complete). A
        `full` scan also notes the folders that became readable again."""
        unreadable = scan.unreadable
        if full and self._logged_unreadable:
            for folder in sorted(self._logged_unreadable - set(unreadable)):
                self._logged_unreadable.discard(folder)
                log.info("sync.folder_readable", folder=folder or ".")
        for folder in unreadable:
            why = scan.why_unreadable.get(folder, "cannot be listed")
            if self._burst:
                self._final[folder] = f"source: {why}"
            if folder not in self._logged_unreadable:
                self._logged_unreadable.add(folder)
                log.warning(
                    "sync.folder_unreadable",
                    folder=folder or ".",
                    error=why,
                    hint="nothing under it is synced or deleted from the mount until it can be read",
                )

    def _log_skips(self, skipped: list[tuple[str, str]]) -> None:
        for rel, why in skipped:
            if rel not in self._logged_skips:
                self._logged_skips.add(rel)
                log.info("sync.skipped", path=rel, why=why)
