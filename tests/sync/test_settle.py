"""Settle logic: a file is complete once size and mtime held still for `settle`, judged from observations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sync.settle import NS, FileStat, Settler


def sig(size: int, t: float, ino: int = 1, ctime: float | None = None) -> FileStat:
    return FileStat(size, int(t * NS), int((t if ctime is None else ctime) * NS), ino, 0o100644)


def test_old_file_is_complete_at_first_sight() -> None:
    """A file whose ctime is older than `settle` is complete the first time it is seen (found by a scan)."""
    settler = Settler(2.0)
    assert settler.settled("a", sig(10, 100.0), now=105.0)


def test_fresh_file_waits_for_settle() -> None:
    """A just-written file is not complete until the same signature has held for `settle`."""
    settler = Settler(2.0)
    assert not settler.settled("a", sig(10, 100.0), now=100.5)
    assert not settler.settled("a", sig(10, 100.0), now=101.9)
    assert settler.settled("a", sig(10, 100.0), now=102.0)


def test_change_restarts_the_wait() -> None:
    """A new size or mtime restarts the clock from the change."""
    settler = Settler(1.0)
    settler.observe("a", sig(10, 100.0), 100.1)
    assert not settler.settled("a", sig(20, 100.8), now=101.5)
    assert settler.settled("a", sig(20, 100.8), now=101.8)


def test_future_ctime_falls_back_to_first_sight() -> None:
    """A ctime in the future (skewed clock) gives no head start: the wait counts from the first observation."""
    settler = Settler(1.0)
    assert not settler.settled("a", sig(10, 100.0, ctime=500.0), now=100.0)
    assert settler.settled("a", sig(10, 100.0, ctime=500.0), now=101.0)


def test_due_hands_out_paths_once_when_their_time_comes() -> None:
    """`due` returns each path whose settle time passed, once, and nothing before."""
    settler = Settler(1.0)
    settler.observe("a", sig(1, 100.0), 100.0)
    settler.observe("b", sig(1, 100.5), 100.5)
    assert settler.due(100.9) == []
    assert settler.next_due() == 101.0
    assert settler.due(101.2) == ["a"]
    assert settler.due(101.6) == ["b"]
    assert settler.due(200.0) == []


def test_absent_path_settles_from_first_sight_or_given_since() -> None:
    """An absence has no ctime: it settles from first sight, or from an earlier `since` the caller vouches for."""
    settler = Settler(1.0)
    settler.observe("gone", None, 100.0)
    assert not settler.is_settled("gone", 100.5)
    assert settler.is_settled("gone", 101.0)
    settler.observe("snap", None, 100.0, since=99.0)
    assert settler.is_settled("snap", 100.0)


def test_pending_lists_present_paths_with_episode_start() -> None:
    """`pending` maps each present tracked path to the first time its episode was seen, across changes."""
    settler = Settler(1.0)
    settler.observe("a", sig(1, 100.0), 100.0)
    settler.observe("a", sig(2, 100.4), 100.5)
    settler.observe("gone", None, 100.2)
    assert settler.pending() == {"a": 100.0}
    settler.forget("a")
    assert settler.pending() == {}


# -- model test ------------------------------------------------------------------------------------------------

events = st.lists(
    st.tuples(st.sampled_from(["write", "look"]), st.floats(min_value=0.001, max_value=3.0)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(events=events, settle=st.floats(min_value=0.0, max_value=2.0), skew=st.sampled_from([0.0, 0.0, 5.0]))
def test_settle_matches_a_simple_model(events: list[tuple[str, float]], settle: float, skew: float) -> None:
    """Against a model (complete iff no write in the last `settle` seconds): never complete too early, and with
    an honest ctime exactly as complete as the model; with a skewed ctime, complete once the same state was
    seen twice `settle` apart."""
    settler = Settler(settle)
    t = 1000.0
    size = 0
    last_write: float | None = None
    first_seen_state: float | None = None
    for kind, gap in events:
        t += gap
        if kind == "write":
            size += 1
            last_write = t
            first_seen_state = None
            continue
        if last_write is None:
            continue
        current = FileStat(size, int(last_write * NS), int((last_write + skew) * NS), 7, 0o100644)
        if first_seen_state is None:
            first_seen_state = t
        decided = settler.settled("f", current, t)
        quiet_for = t - last_write
        if decided:
            assert quiet_for >= settle - 1e-6
        if skew == 0.0:
            assert decided == (quiet_for >= settle - 1e-9) or abs(quiet_for - settle) < 1e-6
        elif t - first_seen_state >= settle:
            assert decided
