"""Faults and figures: the rate limit (429 + Retry-After), latency, random 500/503, and request statistics.

`Stats` and `RateWindow` are plain objects with time passed in; the two middlewares are the thin aiohttp
layer. Control routes under `/__emulator__/` are neither counted nor faulted.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import anyio
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from structlog.typing import FilteringBoundLogger

from agent.emulator.shapes import problem
from agent.logs import get_logger

CONTROL_PREFIX = "/__emulator__/"


def _log() -> FilteringBoundLogger:
    """The logger, fetched at use: a module-level bound logger would keep the configuration of import time."""
    return get_logger("agent.emulator")


def route_key(request: web.Request) -> str:
    """`METHOD /route/{template}` for matched requests, `METHOD (unmatched)` for the rest."""
    resource = request.match_info.route.resource
    if resource is None:
        return f"{request.method} (unmatched)"
    return f"{request.method} {resource.canonical}"


class Stats:
    """What the emulator served. Thread-safe: the loop writes, any thread may read a snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Start counting afresh (requests in flight stay in flight)."""
        with self._lock:
            self._total = 0
            self._by_route: Counter[str] = Counter()
            self._by_status: Counter[str] = Counter()
            self._injected = 0
            self._window: deque[float] = deque()
            self._max_in_1s = 0
            self._max_in_flight = self._in_flight

    def arrived(self, route: str, now: float) -> None:
        """Count a request received at `now` (monotonic seconds)."""
        with self._lock:
            self._total += 1
            self._by_route[route] += 1
            self._window.append(now)
            while self._window[0] <= now - 1.0:
                self._window.popleft()
            self._max_in_1s = max(self._max_in_1s, len(self._window))
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def finished(self, status: int) -> None:
        with self._lock:
            self._by_status[str(status)] += 1
            self._in_flight -= 1

    def injected(self) -> None:
        with self._lock:
            self._injected += 1

    def snapshot(self) -> dict[str, Any]:
        """The JSON of GET /__emulator__/stats."""
        with self._lock:
            return {
                "requests_total": self._total,
                "by_route": dict(sorted(self._by_route.items())),
                "by_status": dict(sorted(self._by_status.items())),
                "responses_429": self._by_status.get("429", 0),
                "responses_5xx": sum(n for status, n in self._by_status.items() if status.startswith("5")),
                "injected_failures": self._injected,
                "max_requests_in_any_1s": self._max_in_1s,
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
            }


class RateWindow:
    """A sliding-window limit: at most `capacity` admitted requests in any `window` seconds, where capacity is
    the whole part of `rate` (at least 1) and window = capacity / rate (1 s for whole rates)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1, math.floor(rate))
        self.window = self.capacity / rate
        self._admitted: deque[float] = deque()

    def admit(self, now: float) -> float | None:
        """None if a request at `now` is admitted, else the seconds until one would be."""
        while self._admitted and self._admitted[0] <= now - self.window:
            self._admitted.popleft()
        if len(self._admitted) < self.capacity:
            self._admitted.append(now)
            return None
        return self._admitted[0] + self.window - now


def counting_middleware(stats: Stats, clock: Callable[[], float] = time.monotonic) -> Middleware:
    """Outermost: counts every API request and its final status (after errors were rendered)."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        route = route_key(request)
        started = clock()
        stats.arrived(route, started)
        status = 499  # what is counted when the handler is cancelled (the server stopping mid-request)
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            stats.finished(status)
            _log().debug("emulator.request", route=route, status=status, ms=round((clock() - started) * 1000, 1))

    return count


def fault_middleware(
    stats: Stats,
    fail_rate: float = 0.0,
    latency_ms: int = 0,
    rate_limit: float | None = None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Middleware:
    """Innermost: the rate limit (decided on arrival), then latency, then random 500/503 before the handler
    runs (a failed request changes nothing). Raises problems the error middleware renders."""
    window = RateWindow(rate_limit) if rate_limit else None
    chance = rng or random.Random()

    @web.middleware
    async def inject(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        wait = window.admit(clock()) if window is not None else None
        if latency_ms:
            await anyio.sleep(latency_ms / 1000)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise problem(
                429, f"rate limit of {rate_limit:g} requests per second exceeded; retry in {seconds} s", seconds
            )
        if fail_rate and chance.random() < fail_rate:
            stats.injected()
            if chance.random() < 0.5:
                raise problem(500, "injected failure (fail rate): internal error")
            raise problem(503, "injected failure (fail rate): service unavailable", 1)
        return await handler(request)

    return inject
