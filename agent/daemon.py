"""The agent: wires the sync engine, the rules engine, the durable queue, the API client and the HTTP server
into one anyio task group.

    run()   daemon mode: start scan, watch, settle, copy, fire rules, send snapshots; SIGTERM/SIGINT drain
    once()  burst mode: scan, sync everything pending, apply rules, drain the queue, return an exit code

Facts flow one way: the sync engine reports them to `on_fact`, the pure rules engine turns them into snapshot
requests, the queue persists and sends them once `covered()` says every file they cover is in the mount.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from agent.api.lazy import LazyClient
from agent.api.models import Dataset, Dialect
from agent.api.settings import ClientSettings, in_domino_section
from agent.bootstrap import bootstrap, bootstrap_key, forget_known, load_known, save_known
from agent.config import Config, MarkerWhen, check_mount_overlap
from agent.errors import AgentError, ApiError, AuthenticationError, ConfigError
from agent.facts import Fact, FileChanged, FileDeleted, FileSynced, ManualRequest, Tick
from agent.holding import holding
from agent.logs import get_logger, redact, register_secret
from agent.metrics import Metrics
from agent.queue import TaskQueue
from agent.recovery import KEEP_SECONDS, Durable, unhandled_markers
from agent.rules.engine import RulesState, SnapshotRequest, initial_state, next_wakeup, step, with_seq_floors
from agent.rules.templates import highest_seq
from agent.statelock import state_lock
from agent.sync.earlyscan import EarlyScan
from agent.sync.engine import SyncEngine, SyncReport

log = get_logger("agent.daemon")

EMBEDDED = "embedded"
BOOTSTRAP_RETRY_CAP = 60.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the API is and how to reach it, once the embedded emulator (if any) runs."""

    url: str
    settings: ClientSettings
    mount_root: Path | None  # the embedded emulator's mount root; None for a real server


def resolve_url(config: Config, env: Mapping[str, str]) -> str:
    """domino.url, else DOMINO_API_HOST, else the embedded emulator."""
    return config.domino.url or env.get("DOMINO_API_HOST") or EMBEDDED


class Agent:
    """One running agent. Build it from a validated Config; call `run()` or `once()`."""

    def __init__(
        self,
        config: Config,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        listen_port: int | None = None,
        progress: bool = False,
        queue_options: Mapping[str, Any] | None = None,
        early_scan: EarlyScan | None = None,
        on_assembled: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.early_scan = early_scan  # `once`: the first walk, already under way (sync/earlyscan.py)
        self.on_assembled = on_assembled  # the console script freezes the heap then (cli/console.py)
        self._claimed = False  # the state folder's lock is held (see _claim)
        self.env = os.environ if env is None else env
        self.clock = clock
        self.metrics = Metrics()
        self.listen_port = config.server.port if listen_port is None else listen_port
        self.progress = progress
        self.queue_options = dict(queue_options or {})  # knobs for tests (backoff_base, backoff_cap, ...)
        self.bound_port: int | None = None
        self.dataset: Dataset | None = None
        self.engine: SyncEngine | None = None
        self.queue: TaskQueue | None = None
        self.client: LazyClient | None = None
        self.mount: Path | None = None
        self.rules = config.rules
        self.rules_state: RulesState = initial_state(self.rules, clock())
        self._rules_dirty = False
        self._first_seen: dict[str, float] = {}
        self._alive = True
        self._stopping = False
        self._bootstrap_problem = "starting"
        self._scan_wanted_at: float | None = None
        self._daemon = False
        self._markers_seen: dict[str, float] = {}
        self.last_error: str | None = None
        self._api_problem: str | None = None
        self._sync_errors_seen = 0
        self._forgot_at = 0.0
        self._drain_scope: anyio.CancelScope | None = None  # the drain's; a second signal cancels it
        self._stop_now = False
        self._left_at_stop = (0, 0)  # (pending files, queued snapshots) when a signal stopped the start
        self._start_scope: anyio.CancelScope | None = None  # `run` until its loops go: a signal then cancels it
        self._engine_scope: anyio.CancelScope | None = None  # the engine's loop in `run`, cancelled after a drain
        self._group: anyio.abc.TaskGroup | None = None  # `run`'s loops, once started: a signal drains them
        self._markers = frozenset(r.when.marker for r in self.rules if isinstance(r.when, MarkerWhen))

    # ---------------------------------------------------------------- assembly

    @asynccontextmanager
    async def _endpoint(self) -> AsyncIterator[Endpoint]:
        url = resolve_url(self.config, self.env)
        if url != EMBEDDED:
            settings = ClientSettings.from_config(self.config.domino, url)
            yield Endpoint(url=url, settings=settings, mount_root=None)
            return
        from agent.emulator import EmulatorOptions, running_emulator

        emu_cfg = self.config.domino.emulator
        options = EmulatorOptions(
            data_dir=emu_cfg.data_dir,
            mount_root=emu_cfg.mount_root,
            dialect=emu_cfg.dialect,
            exclusive=False,  # `check` and dry runs beside a running agent start one on the same folder
        )
        async with AsyncExitStack() as stack:
            try:
                emu = await stack.enter_async_context(running_emulator(options))
            except ConfigError as exc:  # a standalone emulator serves its folder: named as the config names it
                raise exc.under("domino.emulator") from None
            register_secret(emu.default_key)
            log.info("agent.embedded_emulator", url=emu.url, mount_root=str(emu.mount_root))
            domino = self.config.domino.model_copy(
                update={"api_key": emu.default_key, "token_file": None, "api_proxy": None}
            )
            yield Endpoint(url=emu.url, settings=ClientSettings.from_config(domino, emu.url), mount_root=emu.mount_root)

    def _mount_for(self, endpoint: Endpoint, dataset_name: str) -> Path:
        if self.config.dataset.mount is not None:
            return self.config.dataset.mount
        if endpoint.mount_root is not None:
            mount = endpoint.mount_root / dataset_name
            check_mount_overlap(self.config, mount)
            return mount
        raise ConfigError("dataset.mount", None, "the dataset's read-write mount path, such as /mnt/data/<name>")

    @contextmanager
    def _claim(self) -> Iterator[None]:
        """The state folder, made and locked for this agent until the block ends (ConfigError when another agent
        holds it): first of all, so a second agent is refused before it starts anything."""
        state_dir = self.config.state_dir
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                "state_dir", str(state_dir), f"a folder the agent can create and write ({exc.strerror})"
            ) from None
        with state_lock(state_dir):
            self._claimed = True
            try:
                yield
            finally:
                self._claimed = False

    @asynccontextmanager
    async def _assembled(self, *, retry_bootstrap: bool) -> AsyncIterator[None]:
        """Everything but the long-running loops: endpoint, client, dataset, engine, queue."""
        async with AsyncExitStack() as stack, _shielded_exit(stack):
            if not self._claimed:
                stack.enter_context(self._claim())
            endpoint = await stack.enter_async_context(self._endpoint())
            state_dir = self.config.state_dir
            client = LazyClient(endpoint.settings, observer=self._observe_api)
            stack.push_async_callback(client.aclose)
            self.client = client
            self.dataset = await self._dataset(client, endpoint.url, retry=retry_bootstrap)
            self.mount = self._mount_for(endpoint, self.dataset.name)
            if self.config.source.create:
                try:
                    self.config.source.path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(
                        "source.path", str(self.config.source.path), f"a folder ({exc.strerror})"
                    ) from None
            self.engine = SyncEngine(
                self.config.source,
                self.mount,
                state_dir,
                on_fact=self.on_fact,
                marker_names=self._markers,
                clock=self.clock,
                early_scan=self.early_scan,
                durability=self.config.dataset.durability,
            )
            self.early_scan = None  # the engine's now
            stack.push_async_callback(self._close_engine)
            self.queue = TaskQueue(
                state_dir / "state.db",
                client,
                self.dataset.id,
                covered=self.covered,
                why_waiting=self.waiting_for,
                clock=self.clock,
                on_event=self._on_queue_event,
                fence=self.engine.fence,
                **{"inflight_grace": min(self.config.domino.timeout, 10.0), **self.queue_options},
            )
            stack.callback(self._close_queue)
            saved = self.queue.load_rules_state()
            saved_at = None
            if saved:
                durable = Durable.loads(saved)
                self.rules_state = RulesState.from_json(durable.rules_json, self.rules, self.clock())
                self._markers_seen = durable.markers_seen
                saved_at = durable.saved_at
            else:
                await self._continue_seq(client)
            for fact in unhandled_markers(
                state_dir / "state.db", self.mount, self._markers, self._markers_seen, self.clock(), saved_at
            ):
                log.warning("agent.marker_recovered", path=fact.path)
                self.on_fact(fact)
            self.metrics.bind_gauges(
                queue_depth=lambda: float(self._queue_status().get("depth", 0)),
                dead_letters=lambda: float(len(self._queue_status().get("dead_letters", []))),
                pending_files=lambda: float(len(self.engine.pending()) if self.engine else 0),
                ready=lambda: 1.0 if self.readiness()[0] else 0.0,
            )
            log.info(
                "agent.started",
                dataset_id=self.dataset.id,
                dataset=self.dataset.name,
                mount=str(self.mount),
                source=str(self.config.source.path),
                api=endpoint.url,
                rules=[r.name for r in self.rules],
            )
            self.on_assembled()
            yield

    async def _close_engine(self) -> None:
        if self.engine is not None:
            await self.engine.aclose()

    def _close_queue(self) -> None:
        if self.queue is not None:
            self._flush_rules_state()
            self.queue.close()

    @property
    def _known_path(self) -> Path:
        return self.config.state_dir / "dataset.json"

    async def _dataset(self, client: LazyClient, url: str, *, retry: bool) -> Dataset:
        """The configured dataset. A burst run trusts a bootstrap of the same config less than an hour old (an
        unchanged tree then costs no API call); daemon mode always bootstraps (and refreshes that record)."""
        key = bootstrap_key(url, self.config.dataset)
        if not retry:
            known = load_known(self._known_path, key, self.clock())
            if known is not None:
                self._bootstrap_problem = ""
                log.debug("agent.dataset_known", dataset_id=known.id)
                return known
        dataset = await self._bootstrap(client, retry=retry)
        save_known(self._known_path, key, dataset, self.clock())
        return dataset

    def _observe_api(self, method: str, route: str, outcome: str, seconds: float) -> None:
        """The client's hook for every attempt: metrics, and while the bootstrap waits for the API (the client
        retries a call several times before it gives up), why: `/readyz` says it from the first failed attempt."""
        self.metrics.observe_api(method, route, outcome, seconds)
        if self.dataset is not None:
            return
        if outcome != "ok":
            answer = "no answer (network)" if outcome == "network" else f"HTTP {outcome}"
            self._bootstrap_problem = f"API: {method} {route}: {answer}, retrying"
        elif self._bootstrap_problem.endswith(", retrying"):  # it answered again: the bootstrap goes on
            self._bootstrap_problem = "starting"

    async def _bootstrap(self, client: LazyClient, *, retry: bool) -> Dataset:
        attempt = 0
        while True:
            try:
                dataset = await bootstrap(client, self.config.dataset)
                self._bootstrap_problem = ""
                return dataset
            except ApiError as exc:
                self._note_error("bootstrap", exc)
                self._bootstrap_problem = f"API: {exc}"
                # a refused key or token heals (a token file rotated, a key fixed on the server): `run` waits for
                # it, not ready meanwhile, instead of exiting into a restart loop
                if not retry or not (exc.retryable or isinstance(exc, AuthenticationError)):
                    raise
            except ConfigError as exc:  # a token file or CA bundle the client cannot use
                raise in_domino_section(exc) from None
            attempt += 1
            delay = min(BOOTSTRAP_RETRY_CAP, 0.5 * 2**attempt)
            log.warning("agent.bootstrap_retry", error=redact(self._bootstrap_problem), retry_in=delay)
            await anyio.sleep(delay)

    # ---------------------------------------------------------------- facts and rules

    def on_fact(self, fact: Fact) -> None:
        """Feed one fact to metrics and the rules engine; hand the resulting requests to the queue."""
        if isinstance(fact, FileChanged):
            self._first_seen.setdefault(fact.path, fact.at)
        elif isinstance(fact, FileSynced):
            if fact.path.rpartition("/")[2] in self._markers:  # handled (an adopted one needs nothing); no Path
                self._markers_seen[fact.path] = fact.at
                self._rules_dirty = True
            if fact.adopted:
                pass  # already in the mount: nothing was copied
            elif fact.moved_from is None:
                self.metrics.files_synced.inc()
                self.metrics.bytes_synced.inc(fact.size)
            else:
                self.metrics.files_moved.inc()  # renamed in the mount: no byte was copied
            first = self._first_seen.pop(fact.path, None)
            if first is not None:
                self.metrics.drop_to_mount.observe(max(0.0, fact.at - first))
        elif isinstance(fact, FileDeleted):
            if fact.moved_to is None:
                self.metrics.files_deleted.inc()
            self._first_seen.pop(fact.path, None)
        new_state, requests = step(self.rules, self.rules_state, fact)
        if new_state is not self.rules_state and new_state != self.rules_state:  # a quiet tick costs no write
            self._log_held(self.rules_state, new_state)
            self.rules_state = new_state
            self._rules_dirty = True
        for request in requests:
            self._want_fresh_scan(request.requested_at)
            self._submit(request)

    def _log_held(self, before: RulesState, after: RulesState) -> None:
        """A trigger held back by its rule's min_interval is said once, with when it may fire."""
        for rule in self.rules:
            now_held, was = after.rules.get(rule.name), before.rules.get(rule.name)
            if now_held is not None and now_held.pending and not (was is not None and was.pending):
                fires_at = (now_held.last_fired_at or 0.0) + rule.min_interval
                log.info("rules.held", rule=rule.name, min_interval=rule.min_interval, fires_after=fires_at)

    def held(self) -> list[dict[str, Any]]:
        """Rules whose trigger waits for min_interval: the rule and when it may fire (a later run fires it)."""
        out = []
        for rule in self.rules:
            st = self.rules_state.rules.get(rule.name)
            if st is not None and st.pending:
                out.append({"rule": rule.name, "fires_after": (st.last_fired_at or 0.0) + rule.min_interval})
        return out

    def _submit(self, request: SnapshotRequest) -> int:
        if self.queue is None:
            raise AgentError("the agent is not ready to take snapshot requests yet")
        # the rules state (the rule's seq, its reset counters) and the job are stored in one transaction
        job = self.queue.submit(request, rules_state=self._durable())
        self._rules_dirty = False
        for rule in request.rules:
            self.metrics.rule_fires.labels(rule).inc()
        log.info(
            "rules.fired", rules=list(request.rules), tags=list(request.tags), scopes=list(request.scopes), job=job
        )
        return job

    def _durable(self) -> str:
        return Durable(self.rules_state.to_json(), self._markers_seen).dumps(self.clock())

    def _flush_rules_state(self) -> None:
        if self._rules_dirty and self.queue is not None:
            self.queue.save_rules_state(self._durable())
            self._rules_dirty = False

    def _want_fresh_scan(self, at: float) -> None:
        """In daemon mode, snapshots wait for a full scan started after `at`: the watcher may not have reported
        every file written before the trigger (inotify drops events in a storm of thousands of files, and a
        manual request can come before the watcher's next batch). In burst mode the pass itself was that scan."""
        if not self._daemon:
            return
        self._scan_wanted_at = max(at, self._scan_wanted_at or 0.0)
        if self.engine is not None:
            self.engine.request_scan()

    def covered(self, request: SnapshotRequest) -> bool:
        """True when the request may be sent now (the queue asks every 0.2 s: this stops at the first file that
        holds it; `waiting_for` counts them). See holding.py."""
        return holding(request, self.engine, self._scan_wanted_at, count=False) is None

    def waiting_for(self, request: SnapshotRequest) -> str | None:
        """What the request waits for before it is sent (None: nothing), for status and `once`'s summary."""
        return holding(request, self.engine, self._scan_wanted_at, count=True)

    def _on_queue_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "queue.snapshot_created":
            self.metrics.snapshots.inc()
            self.metrics.tags.inc(len(fields.get("tags", ())))  # the tag given with the create call
            self._api_answered()
        elif event == "queue.tagged":
            self.metrics.tags.inc()
            self._api_answered()
        elif event == "queue.dead_letter":
            forget_known(self._known_path)  # the dataset may be gone: the next burst run asks the API again
            self.metrics.errors.labels("dead_letter").inc()
            self.last_error = f"dead letter: {fields.get('error', '')}"
        elif event == "queue.retry":
            self.metrics.errors.labels("api_retry").inc()
            self.last_error = f"API: {fields.get('error', '')}"
            if fields.get("status") not in (409, 429):  # pacing or a taken tag is no outage: still ready
                self._api_problem = self.last_error

    def _api_answered(self) -> None:
        """A call went through: an API problem is over; so is the last error, once no dead letter is left."""
        self._api_problem = None
        if self.last_error is not None and not self._queue_status().get("dead_letters"):
            self.last_error = None

    def _forget_old(self, now: float) -> None:
        """Once a minute: forget markers handled over an hour ago, and first-seen times of paths no longer
        pending (a temp file that vanished unsynced): a daemon that runs for months keeps flat memory."""
        if now - self._forgot_at < 60.0:
            return
        self._forgot_at = now
        cutoff = now - KEEP_SECONDS
        self._markers_seen = {path: at for path, at in self._markers_seen.items() if at >= cutoff}
        if self.engine is not None and self._first_seen:
            pending = self.engine.pending()
            self._first_seen = {path: at for path, at in self._first_seen.items() if path in pending}

    async def _continue_seq(self, client: LazyClient) -> None:
        """No saved rules state (a first start, or a state folder that was lost, as an emptyDir is with its pod):
        each rule's `{seq}` goes on from the highest the dataset's tags already carry, so the new counter does not
        take `drop-1`, `drop-2`... away from the snapshots an earlier agent made."""
        rules = [rule for rule in self.rules if any("{seq" in template for template in rule.tags)]
        if not rules or self.dataset is None:
            return
        try:
            tags = {tag async for snap in client.iter_snapshots(self.dataset.id) for tag in snap.tags}
        except ApiError as exc:
            log.warning("rules.seq_unknown", error=redact(str(exc)), hint="{seq} starts again from 1")
            return
        floors = {rule.name: highest_seq(rule.tags, rule.name, tags) for rule in rules}
        if any(floors.values()):
            self.rules_state = with_seq_floors(self.rules_state, floors)
            log.info("rules.seq_continued", seq={name: n for name, n in floors.items() if n})

    def _count_sync_errors(self) -> None:
        """Copy and delete errors (the engine counts them) reach the errors metric, as kind `sync`."""
        if self.engine is None:
            return
        errors = int(self.engine.status().get("errors", 0))
        if errors > self._sync_errors_seen:
            self.metrics.errors.labels("sync").inc(errors - self._sync_errors_seen)
            self._sync_errors_seen = errors

    def _note_error(self, kind: str, exc: BaseException) -> None:
        self.metrics.errors.labels(kind).inc()
        self.last_error = f"{kind}: {exc}"

    # ---------------------------------------------------------------- the HTTP server's view

    def is_alive(self) -> bool:
        return self._alive

    def readiness(self) -> tuple[bool, str]:
        if self._stopping:
            return False, "stopping"
        if self._bootstrap_problem:
            return False, self._bootstrap_problem
        if self.engine is None:
            return False, "starting"
        if not self.engine.ready:
            problem = self.engine.status().get("mount_problem")
            return False, f"mount: {problem}" if problem else "first scan not finished"
        source = self.engine.source_problem  # readiness is asked by every probe and scrape: no status() here
        if source:  # an unmounted or unreadable source: nothing reaches the mount (nothing is deleted either)
            return False, f"source: {source}"
        if self._api_problem is not None:
            return False, self._api_problem
        return True, "ok"

    def _queue_status(self) -> dict[str, Any]:
        return self.queue.status() if self.queue is not None else {}

    def status(self) -> dict[str, Any]:
        ready, reason = self.readiness()
        return {
            "ready": ready,
            "reason": reason,
            "dataset": {"id": self.dataset.id, "name": self.dataset.name} if self.dataset else None,
            "mount": str(self.mount) if self.mount else None,
            "source": str(self.config.source.path),
            "sync": self.engine.status() if self.engine else None,
            "queue": self._queue_status(),
            "rules": [r.name for r in self.rules],
            "held": self.held(),
            "last_error": self.last_error or (self.engine.last_error if self.engine else None),
        }

    def _sync_status(self) -> dict[str, Any] | None:
        return self.engine.status() if self.engine is not None else None

    def metrics_text(self) -> bytes:
        return self.metrics.render()

    def request_snapshot(self, tags: Sequence[str]) -> int:
        """A manual snapshot: goes through the rules engine so manual rules add their tags too."""
        if self.queue is None:
            raise AgentError("the agent is not ready to take snapshot requests yet (starting)")
        fact = ManualRequest(at=self.clock(), tags=tuple(tags))
        self._want_fresh_scan(fact.at)
        new_state, requests = step(self.rules, self.rules_state, fact)
        self.rules_state, self._rules_dirty = new_state, True
        if not requests:
            requests = (SnapshotRequest(rules=("manual",), tags=tuple(tags), scopes=("",), requested_at=fact.at),)
        return [self._submit(r) for r in requests][-1]

    def retry_dead(self, job_id: int | None) -> int:
        return self.queue.retry_dead(job_id) if self.queue is not None else 0

    # ---------------------------------------------------------------- modes

    async def run(self) -> int:
        """Daemon mode until SIGTERM or SIGINT; returns the exit code (0 after a clean drain)."""
        self._daemon = True
        self._scan_wanted_at = self.clock()  # jobs recovered from the queue wait for the start scan too
        self._start_scope, self._engine_scope = anyio.CancelScope(), anyio.CancelScope()
        with self._claim():  # a second agent on this state folder is refused before anything starts
            async with anyio.create_task_group() as serving:
                await serving.start(self._watch_signals)  # first: a stop during the start is clean too
                # the HTTP server before the bootstrap: /healthz answers (and /readyz says why not ready) while the
                # bootstrap retries an API that is down, so probes do not restart the agent; a taken port fails
                # before any dataset is created
                if self.config.server.enabled:
                    self.bound_port = await self._start_server(serving)
                with self._start_scope:  # a signal before the loops go cancels the start
                    async with self._assembled(retry_bootstrap=True), anyio.create_task_group() as tg:
                        await self._run_tasks(tg)
                if self._start_scope.cancelled_caught:
                    pending, queued = self._left_at_stop
                    log.info(
                        "agent.stopped", drained=not pending and not queued, pending_files=pending,
                        queued_snapshots=queued, during="start",
                    )  # fmt: skip
                serving.cancel_scope.cancel()  # the agent has stopped: so does its server
        return 0

    async def _run_tasks(self, tg: anyio.abc.TaskGroup) -> None:
        """The daemon's loops, in `tg`: queue, rules ticker, engine (after any snapshot still being taken)."""
        assert self.engine is not None and self.queue is not None
        await self.queue.settle_in_flight()  # before any copy: a snapshot still being taken stays clean
        self._group = tg  # from now on a signal drains
        tg.start_soon(self.queue.run)
        tg.start_soon(self._ticker)
        if self.progress:
            from agent.cli.progress import show_first_sync

            tg.start_soon(show_first_sync, self._sync_status)
        tg.start_soon(self._run_engine)

    async def _run_engine(self) -> None:
        assert self.engine is not None and self._engine_scope is not None
        with self._engine_scope:
            await self.engine.run()

    async def _start_server(self, tg: anyio.abc.TaskGroup) -> int:
        """Serve the HTTP endpoints in `tg`; the bound port. A port that cannot be had is the caller's error
        (a ConfigError naming server.listen), not one inside the task group."""
        from agent.server import serving  # aiohttp's server side: only daemon mode serves

        async def serve(*, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
            async with serving(self, self.config.server.host, self.listen_port) as port:
                task_status.started(port)
                await anyio.sleep_forever()

        port: int = await tg.start(serve)
        return port

    async def _ticker(self) -> None:
        while True:
            now = self.clock()
            self.on_fact(Tick(now))
            self._flush_rules_state()
            self._count_sync_errors()
            self._forget_old(now)
            wake = next_wakeup(self.rules, self.rules_state)
            delay = 1.0 if wake is None else min(1.0, max(0.02, wake - now))
            await anyio.sleep(delay)

    async def _watch_signals(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The first SIGTERM or SIGINT drains (see shutdown), or, while the agent is still starting (its bootstrap
        waiting for the API), stops it there; a second one while it drains stops at once."""
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._stopping:
                    log.warning("agent.stop_now", signal=name)
                    self._stop_now = True
                    if self.engine is not None:
                        self.engine.halt_scans()  # a walk in a worker thread would hold the exit until it ends
                    if self._drain_scope is not None:
                        self._drain_scope.cancel()
                    continue
                log.info("agent.stopping", signal=name, timeout=self.config.shutdown_timeout)
                self._stopping = True
                tg = self._group
                if tg is None:  # still starting: nothing to drain
                    self._alive = False
                    self._left_at_stop = (
                        int(self.engine.status().get("pending", 0) or 0) if self.engine else 0,
                        int(self._queue_status().get("depth", 0)),  # what the state DB holds for the next start
                    )
                    if self._start_scope is not None:
                        self._start_scope.cancel()
                else:
                    tg.start_soon(self.shutdown, tg)

    async def shutdown(self, tg: anyio.abc.TaskGroup) -> None:
        """Drain, then stop (the whole drain bounded by shutdown_timeout): a last full scan; what is settled or
        settles meanwhile is copied (copies in flight finish); the rules see it (a marker that landed fires);
        the snapshots due are sent. What is left stays in the state DB and the queue for the next start."""
        self._stopping = True
        assert self.engine is not None and self.queue is not None
        deadline = self.clock() + self.config.shutdown_timeout
        synced = sent = False
        with anyio.move_on_after(self.config.shutdown_timeout) as self._drain_scope:
            if self._stop_now:  # a second signal came before the drain began
                self._drain_scope.cancel()
            synced = await self.engine.finish()
            self.on_fact(Tick(self.clock()))
            self._flush_rules_state()
            sent = await self.queue.drain()
            await self.engine.flush()  # the copies since the last snapshot, on disk before the host may go down
        left = max(0.0, deadline - self.clock())
        if self._engine_scope is not None:
            self._engine_scope.cancel()  # copies still running (past the timeout) stop; their temp files go
        self._flush_rules_state()
        self._alive = False
        tg.cancel_scope.cancel()
        status = self.engine.status()
        queue = self._queue_status()
        log.info(
            "agent.stopped",
            drained=left > 0 and synced and sent,
            pending_files=status.get("pending", 0),
            queued_snapshots=queue.get("depth", 0),
        )

    async def once(self, *, drain_timeout: float | None = None) -> tuple[int, dict[str, Any]]:
        """Burst mode: sync everything pending, apply the rules, drain the queue. Returns (exit code, summary)."""
        async with self._assembled(retry_bootstrap=False):
            assert self.engine is not None and self.queue is not None
            done = anyio.Event()
            async with anyio.create_task_group() as tg:
                if self.progress:
                    from agent.cli.progress import show_first_sync

                    tg.start_soon(show_first_sync, self._sync_status, done.is_set)
                await self.queue.settle_in_flight()
                report: SyncReport = await self.engine.sync_once()
                done.set()  # the bar draws its final count and returns
            self.on_fact(Tick(self.clock()))
            self._flush_rules_state()
            # the sync is over: a snapshot that is not covered now (deletes the rail refused) waits for a later run,
            # and so do all when the copies cannot be flushed to disk first (no driver here to copy them again)
            blocked = await self.engine.snapshot_blocker() if self._queue_status().get("depth") else None
            if blocked is not None:
                log.warning("queue.snapshots_wait", reason=blocked)
                drained = False
            else:
                drained = await self.queue.drain(timeout=drain_timeout, wait_for_coverage=False)
            self._count_sync_errors()
            summary = {
                "copied": report.copied,
                "bytes": report.bytes,
                "deleted": report.deleted,
                "skipped": report.skipped,
                "failed": [{"path": p, "error": e} for p, e in report.failed],
                "refused_delete": report.refused_delete,
                "mount_problem": report.mount_problem,
                "queue": self._queue_status(),
                "held": self.held(),
            }
            code = 0 if report.ok and drained else 1
            return code, summary


@asynccontextmanager
async def _shielded_exit(stack: AsyncExitStack) -> AsyncIterator[None]:
    """Unwind `stack` shielded from cancellation: an agent stopped while it starts (a signal during the
    bootstrap) still closes what it opened (its HTTP client, the embedded emulator, the state DB)."""
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await stack.aclose()


def dialect_of(value: str) -> Dialect | None:
    return None if value == "auto" else Dialect(value)
