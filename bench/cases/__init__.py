"""The benchmarks, in the order they run. Each module has `NAME` and `run(ctx) -> list[Row]`."""

from __future__ import annotations

from collections.abc import Callable

from bench.cases import api, burst, first_sync, footprint, latency, noop
from bench.context import Context
from bench.report import Row

Case = Callable[[Context], list[Row]]

CASES: dict[str, Case] = {
    first_sync.NAME: first_sync.run,
    noop.NAME: noop.run,
    latency.NAME: latency.run,
    burst.NAME: burst.run,
    footprint.NAME: footprint.run,
    api.NAME: api.run,
}
