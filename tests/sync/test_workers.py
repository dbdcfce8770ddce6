"""Forked processes that serve request after request (workers.py): `once`'s copy processes, forked at its start
and given batch after batch. A worker answers in order, holds nothing of its parent, leaves when its request
pipe ends or its parent dies; one that gives no answer is None and is retired."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.sync import workers


def double(request: object) -> object:
    assert isinstance(request, int | bytes)  # else the work raises, and the worker leaves
    return request * 2


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def test_a_worker_answers_request_after_request_and_leaves_when_closed() -> None:
    assert workers.prestart(2, double) == 2
    pids = workers.idle_pids()
    assert len(pids) == 2
    worker = workers.take()
    assert worker is not None and workers.idle_pids() == pids - {worker.pid}
    assert [workers.ask(worker, n) for n in (1, 21, 10**30)] == [2, 42, 2 * 10**30]
    assert workers.ask(worker, b"x" * (3 << 20)) == b"x" * (6 << 20)  # bigger than a pipe holds, both ways
    workers.give(worker)
    assert workers.idle_pids() == pids
    workers.close_all()
    assert workers.idle_pids() == set() and workers.take() is None
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # left and reaped


def test_a_worker_that_dies_gives_no_answer_and_is_retired() -> None:
    """Killed (by a stop, by the OOM killer) or dead of a bug in its work: None, for the caller to recover."""
    workers.prestart(2, double)
    killed, broken = workers.take(), workers.take()
    assert killed is not None and broken is not None
    os.kill(killed.pid, signal.SIGKILL)
    assert workers.ask(killed, 1) is None
    assert workers.ask(broken, None) is None  # its work raised: it left
    for worker in (killed, broken):
        workers.retire(worker)
        with pytest.raises(ChildProcessError):
            os.waitpid(worker.pid, os.WNOHANG)


def test_a_worker_holds_nothing_of_the_parent_and_leaves_stop_signals_to_it(tmp_path: Path) -> None:
    """As a forked child (forks.py): no descriptor but its two pipes (the state lock, a listening socket), and
    SIGINT and SIGTERM sent to the whole group are the parent's to act on."""
    held = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)
    os.set_inheritable(held, True)
    try:
        workers.prestart(1, lambda _: (os.listdir("/proc/self/fd"), signal.getsignal(signal.SIGTERM)))
        worker = workers.take()
        assert worker is not None
        answer = workers.ask(worker, None)
    finally:
        os.close(held)
    assert isinstance(answer, tuple)
    fds, on_term = answer
    opened = {int(fd) for fd in fds} - {0, 1, 2}
    assert held not in opened
    assert len(opened) == 3  # its two pipes, and the listing's own
    assert on_term == signal.SIG_IGN
    os.kill(worker.pid, signal.SIGTERM)
    assert workers.ask(worker, None) is not None  # still there
    workers.give(worker)


@pytest.mark.parametrize("how", ["exits", "is killed"])
def test_workers_end_with_the_agent(how: str, tmp_path: Path) -> None:
    """An agent that exits closes the request pipes (each worker leaves); one killed takes them with it."""
    pids_file = tmp_path / "pids"
    script = f"""
import os, sys, time
from agent.sync import workers
workers.prestart(3, lambda request: request)
open({str(pids_file)!r}, "w").write(" ".join(map(str, workers.idle_pids())))
if {how == "exits"!r}:
    os._exit(0)
time.sleep(60)
"""
    agent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while not (pids_file.exists() and pids_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(pid) for pid in pids_file.read_text().split()]
    assert len(pids) == 3
    if how == "is killed":
        agent.kill()
    agent.wait()
    assert all(gone(pid) for pid in pids)
