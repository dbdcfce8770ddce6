"""What the agent persists beside the rules engine's state, and what it re-derives after a crash.

The sync engine commits a file to its state DB, then reports `FileSynced`; the rules engine and the queue
persist their side (in one transaction) when they have handled it. A kill in between would lose a marker's
trigger: the restarted engine finds the marker already in the mount and reports nothing. So the agent keeps,
with the rules state, which marker files it has handled (and when), and at start re-reports every marker the
state DB says was synced recently that is not on that list. "Recently" counts back from the last time that
state was saved, not from the restart: an agent that stays down for hours still finds the marker it synced
just before it died.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agent.facts import FileSynced

KEEP_SECONDS = 3600.0  # how long a handled marker is remembered (and how far back recovery looks)


@dataclass(slots=True)
class Durable:
    """The rules engine's JSON plus the markers handled recently (path -> when its FileSynced was handled)."""

    rules_json: str
    markers_seen: dict[str, float] = field(default_factory=dict)
    saved_at: float | None = None  # when `dumps` wrote it (None: an older format)

    def dumps(self, now: float) -> str:
        recent = {p: at for p, at in self.markers_seen.items() if at >= now - KEEP_SECONDS}
        doc = {"rules": self.rules_json, "markers_seen": recent, "saved_at": now}
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> Durable:
        """Read what `dumps` wrote (or, from older versions, the rules engine's JSON alone)."""
        try:
            doc = json.loads(text)
        except ValueError:
            return cls(rules_json=text)
        if isinstance(doc, dict) and isinstance(doc.get("rules"), str):
            seen = doc.get("markers_seen") or {}
            saved = doc.get("saved_at")
            return cls(
                rules_json=doc["rules"],
                markers_seen={str(k): float(v) for k, v in seen.items()},
                saved_at=float(saved) if isinstance(saved, int | float) else None,
            )
        return cls(rules_json=text)


def unhandled_markers(
    db_path: Path,
    mount: Path,
    markers: frozenset[str],
    seen: dict[str, float],
    now: float,
    saved_at: float | None = None,
) -> list[FileSynced]:
    """Markers the state DB says were synced that were never handled, oldest first: those synced within the
    hour before the handled list was saved (`saved_at`; without one, the hour before `now`) or since."""
    if not markers or not db_path.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT path, size, synced_at FROM files WHERE synced_at >= ? ORDER BY synced_at",
                ((now if saved_at is None else min(now, saved_at)) - KEEP_SECONDS,),
            ).fetchall()
    except sqlite3.Error:
        return []
    facts: list[FileSynced] = []
    for raw, size, synced_at in rows:
        if not isinstance(raw, str) or PurePosixPath(raw).name not in markers:
            continue
        if seen.get(raw, float("-inf")) >= synced_at:
            continue
        line = marker_first_line(mount / raw)
        facts.append(FileSynced(path=raw, size=int(size), at=float(synced_at), first_line=line))
    return facts


def marker_first_line(path: Path) -> str | None:
    """A marker file's first line (what `{marker}` renders), or None when it cannot be read."""
    try:
        with path.open("rb") as handle:
            return handle.readline(4096).decode("utf-8", "replace").strip()
    except OSError:
        return None
