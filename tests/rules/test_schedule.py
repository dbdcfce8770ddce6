"""Schedules: the next fire time of `every` and `cron` triggers is strictly later and keeps its phase."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.config import CronWhen, EveryWhen
from agent.rules.schedule import next_cron, next_every, next_fire


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("period", "anchor", "after", "expected"),
    [
        (60.0, 0.0, 0.0, 60.0),
        (60.0, 0.0, 59.9, 60.0),
        (60.0, 0.0, 60.0, 120.0),
        (60.0, 0.0, 3599.5, 3600.0),
        (60.0, 100.0, 50.0, 160.0),
        (60.0, 10.0, 1000.0, 1030.0),
        (0.25, 0.0, 0.3, 0.5),
        (3600.0, 1795611845.0, 1795611845.0 + 7200.0, 1795611845.0 + 10800.0),
    ],
)
def test_next_every(period: float, anchor: float, after: float, expected: float) -> None:
    """`every` fires at anchor + k * period, the first such time strictly after `after`."""
    got = next_every(period, anchor, after)
    assert got == pytest.approx(expected)
    assert got > after


def test_next_every_refuses_zero_period() -> None:
    """A zero period would loop forever, so it is refused."""
    with pytest.raises(ValueError, match="positive"):
        next_every(0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("0 * * * *", "2026-11-25 13:04:05", "2026-11-25 14:00:00"),
        ("0 * * * *", "2026-11-25 14:00:00", "2026-11-25 15:00:00"),
        ("0 * * * *", "2026-11-25 13:59:59.5", "2026-11-25 14:00:00"),
        ("*/15 * * * *", "2026-11-25 13:04:05", "2026-11-25 13:15:00"),
        ("30 2 * * *", "2026-11-25 13:04:05", "2026-11-26 02:30:00"),
        ("0 0 * * 1", "2026-11-25 13:04:05", "2026-11-30 00:00:00"),  # next Monday
        ("0 0 1 * *", "2026-12-15 00:00:00", "2027-01-01 00:00:00"),
        ("* * * * * 30", "2026-11-25 13:04:05", "2026-11-25 13:04:30"),  # seconds as a sixth field
    ],
)
def test_next_cron(expr: str, after: str, expected: str) -> None:
    """Cron expressions are read in UTC and give the first matching time strictly after `after`."""
    assert next_cron(expr, ts(after)) == ts(expected)


@pytest.mark.parametrize(
    ("when", "after", "anchor", "expected"),
    [
        (EveryWhen(every=60.0), 1000.0, None, 1060.0),
        (EveryWhen(every=60.0), 1000.0, 990.0, 1050.0),
        (CronWhen(cron="0 * * * *"), ts("2026-11-25 13:04:05"), None, ts("2026-11-25 14:00:00")),
    ],
)
def test_next_fire(when: EveryWhen | CronWhen, after: float, anchor: float | None, expected: float) -> None:
    """next_fire dispatches on the trigger; `every` without an anchor starts its phase at `after`."""
    assert next_fire(when, after, anchor=anchor) == pytest.approx(expected)
