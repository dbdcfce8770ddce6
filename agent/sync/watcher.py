"""Change events from the source folder, behind a small Protocol so tests (and users) can script them.

The engine only needs "these paths may have changed": it stats every path again itself, and a full scan
against the state DB (at start, every `source.rescan`, and after a batch of 1,000 or more changes, since
inotify can overflow silently, samuelcolvin/watchfiles#348) catches whatever the events miss.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

import anyio
import watchfiles

DEBOUNCE_MS = 50  # gather events for at most this long before handing a batch over
STEP_MS = 10  # ...and hand it over once no event came for this long
RUST_TIMEOUT_MS = 1000  # the watch thread comes back at least this often (the stop event is also checked)


class WatcherFactory(Protocol):
    """Given the source root and a stop event, yield sets of absolute paths that may have changed."""

    def __call__(self, root: str, stop: anyio.Event) -> AsyncIterator[set[str]]: ...


async def watchfiles_changes(root: str, stop: anyio.Event) -> AsyncIterator[set[str]]:
    """The default watcher: `watchfiles.awatch` tuned for latency, with no filter of its own."""
    async for changes in watchfiles.awatch(
        root,
        watch_filter=None,
        debounce=DEBOUNCE_MS,
        step=STEP_MS,
        stop_event=stop,
        rust_timeout=RUST_TIMEOUT_MS,
        recursive=True,
        ignore_permission_denied=True,
    ):
        yield {path for _, path in changes}


class ScriptedWatcher:
    """A stand-in watcher for tests: batches pushed with `push()` (from the test) are yielded in order."""

    def __init__(self) -> None:
        self._batches: deque[set[str]] = deque()
        self.started = False

    def push(self, paths: set[str] | list[str]) -> None:
        self._batches.append(set(paths))

    async def __call__(self, root: str, stop: anyio.Event) -> AsyncIterator[set[str]]:
        self.started = True
        while not stop.is_set():
            while self._batches and not stop.is_set():
                yield self._batches.popleft()
            await anyio.sleep(0.01)
