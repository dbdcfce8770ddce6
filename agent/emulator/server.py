"""Start and stop the emulator in-process: `running_emulator` (async context manager) and `EmulatorThread`
(the same server on its own event loop in a background thread, for synchronous callers).

State lives in `<data_dir>/emulator.db`; starting again with the same data_dir keeps every dataset, snapshot,
tag and grant. Users' keys come from the options at each start; with no users, one user "admin" gets a key
generated once and kept in the state database, so it survives restarts.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread
from aiohttp import web
from anyio.from_thread import start_blocking_portal
from structlog.typing import FilteringBoundLogger

from agent.api.models import Dialect
from agent.emulator.app import build_app
from agent.emulator.faults import Stats
from agent.emulator.folders import Folders
from agent.emulator.operations import Operations
from agent.emulator.options import EmulatorOptions
from agent.emulator.store import Store
from agent.errors import ConfigError, StateError
from agent.logs import get_logger, register_secret
from agent.statelock import folder_lock

DEFAULT_USER = "admin"
DEFAULT_KEY_META = "default_user_key"
SHUTDOWN_TIMEOUT = 2.0
LOCK_NAME = "emulator.lock"
"""Held for the emulator's life: `domino-sync emulator` keeps its data folder to itself; the agent's embedded
emulators share theirs (`exclusive=False`: `check` and `once --dry-run` start one beside a running agent's), and
neither kind starts while the other holds it."""


@dataclass(frozen=True, slots=True)
class RunningEmulator:
    """A started emulator: where it listens, who may call it, where its folders are."""

    url: str
    keys: dict[str, str] = field(repr=False)  # user name -> key
    default_key: str = field(repr=False)  # key of the first user
    mount_root: Path
    data_dir: Path
    dialect: Dialect
    port: int
    _stats: Stats = field(repr=False)

    def stats(self) -> dict[str, Any]:
        """The same JSON as GET /__emulator__/stats."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()


def _log() -> FilteringBoundLogger:
    """The logger, fetched at use: a module-level bound logger would keep the configuration of import time."""
    return get_logger("agent.emulator")


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):  # noqa: S104 - mapping the wildcard to a reachable address, not binding it
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _default_key(store: Store) -> str:
    key = store.meta(DEFAULT_KEY_META)
    if key is None:
        key = secrets.token_urlsafe(24)
        store.set_meta(DEFAULT_KEY_META, key)
    return key


def _open(options: EmulatorOptions, folders: Folders, stack: ExitStack) -> Store:
    """The emulator's store, its data folder locked in `stack` first (one emulator per data folder)."""
    try:
        options.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create emulator data dir {options.data_dir}: {exc.strerror}") from exc
    expected = "a data folder no other emulator serves"
    stack.enter_context(folder_lock(options.data_dir, LOCK_NAME, "data_dir", expected, shared=not options.exclusive))
    folders.ensure_root()
    store = Store(options.db_path)
    stack.callback(store.close)  # before the lock goes
    return store


@asynccontextmanager
async def running_emulator(options: EmulatorOptions) -> AsyncIterator[RunningEmulator]:
    """Serve the emulator on options.host:options.port (0: any free port) until the block exits."""
    options.validate()
    dialect = Dialect(options.dialect)
    folders = Folders(options.resolved_mount_root)
    stack = ExitStack()
    try:
        store = await anyio.to_thread.run_sync(_open, options, folders, stack)
    except BaseException:
        stack.close()
        raise
    try:
        keys = dict(options.users) or {DEFAULT_USER: await anyio.to_thread.run_sync(_default_key, store)}
        for key in keys.values():
            register_secret(key)
        stats = Stats()
        ops = Operations(
            store, folders, max_active_snapshots=options.max_active_snapshots, snapshot_delay=options.snapshot_delay
        )
        stack.callback(ops.close)
        app = build_app(
            ops,
            dialect,
            {key: user for user, key in keys.items()},
            stats,
            fail_rate=options.fail_rate,
            latency_ms=options.latency_ms,
            rate_limit=options.rate_limit,
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        port = options.port  # the bound port once the site starts (options.port may be 0: any free port)
        try:
            try:
                await web.TCPSite(runner, options.host, options.port).start()
            except OSError as exc:
                raise ConfigError("port", f"{options.host}:{options.port}", f"a free port ({exc.strerror})") from exc
            port = int(runner.addresses[0][1])
            url = f"http://{_url_host(options.host)}:{port}"
            _log().info("emulator.started", url=url, dialect=dialect.value, mount_root=str(folders.root))
            yield RunningEmulator(
                url=url,
                keys=keys,
                default_key=next(iter(keys.values())),
                mount_root=folders.root,
                data_dir=options.data_dir,
                dialect=dialect,
                port=port,
                _stats=stats,
            )
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
            _log().info("emulator.stopped", host=options.host, port=port)
    finally:
        stack.close()  # delayed snapshot copies not taken yet stay `pending`; the store closes, then the lock goes


class EmulatorThread:
    """`with EmulatorThread(options) as emu:` runs the emulator on its own event loop in a background thread,
    for synchronous code (requests, CLI subprocesses). Same attributes as RunningEmulator."""

    def __init__(self, options: EmulatorOptions) -> None:
        self.options = options
        self._stack: ExitStack | None = None
        self._emulator: RunningEmulator | None = None

    def __enter__(self) -> EmulatorThread:
        with ExitStack() as stack:
            portal = stack.enter_context(start_blocking_portal(backend="asyncio"))
            self._emulator = stack.enter_context(portal.wrap_async_context_manager(running_emulator(self.options)))
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)

    @property
    def emulator(self) -> RunningEmulator:
        if self._emulator is None or self._stack is None:
            raise RuntimeError("EmulatorThread is not running: use it as a context manager")
        return self._emulator

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def keys(self) -> dict[str, str]:
        return self.emulator.keys

    @property
    def default_key(self) -> str:
        return self.emulator.default_key

    @property
    def mount_root(self) -> Path:
        return self.emulator.mount_root

    @property
    def data_dir(self) -> Path:
        return self.emulator.data_dir

    @property
    def dialect(self) -> Dialect:
        return self.emulator.dialect

    @property
    def port(self) -> int:
        return self.emulator.port

    def stats(self) -> dict[str, Any]:
        return self.emulator.stats()

    def reset_stats(self) -> None:
        self.emulator.reset_stats()
