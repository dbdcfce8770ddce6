"""When a scheduled rule (`every: 1h`, `cron: "0 * * * *"`) fires next. Pure: times are passed in.

All times are epoch seconds. Cron expressions are read in UTC (five fields, or six with seconds last, as
croniter accepts them). Both functions return a time strictly after `after`, so a daemon that was asleep
past several fire times fires once and then continues on the schedule instead of catching up each one.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from agent.config import CronWhen, EveryWhen


def next_every(period: float, anchor: float, after: float) -> float:
    """The first `anchor + k * period` (k >= 1) strictly after `after`: the phase of the anchor is kept."""
    if period <= 0:
        raise ValueError("period must be positive")
    if after < anchor:
        return anchor + period
    k = math.floor((after - anchor) / period) + 1
    candidate = anchor + k * period
    while candidate <= after:  # float rounding
        k += 1
        candidate = anchor + k * period
    return candidate


def next_cron(expr: str, after: float) -> float:
    """The first time matching the cron expression `expr` (UTC) strictly after `after`."""
    start = datetime.fromtimestamp(after, tz=UTC)
    from croniter import croniter  # only configs with a `cron:` rule pay for it (and for dateutil)

    result = float(croniter(expr, start).get_next(float))
    while result <= after:  # croniter works in whole seconds; keep the result strictly later
        result = float(croniter(expr, datetime.fromtimestamp(result, tz=UTC)).get_next(float))
    return result


def next_fire(when: EveryWhen | CronWhen, after: float, *, anchor: float | None = None) -> float:
    """The next fire time of a scheduled trigger strictly after `after`.

    `every` keeps the phase of `anchor` (the time the schedule started; `after` when not given).
    """
    if isinstance(when, EveryWhen):
        return next_every(when.every, after if anchor is None else anchor, after)
    return next_cron(when.cron, after)
