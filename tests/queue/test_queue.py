"""The durable snapshot queue against an in-memory API: durability, coalescing, coverage, retries, dead
letters and crash recovery."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.api.models import Dialect
from agent.errors import AuthenticationError, PermissionDeniedError, RateLimitedError, ServerError
from agent.queue_store import QueueStore
from agent.rules.engine import SnapshotRequest


def req(
    *tags: str, scopes: tuple[str, ...] = ("",), rules: tuple[str, ...] = ("r",), at: float = 0.0
) -> SnapshotRequest:
    return SnapshotRequest(rules=rules, tags=tags, scopes=scopes, requested_at=at)


def only_snapshot(api: Any) -> str:
    assert len(api.snapshots) == 1
    return str(next(iter(api.snapshots)))


# --- durability and coalescing ----------------------------------------------------------------------------


async def test_submit_is_on_disk_before_it_returns_and_survives_reopen(
    tmp_path: Path, make_queue: Any, api: Any
) -> None:
    """A submitted job is readable by another connection at once and is processed after close and reopen."""
    q = make_queue()
    job = q.submit(req("nightly", "latest"))
    with sqlite3.connect(tmp_path / "state.db") as other:
        row = other.execute("SELECT state, tags FROM queue_jobs WHERE id = ?", (job,)).fetchone()
    assert row == ("waiting", '["nightly", "latest"]')
    q.close()
    again = make_queue()
    assert again.status()["depth"] == 1
    assert await again.drain(5)
    snap = only_snapshot(api)
    assert api.tags_of(snap) == {"nightly", "latest"}
    assert again.status()["last_snapshot"]["id"] == snap


async def test_many_submits_cost_one_create_and_one_call_per_tag(make_queue: Any, api: Any) -> None:
    """Hundreds of submits while a job waits join it: one create call (with the first tag) plus one per tag."""
    q = make_queue()
    ids = {q.submit(req(f"drop-{i % 3}", "latest", scopes=(f"d{i % 5}",))) for i in range(300)}
    assert len(ids) == 1
    job = q.status()["jobs"][0]
    assert job["tags"] == ["drop-0", "latest", "drop-1", "drop-2"]
    assert job["scopes"] == ["d0", "d1", "d2", "d3", "d4"]
    assert await q.drain(5)
    assert api.calls == {"create_snapshot": 1, "add_tag": 3}
    assert api.tags_of(only_snapshot(api)) == {"drop-0", "drop-1", "drop-2", "latest"}


async def test_a_submit_while_one_is_in_flight_starts_the_next_job(make_queue: Any, api: Any) -> None:
    """Once a job's create call is out, new submits form one new job, which runs after it and gets its tags."""
    api.block_create = anyio.Event()
    q = make_queue()
    first = q.submit(req("one", "latest"))
    async with anyio.create_task_group() as tg:
        await tg.start(q.run)
        with anyio.fail_after(5):
            await api.create_entered.wait()
        second = q.submit(req("two", "latest"))
        third = q.submit(req("three"))
        assert second == third != first
        assert q.status()["in_flight"] == 1 and q.status()["waiting"] == 1
        api.block_create.set()
        assert await q.drain(5)
        tg.cancel_scope.cancel()
    assert api.calls["create_snapshot"] == 2
    newest = max(api.snapshots, key=lambda s: int(s.split("-")[1]))
    assert api.tags_of(newest) == {"two", "three", "latest"}


async def test_a_job_waits_until_covered_and_coverage_sees_joined_scopes(make_queue: Any, api: Any) -> None:
    """Nothing is sent while covered() is false; it is asked about the joined request; then the job runs."""
    ready = [False]
    asked: list[SnapshotRequest] = []

    def covered(request: SnapshotRequest) -> bool:
        asked.append(request)
        return ready[0]

    q = make_queue(covered=covered)
    q.submit(req("a", scopes=("d1",), at=1.0))
    async with anyio.create_task_group() as tg:
        await tg.start(q.run)
        await anyio.sleep(0.15)
        assert api.calls["create_snapshot"] == 0
        q.submit(req("b", scopes=("d2",), at=2.0))
        await anyio.sleep(0.05)
        assert asked[-1] == SnapshotRequest(("r",), ("a", "b"), ("d1", "d2"), 2.0)
        ready[0] = True
        assert await q.drain(5)
        tg.cancel_scope.cancel()
    assert api.tags_of(only_snapshot(api)) == {"a", "b"}


async def test_drain_times_out_while_a_job_is_not_covered(make_queue: Any, api: Any) -> None:
    """drain returns False at its timeout when a job is still waiting for its files."""
    q = make_queue(covered=lambda _r: False)
    q.submit(req("a"))
    assert not await q.drain(0.2)
    assert api.calls["create_snapshot"] == 0
    assert q.status()["waiting"] == 1


async def test_a_drain_that_does_not_wait_for_coverage_ends_at_a_job_not_covered(make_queue: Any, api: Any) -> None:
    """`once` drains without waiting for coverage (its sync is over): a job not covered ends the drain at once,
    False, and stays queued; status says what it waits for."""
    events: list[tuple[str, dict[str, Any]]] = []
    q = make_queue(
        covered=lambda _r: False,
        why_waiting=lambda r: f"{len(r.scopes)} scope held",
        on_event=lambda event, fields: events.append((event, fields)),
    )
    q.submit(req("a"))
    with anyio.fail_after(2):  # not the 60 s of the timeout
        assert not await q.drain(60, wait_for_coverage=False)
    assert api.calls["create_snapshot"] == 0
    status = q.status()
    assert status["waiting"] == 1 and status["jobs"][0]["waiting_for"] == "1 scope held"
    assert [fields["waiting_for"] for event, fields in events if event == "queue.snapshot_waiting"] == ["1 scope held"]


async def test_a_job_without_tags_makes_an_untagged_snapshot(make_queue: Any, api: Any) -> None:
    """A request with no tags gives one create call with no tag and nothing else."""
    q = make_queue()
    q.submit(req())
    assert await q.drain(5)
    assert api.log == [("create_snapshot", None)]


# --- retries and dead letters ----------------------------------------------------------------------------


async def test_rate_limited_create_waits_at_least_retry_after(make_queue: Any, api: Any, events: Any) -> None:
    """Two 429s with Retry-After 0.3 s delay the job at least 0.6 s, and still give one snapshot."""
    limited = RateLimitedError("POST", "/snapshots", 429, "slow down", retry_after=0.3)
    api.fail["create_snapshot"] = [limited, limited]
    q = make_queue()
    q.submit(req("a", "b"))
    started = time.monotonic()
    assert await q.drain(10)
    assert time.monotonic() - started >= 0.6
    assert [r["delay"] >= 0.3 for r in events.of("queue.retry")] == [True, True]
    assert api.calls["create_snapshot"] == 3
    assert api.tags_of(only_snapshot(api)) == {"a", "b"}


async def test_attempts_and_next_attempt_are_persisted(make_queue: Any, api: Any) -> None:
    """A failed attempt's count and its next time survive a restart, so a long Retry-After is kept."""
    api.fail["create_snapshot"] = [RateLimitedError("POST", "/snapshots", 429, "later", retry_after=30.0)]
    q = make_queue()
    q.submit(req("a"))
    assert not await q.drain(0.3)
    q.close()
    again = make_queue()
    job = again.status()["jobs"][0]
    assert job["attempts"] == 1
    assert job["next_attempt_at"] >= time.time() + 25
    assert "429" in job["last_error"]
    assert not await again.drain(0.2)
    assert api.calls["create_snapshot"] == 1


async def test_server_errors_on_tags_are_retried(make_queue: Any, api: Any) -> None:
    """5xx answers to tag calls are retried with backoff until every tag is on the snapshot."""
    boom = ServerError("POST", "/tags", 503, "unavailable")
    api.fail["add_tag"] = [boom, boom, boom]
    q = make_queue()
    q.submit(req("a", "b", "c"))
    assert await q.drain(10)
    assert api.tags_of(only_snapshot(api)) == {"a", "b", "c"}
    assert api.calls["add_tag"] == 5


async def test_a_non_retryable_error_parks_a_dead_letter_until_retried(make_queue: Any, api: Any, events: Any) -> None:
    """A 403 parks the job at once; status shows it; retry_dead requeues it and it then completes once."""
    api.fail["create_snapshot"] = [PermissionDeniedError("POST", "/snapshots", 403, "not yours")]
    q = make_queue()
    job = q.submit(req("a", "b"))
    assert not await q.drain(5)
    dead = q.status()["dead_letters"]
    assert [(d["id"], d["tags"], d["attempts"]) for d in dead] == [(job, ["a", "b"], 1)]
    assert "403" in dead[0]["last_error"]
    assert q.status()["depth"] == 0
    assert events.of("queue.dead_letter")[0]["job_id"] == job
    assert q.retry_dead(job + 100) == 0
    assert q.retry_dead(job) == 1
    assert await q.drain(5)
    assert q.dead_letters() == []
    assert api.tags_of(only_snapshot(api)) == {"a", "b"}


async def test_max_attempts_of_retryable_errors_make_a_dead_letter(make_queue: Any, api: Any) -> None:
    """After max_attempts consecutive 5xx the job is parked with its attempt count and last error."""
    api.fail["create_snapshot"] = [ServerError("POST", "/snapshots", 500, "down")] * 3
    q = make_queue(max_attempts=3)
    q.submit(req("a"))
    assert not await q.drain(5)
    (dead,) = q.dead_letters()
    assert dead["attempts"] == 3 and "500" in dead["last_error"]
    assert api.snapshots == {}
    assert q.retry_dead() == 1
    assert await q.drain(5)
    assert api.tags_of(only_snapshot(api)) == {"a"}


async def test_a_revived_old_job_does_not_move_tags_a_newer_job_set(make_queue: Any, api: Any) -> None:
    """A dead job retried after a newer job finished leaves the newer job's shared tags (latest) alone."""
    api.fail["add_tag"] = [PermissionDeniedError("POST", "/tags", 403, "no")]
    q = make_queue()
    old = q.submit(req("old", "latest"))
    assert not await q.drain(5)
    q.submit(req("new", "latest"))
    assert not await q.drain(5)  # the dead letter is still there
    new_snap = api.tags["new"]
    assert q.retry_dead(old) == 1
    assert await q.drain(5)
    assert api.tags["latest"] == new_snap
    assert api.tags["old"] != new_snap


# --- tag conflicts --------------------------------------------------------------------------------------


async def test_a_tag_on_another_snapshot_is_moved_when_the_server_refuses(make_queue: Any, api: Any) -> None:
    """When the server answers 409 for a tag held elsewhere, the queue removes and re-adds it (it moves)."""
    api.strict_tags = True
    old = api.add_existing(time.time() - 60, ("latest",)).id
    q = make_queue()
    q.submit(req("drop-1", "latest"))
    assert await q.drain(5)
    new = api.tags["drop-1"]
    assert new != old and api.tags["latest"] == new


async def test_a_taken_first_tag_gives_an_untagged_create_then_a_moved_tag(make_queue: Any, api: Any) -> None:
    """A 409 on create with a tag falls back to creating untagged and moving the tag afterwards."""
    api.strict_tags = True
    old = api.add_existing(time.time() - 60, ("latest",)).id
    q = make_queue()
    q.submit(req("latest"))
    assert await q.drain(5)
    assert [arg for name, arg in api.log if name == "create_snapshot"] == ["latest", None]
    assert len(api.snapshots) == 2 and api.tags["latest"] != old


# --- crash recovery ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", [Dialect.SEED, Dialect.DOMINO])
async def test_a_lost_create_answer_adopts_the_servers_snapshot(
    make_queue: Any, api: Any, events: Any, dialect: Dialect
) -> None:
    """When the create answer is lost, the retry finds the snapshot on the server instead of making another."""
    api.server_dialect = dialect
    api.lose_create_answers = 1
    q = make_queue()
    q.submit(req("a", "b"))
    assert await q.drain(5)
    assert api.calls["create_snapshot"] == 1
    assert api.tags_of(only_snapshot(api)) == {"a", "b"}
    assert events.of("queue.snapshot_created")[0]["adopted"] is True


@pytest.mark.parametrize("dialect", [Dialect.SEED, Dialect.DOMINO])
async def test_a_timed_out_create_the_server_finishes_later_is_adopted(
    make_queue: Any, api: Any, events: Any, dialect: Dialect
) -> None:
    """A create that timed out while the server went on is looked for until the grace after that call ends:
    the snapshot that appears meanwhile is adopted and no second one is made."""
    api.server_dialect = dialect
    api.late_creates = [0.4]
    q = make_queue(inflight_grace=1.5)
    q.submit(req("a", "b"))
    assert await q.drain(10)
    assert api.calls["create_snapshot"] == 1
    assert len(api.snapshots) == 1
    assert api.tags_of(only_snapshot(api)) == {"a", "b"}
    assert events.of("queue.recovery_wait")
    assert events.of("queue.snapshot_created")[0]["adopted"] is True


async def test_a_refused_create_is_sent_again_without_waiting(make_queue: Any, api: Any, events: Any) -> None:
    """A 503 or 429 answer means the server did nothing: the retry creates at once (no look-again wait)."""
    api.fail["create_snapshot"] = [
        ServerError("POST", "/snapshots", 503, "busy"),
        RateLimitedError("POST", "/snapshots", 429, "slow down", retry_after=0.01),
    ]
    q = make_queue(inflight_grace=30.0)
    q.submit(req("a"))
    with anyio.fail_after(5):
        assert await q.drain(5)
    assert api.calls["create_snapshot"] == 3
    assert len(api.snapshots) == 1
    assert not events.of("queue.recovery_wait")


def test_a_state_db_without_last_sent_at_is_upgraded(tmp_path: Path) -> None:
    """A 0.1.0 queue table gets `last_sent_at`; a job it left mid-create waits from its recorded send."""
    db = tmp_path / "state.db"
    store = QueueStore(db)
    store.submit(req("a"), 1.0)
    store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE queue_jobs SET state = 'creating', sent_at = 123.0, create_sends = 1")
        conn.execute("ALTER TABLE queue_jobs DROP COLUMN last_sent_at")
    store = QueueStore(db)
    try:
        [row] = store.jobs(("creating",))
        assert row.last_sent_at == 123.0
    finally:
        store.close()


def crash_after_send(db: Path, job: int, sent_at: float) -> None:
    """What the DB holds when the agent died during the create call."""
    store = QueueStore(db)
    assert store.start_sending(job, 0)
    store.begin_create(job, sent_at)
    store.close()


@pytest.mark.parametrize("dialect", [Dialect.SEED, Dialect.DOMINO])
async def test_a_job_left_creating_by_a_crash_adopts_instead_of_creating_again(
    tmp_path: Path, make_queue: Any, api: Any, dialect: Dialect
) -> None:
    """A job in `creating` after a crash whose snapshot the server has is adopted: no second create call."""
    api.server_dialect = dialect
    q = make_queue()
    job = q.submit(req("nightly", "latest"))
    q.close()
    now = time.time()
    crash_after_send(tmp_path / "state.db", job, now)
    made = api.add_existing(now - 3.0, ("nightly",)).id  # server clock 3 s behind: within the skew
    again = make_queue()
    assert await again.drain(5)
    assert api.calls["create_snapshot"] == 0
    assert api.tags_of(made) == {"nightly", "latest"}


@pytest.mark.parametrize(
    ("dialect", "age", "tags", "owned"),
    [
        (Dialect.SEED, 60.0, ("nightly",), False),  # our tag, but on a snapshot older than the send
        (Dialect.SEED, -1.0, ("other",), False),  # recent, but without our tag
        (Dialect.DOMINO, 60.0, (), False),  # older than the send
        (Dialect.DOMINO, -1.0, (), True),  # recent, but another job's snapshot
    ],
)
async def test_recovery_does_not_adopt_a_snapshot_that_is_not_ours(
    tmp_path: Path, make_queue: Any, api: Any, dialect: Dialect, age: float, tags: tuple[str, ...], owned: bool
) -> None:
    """Old snapshots, snapshots without our tag (seed) and snapshots another job owns are never adopted."""
    api.server_dialect = dialect
    q = make_queue()
    now = time.time()
    if owned:
        q.submit(req())
        assert await q.drain(5)
    else:
        api.add_existing(now - age, tags)
    job = q.submit(req("nightly"))
    q.close()
    crash_after_send(tmp_path / "state.db", job, now)
    before = set(api.snapshots)
    again = make_queue()
    assert await again.drain(5)
    assert api.calls["create_snapshot"] == (2 if owned else 1)
    (new,) = set(api.snapshots) - before
    assert api.tags_of(new) == {"nightly"}


async def test_cancelled_during_create_resumes_without_a_second_snapshot(make_queue: Any, api: Any) -> None:
    """Cancelling the worker while the server holds the new snapshot but has not answered, then restarting,
    gives exactly one snapshot with all its tags."""
    api.block_create = anyio.Event()
    q = make_queue()
    q.submit(req("a", "b"))
    async with anyio.create_task_group() as tg:
        await tg.start(q.run)
        with anyio.fail_after(5):
            await api.create_entered.wait()
        tg.cancel_scope.cancel()
    q.close()
    api.block_create = None
    again = make_queue()
    assert again.status()["in_flight"] == 1
    assert await again.drain(5)
    assert api.calls["create_snapshot"] == 1
    assert api.tags_of(only_snapshot(api)) == {"a", "b"}


# --- rules state and events -------------------------------------------------------------------------------


async def test_rules_state_is_saved_and_survives_reopen(make_queue: Any) -> None:
    """save_rules_state keeps the latest text across a restart; nothing saved reads as None."""
    q = make_queue()
    assert q.load_rules_state() is None
    q.save_rules_state('{"version": 1, "rules": {}}')
    q.save_rules_state('{"version": 1, "rules": {"m": {}}}')
    q.close()
    assert make_queue().load_rules_state() == '{"version": 1, "rules": {"m": {}}}'


async def test_events_report_each_step(make_queue: Any, api: Any, events: Any) -> None:
    """on_event hears the submit, the join, the snapshot, each tag and the end of the job, in order."""
    q = make_queue()
    q.submit(req("a"))
    q.submit(req("b"))
    assert await q.drain(5)
    assert events.names() == ["queue.submitted", "queue.joined", "queue.snapshot_created", "queue.tagged", "queue.done"]
    snap = only_snapshot(api)
    assert events.of("queue.tagged") == [{"job_id": 1, "snapshot_id": snap, "tag": "b"}]


def recording_fence(api: Any, held: list[str]) -> Callable[..., AbstractAsyncContextManager[None]]:
    """A fence that notes when it is entered, and how many looks and tag calls the server had when it was left."""

    @contextlib.asynccontextmanager
    async def fence(*, flush: bool = True) -> AsyncIterator[None]:
        held.append("enter" if flush else "enter without a flush")
        yield
        held.append(f"exit after {api.calls['get_snapshot']} looks, {api.calls['add_tag']} tags")

    return fence


async def test_the_fence_is_held_until_the_server_has_taken_the_snapshot(make_queue: Any, api: Any) -> None:
    """The create call runs inside the fence, which stays held while the server reports the snapshot copying;
    the tags are added after it is released."""
    api.copying_looks = 3
    held: list[str] = []
    q = make_queue(fence=recording_fence(api, held), snapshot_poll=0.01)
    q.submit(req("drop", "latest"))
    assert await q.drain(5)
    assert held == ["enter", "exit after 4 looks, 0 tags"]
    assert api.calls["create_snapshot"] == 1
    assert api.tags_of(only_snapshot(api)) == {"drop", "latest"}


async def test_a_snapshot_copying_for_too_long_releases_the_fence_with_a_warning(
    make_queue: Any, api: Any, events: Any
) -> None:
    """Past `snapshot_wait` the queue stops waiting for the server's copy, says so, and goes on tagging."""
    api.copying_looks = 10_000
    q = make_queue(snapshot_poll=0.01, snapshot_wait=0.1)
    q.submit(req("drop"))
    assert await q.drain(5)
    assert events.of("queue.snapshot_still_copying")
    assert api.tags_of(only_snapshot(api)) == {"drop"}


async def test_a_failed_look_at_a_copying_snapshot_ends_the_wait(make_queue: Any, api: Any, events: Any) -> None:
    """An error while looking at the snapshot's progress is reported and does not fail the job."""
    api.copying_looks = 5
    api.fail["get_snapshot"] = [ServerError("GET", "/snapshots", 500, "boom")]
    q = make_queue(snapshot_poll=0.01)
    q.submit(req("drop"))
    assert await q.drain(5)
    assert events.of("queue.snapshot_unknown")
    assert api.tags_of(only_snapshot(api)) == {"drop"}


async def test_at_start_a_snapshot_still_being_taken_is_waited_for_inside_the_fence(make_queue: Any, api: Any) -> None:
    """A job an earlier run left past its create call (its snapshot may still be copying on the server) is looked
    at before anything else: the fence is held until the server reports the snapshot taken."""
    api.fail["add_tag"] = [ServerError("POST", "/tags", 500, "down")] * 100
    first = make_queue(snapshot_wait=0, max_attempts=1000, backoff_cap=0.01)
    first.submit(req("drop", "latest"))
    assert not await first.drain(0.5)  # stopped while tagging: the snapshot exists, its tags do not
    snap_id = only_snapshot(api)
    api.fail["add_tag"] = []
    api._copying[snap_id] = 3  # the server is still copying it
    held: list[str] = []
    tried = api.calls["add_tag"]  # the first run's failed tag calls
    second = make_queue(fence=recording_fence(api, held), snapshot_poll=0.01)
    await second.settle_in_flight()
    assert held == ["enter without a flush", f"exit after 4 looks, {tried} tags"]  # no tag call inside the fence
    assert await second.drain(5)
    assert api.tags_of(snap_id) == {"drop", "latest"}
    assert api.calls["create_snapshot"] == 1


async def test_at_start_nothing_in_flight_costs_no_call(make_queue: Any, api: Any) -> None:
    """With no job past a create call, the start-up look makes no API call and takes no fence."""
    q = make_queue(fence=lambda **_: pytest.fail("no fence expected"))
    q.submit(req("waiting"))
    await q.settle_in_flight()
    assert sum(api.calls.values()) == 0


async def test_a_401_is_retried_as_credentials_can_heal(make_queue: Any, api: Any, events: Any) -> None:
    """A refused key or token (401) waits and tries again, as a rotated token file heals it; no dead letter."""
    api.fail["create_snapshot"] = [AuthenticationError("POST", "/snapshots", 401, "bad token")] * 2
    q = make_queue()
    q.submit(req("drop"))
    assert await q.drain(5)
    assert len(events.of("queue.retry")) == 2 and events.of("queue.retry")[0]["status"] == 401
    assert api.tags_of(only_snapshot(api)) == {"drop"}
