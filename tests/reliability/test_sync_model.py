"""A hypothesis state machine drives the real sync engine through random writes, appends, renames, deletes,
syncs, crashes and restarts, and checks the mount against a model of the source after every step.

- The model is a dict path -> bytes (what the source holds), plus every content each path ever had.
- `sync` runs `SyncEngine.sync_once()` (the `domino-sync once` driver) on the current engine, in one event
  loop that lives for the whole example (a blocking portal), so an engine runs several syncs like a process.
- `restart` closes the engine cleanly; the next sync opens a new one on the same state DB.
- `crash` is a kill -9: the current engine is dropped unclosed (no clean-stop marker), and a forked child runs
  a fresh engine's sync that dies by SIGKILL at a failpoint (copy.mid, copy.before_rename, copy.after_rename,
  the Nth hit) or at a random moment; the next sync starts from whatever the child left.
- After every step the mount holds no file with bytes its path never had in the source (nothing torn); after
  every sync it equals the model byte for byte, holds no temp file, and the state DB lists exactly its files.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from reliability.crash_kit import files, temps

from agent import failpoints
from agent.config import SourceConfig
from agent.sync.engine import SyncEngine

FOLDERS = ("", "d1/", "d1/d2/", "d3/", "d4/")
TOP = ("d1", "d3", "d4")
PATHS = st.builds(lambda folder, name: folder + name, st.sampled_from(FOLDERS), st.sampled_from(["f1", "f2", "f3"]))
# large contents from a seed: drawing 70 kB byte by byte would overrun hypothesis's buffer and end the example
BIG = st.builds(lambda size, seed: random.Random(seed).randbytes(size), st.integers(4096, 70_000), st.integers(0, 255))
DATA = st.one_of(st.just(b""), st.binary(min_size=1, max_size=64), BIG)
POINTS = st.sampled_from(["copy.mid", "copy.before_rename", "copy.after_rename", None])


def event(text: str) -> None:
    """Count `text` in hypothesis's statistics (a no-op when a step runs outside a hypothesis test)."""
    if currently_in_test_context():
        hypothesis_event(text)


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="sync-model-"))
        self.src, self.mnt, self.state = self.root / "src", self.root / "mnt", self.root / "state"
        self.src.mkdir()
        self.mnt.mkdir()
        self.model: dict[str, bytes] = {}
        self.history: defaultdict[str, set[bytes]] = defaultdict(set)
        self._portal_cm = start_blocking_portal(backend="asyncio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self.engine: SyncEngine | None = None
        self.dropped: list[SyncEngine] = []  # crashed engines: never closed cleanly, only their DB handle
        self.dirty = False  # the source changed since the last sync (model state only: hypothesis replays it)

    def _config(self) -> SourceConfig:
        return SourceConfig(path=self.src, settle=0, max_delete=1.0, copy_workers=1)

    def _new_engine(self) -> SyncEngine:
        return SyncEngine(self._config(), self.mnt, self.state)

    # -- what a producer does -------------------------------------------------------------------------------

    def _put(self, rel: str, data: bytes) -> None:
        self.model[rel] = data
        self.history[rel].add(data)
        self.dirty = True

    @rule(rel=PATHS, data=DATA)
    def write(self, rel: str, data: bytes) -> None:
        path = self.src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self._put(rel, data)

    @rule(data=st.binary(min_size=1, max_size=2000), pick=st.integers(0, 1000))
    def append(self, data: bytes, pick: int) -> None:
        if not self.model:
            return
        rel = sorted(self.model)[pick % len(self.model)]
        with (self.src / rel).open("ab") as handle:
            handle.write(data)
        self._put(rel, self.model[rel] + data)

    @rule(pick=st.integers(0, 1000), to=PATHS)
    def rename(self, pick: int, to: str) -> None:
        if not self.model:
            return
        rel = sorted(self.model)[pick % len(self.model)]
        (self.src / to).parent.mkdir(parents=True, exist_ok=True)
        (self.src / rel).replace(self.src / to)
        data = self.model.pop(rel)
        self._put(to, data)

    @rule(old=st.sampled_from(TOP), new=st.sampled_from(TOP))
    def rename_folder(self, old: str, new: str) -> None:
        source, target = self.src / old, self.src / new
        if old == new or not source.is_dir() or (target.exists() and any(target.iterdir())):
            return
        source.rename(target)
        for rel in [r for r in self.model if r.startswith(old + "/")]:
            self._put(new + rel[len(old) :], self.model.pop(rel))

    @rule(pick=st.integers(0, 1000))
    def delete(self, pick: int) -> None:
        if not self.model:
            return
        rel = sorted(self.model)[pick % len(self.model)]
        (self.src / rel).unlink()
        del self.model[rel]
        self.dirty = True

    @rule(folder=st.sampled_from(TOP))
    def delete_folder(self, folder: str) -> None:
        shutil.rmtree(self.src / folder, ignore_errors=True)
        for rel in [r for r in self.model if r.startswith(folder + "/")]:
            del self.model[rel]
            self.dirty = True

    # -- what the agent does --------------------------------------------------------------------------------

    @rule()
    def sync(self) -> None:
        if self.engine is None:
            self.engine = self._new_engine()
        report = self.portal.call(self.engine.sync_once)
        self.dirty = False
        assert report.ok, report
        assert files(self.mnt) == self.model, "the mount differs from the source after a sync"
        assert temps(self.mnt) == [], "temp files left in the mount after a sync"
        assert self._recorded() == set(self.model), "the state DB does not list exactly the mount's files"

    @rule()
    def restart(self) -> None:
        if self.engine is not None:
            self.portal.call(self.engine.aclose)
            self.engine = None

    @precondition(lambda self: self.dirty)  # a crash with nothing to do proves nothing (and keep draws replayable)
    @rule(point=POINTS, nth=st.integers(1, 3), delay=st.floats(0.0, 0.03))
    def crash(self, point: str | None, nth: int, delay: float) -> None:
        if self.engine is not None:  # the process dies: no clean close, no clean-stop marker
            self.dropped.append(self.engine)
            self.engine = None
        pid = os.fork()
        if pid == 0:  # the child: one sync by a fresh engine, killed at the failpoint (or by the parent)
            code = 0
            try:
                failpoints.arm(f"{point}@{nth}" if point else "")
                engine = self._new_engine()
                anyio.run(engine.sync_once)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        if point is None:
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
        status = self._reap(pid)
        assert os.WIFSIGNALED(status) or os.WEXITSTATUS(status) == 0, f"the child sync failed ({status})"
        if set(files(self.mnt)) - self._recorded():
            event("crash left files in the mount the state DB does not list")
        event(f"crash at {point or 'a random moment'}: {'killed' if os.WIFSIGNALED(status) else 'finished first'}")

    @staticmethod
    def _reap(pid: int, limit: float = 30.0) -> int:
        """Wait for the child's end; a child still running after `limit` seconds is killed and fails the test."""
        deadline = time.monotonic() + limit
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"the child sync was still running after {limit:g} s")
            time.sleep(0.002)

    # -- checks ---------------------------------------------------------------------------------------------

    @invariant()
    def nothing_torn(self) -> None:
        """Every file the mount shows has bytes its path had in the source at some time."""
        for rel, data in files(self.mnt).items():
            assert data in self.history[rel], f"{rel} in the mount holds bytes the source never had there"

    def _recorded(self) -> set[str]:
        """The paths the state DB lists (none when a crash came before it was made)."""
        db = self.state / "state.db"
        if not db.exists():
            return set()
        conn = sqlite3.connect(db, timeout=10)  # read-write: a crash may leave a WAL that only a writer recovers
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'files'").fetchone():
                return set()
            return {os.fsdecode(path) for (path,) in conn.execute("SELECT path FROM files")}
        finally:
            conn.close()

    def teardown(self) -> None:
        try:
            if self.engine is not None:
                self.portal.call(self.engine.aclose)
            for engine in self.dropped:
                self.portal.call(engine.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)
            shutil.rmtree(self.root, ignore_errors=True)


class TestSyncModel(SyncMachine.TestCase):
    """Random action sequences (default run: a small budget) keep the mount equal to the model."""

    settings = settings(
        max_examples=int(os.environ.get("DOMINO_SYNC_MODEL_EXAMPLES", "100")),
        stateful_step_count=30,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


@pytest.mark.slow
@pytest.mark.timeout(3600)
class TestSyncModelLong(SyncMachine.TestCase):
    """The opt-in long run: many more and longer action sequences."""

    settings = settings(
        max_examples=1000, stateful_step_count=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )


def test_orphan_after_a_crash_between_rename_and_commit() -> None:
    """A file copied into the mount by an agent killed before its state DB commit, then deleted from the source
    while the agent is down, is removed from the mount (mirror) by the next sync."""
    machine = SyncMachine()
    try:
        machine.write("f1", b"data")
        machine.crash("copy.after_rename", 1, 0.0)
        assert files(machine.mnt) == {"f1": b"data"} and machine._recorded() == set()
        machine.delete(0)
        if machine.engine is None:
            machine.engine = machine._new_engine()
        report = machine.portal.call(machine.engine.sync_once)
        assert report.ok
        assert files(machine.mnt) == {}, "the crash left a file in the mount that the source no longer has"
    finally:
        machine.teardown()
