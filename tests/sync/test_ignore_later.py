"""A file that becomes ignored after it was synced: its copy in the mount stays as it is (not updated, not deleted),
in burst mode, in the dry-run plan and in daemon mode."""

from __future__ import annotations

from pathlib import Path

import anyio
from sync.sync_kit import EngineFactory, running


def write(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)


async def test_a_newly_ignored_file_is_left_as_it_is_by_once_and_the_plan(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """After `*.log` joins the ignore list, the synced old.log is neither deleted nor updated, and the dry-run
    plan agrees."""
    write(src / "old.log", "v1")
    write(src / "keep.txt", "k")
    report = await make_engine().sync_once()
    assert report.ok and (mnt / "old.log").read_text() == "v1"
    write(src / "old.log", "v2")
    write(src / "new.log", "n")
    engine = make_engine(ignore=("*.log",))
    plan = await engine.plan()
    assert plan.delete == () and plan.copy == ()
    report = await engine.sync_once()
    assert report.ok and report.deleted == 0 and report.copied == 0
    assert (mnt / "old.log").read_text() == "v1"
    assert not (mnt / "new.log").exists()


async def test_a_newly_ignored_file_is_not_copied_by_the_daemon(
    src: Path, mnt: Path, make_engine: EngineFactory
) -> None:
    """In daemon mode too, an edit of a file that became ignored does not reach the mount."""
    write(src / "old.log", "v1")
    await make_engine().sync_once()
    engine = make_engine(ignore=("*.log",), settle=0.05, rescan=0.3)
    async with running(engine):
        write(src / "old.log", "v2")
        await anyio.sleep(1.0)  # past the settle time and a couple of rescans
        assert engine.idle()
    assert (mnt / "old.log").read_text() == "v1"
