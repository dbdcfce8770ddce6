"""Forked processes that serve request after request: `once`'s copy processes (copyfork.py), forked at its
start while the interpreter is small, then given one batch after another.

Forking a child per batch from the assembled agent cost 5-7 ms of page tables per fork (the agent holds 100+
MB by then), with the GIL held, so the whole agent stood still; then every page either side wrote was copied
(120,000 faults in a 20,000-file first sync). A process forked at `once`'s start costs a millisecond, once,
and shares next to nothing with the agent afterwards. Its batches cost a pickle each way instead (the jobs
there, the results back; 2 microseconds a file for the agent).

A worker is a child as forks.py makes them (nothing of the parent's held, killed with it, deaf to the group's
stop signals) that reads length-prefixed pickled requests from one pipe and writes the answers to another.
It leaves when its request pipe reaches its end: when the agent retires it, or exits. One request at a time:
the caller takes an idle worker (`take`), asks it (`ask`) and gives it back (`give`), or retires it when it
gave no answer (killed by a stop or the OOM killer, dead of a bug) or died while idle (the request is then
`Undelivered`, and goes to another); a new one is not forked then (the caller forks a one-off child as before).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import threading
from collections.abc import Callable
from typing import NamedTuple

from agent.sync.forks import detach, fork, kill, write_all

_FRAME = struct.Struct("<Q")


class Worker(NamedTuple):
    pid: int
    requests: int  # the write end of its request pipe
    answers: int  # the read end of its answer pipe


_idle: list[Worker] = []
_lock = threading.Lock()


def prestart(count: int, serve: Callable[[object], object]) -> int:
    """Fork `count` workers that answer each request with `serve(request)`; how many were started. Call it
    while the process is small and has one thread (a worker runs no import: another thread could have held
    the import lock when it was forked)."""
    started = 0
    for _ in range(count):
        worker = _fork(serve)
        if worker is None:
            break
        with _lock:
            _idle.append(worker)
        started += 1
    return started


def take() -> Worker | None:
    """An idle worker, now the caller's; None when there is none (none started, all busy or retired)."""
    with _lock:
        return _idle.pop() if _idle else None


def give(worker: Worker) -> None:
    """Back to the idle ones, after it answered."""
    with _lock:
        _idle.append(worker)


class Undelivered(Exception):
    """The request did not reach the worker (it died while idle): it did nothing of it."""


def ask(worker: Worker, request: object) -> object | None:
    """Send `request` and wait for the answer; None when the worker gave none (it is dead: `retire` it).
    Raises Undelivered when the request could not be sent whole: the worker reads a whole request before it
    acts, so it did nothing, and the request can go to another."""
    payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        _write(worker.requests, payload)
    except OSError:  # EPIPE: no reader left
        raise Undelivered from None
    try:
        data = _read(worker.answers)
        return None if data is None else pickle.loads(data)  # noqa: S301 - from our own forked worker
    except Exception:  # a torn answer: no answer, whatever broke it
        return None


def retire(worker: Worker) -> None:
    """Kill the worker (it may be in the middle of a request) and reap it."""
    kill(worker.pid)
    _close(worker)


def close_all() -> None:
    """End the idle workers: their request pipes end, they leave, they are reaped."""
    with _lock:
        idle = list(_idle)
        _idle.clear()
    for worker in idle:
        _close(worker)


def idle_pids() -> set[int]:
    with _lock:
        return {worker.pid for worker in _idle}


def _close(worker: Worker) -> None:
    for fd in (worker.requests, worker.answers):
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(worker.pid, 0)


def _fork(serve: Callable[[object], object]) -> Worker | None:
    try:
        request_in, request_out = os.pipe()
    except OSError:
        return None
    try:
        answer_in, answer_out = os.pipe()
    except OSError:
        os.close(request_in)
        os.close(request_out)
        return None
    parent = os.getpid()
    pid = fork(request_in, request_out, answer_in, answer_out)
    if pid is None:
        return None
    if pid == 0:
        status = 1
        try:
            detach(parent, request_in, answer_out)
            _serve(request_in, answer_out, serve)
            status = 0
        finally:
            os._exit(status)
    os.close(request_in)
    os.close(answer_out)
    return Worker(pid, request_out, answer_in)


def _serve(requests: int, answers: int, serve: Callable[[object], object]) -> None:
    """The worker's life: answer each request until the request pipe ends."""
    while (data := _read(requests)) is not None:
        request = pickle.loads(data)  # noqa: S301 - from the agent that forked this process
        _write(answers, pickle.dumps(serve(request), protocol=pickle.HIGHEST_PROTOCOL))


def _write(fd: int, payload: bytes) -> None:
    write_all(fd, _FRAME.pack(len(payload)) + payload)


def _read(fd: int) -> bytes | None:
    """One frame's payload; None at the pipe's end (or a torn frame: the writer died)."""
    head = _read_exactly(fd, _FRAME.size)
    if head is None:
        return None
    (size,) = _FRAME.unpack(head)
    return _read_exactly(fd, size)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
