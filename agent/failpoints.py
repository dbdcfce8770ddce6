"""Failpoints: named places where a crash test can make the agent die with SIGKILL. A test hook only.

    DOMINO_SYNC_FAILPOINTS="copy.mid"            die at the first hit of copy.mid
    DOMINO_SYNC_FAILPOINTS="queue.after_create@2,copy.after_rename"
                                                 die at the 2nd hit of queue.after_create, or the 1st of
                                                 copy.after_rename, whichever comes first

The variable is read once, at import. When it is unset (production), `failpoint(name)` costs one lookup in an
empty frozenset. The process kills itself with SIGKILL (no cleanup, no atexit, no flush: what kill -9 does),
so the reliability suite can stop the agent at an exact stage and check what a restart recovers. One line
`failpoint NAME hit N: SIGKILL` goes to stderr first, so a test can tell where the process died.

Where they are (one line each):
    copy.mid            sync/transfer.py: part of a file's bytes are in the temp file; no fsync, no rename yet
    copy.before_rename  sync/copier.py: the temp file is complete, before it is renamed over the target
    copy.after_rename   sync/batches.py: the batch is renamed into the mount (and durable, with `batch`), before
                        the state DB commit of its rows
    queue.before_submit queue.py: a rule fired (its files are recorded as synced), before the job is stored
    queue.before_create queue.py: the create call is recorded as begun, before it is sent
    queue.after_create  queue.py: the server answered the snapshot creation, before its id is recorded
    queue.between_tags  queue.py: the server answered a tag call, before it is recorded and the next one is sent
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping

ENV = "DOMINO_SYNC_FAILPOINTS"


def parse(text: str) -> dict[str, int]:
    """`"a,b@3"` -> {"a": 1, "b": 3}: the hit (1-based) at which each named failpoint fires."""
    armed: dict[str, int] = {}
    for item in text.split(","):
        name, _, nth = item.strip().partition("@")
        if not name:
            continue
        try:
            armed[name] = max(1, int(nth)) if nth else 1
        except ValueError:
            raise ValueError(f"{ENV}: {item.strip()!r} is not NAME or NAME@N (N a whole number)") from None
    return armed


def _arm(env: Mapping[str, str]) -> tuple[frozenset[str], dict[str, int]]:
    armed = parse(env.get(ENV, ""))
    return frozenset(armed), armed


_NAMES, _AT = _arm(os.environ)
_hits: dict[str, int] = {}
_lock = threading.Lock()


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL when `name` is armed in DOMINO_SYNC_FAILPOINTS and this is its Nth hit."""
    if name not in _NAMES:
        return
    with _lock:
        hit = _hits[name] = _hits.get(name, 0) + 1
    if hit >= _AT[name]:
        os.write(2, f"failpoint {name} hit {hit}: SIGKILL\n".encode())  # so a test knows where it died
        os.kill(os.getpid(), signal.SIGKILL)


def arm(spec: str) -> None:
    """Arm failpoints from a spec written like the variable (`""` disarms all), hits counted afresh. For a
    test that forks a child and arms it there; the agent itself reads only the variable."""
    global _NAMES, _AT
    _NAMES, _AT = _arm({ENV: spec})
    with _lock:
        _hits.clear()


def armed() -> frozenset[str]:
    """The failpoint names this process was started with (empty in production)."""
    return _NAMES
