"""Big batches of copies in a forked process (forks.py). A copy is a dozen syscalls and the Python around them,
about 60 microseconds of a core per small file; in copy threads that Python queues behind the engine's under
one GIL, and the threads' hand-overs of the GIL cost as much again (1.4 million futex calls for 20,000 files).
In a process of its own a batch runs beside the engine on the other core.

A batch of `FORK_AT` or more files is copied by `Copier.run` in a child, which sends back its results. One
of fewer files (a single drop, a big file streamed alone) is copied in the calling thread: forking costs a
millisecond or two. So is a batch when forking cannot help or would change what is tested: a copy hook (tests
that act in the middle of a batch) or armed failpoints (a crash test counts hits across the agent's copies).

A child that dies (killed, out of memory) is no answer: unless the agent is stopping, the batch is copied again
in the calling thread, where each file the child had already renamed into the mount is found there and
adopted. When the agent stops, `halt` kills the children; their batches end as "stopped", and what they had
renamed is recovered at the next start from the batch's intents, as after a crash.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import partial

from agent.failpoints import armed
from agent.sync.copier import Copier, CopyJob, CopyResult, Outcome
from agent.sync.forks import collect, kill, spawn

FORK_AT = 32
"""Files in a batch from which it is copied in a forked process."""


class CopyForks:
    """Runs batches, forking the big ones; `halt` stops the children under way and any to come."""

    def __init__(self, halt: threading.Event) -> None:
        self.halt = halt
        self.children: set[int] = set()

    def run(self, copier: Copier, jobs: Sequence[CopyJob]) -> list[CopyResult]:
        """`copier.run(jobs)`, in a child when the batch is big enough and nothing needs it here."""
        if len(jobs) < FORK_AT or copier.hook is not None or armed() or self.halt.is_set():
            return copier.run(jobs)
        child = spawn(partial(copier.run, jobs))
        if child is None:
            return copier.run(jobs)
        pid = child[0]
        self.children.add(pid)
        if self.halt.is_set():  # halted while it was being forked
            kill(pid)
        try:
            (answer,) = collect([child])
        finally:
            self.children.discard(pid)
        if isinstance(answer, list):
            return answer
        if self.halt.is_set():
            return [CopyResult(job.path, Outcome.FAILED, error="stopped") for job in jobs]
        return copier.run(jobs)  # the child died: copy here (what it renamed is adopted)

    def stop(self) -> None:
        """Set `halt` and kill the children copying now."""
        self.halt.set()
        for pid in list(self.children):
            kill(pid)
