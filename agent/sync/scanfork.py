"""A full scan spread over forked processes: on a big tree the walk is Python's work per file (an `lstat` and a
comparison with the row), one core's worth in one interpreter; shared by folder between processes it takes
each core's share. Threads would not help: the GIL serialises the per-file work between the syscalls.

The calling process keeps one share of the folders and forks one child per other share. A child inherits the
known rows (copy-on-write: nothing is sent to it), walks its folders into its own `ScanResult`, pickles that
into a pipe and leaves with `os._exit` (no cleanup of the parent's objects, no atexit, no flush). The parent
merges the results; a child that fails or dies (its share of the result never completes) is walked again by
the parent, so a failed fork costs time, never a wrong answer.

A child runs nothing but the walk: no logging, no SQLite, no event loop. First it closes every descriptor but
its pipe (a child outliving a killed agent must not hold the state lock or the listening socket), asks to be
killed with its parent (`PR_SET_PDEATHSIG`), and ignores stop signals sent to the whole group (the parent
stops it, or lets it finish its walk while it drains).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import signal
import warnings
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from agent.errors import SourceError
from agent.sync.statedb import Row

if TYPE_CHECKING:
    from agent.sync.scan import ScanResult, Walker

Share = list[tuple[str, str]]


def default_workers() -> int:
    """Processes for a big scan: the cores this process may run on, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def shares(folders: Share, count: int) -> list[Share]:
    """`folders` dealt round-robin into `count` shares (in name order, so neighbours spread out)."""
    ordered = sorted(folders, key=lambda item: item[1])
    return [ordered[i::count] for i in range(count) if ordered[i::count]]


def fan_out(walker: Walker, folders: Share, known: Mapping[str, Row], out: ScanResult) -> None:
    """Walk `folders` (and all below them) into `out`, the shares after the first in forked children."""
    from agent.sync.scan import ScanResult

    mine, *others = shares(folders, walker.workers)
    children: list[tuple[int, int, Share]] = []  # (pid, read end, share)
    try:
        for share in others:
            if walker.halted.is_set():
                break
            started = spawn(partial(_walked, walker, share, known, ScanResult))
            if started is None:
                walker._walk(share, known, out)  # could not fork: this process walks it
            else:
                walker.children.add(started[0])  # Walker.halt kills it
                children.append((*started, share))
                if walker.halted.is_set():  # halted while it was being forked
                    kill(started[0])
        walker._walk(mine, known, out)
    finally:
        answers = collect([(pid, fd) for pid, fd, _ in children])  # reaped even when this share failed
        walker.children.difference_update(pid for pid, _, _ in children)
    if walker.halted.is_set():
        raise SourceError("the scan was stopped (the agent is stopping)")  # a killed share is no answer
    for answer, (_, _, share) in zip(answers, children, strict=True):
        if isinstance(answer, ScanResult):
            merge(out, answer)
        else:
            walker._walk(list(share), known, out)


def _walked(walker: Walker, share: Share, known: Mapping[str, Row], result: type[ScanResult]) -> ScanResult:
    """A child's work: its share walked into a result of its own (no import here: a child imports nothing, in
    case another thread of the parent held the import lock when it forked)."""
    part = result()
    walker._walk(list(share), known, part)
    return part


def merge(out: ScanResult, part: ScanResult) -> None:
    """Add a share's result (disjoint folders) to `out`."""
    out.changed.update(part.changed)
    for folder, count in part.hits.items():
        out.hits[folder] = out.hits.get(folder, 0) + count
    out.skipped.extend(part.skipped)
    out.unreadable.extend(part.unreadable)
    out.why_unreadable.update(part.why_unreadable)
    out.folders.extend(part.folders)
    out.hardlinks.update(part.hardlinks)
    out.symlinks.update(part.symlinks)
    out.files += part.files
    out.bytes += part.bytes


def spawn(work: Callable[[], object]) -> tuple[int, int] | None:
    """Fork a child that runs `work()` and sends back what it returns, pickled; (pid, read end of its pipe), or
    None when no child could be started. Read the answer with `collect`."""
    read_end, write_end = os.pipe()
    parent = os.getpid()
    try:
        with warnings.catch_warnings():  # 3.12+ warns about fork in a threaded process: the child runs no thread
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:  # the child: work, send, leave
        status = 1
        try:
            _detach(parent, write_end)
            view = memoryview(pickle.dumps(work(), protocol=pickle.HIGHEST_PROTOCOL))
            while view:
                view = view[os.write(write_end, view) :]
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def kill(pid: int) -> None:
    """SIGKILL a child (gone already is fine); `collect` or `waitpid` reaps it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _detach(parent: int, keep: int) -> None:
    """In a fresh child: hold nothing of the parent's but the pipe `keep` (not its state lock, not its listening
    socket: a child outliving a killed agent must not keep a restart out), die with the parent (SIGKILL when
    the thread that forked it ends; at once if it already has), and leave stop signals to the parent: a Ctrl-C
    or a systemd stop reaches the whole group, and the parent decides (its drain lets the walk finish)."""
    os.closerange(3, keep)
    os.closerange(keep + 1, _max_fd())
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


def collect(children: list[tuple[int, int]]) -> list[object | None]:
    """Each child's answer (None when it did not exit cleanly or its bytes do not load), in order. Reads every
    pipe to its end, all at once (a child blocks while its pipe is full), and reaps the children."""
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
        _, status = os.waitpid(pid, 0)
        answer = None
        if os.waitstatus_to_exitcode(status) == 0:
            try:
                answer = pickle.loads(b"".join(chunks[fd]))  # noqa: S301 - from our own forked child
            except Exception:  # a torn answer counts as none, whatever broke it
                answer = None
        answers.append(answer)
    return answers
