"""`domino-sync status` for people: the agent's /status JSON as readable tables."""

from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console
from rich.table import Table


def _when(value: Any) -> str:
    if value in (None, ""):
        return "-"
    if isinstance(value, int | float):
        from datetime import UTC, datetime

        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def render_status(data: dict[str, Any], stream: TextIO) -> None:
    """Write the overview, the queue and the dead letters as tables to `stream`."""
    console = Console(file=stream, highlight=False, soft_wrap=True)
    sync = data.get("sync") or {}
    queue = data.get("queue") or {}
    dataset = data.get("dataset") or {}
    overview = Table(title="domino-sync", show_header=False, title_justify="left")
    overview.add_column("what", style="bold")
    overview.add_column("value")
    rows = [
        ("ready", f"{'yes' if data.get('ready') else 'no'} ({data.get('reason', '')})"),
        ("dataset", f"{dataset.get('name', '-')} ({dataset.get('id', '-')})"),
        ("source", str(data.get("source", "-"))),
        ("mount", str(data.get("mount", "-"))),
        ("last scan", _when(sync.get("last_scan_at"))),
        ("pending files", str(sync.get("pending", 0))),
        ("copied", f"{sync.get('copies', 0)} files, {sync.get('bytes', 0)} bytes"),
        ("deleted", str(sync.get("deletes", 0))),
        ("queue depth", str(queue.get("depth", 0))),
        ("last snapshot", _snapshot(queue.get("last_snapshot"))),
        ("last error", str(data.get("last_error") or sync.get("last_error") or "-")),
    ]
    for name, value in rows:
        overview.add_row(name, value)
    console.print(overview)
    dead = queue.get("dead_letters") or []
    if dead:
        table = Table(title="dead letters (domino-sync retry --config FILE [--id N])", title_justify="left")
        for column in ("id", "tags", "attempts", "last error"):
            table.add_column(column)
        for job in dead:
            table.add_row(
                str(job.get("id")),
                ", ".join(job.get("tags", [])),
                str(job.get("attempts", "")),
                str(job.get("last_error", "")),
            )
        console.print(table)


def _snapshot(value: Any) -> str:
    if not value:
        return "-"
    if isinstance(value, dict):
        tags = ", ".join(value.get("tags", []))
        return f"{value.get('id', '?')} [{tags}] at {_when(value.get('at'))}"
    return str(value)
