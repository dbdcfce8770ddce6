"""Work in forked processes: `spawn` a child that runs a function and sends back its result pickled through a
pipe, `collect` the answers, `kill` a child. Used where Python's per-file work would otherwise queue behind one
GIL: a full scan's shares (scanfork.py) and big batches of copies (copyfork.py).

A child runs nothing but its work: no logging, no SQLite, no event loop, no import (another thread of the
parent may have held the import lock when it forked). First it closes every descriptor but its pipe (a child
outliving a killed agent must not hold the state lock or the listening socket), asks to be killed with its
parent (`PR_SET_PDEATHSIG`), and ignores stop signals sent to the whole group (the parent stops it, or lets it
finish while it drains). It leaves with `os._exit` (no cleanup of the parent's objects, no atexit, no flush).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import signal
import threading
import warnings
from collections.abc import Callable


def default_workers() -> int:
    """Processes for a big scan: the cores this process may run on, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def fork(*pipes: int) -> int | None:
    """`os.fork()`; None, and `pipes` closed, when no process could be started. Quiet about 3.12+'s warning
    on forking a threaded process: the child runs no thread, and takes no lock (forks.py's rules)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return os.fork()
    except OSError:
        for fd in pipes:
            os.close(fd)
        return None


def spawn(work: Callable[[], object]) -> tuple[int, int] | None:
    """Fork a child that runs `work()` and sends back what it returns, pickled; (pid, read end of its pipe), or
    None when no child could be started. Read the answer with `collect`."""
    try:
        read_end, write_end = os.pipe()
    except OSError:  # out of descriptors: the caller does the work itself
        return None
    parent = os.getpid()
    pid = fork(read_end, write_end)
    if pid is None:
        return None
    if pid == 0:  # the child: work, send, leave
        status = 1
        try:
            detach(parent, write_end)
            write_all(write_end, pickle.dumps(work(), protocol=pickle.HIGHEST_PROTOCOL))
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to the pipe `fd` (a pipe takes 64 KiB at a time)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Children:
    """The children of some work under way that another thread may stop: `halt` set, then `kill_all`. A child
    started here (`start`) is killed at once if `halt` was set while it was forked, and its pid is forgotten,
    under the lock, before it is reaped (`collect`), so a kill never reaches a pid the system has given to
    another process."""

    def __init__(self, halt: threading.Event) -> None:
        self.halt = halt
        self._pids: set[int] = set()
        self._lock = threading.Lock()

    def start(self, work: Callable[[], object]) -> tuple[int, int] | None:
        """`spawn(work)`, the child known here until `collect` reaps it."""
        child = spawn(work)
        if child is not None:
            with self._lock:
                self._pids.add(child[0])
            if self.halt.is_set():  # halted while it was being forked
                kill(child[0])
        return child

    def track(self, pid: int) -> bool:
        """Know the running `pid` (a worker given a batch, workers.py) until `forget`: `kill_all` reaches it.
        False, and it is killed, when `halt` is set already."""
        with self._lock:
            self._pids.add(pid)
        if self.halt.is_set():
            kill(pid)
            return False
        return True

    def collect(self, children: list[tuple[int, int]]) -> list[object | None]:
        """`collect(children)`, each pid forgotten before it is reaped."""
        return collect(children, reaping=self.forget)

    def forget(self, pid: int) -> None:
        with self._lock:
            self._pids.discard(pid)

    def kill_all(self) -> None:
        with self._lock:
            for pid in self._pids:
                kill(pid)

    def pids(self) -> set[int]:
        with self._lock:
            return set(self._pids)


def kill(pid: int) -> None:
    """SIGKILL a child (gone already is fine); `collect` or `waitpid` reaps it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def detach(parent: int, *keep: int) -> None:
    """In a fresh child: hold nothing of the parent's but the pipes `keep` (not its state lock, not its listening
    socket: a child outliving a killed agent must not keep a restart out), die with the parent (SIGKILL when
    the thread that forked it ends; at once if it already has), and leave stop signals to the parent: a Ctrl-C
    or a systemd stop reaches the whole group, and the parent decides (its drain lets the walk finish)."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _max_fd())
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (OSError, ValueError):
        return 65536


def _libc_prctl() -> Callable[..., int] | None:
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl: Callable[..., int] = fn
    return prctl


_PR_SET_PDEATHSIG = 1
_PRCTL = _libc_prctl()


def collect(children: list[tuple[int, int]], reaping: Callable[[int], None] | None = None) -> list[object | None]:
    """Each child's answer (None when it did not exit cleanly or its bytes do not load), in order. Reads every
    pipe to its end, all at once (a child blocks while its pipe is full), and reaps the children, calling
    `reaping(pid)` first (a caller that may `kill` its children from another thread forgets the pid there,
    while it cannot yet belong to another process)."""
    chunks: dict[int, list[bytes]] = {fd: [] for _, fd in children}
    with selectors.DefaultSelector() as selector:
        for _, fd in children:
            selector.register(fd, selectors.EVENT_READ)
        open_fds = len(children)
        while open_fds:
            for key, _ in selector.select():
                data = os.read(key.fd, 1 << 20)
                if data:
                    chunks[key.fd].append(data)
                else:
                    selector.unregister(key.fd)
                    open_fds -= 1
    answers: list[object | None] = []
    for pid, fd in children:
        os.close(fd)
        if reaping is not None:
            reaping(pid)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # reaped by someone else (SIGCHLD ignored): its exit status is unknown
            status = -1
        answer = None
        if status != -1 and os.waitstatus_to_exitcode(status) == 0:
            try:
                answer = pickle.loads(b"".join(chunks[fd]))  # noqa: S301 - from our own forked child
            except Exception:  # a torn answer counts as none, whatever broke it
                answer = None
        answers.append(answer)
    return answers
