"""holding.py: what holds a snapshot request back, read from a plain view of the sync engine's state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.holding import holding
from agent.rules.engine import SnapshotRequest


@dataclass
class View:
    last_scan_at: float | None = None
    waiting: dict[str, float] = field(default_factory=dict)
    leaving: dict[str, float] = field(default_factory=dict)
    refused: dict[str, float] = field(default_factory=dict)

    def pending(self) -> Mapping[str, float]:
        return self.waiting

    def pending_deletes(self) -> Mapping[str, float]:
        return self.leaving

    def refused_deletes(self) -> Mapping[str, float]:
        return self.refused


def request(at: float = 100.0, scopes: tuple[str, ...] = ("",)) -> SnapshotRequest:
    return SnapshotRequest(rules=("r",), tags=("t",), scopes=scopes, requested_at=at)


def both(view: View | None, req: SnapshotRequest, wanted: float | None = None) -> tuple[str | None, str | None]:
    return holding(req, view, wanted, count=False), holding(req, view, wanted, count=True)


def test_nothing_holds_a_request_when_everything_before_it_is_in_the_mount() -> None:
    """Changes and departures seen after the request do not hold it."""
    view = View(waiting={"late.csv": 101.0}, leaving={"gone-later.csv": 102.0})  # both seen after the request
    assert both(view, request()) == (None, None)


def test_files_under_the_scopes_changed_before_the_request_hold_it_and_are_counted() -> None:
    """Only pending files under the request's scopes, seen before it, hold it; the count names the first."""
    view = View(waiting={"out/b.csv": 99.0, "out/a.csv": 50.0, "other/c.csv": 10.0, "outside.csv": 10.0})
    short, counted = both(view, request(scopes=("out",)))
    assert short == "not in the mount yet"
    assert counted == "2 files not in the mount yet, such as out/a.csv"
    assert both(View(waiting={"out/a.csv": 1.0}), request(scopes=("out",)))[1] == (
        "1 file not in the mount yet, such as out/a.csv"
    )


def test_a_file_that_left_the_source_before_the_request_holds_it_in_any_folder() -> None:
    """A delete still to come holds a request for another folder too (yesterday's folder goes first)."""
    view = View(leaving={"yesterday/part-0.csv": 90.0})
    assert both(view, request(scopes=("today",))) == (
        "to leave the mount (they left the source)",
        "1 file to leave the mount (they left the source), such as yesterday/part-0.csv",
    )


def test_a_refused_delete_holds_every_request_whenever_it_left() -> None:
    """Deletes the rail refused hold every request, even one made before they left."""
    view = View(refused={"run1/a.csv": 500.0, "run1/b.csv": 501.0})
    short, counted = both(view, request(at=100.0, scopes=("run2",)))
    assert short == "left the source, but deleting them was refused (source.max_delete)"
    assert counted is not None and counted.startswith("2 files left the source") and counted.endswith("run1/a.csv")


def test_in_daemon_mode_a_request_waits_for_a_full_scan_started_after_it_then_for_what_that_scan_found() -> None:
    """A request waits for a scan started after it, then for the files that scan found, seen before it ended."""
    req = request(at=100.0)
    assert both(View(last_scan_at=None), req, wanted=100.0)[0] == "a full scan of the source"
    assert both(View(last_scan_at=99.0), req, wanted=100.0)[0] == "a full scan of the source"
    found = View(last_scan_at=105.0, waiting={"missed-by-inotify.csv": 104.0})  # seen by that scan only
    assert both(found, req, wanted=100.0)[0] == "not in the mount yet"
    assert both(View(last_scan_at=105.0, waiting={"newer.csv": 106.0}), req, wanted=100.0) == (None, None)


def test_before_the_engine_exists_a_request_waits_for_the_agent_to_start() -> None:
    """Without a sync engine yet, the answer is that the agent is starting."""
    assert both(None, request()) == ("the agent to start", "the agent to start")
