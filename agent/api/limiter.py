"""One gate in front of every API call: a token bucket, a pause that a 429 sets for everyone, a concurrency cap.

The bucket (`aiolimiter.AsyncLimiter`, a leaky bucket) lets `burst` requests through at once and then
`requests_per_second` on average. When the server answers 429 the client calls `pause(retry_after)`: every
request that has not started yet waits until then, so one rate-limited call slows the whole process down
instead of each caller hammering the server on its own schedule. At most `max_concurrency` requests are in
flight at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiolimiter import AsyncLimiter

from agent.logs import get_logger

log = get_logger("agent.api.limiter")


class RequestLimiter:
    """Token bucket + shared pause + concurrency cap. Use `async with limiter.slot(): <one request>`."""

    def __init__(self, requests_per_second: float, burst: int, max_concurrency: int) -> None:
        if requests_per_second <= 0 or burst < 1 or max_concurrency < 1:
            raise ValueError("requests_per_second > 0, burst >= 1 and max_concurrency >= 1")
        self.requests_per_second = requests_per_second
        self.burst = burst
        self.max_concurrency = max_concurrency
        self._bucket = AsyncLimiter(burst, burst / requests_per_second)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._paused_until = 0.0
        self._in_flight = 0

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def pause(self, seconds: float) -> None:
        """Hold back every request that has not started for `seconds` (extends, never shortens, a pause)."""
        if seconds <= 0:
            return
        until = self._now() + seconds
        if until > self._paused_until:
            self._paused_until = until
            log.info("api.paused", seconds=round(seconds, 3))

    @property
    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when none)."""
        return max(0.0, self._paused_until - self._now())

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def _wait_pause(self) -> None:
        # A deadline, not an event: another 429 may push it later while we sleep, so look again on waking.
        while (left := self._paused_until - self._now()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a free slot, for any pause to end and for a token; then hold the slot."""
        async with self._slots:
            await self._wait_pause()
            await self._bucket.acquire()
            await self._wait_pause()  # a 429 may have paused everyone while this one waited for a token
            self._in_flight += 1
            try:
                yield
            finally:
                self._in_flight -= 1
