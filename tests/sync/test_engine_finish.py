"""SyncEngine.finish: the drain before a stop (a last scan, then until everything found is in the mount)."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
from sync.sync_kit import EngineFactory, running, tree, wait_for


def write(path: Path, data: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)


async def test_finish_copies_what_is_still_settling_and_reports_done(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """Files written just before the stop (not settled yet, never reported by the watcher) are copied by then."""
    engine = make_engine(settle=0.3, rescan=3600)
    async with running(engine):
        write(src / "early", "e")
        await wait_for(lambda: (mnt / "early").exists(), 10)
        for i in range(20):
            write(src / "drop" / f"part-{i}", str(i))
        with anyio.fail_after(10):
            assert await engine.finish() is True
        assert tree(mnt) == tree(src)


async def test_finish_gives_up_at_once_when_the_mount_is_gone(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """With the mount unavailable nothing can be copied: finish says so without waiting."""
    engine = make_engine(settle=0.05, rescan=3600)
    async with running(engine):
        shutil.rmtree(mnt)
        write(src / "f", "x")
        await wait_for(lambda: engine.status()["mount_problem"] is not None, 10)
        with anyio.fail_after(2):
            assert await engine.finish() is False


async def test_finish_does_not_wait_for_files_whose_copy_keeps_failing(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """A file the mount refuses (a folder stands where it goes) is left for the next start; the rest is done."""
    (mnt / "blocked").mkdir()
    (mnt / "blocked" / "inside").write_text("someone else's")
    engine = make_engine(settle=0.05, rescan=3600)
    async with running(engine):
        write(src / "blocked", "a file")
        write(src / "fine", "ok")
        with anyio.fail_after(10):
            assert await engine.finish() is False
        assert (mnt / "fine").read_text() == "ok"
        assert (mnt / "blocked").is_dir()
