"""Fault injection and figures: fail rate, latency, the rate limit (429 + Retry-After) and the stats route."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from agent.api.models import Dialect
from agent.emulator.faults import RateWindow, Stats


def test_rate_window_admits_capacity_per_window() -> None:
    """At 5 rps, five requests pass at once, the sixth waits for the oldest to leave the 1 s window."""
    window = RateWindow(5)
    assert [window.admit(0.0) for _ in range(5)] == [None] * 5
    assert window.admit(0.25) == pytest.approx(0.75)
    assert window.admit(1.0) is None


@pytest.mark.parametrize(("rate", "capacity", "span"), [(2.5, 2, 0.8), (0.5, 1, 2.0), (10, 10, 1.0)])
def test_rate_window_for_fractional_rates(rate: float, capacity: int, span: float) -> None:
    """A fractional rate admits its whole part (at least 1) per capacity/rate seconds."""
    window = RateWindow(rate)
    assert (window.capacity, window.window) == (capacity, pytest.approx(span))
    assert [window.admit(0.0) for _ in range(capacity)] == [None] * capacity
    assert window.admit(0.0) == pytest.approx(span)


def test_stats_max_requests_in_any_second() -> None:
    """max_requests_in_any_1s is the most arrivals inside any 1 s span, and in-flight counts come back to 0."""
    stats = Stats()
    for at in (0.0, 0.1, 0.5, 0.95, 1.2, 1.3, 3.0):
        stats.arrived("GET /x", at)
        stats.finished(200)
    figures = stats.snapshot()
    assert figures["max_requests_in_any_1s"] == 4  # 0.0-0.95 and 0.5-1.3 each hold four
    assert figures["requests_total"] == 7 and figures["in_flight"] == 0 and figures["by_status"] == {"200": 7}


async def test_fail_rate_one_fails_everything_without_effect(emulator_factory: Any, connect: Any, errors: Any) -> None:
    """With fail rate 1 every API call is 500 or 503 (503 with Retry-After) in the dialect shape, and a failed
    create leaves no dataset behind."""
    emu = await emulator_factory(fail_rate=1.0)
    api = connect(emu)
    replies = [await api.post("/datasets", {"name": f"d{i}"}) for i in range(20)]
    assert {r.status for r in replies} <= {500, 503}
    for reply in replies:
        errors.seed(reply, reply.status)
        if reply.status == 503:
            assert reply.headers["Retry-After"] == "1"
    assert not list(emu.mount_root.iterdir())
    stats = await connect(emu, None).get("/__emulator__/stats")
    assert stats.status == 200 and stats.body["injected_failures"] == 20 and stats.body["requests_total"] == 20


async def test_fail_rate_half_fails_about_half(emulator_factory: Any, connect: Any) -> None:
    """With fail rate 0.5, roughly half of 200 calls fail and the rest succeed normally."""
    emu = await emulator_factory(fail_rate=0.5, dialect=Dialect.DOMINO)
    api = connect(emu)
    statuses = [(await api.get("/datasets")).status for _ in range(200)]
    failed = sum(s >= 500 for s in statuses)
    assert 50 <= failed <= 150 and set(statuses) <= {200, 500, 503}
    assert emu.stats()["responses_5xx"] == failed


async def test_latency_delays_each_answer(emulator_factory: Any, connect: Any) -> None:
    """With 150 ms latency a call takes at least 150 ms."""
    emu = await emulator_factory(latency_ms=150)
    started = time.monotonic()
    reply = await connect(emu).get("/datasets")
    assert reply.status == 200 and time.monotonic() - started >= 0.15


@pytest.mark.parametrize("dialect", [Dialect.SEED, Dialect.DOMINO])
async def test_rate_limit_answers_429_with_retry_after(
    emulator_factory: Any, connect: Any, errors: Any, dialect: Dialect
) -> None:
    """At 5 rps a burst of 20 gets 5 answers and 15 429s with Retry-After >= 1; after the wait calls pass again;
    stats count the 429s and the burst's 20 requests in one second."""
    emu = await emulator_factory(rate_limit=5, dialect=dialect)
    api = connect(emu)
    replies: list[Any] = []

    async def one() -> None:
        replies.append(await api.get("/datasets"))

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(one)
    limited = [r for r in replies if r.status == 429]
    assert len(limited) == 15 and len(replies) - len(limited) == 5
    for reply in limited:
        assert int(reply.headers["Retry-After"]) >= 1
        if dialect == Dialect.SEED:
            errors.seed(reply, 429, "rate_limited")
        else:
            errors.domino(reply, 429)
    await anyio.sleep(int(limited[0].headers["Retry-After"]) + 0.05)
    assert (await api.get("/datasets")).status == 200
    figures = emu.stats()
    assert figures["responses_429"] == 15
    assert figures["max_requests_in_any_1s"] == 20
    assert figures["requests_total"] == 21


async def test_stats_count_routes_by_template(emulator: Any, connect: Any) -> None:
    """by_route keys are route templates, by_status counts answers, stats calls are not counted, and DELETE on the
    stats route starts afresh."""
    api = connect(emulator)
    ds = (await api.post("/datasets", {"name": "s"})).body["id"]
    await api.post(f"/datasets/{ds}/snapshots", {})
    await api.post(f"/datasets/{ds}/snapshots", {})
    await api.get("/datasets/dataset-000000000000")
    await api.get("/__emulator__/stats")
    figures = emulator.stats()
    assert figures["by_route"] == {
        "GET /api/datasetrw/v1/datasets/{datasetId}": 1,
        "POST /api/datasetrw/v1/datasets": 1,
        "POST /api/datasetrw/v1/datasets/{datasetId}/snapshots": 2,
    }
    assert figures["by_status"] == {"201": 3, "404": 1}
    assert figures["requests_total"] == 4 and figures["responses_429"] == 0
    assert figures["max_in_flight"] >= 1 and figures["in_flight"] == 0
    assert (await api.delete("/__emulator__/stats")).status == 204
    assert emulator.stats()["requests_total"] == 0
