"""API: the agent's client (`DatasetsClient`) against an emulator that delays every answer by 20 ms.

Two runs per round, both GET dataset calls fired all at once from one client:
- rate-bound, at the default limits (10 requests per second, burst 10, 4 in flight): the client must not
  exceed the configured rate. Checked from both sides: the emulator's `max_requests_in_any_1s` (at most
  rate + burst) and the sustained rate seen by the client after the burst (at most the rate, and not far below).
- latency-bound (rate limit out of the way, 4 in flight): calls per second against the ideal in-flight /
  latency = 200/s. Bounds: the injected latency, the concurrency cap, and Python's per-request overhead."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from bench.context import Context
from bench.emulator import EmulatorApi, EmulatorProcess
from bench.measure import MeasureError, median
from bench.report import Row, error_row

NAME = "api"
RATE, BURST, IN_FLIGHT = 10.0, 10, 4  # DominoConfig defaults
SUSTAINED_LOW = 0.9  # the sustained rate must reach 90% of the configured one...
SUSTAINED_HIGH = 1.05  # ...and stay within 5% above it (timer granularity)


@dataclass(frozen=True, slots=True)
class Run:
    calls: int
    seconds: float
    starts: list[float]  # client-side start of every HTTP attempt (monotonic)
    stats: dict[str, Any]

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    def sustained(self, burst: int) -> float:
        """Requests per second after the first `burst` went out at once."""
        later = sorted(self.starts)[burst:]
        if len(later) < 2 or later[-1] <= later[0]:
            return 0.0
        return (len(later) - 1) / (later[-1] - later[0])


async def _fire(url: str, key: str, dataset_id: str, calls: int, rate: float, burst: int, in_flight: int) -> Run:
    from agent.api.client import ClientSettings, DatasetsClient

    starts: list[float] = []
    clock: Callable[[], float] = time.monotonic

    def observe(method: str, route: str, outcome: str, seconds: float) -> None:
        starts.append(clock() - seconds)

    settings = ClientSettings(
        url=url, api_key=key, dialect="seed", requests_per_second=rate, burst=burst, max_concurrency=in_flight
    )
    async with DatasetsClient(settings, observer=observe) as client:
        started = clock()
        async with anyio.create_task_group() as tg:
            for _ in range(calls):
                tg.start_soon(client.get_dataset, dataset_id)
        took = clock() - started
    return Run(calls=calls, seconds=took, starts=starts, stats={})


def _measure(emu: EmulatorProcess, api: EmulatorApi, dataset_id: str, calls: int, rate: float, burst: int) -> Run:
    api.reset_stats()
    run = anyio.run(_fire, emu.url, emu.key, dataset_id, calls, rate, burst, IN_FLIGHT)
    stats = api.stats()
    if stats.get("requests_total") != calls or stats.get("responses_5xx") or stats.get("responses_429"):
        raise MeasureError(f"expected {calls} plain answers, emulator saw {stats}")
    return Run(calls=run.calls, seconds=run.seconds, starts=run.starts, stats=stats)


def run(ctx: Context) -> list[Row]:
    s = ctx.sizes
    rate_label = f"API: rate {RATE:g}/s, burst {BURST}, {s.api_latency_ms} ms latency"
    bound_label = f"API: calls/s with {s.api_latency_ms} ms latency, {IN_FLIGHT} in flight"
    ideal = IN_FLIGHT / (s.api_latency_ms / 1000)
    rate_target = f"sustained {SUSTAINED_LOW * RATE:g}-{SUSTAINED_HIGH * RATE:g}/s, ≤ {RATE + BURST:g} in any 1 s"
    bound_target = f"≤ {IN_FLIGHT} in flight"
    rate_calls = BURST + round(RATE * s.api_rate_seconds)
    log = ctx.path("logs", f"{NAME}-emulator.log")
    rate_runs: list[Run] = []
    bound_runs: list[Run] = []
    try:
        with EmulatorProcess(ctx.workdir / "emulator-latency", log, latency_ms=s.api_latency_ms) as emu:
            api = EmulatorApi(emu.url, emu.key)
            dataset_id = api.create_dataset(f"bench-api-{int(time.time())}")
            for round_no in range(ctx.rounds):
                rate_runs.append(_measure(emu, api, dataset_id, rate_calls, RATE, BURST))
                bound_runs.append(_measure(emu, api, dataset_id, s.api_latency_calls, 100_000.0, 100_000))
                ctx.say(
                    f"api round {round_no + 1}: {rate_runs[-1].sustained(BURST):.2f}/s sustained at rate {RATE:g}, "
                    f"{bound_runs[-1].per_second:.0f}/s latency-bound"
                )
    except MeasureError as exc:
        return [error_row(rate_label, str(exc), rate_target), error_row(bound_label, str(exc), bound_target)]
    sustained = median([r.sustained(BURST) for r in rate_runs])
    max_1s = max(int(r.stats["max_requests_in_any_1s"]) for r in rate_runs)
    max_in_flight = max(int(r.stats["max_in_flight"]) for r in [*rate_runs, *bound_runs])
    per_second = median([r.per_second for r in bound_runs])
    rate_ok = SUSTAINED_LOW * RATE <= sustained <= SUSTAINED_HIGH * RATE and max_1s <= RATE + BURST
    return [
        Row(
            benchmark=rate_label,
            domino=f"{sustained:.2f}/s sustained, {max_1s} in the busiest 1 s",
            target=rate_target,
            met=rate_ok,
            note=(
                f"{rate_calls} GETs fired at once, median of {len(rate_runs)} rounds; busiest second from the "
                f"emulator's stats (worst round); most in flight {max_in_flight} (cap {IN_FLIGHT})"
            ),
            values={"sustained": sustained, "max_in_any_1s": max_1s, "max_in_flight": max_in_flight},
        ),
        Row(
            benchmark=bound_label,
            domino=f"{per_second:.0f}/s ({per_second / ideal:.0%} of {ideal:.0f}/s)",
            target=bound_target,
            met=max_in_flight <= IN_FLIGHT,
            note=(
                f"{s.api_latency_calls} GETs fired at once, median of {len(bound_runs)} rounds; the ideal is "
                f"{IN_FLIGHT} in flight / {s.api_latency_ms} ms; the rest goes to the emulator's and the client's "
                "own work per request on the shared cores (no target in the issue for this figure)"
            ),
            values={"per_second": per_second, "ideal": ideal},
        ),
    ]
