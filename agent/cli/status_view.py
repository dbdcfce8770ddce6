"""`domino-sync status` for people: the agent's /status JSON as aligned plain-text tables.

`status_lines` builds the lines (names in bold); `render_status` writes them with click.echo, which drops the
bold when the stream is not a terminal, so piped output is plain text that grep and awk read line by line.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import click

DEAD_LETTERS_TITLE = "dead letters (domino-sync retry --config FILE [--id N])"
GAP = "  "


def _when(value: Any) -> str:
    if value in (None, ""):
        return "-"
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def _snapshot(value: Any) -> str:
    if not value:
        return "-"
    if isinstance(value, dict):
        tags = ", ".join(value.get("tags", []))
        return f"{value.get('id', '?')} [{tags}] at {_when(value.get('at'))}"
    return str(value)


def _cell(value: Any) -> str:
    """One line per row: line breaks in a value (an API error body) would break the columns."""
    return " ".join(str(value).split())


def _bold(text: str) -> str:
    return click.style(text, bold=True)


def _deleted(sync: dict[str, Any]) -> str:
    refused = sync.get("delete_refused", 0)
    done = str(sync.get("deletes", 0))
    if not refused:
        return done
    return f"{done}; {refused} refused (more than source.max_delete at once: raise it and restart, or put them back)"


def _depth(queue: dict[str, Any]) -> str:
    """The queue's depth, and what its first waiting snapshot waits for."""
    depth = str(queue.get("depth", 0))
    why = next((job["waiting_for"] for job in queue.get("jobs") or () if job.get("waiting_for")), None)
    return f"{depth} (waiting for {why})" if why else depth


def overview_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The overview as (what, value) pairs, in the order they are shown."""
    sync = data.get("sync") or {}
    queue = data.get("queue") or {}
    dataset = data.get("dataset") or {}
    known = dataset.get("id") or dataset.get("name")
    return [
        ("ready", ("yes" if data.get("ready") else "no") + (f" ({data['reason']})" if data.get("reason") else "")),
        ("dataset", f"{dataset.get('name') or '-'} ({dataset.get('id') or '-'})" if known else "- (not known yet)"),
        ("source", str(data.get("source") or "-")),
        ("mount", str(data.get("mount") or "- (not known yet)")),
        ("last scan", _when(sync.get("last_scan_at"))),
        ("pending files", str(sync.get("pending", 0))),
        ("copied", f"{sync.get('copies', 0)} files, {sync.get('bytes', 0)} bytes"),
        ("deleted", _deleted(sync)),
        ("queue depth", _depth(queue)),
        ("last snapshot", _snapshot(queue.get("last_snapshot"))),
        ("last error", str(data.get("last_error") or sync.get("last_error") or "-")),
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A bold header, a rule of dashes under each column, then the rows; columns padded to their widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str], style: bool = False) -> str:
        padded = [
            (_bold(cell) if style else cell) + " " * (width - len(cell))
            for cell, width in zip(cells, widths, strict=True)
        ]
        return GAP.join(padded).rstrip()

    return [line(header, style=True), GAP.join("-" * width for width in widths), *(line(row) for row in rows)]


def status_lines(data: dict[str, Any]) -> list[str]:
    """The overview (a title, then each name and value in two aligned columns) and, when there are any, the
    dead letters as a table under their own title."""
    rows = [(name, _cell(value)) for name, value in overview_rows(data)]
    width = max(len(name) for name, _ in rows)
    lines = [_bold("domino-sync")]
    lines += [f"{_bold(name)}{' ' * (width - len(name))}{GAP}{value}" for name, value in rows]
    dead = (data.get("queue") or {}).get("dead_letters") or []
    if dead:
        table = [
            (
                _cell(job.get("id")),
                _cell(", ".join(job.get("tags", []))),
                _cell(job.get("attempts", "")),
                _cell(job.get("last_error", "")),
            )
            for job in dead
        ]
        lines += ["", _bold(DEAD_LETTERS_TITLE), *_table(("id", "tags", "attempts", "last error"), table)]
    return lines


def render_status(data: dict[str, Any], stream: TextIO) -> None:
    """Write the overview, and the dead letters when there are any, to `stream` (no colour codes off a TTY)."""
    for line in status_lines(data):
        click.echo(line, file=stream)
