"""Watchers: the watchfiles-based default reports real changes; the scripted stand-in replays batches."""

from __future__ import annotations

from pathlib import Path

import anyio

from agent.sync.watcher import ScriptedWatcher, watchfiles_changes


async def test_watchfiles_reports_created_files_quickly(src: Path) -> None:
    """A file written into the watched folder shows up in a batch, as an absolute path, well within a second."""
    stop = anyio.Event()
    seen: set[str] = set()

    async def write_soon() -> None:
        await anyio.sleep(0.2)
        (src / "new.txt").write_text("x")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_soon)
            async for batch in watchfiles_changes(str(src), stop):
                seen |= batch
                if str(src / "new.txt") in seen:
                    stop.set()
    assert str(src / "new.txt") in seen


async def test_watchfiles_stops_promptly_on_stop_event(src: Path) -> None:
    """Setting the stop event ends the iteration without waiting for a change."""
    stop = anyio.Event()

    async def stop_soon() -> None:
        await anyio.sleep(0.1)
        stop.set()

    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_soon)
            async for _ in watchfiles_changes(str(src), stop):
                pass
    assert stop.is_set()


async def test_scripted_watcher_replays_batches() -> None:
    """Batches pushed into the scripted watcher come out in order, and the stop event ends it."""
    watcher = ScriptedWatcher()
    stop = anyio.Event()
    watcher.push(["/a", "/b"])
    watcher.push({"/c"})
    got: list[set[str]] = []
    with anyio.fail_after(3):
        async for batch in watcher("/", stop):
            got.append(batch)
            if len(got) == 2:
                stop.set()
    assert got == [{"/a", "/b"}, {"/c"}]
    assert watcher.started
