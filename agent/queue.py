"""The durable snapshot queue: SnapshotRequests become exactly one tagged snapshot each (after coalescing).

    submit ──▶ waiting ──covered()──▶ creating ──create_snapshot──▶ tagging ──add_tag (each)──▶ done
                  ▲  (joins: union of tags,        │ (crash or ambiguous failure: look at the server
                  │   scopes and rules)            │  before creating again)       any step ──▶ dead
                  └──────────────── retry_dead ◀───┴─────────────────────────────────────────────┘

- A job is in SQLite before `submit` returns. While a job waits (nothing sent yet) every submit joins it;
  once it is being sent, submits start the next job. So a drop of thousands of files and one marker costs
  one create call plus one call per tag.
- Jobs run strictly in order, one API call at a time, so a moving tag (`latest`) ends on the newest snapshot.
  The client's token bucket paces the calls; this module adds no limiter of its own.
- Failures: retryable ApiErrors (429, 5xx, network) and 401 (credentials can heal: a token file rotated) wait
  `backoff_delay` (at least the server's Retry-After), persisted as `next_attempt_at`; after `max_attempts`
  consecutive failures, or at once on an error that will not heal (400, 403, 404), the job is parked as a dead
  letter until `retry_dead`.
- Crash safety: `create_sends` (and `last_sent_at`) are written on disk before every create call and the
  snapshot id right after the answer (shielded from cancellation). A job found in `creating` with
  `create_sends > 0` and no snapshot id (after kill -9, a timeout or a 5xx) looks at the server, again and
  again until `inflight_grace` after its latest call, before it creates another: in the seed dialect a
  snapshot carrying our first tag, otherwise one created at or after `sent_at - adopt_skew`, not owned by
  another job, is adopted instead of creating a second one.
- SQLite: the quick synchronous calls (`submit`, `status`, `retry_dead`, the rules state) run inline, each
  one short transaction on a table of a handful of active rows; the worker's reads and writes run in a
  thread under a one-slot limiter.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from agent.api.models import Dialect, Snapshot, SnapshotStatus
from agent.api.protocol import DatasetsApi
from agent.backoff import backoff_delay
from agent.errors import ApiError, AuthenticationError, ConflictError, NetworkError, NotFoundError
from agent.failpoints import failpoint
from agent.logs import get_logger, redact
from agent.queue_store import CREATING, DEAD, TAGGING, WAITING, Job, QueueStore
from agent.rules.engine import SnapshotRequest

T = TypeVar("T")

_WARNINGS = frozenset(
    {
        "queue.retry",
        "queue.dead_letter",
        "queue.snapshot_still_copying",
        "queue.snapshot_unknown",
        "queue.snapshot_failed",
    }
)

_TAKING = frozenset({SnapshotStatus.PENDING, SnapshotStatus.COPYING})
_GONE = frozenset(
    {
        SnapshotStatus.FAILED,
        SnapshotStatus.MARK_FOR_DELETION,
        SnapshotStatus.DELETION_IN_PROGRESS,
        SnapshotStatus.DELETED,
    }
)

log = get_logger("agent.queue")


class TaskQueue:
    """Durable, coalescing, retrying snapshot jobs for one dataset. Use from one event loop thread."""

    def __init__(
        self,
        db_path: Path,
        api: DatasetsApi,
        dataset_id: str,
        *,
        covered: Callable[[SnapshotRequest], bool],
        why_waiting: Callable[[SnapshotRequest], str | None] | None = None,
        clock: Callable[[], float] = time.time,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        max_attempts: int = 8,
        poll_interval: float = 0.2,
        idle_interval: float = 2.0,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        call_timeout: float = 600.0,
        adopt_skew: float = 5.0,
        inflight_grace: float = 30.0,
        keep_done: int = 1000,
        fence: Callable[..., AbstractAsyncContextManager[object]] = lambda flush=True: contextlib.nullcontext(),
        snapshot_wait: float = 600.0,
        snapshot_poll: float = 1.0,
    ) -> None:
        self._store = QueueStore(Path(db_path))
        self._api = api
        self._dataset_id = dataset_id
        self._covered = covered
        self._why_waiting = why_waiting  # status: what a job not covered yet waits for
        self._clock = clock
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_attempts = max(1, max_attempts)
        self._poll_interval = poll_interval
        self._idle_interval = idle_interval  # an empty queue looks at the DB this often (submits here wake it)
        self._on_event = on_event
        self._call_timeout = call_timeout
        self._fence = fence
        self._snapshot_wait = snapshot_wait
        self._snapshot_poll = snapshot_poll
        self._adopt_skew = adopt_skew
        # A create call that got no trusted answer (a killed predecessor's, a timed-out or failed one) may still be
        # running on the server (copying a big dataset): before creating again, a job looks for its snapshot
        # until `inflight_grace` (the client's request timeout) after its latest call was sent.
        self._inflight_grace = inflight_grace
        self._keep_done = keep_done
        self._limiter = anyio.CapacityLimiter(1)
        self._processing = False
        self._pokes = 0
        self._wakeup: anyio.Event | None = None
        self._idle_waiters: list[anyio.Event] = []
        self._loop_thread = threading.get_ident()

    # --- the synchronous API --------------------------------------------------------------------------

    def submit(self, request: SnapshotRequest, *, rules_state: str | None = None) -> int:
        """Queue a snapshot (on disk before this returns); joins a job not yet sent. Returns the job id.
        `rules_state`, when given, is persisted in the same transaction."""
        failpoint("queue.before_submit")
        job_id, joined = self._store.submit(request, self._clock(), rules_state)
        self._emit("queue.joined" if joined else "queue.submitted", job_id=job_id, tags=list(request.tags))
        self._poke()
        return job_id

    def status(self) -> dict[str, Any]:
        """Depth, waiting, in flight, the active jobs, dead letters and the last snapshot (JSON-friendly)."""
        counts = self._store.counts()
        last = self._store.last_done()
        return {
            "depth": sum(counts.get(state, 0) for state in (WAITING, CREATING, TAGGING)),
            "waiting": counts.get(WAITING, 0),
            "in_flight": counts.get(CREATING, 0) + counts.get(TAGGING, 0),
            "jobs": [self._summary(job) for job in self._store.jobs()],
            "dead_letters": self.dead_letters(),
            "last_snapshot": None
            if last is None
            else {"id": last.snapshot_id, "tags": list(last.tags_done), "at": last.finished_at, "job_id": last.id},
        }

    def _summary(self, job: Job) -> dict[str, Any]:
        summary = job.summary()
        if job.state == WAITING and self._why_waiting is not None:
            summary["waiting_for"] = self._why_waiting(job.request)
        return summary

    def dead_letters(self) -> list[dict[str, Any]]:
        """Parked jobs: id, tags, attempts, last_error (and where they stopped)."""
        return [job.summary() for job in self._store.jobs((DEAD,))]

    def retry_dead(self, job_id: int | None = None) -> int:
        """Put one dead letter (or all) back in line. Returns how many were requeued."""
        count = self._store.revive(job_id)
        if count:
            self._emit("queue.requeued", job_id=job_id, count=count)
            self._poke()
        return count

    def save_rules_state(self, text: str) -> None:
        """Persist the rules engine's state (RulesState.to_json())."""
        self._store.save_rules_state(text, self._clock())

    def load_rules_state(self) -> str | None:
        return self._store.load_rules_state()

    def close(self) -> None:
        self._store.close()

    # --- the worker -----------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Process jobs until cancelled (cancelling is safe at any point: the DB says where to resume)."""
        if self._processing:
            raise RuntimeError("the queue is already being processed")
        self._processing = True
        task_status.started()
        try:
            await self._work(until_idle=False)
        finally:
            self._processing = False

    async def drain(self, timeout: float | None = None, *, wait_for_coverage: bool = True) -> bool:  # noqa: ASYNC109 (the daemon's `once` API)
        """Process until no job is left. False on timeout or when dead letters remain. Without
        `wait_for_coverage` (a `once` whose sync is over: what is not covered now never will be in this run) a
        waiting job that is not covered ends the drain at once, False, the job kept for the next run."""
        with anyio.move_on_after(timeout) as scope:
            if self._processing:  # run() is working: wait until it finds nothing to do
                idle = anyio.Event()
                self._idle_waiters.append(idle)
                await idle.wait()
            else:
                self._processing = True
                try:
                    if await self._work(until_idle=True, wait_for_coverage=wait_for_coverage) is not None:
                        return False
                finally:
                    self._processing = False
        if scope.cancelled_caught:
            return False
        return not await self._db(self._store.jobs, (DEAD,))

    async def _work(self, *, until_idle: bool, wait_for_coverage: bool = True) -> Job | None:
        """Send jobs in order (forever, or `until_idle`); returns the waiting job that stopped a drain that does
        not wait for coverage."""
        self._loop_thread = threading.get_ident()
        while True:
            seen = self._pokes
            job = await self._db(self._store.head)
            if job is None:
                waiters, self._idle_waiters = self._idle_waiters, []
                for waiter in waiters:
                    waiter.set()
                if until_idle:
                    return None
                await self._sleep(self._idle_interval, seen)
                continue
            wait = job.next_attempt_at - self._clock()
            if wait > 0:
                await self._sleep(wait, seen)
                continue
            if job.state == WAITING:
                if not self._covered(job.request):
                    if not wait_for_coverage:
                        why = self._why_waiting(job.request) if self._why_waiting is not None else None
                        self._emit(
                            "queue.snapshot_waiting", job_id=job.id, tags=list(job.request.tags), waiting_for=why
                        )
                        return job
                    await self._sleep(self._poll_interval, seen)
                    continue
                if not await self._db(self._store.start_sending, job.id, job.version):
                    continue  # a submit joined it meanwhile: check coverage again
                job = await self._db(self._store.get, job.id)
            try:
                if job.state == CREATING:
                    await self._create(job)
                else:
                    await self._tag(job)
            except ApiError as err:
                await self._failed(job, err)

    async def settle_in_flight(self) -> None:
        """At start, before any copy: a snapshot an earlier run had the server make may still be being taken (that
        run was stopped or killed meanwhile). Wait, inside the fence, until each is taken, so no copy of this run
        lands in it. Only jobs past a create call are looked at; a failed look is reported and ends that wait."""
        jobs = await self._db(self._store.jobs, (CREATING, TAGGING))
        jobs = [job for job in jobs if job.snapshot_id is not None or job.create_sends > 0]
        if not jobs:
            return
        async with self._fence(flush=False):  # copies wait; nothing of ours is taken, nothing need be on disk
            for job in jobs:
                snapshot_id = job.snapshot_id
                try:
                    if snapshot_id is None:
                        found = await self._find_sent(job)
                    else:
                        found = await self._call("get_snapshot", functools.partial(self._look, snapshot_id))
                except ApiError as err:
                    self._emit("queue.snapshot_unknown", job_id=job.id, error=redact(str(err)))
                    continue
                if found is not None:
                    await self._until_taken(found)

    async def _look(self, snapshot_id: str) -> Snapshot:
        return await self._api.get_snapshot(snapshot_id, with_tags=False)

    async def _create(self, job: Job) -> None:
        """Create the job's snapshot (or adopt the one an earlier call made) inside the fence: no copy runs in
        the mount from before the call until the server has taken the snapshot."""
        async with self._fence():
            snapshot = await self._create_or_adopt(job)
            await self._until_taken(snapshot)

    async def _create_or_adopt(self, job: Job) -> Snapshot:
        if job.create_sends > 0:
            found = await self._find_sent(job)
            last = job.last_sent_at
            if found is None and last is not None:
                # the last call ended without an answer we trust (kill -9, a timeout, a 5xx, a dropped
                # connection): the server may still be working on it, so look again until it could have finished
                # before creating another
                deadline = last + self._inflight_grace
                while found is None and self._clock() < deadline:
                    self._emit("queue.recovery_wait", job_id=job.id, until=deadline)
                    await anyio.sleep(min(2.0, max(0.0, deadline - self._clock())))
                    found = await self._find_sent(job)
            if found is not None:
                done = tuple(tag for tag in job.request.tags if tag in found.tags)
                with anyio.CancelScope(shield=True):
                    await self._db(self._store.record_snapshot, job.id, found.id, done)
                self._emit("queue.snapshot_created", job_id=job.id, snapshot_id=found.id, tags=list(done), adopted=True)
                return found
        tag = None if job.untagged else job.first_tag
        await self._db(self._store.begin_create, job.id, self._clock())
        failpoint("queue.before_create")
        snap = await self._call("create_snapshot", lambda: self._api.create_snapshot(self._dataset_id, tag=tag))
        failpoint("queue.after_create")
        with anyio.CancelScope(shield=True):
            await self._db(self._store.record_snapshot, job.id, snap.id, (tag,) if tag else ())
        self._emit(
            "queue.snapshot_created", job_id=job.id, snapshot_id=snap.id, tags=[tag] if tag else [], adopted=False
        )
        return snap

    async def _until_taken(self, snapshot: Snapshot) -> None:
        """Wait while the server still copies the dataset into the snapshot (pending, copying: Domino takes
        snapshots in the background), up to `snapshot_wait`; a failed look ends the wait (the tags go on)."""
        deadline = self._clock() + self._snapshot_wait
        snap = snapshot
        while snap.status in _TAKING:
            if self._clock() >= deadline:
                self._emit("queue.snapshot_still_copying", snapshot_id=snap.id, waited=self._snapshot_wait)
                return
            await anyio.sleep(self._snapshot_poll)
            try:
                snap = await self._call("get_snapshot", functools.partial(self._look, snapshot.id))
            except ApiError as err:
                self._emit("queue.snapshot_unknown", snapshot_id=snap.id, error=redact(str(err)))
                return
        if snap.status is SnapshotStatus.FAILED:
            self._emit("queue.snapshot_failed", snapshot_id=snap.id)

    async def _tag(self, job: Job) -> None:
        assert job.snapshot_id is not None  # tagging jobs always carry their snapshot id
        snapshot_id = job.snapshot_id
        remaining = [tag for tag in job.request.tags if tag not in job.tags_done]
        if not remaining:
            now = self._clock()
            await self._db(self._store.finish, job.id, now)
            await self._db(self._store.prune, self._keep_done)
            self._emit("queue.done", job_id=job.id, snapshot_id=snapshot_id, tags=list(job.request.tags), at=now)
            return
        tag = remaining[0]
        if tag in await self._db(self._store.tags_set_after, job.id):
            await self._db(self._store.record_tag, job.id, tag)
            self._emit("queue.tag_superseded", job_id=job.id, snapshot_id=snapshot_id, tag=tag)
            return
        try:
            await self._call("add_tag", lambda: self._api.add_tag(self._dataset_id, snapshot_id, tag))
        except ConflictError:  # the tag points at another snapshot and the server does not move it: move it
            with contextlib.suppress(NotFoundError):
                await self._call("remove_tag", lambda: self._api.remove_tag(self._dataset_id, tag))
            await self._call("add_tag", lambda: self._api.add_tag(self._dataset_id, snapshot_id, tag))
        failpoint("queue.between_tags")
        with anyio.CancelScope(shield=True):
            await self._db(self._store.record_tag, job.id, tag)
        self._emit("queue.tagged", job_id=job.id, snapshot_id=snapshot_id, tag=tag)

    async def _find_sent(self, job: Job) -> Snapshot | None:
        """The snapshot an earlier create call of `job` may have made, when the server has it."""
        dialect = await self._call("dialect", self._api.dialect)
        snapshots = await self._call("list_snapshots", self._all_snapshots)
        owned = await self._db(self._store.recorded_snapshots, job.id)
        by_tag = dialect is Dialect.SEED and job.first_tag is not None and not job.untagged
        since = (job.sent_at if job.sent_at is not None else self._clock()) - self._adopt_skew
        best: tuple[float, Snapshot] | None = None
        for snap in snapshots:
            if snap.id in owned or snap.status in _GONE:
                continue
            created = _epoch(snap.created_at)
            if created is not None and created < since:
                continue
            if by_tag and job.first_tag not in snap.tags:
                continue
            if not by_tag and created is None:
                continue  # cannot tell when it was made: not ours to take
            key = created if created is not None else float("inf")
            if best is None or key < best[0]:
                best = (key, snap)
        found = None if best is None else best[1]
        self._emit("queue.recovery", job_id=job.id, by_tag=by_tag, adopted=found.id if found else None)
        return found

    async def _all_snapshots(self) -> list[Snapshot]:
        return [snap async for snap in self._api.iter_snapshots(self._dataset_id)]

    async def _failed(self, job: Job, err: ApiError) -> None:
        if job.state == CREATING and refused(err):
            await self._db(self._store.settle_send, job.id)
        attempts = job.attempts + 1
        message = redact(str(err))
        now = self._clock()
        taken = isinstance(err, ConflictError) and job.state == CREATING and not job.untagged and job.first_tag
        if taken and attempts < self._max_attempts:  # our first tag is taken: create untagged, then move the tag
            await self._db(functools.partial(self._store.retry_later, untagged=True), job.id, attempts, now, message)
            self._emit("queue.retry", job_id=job.id, attempt=attempts, delay=0.0, error=message, status=err.status)
            return
        # a 401 can heal without us (a token file rotated, a key fixed in the environment of a proxy): retried
        # with backoff like a 5xx, so a snapshot is not parked for good on the first refusal
        healing = err.retryable or isinstance(err, AuthenticationError)
        if not healing or attempts >= self._max_attempts:
            await self._db(self._store.bury, job.id, attempts, message, now)
            self._emit(
                "queue.dead_letter", job_id=job.id, tags=list(job.request.tags), attempts=attempts, error=message
            )
            return
        delay = backoff_delay(attempts, base=self._backoff_base, cap=self._backoff_cap, retry_after=err.retry_after)
        await self._db(self._store.retry_later, job.id, attempts, now + delay, message)
        self._emit("queue.retry", job_id=job.id, attempt=attempts, delay=delay, error=message, status=err.status)

    # --- plumbing -------------------------------------------------------------------------------------

    async def _call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        try:
            with anyio.fail_after(self._call_timeout):
                return await make()
        except TimeoutError:
            raise NetworkError("API", what, None, f"no answer within {self._call_timeout:g}s") from None

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._limiter)

    def _poke(self) -> None:
        self._pokes += 1
        if self._wakeup is not None and threading.get_ident() == self._loop_thread:
            self._wakeup.set()

    async def _sleep(self, seconds: float, seen: int) -> None:
        """Sleep up to `seconds`, waking early on a submit or retry_dead (also ones made before the call)."""
        if self._pokes != seen:
            return
        self._wakeup = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._wakeup.wait()

    def _emit(self, event: str, **fields: Any) -> None:
        level = log.warning if event in _WARNINGS else log.info
        level(event, **fields)
        if self._on_event is not None:
            self._on_event(event, fields)


def _epoch(text: str | None) -> float | None:
    """Epoch seconds of an ISO 8601 time (a trailing Z or an offset; naive means UTC), or None."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def refused(err: ApiError) -> bool:
    """The server turned the call away before doing anything (a client error, 429, 503): unlike a 500, a
    gateway error, a timeout or a dropped connection, nothing of it can still be running."""
    status = err.status
    return status is not None and (400 <= status < 500 or status == 503)
