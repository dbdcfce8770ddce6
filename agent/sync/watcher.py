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

# The watch thread sleeps STEP_MS, then takes the GIL to look for changes and the stop event: that is its
# idle cost (25 wake-ups a second) and its latency (a batch is handed over one quiet step after the last
# change, so within 2 steps). Detection latency is hidden by the settle time as long as it is shorter: a
# file's settle clock starts at its ctime (its last write), not when the event arrives.
STEP_MS = 40
DEBOUNCE_MS = 200  # in a storm, hand a batch over at least this often
RUST_TIMEOUT_MS = 5000  # with no change the thread comes back this often (the stop event is checked each step)


class WatcherFactory(Protocol):
    """Given the source root and a stop event, yield sets of absolute paths that may have changed."""

    def __call__(self, root: str, stop: anyio.Event) -> AsyncIterator[set[str]]: ...


async def watchfiles_changes(root: str, stop: anyio.Event) -> AsyncIterator[set[str]]:
    """The default watcher: `watchfiles.awatch` tuned for latency, with no filter of its own."""
    import watchfiles  # daemon mode only: a burst run never watches

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
