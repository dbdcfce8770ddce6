"""A progress bar for people: the first scan and sync, shown on a TTY only (stderr), never in logs or pipes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def wants_progress(console: Console | None = None) -> bool:
    """True when stderr is an interactive terminal."""
    return (console or Console(stderr=True)).is_terminal


async def show_first_sync(
    status: Callable[[], dict[str, Any] | None],
    finished: Callable[[], bool] = lambda: False,
    console: Console | None = None,
) -> None:
    """Draw the bar from the engine's status until the first scan is done and nothing is pending.

    `status` returns the sync engine's status dict (or None while the agent is still starting); `finished`
    says the pass is over (burst mode), whatever the status says.
    """
    console = console or Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[size]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("scanning", total=None, size="")
        start_copies = None
        while True:
            info = status()
            if info is not None:
                copies = int(info.get("copies", 0))
                start_copies = copies if start_copies is None else start_copies
                done = copies - start_copies
                pending = int(info.get("pending", 0)) + int(info.get("in_flight", 0))
                over = finished()
                scanned = over or info.get("last_scan_at") is not None
                mib = int(info.get("bytes", 0)) / 2**20
                progress.update(
                    task,
                    description="syncing" if scanned else "scanning",
                    completed=done,
                    total=(done + pending) if scanned else None,
                    size=f"{mib:,.1f} MiB",
                )
                if over or (scanned and pending == 0):
                    progress.update(task, description="in sync", total=max(done, 1), completed=max(done, 1))
                    return
            await anyio.sleep(0.2)
