"""kill -9 during a large sync, then a restart: the mount converges and never holds a partial file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
from sync.sync_kit import EngineFactory, temps, tree

from agent.sync.mountfs import TEMP_RE
from agent.sync.statedb import StateDB, make_row

SCRIPT = """
import sys, time
from pathlib import Path
import anyio
from agent.config import SourceConfig
from agent.sync.engine import SyncEngine

src, mnt, state = (Path(p) for p in sys.argv[1:4])
engine = SyncEngine(
    SourceConfig(path=src, settle=0, max_delete=1.0), mnt, state, copy_hook=lambda rel: time.sleep(0.003)
)
anyio.run(engine.sync_once)
engine.close()
"""


def files_in(root: Path) -> list[Path]:
    return [Path(folder) / name for folder, _, names in os.walk(root) for name in names if not TEMP_RE.match(name)]


def kill_when(proc: subprocess.Popen[bytes], mnt: Path, at_least: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(files_in(mnt)) < at_least:
        assert proc.poll() is None, "the sync finished before it could be killed"
        assert time.monotonic() < deadline, "the sync made no progress"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_kill_9_then_restart_converges(src: Path, mnt: Path, state: Path, make_engine: EngineFactory) -> None:
    """Killed twice mid-sync, every file the mount shows is complete; a restart removes temps and finishes."""
    for i in range(1200):
        folder = src / f"d{i % 12}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i}.bin").write_bytes(os.urandom(4096))
    for i in range(3):
        (src / f"big{i}.bin").write_bytes(os.urandom(6 << 20))
    expected = tree(src)
    args = [sys.executable, "-c", SCRIPT, str(src), str(mnt), str(state)]
    for at_least in (100, 600):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kill_when(proc, mnt, at_least)
        for path in files_in(mnt):
            assert path.read_bytes() == expected[path.relative_to(mnt).as_posix()], f"partial file {path}"
    assert len(files_in(mnt)) < len(expected)
    report = anyio.run(make_engine().sync_once)
    assert report.ok
    assert tree(mnt) == expected
    assert temps(mnt) == []
    db = StateDB(state / "state.db")
    rows = db.load()
    db.close()
    assert set(rows) == set(expected)


async def test_intents_left_by_a_kill_become_rows(
    src: Path, mnt: Path, state: Path, make_engine: EngineFactory
) -> None:
    """Intents a killed agent left, whose files it had renamed into the mount, make those files its own: the
    one the source still has is kept (compared, not copied), the one it lost is deleted, no intent is left."""
    for name in ("kept", "lost"):
        (src / name).write_bytes(name.encode())
    intents = []
    for name in ("kept", "lost"):
        st = (src / name).stat()
        (mnt / name).write_bytes(name.encode())
        os.utime(mnt / name, ns=(st.st_atime_ns, st.st_mtime_ns))
        intents.append((name, make_row(st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)))
    db = StateDB(state / "state.db")
    db.intend(intents)
    db.close()
    (src / "lost").unlink()
    kept_ino = (mnt / "kept").stat().st_ino
    report = await make_engine().sync_once()
    db = StateDB(state / "state.db")
    rows, left = db.load(), db.intents()
    db.close()
    assert report.ok and report.copied == 1 and report.deleted == 1
    assert tree(mnt) == {"kept": b"kept"}
    assert (mnt / "kept").stat().st_ino == kept_ino, "the kept file was copied again"
    assert set(rows) == {"kept"} and left == {}
