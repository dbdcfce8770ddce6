"""Backoff policy: exponential with full jitter, capped, and `Retry-After` parsing. Pure functions."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime


def backoff_delay(
    attempt: int, *, base: float = 0.5, cap: float = 60.0, rand: float | None = None, retry_after: float | None = None
) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry).

    Exponential growth `base * 2**(attempt-1)` capped at `cap`, with "equal jitter" (half fixed, half random,
    so retries spread out but never collapse to zero). A server's `Retry-After` is a floor: we never retry
    sooner than it asked, and never later than the cap asks unless the server asked for longer.
    `rand` in [0, 1) makes the result reproducible in tests.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    r = random.random() if rand is None else rand
    ceiling: float = min(cap, base * 2.0 ** min(attempt - 1, 62))
    delay = ceiling / 2 + r * ceiling / 2
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from `now` (epoch seconds) that a `Retry-After` header asks for: delta-seconds or HTTP-date."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - now)
    if seconds != seconds or seconds < 0:  # NaN or negative
        return None
    return seconds
