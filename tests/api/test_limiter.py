"""The shared request gate: burst then a steady rate, a pause that holds everyone, a concurrency cap."""

from __future__ import annotations

import asyncio
import itertools

import anyio
import pytest

from agent.api.limiter import RequestLimiter


async def test_burst_then_steady_rate() -> None:
    """`burst` requests pass at once; after that they are spaced 1/requests_per_second apart."""
    limiter = RequestLimiter(requests_per_second=50, burst=5, max_concurrency=100)
    loop = asyncio.get_running_loop()
    start = loop.time()
    stamps = []
    for _ in range(15):
        async with limiter.slot():
            stamps.append(loop.time() - start)
    assert stamps[4] < 0.05  # the burst
    assert 0.17 <= stamps[-1] < 0.6  # ten more at 50/s take about 0.2 s
    gaps = [b - a for a, b in itertools.pairwise(stamps[6:])]
    assert min(gaps) > 0.01


async def test_pause_holds_every_caller() -> None:
    """A pause (as a 429 sets) delays every request that has not started until it ends."""
    limiter = RequestLimiter(requests_per_second=1000, burst=100, max_concurrency=10)
    loop = asyncio.get_running_loop()
    limiter.pause(0.2)
    start = loop.time()
    started: list[float] = []

    async def one() -> None:
        async with limiter.slot():
            started.append(loop.time() - start)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one)
    assert len(started) == 4 and min(started) >= 0.19


async def test_pause_extends_but_never_shortens() -> None:
    """A shorter pause does not cut a longer one short; zero or negative pauses do nothing."""
    limiter = RequestLimiter(requests_per_second=10, burst=1, max_concurrency=1)
    limiter.pause(5)
    limiter.pause(0.1)
    limiter.pause(-1)
    assert limiter.paused_for > 4


async def test_concurrency_cap() -> None:
    """No more than max_concurrency requests are in flight at once."""
    limiter = RequestLimiter(requests_per_second=1000, burst=100, max_concurrency=2)
    peak = 0

    async def one() -> None:
        nonlocal peak
        async with limiter.slot():
            peak = max(peak, limiter.in_flight)
            await asyncio.sleep(0.02)

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
    assert peak == 2 and limiter.in_flight == 0


def test_rejects_nonsense() -> None:
    """A rate, burst or cap below its minimum is refused."""
    with pytest.raises(ValueError, match="requests_per_second"):
        RequestLimiter(0, 1, 1)
