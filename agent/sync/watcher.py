"""Change events from the source folder, behind a small Protocol so tests (and users) can script them.

The engine only needs "these paths may have changed": it stats every path again itself, and a full scan
against the state DB (at start, every `source.rescan`, and after a batch of 1,000 or more changes, since
inotify can overflow silently, samuelcolvin/watchfiles#348) catches whatever the events miss. A batch that
holds the source root itself asks the engine for such a scan.

Names that are not UTF-8: watchfiles (1.x) cannot hand them over. Its notify callback turns any event on
such a name (even an open, as when the engine copies the file) into a sticky "Unable to decode path ... to
string" error that drops the event, the other changes of that batch, and every later `watch()` of that watcher.
So the default watcher catches that one error and warns once per name. For a file, it starts a fresh watcher
and hands over the name (decoded as `os.fsdecode` does, like the scanner's names, so the engine's stat finds
it) and the root (a full scan for the dropped changes). A folder with such a name kills every new watcher at
once (watching a tree opens each folder), so while it exists the watcher only asks for a full scan every
`fallback_scan` seconds, and watches again once it is gone.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Protocol

import anyio

from agent.logs import get_logger

log = get_logger("agent.sync")

# The watch thread sleeps STEP_MS, then takes the GIL to look for changes and the stop event: that is its
# idle cost (25 wake-ups a second) and its latency (a batch is handed over one quiet step after the last
# change, so within 2 steps). Detection latency is hidden by the settle time as long as it is shorter: a
# file's settle clock starts at its ctime (its last write), not when the event arrives.
STEP_MS = 40
DEBOUNCE_MS = 200  # in a storm, hand a batch over at least this often
RUST_TIMEOUT_MS = 5000  # with no change the thread comes back this often (the stop event is checked each step)
# A file with an undecodable name written in many chunks breaks the watcher at each write: restarts (each
# re-adds the inotify watches and asks for a full scan) are at least this many seconds apart.
RESTART_GAP = 1.0
# While a folder whose name is not UTF-8 exists in the tree no watchfiles watcher survives its own start (it
# opens every folder to watch it, and that open is an event on the bad name): the engine scans this often.
FALLBACK_SCAN = 5.0
MAX_WARNED = 1000  # names warned about, remembered so each is warned about once (bounded)

_UNDECODABLE = re.compile(r'Unable to decode path "(.*)" to string', re.DOTALL)
# Rust's Debug form of a path: char escapes for quotes, backslash and controls, \u{...} for other
# unprintable characters, \xNN for each byte that is not UTF-8.
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|u\{[0-9A-Fa-f]{1,6}\}|.)", re.DOTALL)
_SIMPLE = {"0": "\0", "t": "\t", "r": "\r", "n": "\n", "\\": "\\", "'": "'", '"': '"'}


class WatcherFactory(Protocol):
    """Given the source root and a stop event, yield sets of absolute paths that may have changed."""

    def __call__(self, root: str, stop: anyio.Event) -> AsyncIterator[set[str]]: ...


def sole_cause(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups, or `exc` itself when a group holds several."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def rust_debug_bytes(text: str) -> bytes | None:
    """The bytes of a path from its Rust Debug form without the quotes (`caf\\xE9.csv` -> b'caf\\xe9.csv'),
    or None if `text` is not in that form."""
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(text):
        plain = text[pos : match.start()]
        if '"' in plain:
            return None
        out += plain.encode()
        esc = match.group(1)
        if esc[0] == "x" and len(esc) == 3:
            out.append(int(esc[1:], 16))
        elif esc.startswith("u{"):
            try:
                out += chr(int(esc[2:-1], 16)).encode()
            except (ValueError, UnicodeEncodeError):  # beyond U+10FFFF, or a lone surrogate
                return None
        elif esc in _SIMPLE:
            out += _SIMPLE[esc].encode()
        else:
            return None
        pos = match.end()
    rest = text[pos:]
    if '"' in rest:
        return None
    return bytes(out + rest.encode())


def undecodable_path(message: str) -> str | None:
    """The path in watchfiles' "Unable to decode path ... to string" error as `os.fsdecode` names it (invalid
    bytes as surrogate escapes), or None if `message` is not that error or its path cannot be read back."""
    match = _UNDECODABLE.fullmatch(message.strip())
    if match is None:
        return None
    raw = rust_debug_bytes(match.group(1))
    return None if raw is None else os.fsdecode(raw)


def is_undecodable_error(message: str) -> bool:
    """Whether `message` is watchfiles' error for a file name that is not UTF-8."""
    return _UNDECODABLE.fullmatch(message.strip()) is not None


def _undecodable_message(failure: Exception, internal_error: type[Exception]) -> str:
    """The message of watchfiles' undecodable-name error inside `failure`; any other failure is raised as its
    real cause (the engine logs that, not "unhandled errors in a TaskGroup")."""
    cause = sole_cause(failure)
    if isinstance(cause, internal_error) and is_undecodable_error(str(cause)):
        return str(cause)
    if cause is failure:
        raise failure
    raise cause from None


async def watchfiles_changes(
    root: str, stop: anyio.Event, *, restart_gap: float = RESTART_GAP, fallback_scan: float = FALLBACK_SCAN
) -> AsyncIterator[set[str]]:
    """The default watcher: `watchfiles.awatch` tuned for latency, with no filter of its own, that survives
    names that are not UTF-8 (see the module docstring)."""
    import watchfiles  # daemon mode only: a burst run never watches
    from watchfiles._rust_notify import WatchfilesRustInternalError

    warned: set[str] = set()
    restarted_at = -math.inf
    while not stop.is_set():
        try:
            async with aclosing(
                watchfiles.awatch(
                    root,
                    watch_filter=None,
                    debounce=DEBOUNCE_MS,
                    step=STEP_MS,
                    stop_event=stop,
                    rust_timeout=RUST_TIMEOUT_MS,
                    recursive=True,
                    ignore_permission_denied=True,
                )
            ) as changes:
                async for batch in changes:
                    yield {path for _, path in batch}
            return
        except Exception as failure:
            message = _undecodable_message(failure, WatchfilesRustInternalError)
        path = undecodable_path(message)
        raw = None if path is None else os.fsencode(path)
        folder = raw is not None and await anyio.to_thread.run_sync(os.path.isdir, raw)
        key = path if path is not None else message
        if key in warned:
            log.debug("sync.watch_undecodable", error=message)
        else:
            if len(warned) < MAX_WARNED:
                warned.add(key)
            effect = (
                f"no change events while this folder exists: a full scan every {fallback_scan:g} s instead"
                if folder
                else "watcher restarted; the file is synced by name and a full scan covers dropped events"
            )
            log.warning("sync.watch_undecodable", error=f"WatchfilesRustInternalError: {message}", effect=effect)
        if folder:
            assert raw is not None
            while not stop.is_set() and await anyio.to_thread.run_sync(os.path.lexists, raw):
                yield {root}  # the engine scans: the only way to see changes while watchfiles cannot watch
                with anyio.move_on_after(fallback_scan):
                    await stop.wait()
        else:
            wait = restarted_at + restart_gap - time.monotonic()
            if wait > 0:
                with anyio.move_on_after(wait):
                    await stop.wait()
        if stop.is_set():
            return
        restarted_at = time.monotonic()
        # The root asks the engine for a full scan. The engine handles this batch only after the new watcher
        # is set up (awatch builds it before its first await), so the scan sees whatever happened meanwhile.
        yield {root} if path is None or folder else {root, path}


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
