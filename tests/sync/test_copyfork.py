"""Big batches of copies in a forked process (copyfork.py): the same results and mount as a copy here; a child
that gives no answer is None; `stop` kills the children; small batches, copy hooks and armed failpoints stay
in the calling thread. How the engine recovers a lost batch: test_engine_lost_copy.py."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sync.sync_kit import temps

from agent import failpoints
from agent.sync import copyfork, forks, transfer, workers
from agent.sync.copier import Copier, CopyJob, CopyResult, Outcome
from agent.sync.copyfork import FORK_AT, CopyForks
from agent.sync.scan import to_filestat
from agent.sync.settle import FileStat


def drop(src: Path, count: int) -> list[CopyJob]:
    jobs = []
    for i in range(count):
        path = src / f"d{i % 3}" / f"f{i:03d}.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"row {i}\n" * (i + 1))
        jobs.append(CopyJob(f"d{i % 3}/f{i:03d}.csv", to_filestat(path.stat())))
    return jobs


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the children `CopyForks` starts (spawn still forks)."""
    pids: list[int] = []
    real_spawn = forks.spawn

    def counting(work: Any) -> tuple[int, int] | None:
        child = real_spawn(work)
        if child is not None:
            pids.append(child[0])
        return child

    monkeypatch.setattr(forks, "spawn", counting)
    return pids


def same_tree(src: Path, mnt: Path) -> None:
    copied = sorted(p.relative_to(mnt) for p in mnt.rglob("*") if p.is_file())
    assert copied == sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    for rel in copied:
        assert (mnt / rel).read_bytes() == (src / rel).read_bytes()
        assert (mnt / rel).stat().st_mtime_ns == (src / rel).stat().st_mtime_ns


def test_a_big_batch_is_copied_by_a_child_with_the_results_a_copy_here_gives(
    src: Path, mnt: Path, forked: list[int]
) -> None:
    jobs = drop(src, FORK_AT + 8)
    results = CopyForks(threading.Event()).run(Copier(str(src), str(mnt)), jobs)
    assert len(forked) == 1
    assert [r.path for r in results] == [j.path for j in jobs]
    assert all(r.outcome is Outcome.COPIED and r.stat == j.expect for r, j in zip(results, jobs, strict=True))
    assert [r.bytes for r in results] == [j.expect.size for j in jobs]
    same_tree(src, mnt)
    assert temps(mnt) == []


def test_a_child_s_answer_carries_every_result_that_is_not_a_plain_copy(
    src: Path, mnt: Path, tmp_path: Path, forked: list[int]
) -> None:
    """The child sends only what differs from "copied as the job expected" (copyfork `_run_packed`): a marker's
    first line, a file changed or gone since the job was made, one adopted from the mount all come back as a
    copy here reports them."""
    jobs = drop(src, FORK_AT + 4)
    (src / "d0" / "_SUCCESS").write_text("run-7\n")
    jobs.append(CopyJob("d0/_SUCCESS", to_filestat((src / "d0" / "_SUCCESS").stat())))
    (src / jobs[1].path).write_text("longer now\n" * 9)
    (src / jobs[2].path).unlink()
    here = tmp_path / "here"
    for mount in (mnt, here):
        (mount / "d0").mkdir(parents=True)
        (mount / jobs[3].path).write_bytes((src / jobs[3].path).read_bytes())
        os.utime(mount / jobs[3].path, ns=(jobs[3].expect.atime_ns, jobs[3].expect.mtime_ns))
    forked_results = CopyForks(threading.Event()).run(Copier(str(src), str(mnt), marker_names={"_SUCCESS"}), jobs)
    assert len(forked) == 1 and forked_results is not None
    local = Copier(str(src), str(here), marker_names={"_SUCCESS"}).run(jobs)

    def seen(results: list[CopyResult]) -> list[tuple[object, ...]]:  # the first copy's read moved the atimes
        return [(r.path, r.outcome, r.stat and r.stat.key, r.bytes, r.error, r.first_line) for r in results]

    assert seen(forked_results) == seen(local)
    outcomes = {r.path: r.outcome for r in local}
    assert outcomes[jobs[1].path] is Outcome.CHANGED and outcomes[jobs[2].path] is Outcome.VANISHED
    assert outcomes[jobs[3].path] is Outcome.ADOPTED and local[-1].first_line == "run-7"


def test_small_batches_hooks_and_armed_failpoints_copy_here(src: Path, mnt: Path, forked: list[int]) -> None:
    """Forking costs more than a few files' copy; a hook acts inside this process; failpoints count their hits
    across the agent's copies, which a child's hits would not add to."""
    jobs = drop(src, FORK_AT + 4)
    copies = CopyForks(threading.Event())
    copies.run(Copier(str(src), str(mnt)), jobs[: FORK_AT - 1])
    hooked: list[str] = []
    copies.run(Copier(str(src), str(mnt), hook=hooked.append), jobs[FORK_AT - 1 : FORK_AT + 1])
    failpoints.arm("copy.never_reached")
    try:
        copies.run(Copier(str(src), str(mnt)), jobs[FORK_AT + 1 :] + jobs[:FORK_AT])
    finally:
        failpoints.arm("")
    assert forked == []
    assert len(hooked) == 2
    same_tree(src, mnt)


def test_a_child_that_gives_no_answer_is_none(
    src: Path, mnt: Path, forked: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child copies, then cannot send its answer: `run` says so (None), for the caller to recover."""
    jobs = drop(src, FORK_AT)

    def broken(*_: object, **__: object) -> bytes:
        raise RuntimeError("cannot pickle")

    monkeypatch.setattr(forks.pickle, "dumps", broken)
    assert CopyForks(threading.Event()).run(Copier(str(src), str(mnt)), jobs) is None
    assert len(forked) == 1


def slow_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file's bytes take half a second to stream, in the copy processes forked from now on too."""
    real_stream = transfer.stream

    def slow(*args: Any, **kwargs: Any) -> int:
        time.sleep(0.5)
        return real_stream(*args, **kwargs)

    monkeypatch.setattr("agent.sync.copier.stream", slow)


def test_stop_kills_the_children_and_later_batches_copy_here(
    src: Path, mnt: Path, forked: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = drop(src, FORK_AT)
    slow_copies(monkeypatch)  # the child inherits it
    copies = CopyForks(threading.Event())
    answers: list[list[CopyResult] | None] = []
    worker = threading.Thread(target=lambda: answers.append(copies.run(Copier(str(src), str(mnt)), jobs)))
    started = time.monotonic()
    worker.start()
    while not copies.children.pids() and time.monotonic() - started < 10:
        time.sleep(0.01)
    copies.stop()
    worker.join(10)
    assert time.monotonic() - started < 5  # not the 16 s the batch would take
    assert answers == [None]
    assert copies.children.pids() == set()
    with pytest.raises(ChildProcessError):
        os.waitpid(forked[0], os.WNOHANG)  # reaped
    monkeypatch.setattr("agent.sync.copier.stream", transfer.stream)
    copies.run(Copier(str(src), str(mnt), halt=copies.halt), jobs)  # halted: here, where the halt is seen
    assert len(forked) == 1


def test_a_prestarted_copy_process_copies_batch_after_batch(src: Path, mnt: Path, forked: list[int]) -> None:
    """`once` forks its copy processes at its start: the batches go to them, not to a child forked each, with
    the results a copy here gives; the process is given back after each batch."""
    assert copyfork.prestart(1) == 1
    (pid,) = workers.idle_pids()
    jobs = drop(src, 2 * FORK_AT)
    copies = CopyForks(threading.Event())
    copier = Copier(str(src), str(mnt), marker_names={"_SUCCESS"})
    first = copies.run(copier, jobs[:FORK_AT])
    second = copies.run(Copier(str(src), str(mnt)), jobs[FORK_AT:])
    assert forked == []
    assert workers.idle_pids() == {pid}
    assert first is not None and second is not None
    assert [(r.path, r.outcome, r.bytes) for r in first + second] == [
        (j.path, Outcome.COPIED, j.expect.size) for j in jobs
    ]
    same_tree(src, mnt)
    assert temps(mnt) == []


def test_stop_kills_a_busy_copy_process_which_is_retired(
    src: Path, mnt: Path, forked: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop reaches a prestarted process in the middle of a batch as it reaches a child; it gave no answer, so
    it is not given back: the next batch, finding none idle, is copied by a child forked for it."""
    jobs = drop(src, FORK_AT)
    slow_copies(monkeypatch)
    copyfork.prestart(1)  # forked with the patch
    monkeypatch.setattr("agent.sync.copier.stream", transfer.stream)
    (pid,) = workers.idle_pids()
    copies = CopyForks(threading.Event())
    answers: list[list[CopyResult] | None] = []
    worker = threading.Thread(target=lambda: answers.append(copies.run(Copier(str(src), str(mnt)), jobs)))
    started = time.monotonic()
    worker.start()
    while copies.children.pids() != {pid} and time.monotonic() - started < 10:
        time.sleep(0.01)
    copies.stop()
    worker.join(10)
    assert time.monotonic() - started < 5
    assert answers == [None]
    assert copies.children.pids() == set() and workers.idle_pids() == set()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped
    assert CopyForks(threading.Event()).run(Copier(str(src), str(mnt)), jobs) is not None
    assert len(forked) == 1


def kill_and_wait(pid: int) -> None:
    """SIGKILL a copy process and wait until it is dead (a zombie: its pipes are closed)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_copy_process_found_dead_before_its_batch_passes_it_on(src: Path, mnt: Path, forked: list[int]) -> None:
    """Killed while idle (the OOM killer): the batch never reached it, so nothing was copied and nothing is to
    recover; it goes to the next idle process, else to a child forked for it."""
    copyfork.prestart(2)
    dead = workers._idle[-1].pid  # the one asked first
    kill_and_wait(dead)
    jobs = drop(src, 2 * FORK_AT)
    copies = CopyForks(threading.Event())
    results = copies.run(Copier(str(src), str(mnt)), jobs[:FORK_AT])
    assert results is not None and all(r.outcome is Outcome.COPIED for r in results)
    assert forked == []
    with pytest.raises(ChildProcessError):
        os.waitpid(dead, os.WNOHANG)  # retired
    (alive,) = workers.idle_pids()
    kill_and_wait(alive)
    results = copies.run(Copier(str(src), str(mnt)), jobs[FORK_AT:])
    assert results is not None and all(r.outcome is Outcome.COPIED for r in results)
    assert len(forked) == 1 and workers.idle_pids() == set()
    same_tree(src, mnt)


def test_a_copy_process_a_stop_may_have_reached_is_not_given_back(
    src: Path, mnt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop that comes after the batch's answer: the answer counts, but the process (which the stop's kill may
    have reached) is retired rather than given another batch."""
    copyfork.prestart(1)
    (pid,) = workers.idle_pids()
    copies = CopyForks(threading.Event())
    real_ask = workers.ask

    def answered_then_stopped(*args: Any) -> object:
        answer = real_ask(*args)
        copies.stop()
        return answer

    monkeypatch.setattr(workers, "ask", answered_then_stopped)
    jobs = drop(src, FORK_AT)
    results = copies.run(Copier(str(src), str(mnt)), jobs)
    assert results is not None and all(r.outcome is Outcome.COPIED for r in results)
    assert workers.idle_pids() == set()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_a_copier_and_its_jobs_pickle_for_a_copy_process(src: Path, mnt: Path) -> None:
    """Sent to a copy process: the jobs as their fields, the copier as its settings and temp tag (the temp names
    a lost batch's recovery looks for); never a hook or a halt (a batch with a hook is copied here)."""
    job = CopyJob("a/b.csv", FileStat(10, 2, 3, 4, 0o100644, 5), b"row", True, "a/c.csv", b"old", True)
    assert pickle.loads(pickle.dumps(job)) == job  # noqa: S301 - our own bytes
    copier = Copier(str(src), str(mnt), marker_names=frozenset({"_SUCCESS"}), durable=False, halt=threading.Event())
    copied = pickle.loads(pickle.dumps(copier))  # noqa: S301
    assert isinstance(copied, Copier)
    assert (copied.source, copied.mount, copied.marker_names, copied.durable) == (
        str(src),
        str(mnt),
        frozenset({"_SUCCESS"}),
        False,
    )
    assert copied.temp_tags(5) == copier.temp_tags(5)
    assert copied.hook is None and copied.halt is None


def test_results_pickle_as_their_fields() -> None:
    stat = FileStat(10, 2, 3, 4, 0o100644, 5)
    result = CopyResult("a/b", Outcome.MOVED, stat, 10, None, None, False, "first", "a/c")
    assert pickle.loads(pickle.dumps(result)) == result  # noqa: S301 - our own bytes
    assert pickle.loads(pickle.dumps(stat)) == stat  # noqa: S301
