"""`domino-sync status` for people: the overview and the dead letters as aligned plain text."""

from __future__ import annotations

import io
from typing import Any

from agent.cli.status_view import render_status, status_lines

STATUS: dict[str, Any] = {
    "ready": True,
    "reason": "ok",
    "source": "/data/out",
    "mount": "/domino/datasets/d",
    "dataset": {"id": "dataset-1", "name": "d"},
    "sync": {"pending": 3, "copies": 10, "bytes": 2048, "deletes": 1, "last_scan_at": 1795600000.0},
    "queue": {
        "depth": 1,
        "dead_letters": [
            {"id": 7, "tags": ["v1"], "attempts": 8, "last_error": "HTTP 403: no"},
            {"id": 12, "tags": ["v1", "latest"], "attempts": 10, "last_error": "HTTP 400:\n  bad tag"},
        ],
        "last_snapshot": {"id": "snapshot-9", "tags": ["latest"], "at": 1795600000.0},
    },
}


class FakeTty(io.StringIO):
    """A stream that says it is a terminal, so click keeps the colour codes."""

    def isatty(self) -> bool:
        return True


def _render(data: dict[str, Any]) -> str:
    out = io.StringIO()
    render_status(data, out)
    return out.getvalue()


def test_overview_is_two_aligned_columns() -> None:
    """The overview is a title, then every name and value with the values starting in one column."""
    assert _render(STATUS).splitlines()[:12] == [
        "domino-sync",
        "ready          yes (ok)",
        "dataset        d (dataset-1)",
        "source         /data/out",
        "mount          /domino/datasets/d",
        "last scan      2026-11-25 09:46:40 UTC",
        "pending files  3",
        "copied         10 files, 2048 bytes",
        "deleted        1",
        "queue depth    1",
        "last snapshot  snapshot-9 [latest] at 2026-11-25 09:46:40 UTC",
        "last error     -",
    ]


def test_dead_letters_table_with_the_retry_command() -> None:
    """Dead letters follow under a title naming the retry command, as aligned columns, one line per job even
    when an error spans lines."""
    lines = _render(STATUS).splitlines()
    assert lines[12:] == [
        "",
        "dead letters (domino-sync retry --config FILE [--id N])",
        "id  tags        attempts  last error",
        "--  ----------  --------  -----------------",
        "7   v1          8         HTTP 403: no",
        "12  v1, latest  10        HTTP 400: bad tag",
    ]


def test_no_dead_letters_no_table_and_missing_fields_show_a_dash() -> None:
    """Without dead letters there is no second table, and fields the agent did not send read '-' or 0 (a dataset
    and mount not known yet, while the agent starts, say so rather than `None`)."""
    text = _render({"ready": False, "mount": None, "dataset": {"name": None, "id": None}})
    assert "dead letters" not in text
    assert text.splitlines() == [
        "domino-sync",
        "ready          no",
        "dataset        - (not known yet)",
        "source         -",
        "mount          - (not known yet)",
        "last scan      -",
        "pending files  0",
        "copied         0 files, 0 bytes",
        "deleted        0",
        "queue depth    0",
        "last snapshot  -",
        "last error     -",
    ]


def test_last_error_from_the_sync_when_the_agent_has_none() -> None:
    """The last error falls back to the sync engine's when the agent reports none of its own."""
    text = _render({"ready": False, "reason": "mount missing", "sync": {"last_error": "ENOSPC on a.csv"}})
    assert "ready          no (mount missing)" in text
    assert "last error     ENOSPC on a.csv" in text


def test_plain_text_off_a_terminal_bold_on_one() -> None:
    """Piped, the output has no escape codes; on a terminal the names are bold and the words are the same."""
    plain = _render(STATUS)
    assert "\x1b[" not in plain
    tty = FakeTty()
    render_status(STATUS, tty)
    styled = tty.getvalue()
    assert "\x1b[1mready\x1b[0m" in styled
    assert "\x1b[1mlast error\x1b[0m" in styled
    assert styled.replace("\x1b[1m", "").replace("\x1b[0m", "") == plain


def test_status_lines_match_what_is_written() -> None:
    """render_status writes exactly the lines status_lines builds, each on its own line."""
    tty = FakeTty()
    render_status(STATUS, tty)
    assert tty.getvalue() == "".join(line + "\n" for line in status_lines(STATUS))


def test_refused_deletes_are_shown_with_what_to_do() -> None:
    """Deletes held back by source.max_delete show next to the deleted count, with the way out."""
    text = _render({"ready": True, "sync": {"deletes": 2, "delete_refused": 3}})
    refused = "3 refused (more than source.max_delete at once: raise it and restart, or put them back)"
    assert f"deleted        2; {refused}" in text
    assert "deleted        0\n" in _render({"ready": True, "sync": {"deletes": 0}})
