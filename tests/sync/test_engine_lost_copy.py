"""A forked copy that gives no answer (copyfork.py): killed by the OOM killer, by a stop, or dead of a bug. The
engine recovers its batch as after a crash: no temp file stays in the mount, every file the child renamed is
the agent's (a row), and unless the engine is stopping the batch is copied again, once."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from sync.sync_kit import EngineFactory, temps, tree

from agent.facts import FileSynced
from agent.sync import copyfork, forks, transfer, workers
from agent.sync.copier import CopyJob, Outcome
from agent.sync.scan import to_filestat
from agent.sync.statedb import StateDB, row_fields

FILES = copyfork.FORK_AT * 2


def drop(src: Path) -> dict[str, bytes]:
    for i in range(FILES):
        (src / f"d{i % 4}").mkdir(exist_ok=True)
        (src / f"d{i % 4}" / f"f{i:03d}.csv").write_text(f"row {i}\n" * (i + 1))
    return tree(src)


def rows_and_intents(state: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    db = StateDB(state / "state.db")
    try:
        return db.load(image=False), db.intents()
    finally:
        db.close()


def in_child_only(action: Any) -> Any:
    """A patch that acts in forked children only (they inherit it), the test process going on as usual."""
    parent = os.getpid()

    def patched(real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if os.getpid() != parent:
                action()
            return real(*args, **kwargs)

        return call

    return patched


def copy_processes(how: str) -> None:
    """`worker`: the batch goes to a copy process forked beforehand, as `once` forks them at its start (it has
    the patches made so far); `child`: to a child forked for it."""
    if how == "worker":
        assert copyfork.prestart(1) == 1


def no_worker_left(how: str) -> None:
    """The worker that gave no answer was retired, not given back for the next batch."""
    if how == "worker":
        assert workers.idle_pids() == set()


@pytest.mark.parametrize("how", ["child", "worker"])
async def test_a_child_killed_mid_batch_leaves_no_temp_and_the_batch_is_copied_here(
    how: str, src: Path, mnt: Path, state: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after writing part of its batch's temp files, before any rename (the OOM killer)."""
    expected = drop(src)
    streams = {"count": 0}

    def die_at_the_tenth() -> None:
        streams["count"] += 1
        if streams["count"] == 10:
            os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr("agent.sync.copier.stream", in_child_only(die_at_the_tenth)(transfer.stream))
    copy_processes(how)
    report = await make_engine(copy_workers=1).sync_once()
    no_worker_left(how)
    assert report.ok and report.copied == FILES
    assert tree(mnt) == expected
    assert temps(mnt) == []
    rows, intents = rows_and_intents(state)
    assert set(rows) == set(expected) and intents == {}


async def test_a_child_killed_after_its_renames_has_its_files_adopted_not_copied_twice(
    src: Path, mnt: Path, state: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed once every file is renamed into the mount, before its answer: the copy made here finds each file
    there and adopts it (the same inode: not written again), with the source's row."""
    expected = drop(src)
    die = in_child_only(lambda: os.kill(os.getpid(), signal.SIGKILL))
    monkeypatch.setattr(forks.pickle, "dumps", die(forks.pickle.dumps))
    renamed: dict[str, int] = {}
    real_collect = forks.collect

    def collect_then_look(*args: Any, **kwargs: Any) -> Any:
        answer = real_collect(*args, **kwargs)  # the child is dead: what it renamed is in the mount
        renamed.update({rel: os.stat(mnt / rel).st_ino for rel in expected if (mnt / rel).exists()})
        return answer

    monkeypatch.setattr(forks, "collect", collect_then_look)
    report = await make_engine(copy_workers=1).sync_once()
    assert report.ok and report.copied == FILES
    assert tree(mnt) == expected and temps(mnt) == []
    assert len(renamed) == FILES
    assert {rel: os.stat(mnt / rel).st_ino for rel in expected} == renamed
    rows, intents = rows_and_intents(state)
    assert intents == {}
    assert {rel: row_fields(row).ino for rel, row in rows.items()} == {
        rel: (src / rel).stat().st_ino for rel in expected
    }


@pytest.mark.parametrize("how", ["child", "worker"])
async def test_a_stop_during_a_forked_batch_leaves_every_renamed_file_the_agents(
    how: str, src: Path, mnt: Path, state: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent stops while a child has renamed its batch but not answered: the child is killed, its files are
    claimed (rows with inode 0, compared with the source by the next scan), no intent and no temp file stay."""
    expected = drop(src)
    monkeypatch.setattr(forks.pickle, "dumps", in_child_only(lambda: time.sleep(60))(forks.pickle.dumps))
    copy_processes(how)
    engine = make_engine(copy_workers=1)
    await engine._open()
    jobs = [CopyJob(rel, to_filestat((src / rel).stat())) for rel in sorted(expected)]
    answers: list[Any] = []
    worker = threading.Thread(target=lambda: answers.append(engine._batches.run(engine._db, jobs)))
    worker.start()
    await anyio.to_thread.run_sync(lambda: _wait_for(lambda: set(tree(mnt)) == set(expected)))  # all renamed
    engine._batches.copies.stop()
    worker.join(20)
    [(results, claimed)] = answers
    assert [(r.outcome, r.error) for r in results] == [(Outcome.FAILED, "stopped")] * FILES
    assert set(claimed) == set(expected)
    assert tree(mnt) == expected and temps(mnt) == []
    rows, intents = rows_and_intents(state)
    assert intents == {} and set(rows) == set(expected) and {row_fields(row).ino for row in rows.values()} == {0}
    no_worker_left(how)
    report = await make_engine().sync_once()  # the next run: compared byte for byte, adopted, none copied
    assert report.ok and report.copied == FILES
    assert tree(mnt) == expected


def _wait_for(done: Any, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)


async def test_files_the_mount_already_held_stay_adopted_after_a_lost_batch(
    src: Path, mnt: Path, state: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh state over a mount that already holds the drop (a reinstalled agent): the child only adopts, then
    dies before answering. Nothing it found there is claimed as its own copy: the facts say adopted, so a
    marker among them fires no rule and no file counts as new data."""
    drop(src)
    (src / "d0" / "_SUCCESS").write_text("drop-1\n")
    expected = tree(src)
    for rel, data in expected.items():
        (mnt / rel).parent.mkdir(parents=True, exist_ok=True)
        (mnt / rel).write_bytes(data)
        st = (src / rel).stat()
        os.utime(mnt / rel, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chmod(mnt / rel, st.st_mode & 0o7777)
    die = in_child_only(lambda: os.kill(os.getpid(), signal.SIGKILL))
    monkeypatch.setattr(forks.pickle, "dumps", die(forks.pickle.dumps))
    facts: list[Any] = []
    engine = make_engine(copy_workers=1, on_fact=facts.append, marker_names=frozenset({"_SUCCESS"}))
    report = await engine.sync_once()
    assert report.ok and tree(mnt) == expected and temps(mnt) == []
    synced = [f for f in facts if isinstance(f, FileSynced)]
    assert len(synced) == len(expected) and all(f.adopted for f in synced)
