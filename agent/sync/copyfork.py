"""Big batches of copies in a forked process (forks.py). A copy is a dozen syscalls and the Python around them,
about 30 microseconds of a core per small file besides the kernel's work; in copy threads that Python queues
behind the engine's under one GIL, and the threads' hand-overs of the GIL cost as much again (1.4 million
futex calls for 20,000 files). In a process of its own a batch runs beside the engine on the other core.

A batch of `FORK_AT` or more files is copied by `Copier.run` in a child, which sends back its results. One
of fewer files (a single drop, a big file streamed alone) is copied in the calling thread: forking costs a
millisecond or two. So is a batch when forking cannot help or would change what is tested: a copy hook (tests
that act in the middle of a batch) or armed failpoints (a crash test counts hits across the agent's copies),
or when no child can be started.

A first sync's `once` (no rows yet) forks its copy processes at its start (`prestart`, with its early walk,
sync/earlyscan.py), while the interpreter is small, and gives them batch after batch (workers.py): a fork of
the assembled agent costs 5-7 ms with the GIL held, and copy-on-write faults after. A batch that finds none
idle (none prestarted: the daemon, a resync, the tests; all busy or retired) is copied in a child forked for
it.

A child or worker that gives no answer (killed by `stop`, by the OOM killer, or dead of a bug) may have left
temp files and renamed part of the batch into the mount: `run` then returns None, and the caller recovers the
batch as after a crash (batches.py `BatchCopier._recover`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import partial

from agent.failpoints import armed
from agent.sync import workers
from agent.sync.copier import Copier, CopyJob, CopyResult, Outcome
from agent.sync.forks import Children

FORK_AT = 32
"""Files in a batch from which it is copied in a forked process."""

_NO_WORKER = object()


class CopyForks:
    """Runs batches, forking the big ones; `stop` halts the copies under way (and those to come)."""

    def __init__(self, halt: threading.Event) -> None:
        self.halt = halt
        self.children = Children(halt)

    def forks(self, copier: Copier, jobs: Sequence[CopyJob]) -> bool:
        """Whether `run` would copy this batch in a child (when one can be started)."""
        return len(jobs) >= FORK_AT and copier.hook is None and not armed() and not self.halt.is_set()

    def run(self, copier: Copier, jobs: Sequence[CopyJob]) -> list[CopyResult] | None:
        """`copier.run(jobs)`, in a child when the batch is big enough and nothing needs it here; None when the
        child gave no answer."""
        if not self.forks(copier, jobs):
            return copier.run(jobs)
        answer = self._ask(copier, jobs)
        if answer is _NO_WORKER:
            child = self.children.start(partial(_run_packed, copier, jobs))
            if child is None:
                return copier.run(jobs)
            (answer,) = self.children.collect([child])
        if not isinstance(answer, list) or len(answer) != len(jobs):
            return None
        return [_copied(job) if result is None else result for job, result in zip(jobs, answer, strict=True)]

    def _ask(self, copier: Copier, jobs: Sequence[CopyJob]) -> object | None:
        """The batch copied by a prestarted worker, which `stop` kills like a child meanwhile: its answer, None
        when it gave none, `_NO_WORKER` when none is idle. A worker found dead before it got the batch is
        retired and the next one asked; one that gave no answer, or that a stop may have reached, is retired."""
        while (worker := workers.take()) is not None:
            answer: object | None = None
            delivered = True
            try:
                if self.children.track(worker.pid):
                    answer = workers.ask(worker, (copier, jobs))
            except workers.Undelivered:
                delivered = False
            self.children.forget(worker.pid)
            if isinstance(answer, list) and not self.halt.is_set():
                workers.give(worker)
            else:
                workers.retire(worker)
            if delivered:
                return answer
        return _NO_WORKER

    def stop(self) -> None:
        """Set `halt` and kill the children copying now."""
        self.halt.set()
        self.children.kill_all()


def prestart(count: int) -> int:
    """Fork `count` copy processes for the batches to come (`once`, at its start); how many were started."""
    return workers.prestart(count, _serve)


def _serve(request: object) -> list[CopyResult | None]:
    """In a worker: a batch sent by `CopyForks._ask`, copied."""
    copier: Copier
    jobs: Sequence[CopyJob]
    copier, jobs = request  # type: ignore[misc]
    return _run_packed(copier, jobs)


def _run_packed(copier: Copier, jobs: Sequence[CopyJob]) -> list[CopyResult | None]:
    """In the child: the batch's results, None for each file copied exactly as the job expected it (nearly
    all of them). A result that crosses the pipe costs the agent 5 microseconds to load, a None nothing."""
    return [None if result == _copied(job) else result for job, result in zip(jobs, copier.run(jobs), strict=True)]


def _copied(job: CopyJob) -> CopyResult:
    return CopyResult(job.path, Outcome.COPIED, stat=job.expect, bytes=job.expect.size)
