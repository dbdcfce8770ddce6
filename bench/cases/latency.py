"""Latency: single-file drops into a running agent (`domino-sync run`, `settle` 100 ms). For each drop the
harness writes a 4 KiB file into the source, closes it, and waits (inotify on the mount folder) until the file
is in the mount with its full content. Figure: p50 and p99 of close-to-landed; target p99 <= settle + 100 ms.

The floor is `settle` itself (the agent must see the size and mtime hold still that long); above it: event
delivery from watchfiles, the agent's scheduling, the copy and the rename."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from bench.context import Context
from bench.emulator import PROJECT
from bench.inotify import FolderWatch
from bench.measure import MeasureError, percentile
from bench.procs import AgentProcess, free_port, status_bytes, write_config
from bench.profiling import Attached, render_file
from bench.report import Row, error_row, mib
from bench.trees import fresh_dir, remove

NAME = "latency"
DROP_SIZE = 4096
MARGIN = 0.1  # the target: p99 <= settle + 100 ms


def _drops(watch: FolderWatch, src: Path, count: int, prefix: str, timeout: float) -> tuple[list[float], int]:
    """Drop `count` files one at a time; (latencies in seconds, drops that never arrived)."""
    rng = random.Random(count)
    latencies: list[float] = []
    missed = 0
    for i in range(count):
        name = f"{prefix}-{i:04d}.bin"
        data = os.urandom(DROP_SIZE)
        with (src / name).open("wb") as out:
            out.write(data)
        closed = time.monotonic()
        landed = watch.wait_for(name, data, timeout)
        if landed is None:
            missed += 1
        else:
            latencies.append(max(0.0, landed - closed))
        time.sleep(rng.uniform(0.01, 0.05))  # drops arrive one by one, not as a burst
    return latencies, missed


def run(ctx: Context) -> list[Row]:
    s = ctx.sizes
    label = f"Latency, close to in mount ({s.latency_drops} single-file drops, settle {s.settle * 1000:.0f} ms)"
    target = f"p99 ≤ {(s.settle + MARGIN) * 1000:.0f} ms"
    base = ctx.workdir / NAME
    src = fresh_dir(base / "src")
    mount = fresh_dir(base / "mount")
    state = base / "state"
    remove(state)
    port = free_port()
    config = write_config(
        base / "run.yaml",
        source=src,
        mount=mount,
        state_dir=state,
        url=ctx.emulator.url,
        key=ctx.emulator.key,
        dataset={"name": "bench-latency", "project_id": PROJECT, "create": True},
        settle=s.settle,
        port=port,
    )
    log = ctx.path("logs", f"{NAME}.log")
    timeout = s.settle + 15.0
    ctx.say(f"latency: {s.latency_drops} drops into a running agent")
    try:
        with AgentProcess(config, log, port) as agent, FolderWatch(mount) as watch:
            _, warmup_missed = _drops(watch, src, 2, "warmup", timeout)
            if warmup_missed:
                raise MeasureError(f"warm-up drops never reached the mount within {timeout:.0f} s")
            latencies, missed = _drops(watch, src, s.latency_drops, "drop", timeout)
            peak = status_bytes(agent.pid, "VmHWM")
            if ctx.profile:
                output = ctx.path("profiles", f"{NAME}.pyspy.txt")
                ctx.say("latency: profiling more drops with py-spy")
                started = time.monotonic()
                with Attached(agent.pid, output, log):
                    _drops(watch, src, max(10, s.latency_drops // 2), "profiled", timeout)
                wall = time.monotonic() - started
                ctx.profiles.append(("latency, `domino-sync run` during drops", render_file(output, wall)))
            how = "inotify" if watch.uses_inotify else "1 ms stat loop"
    except MeasureError as exc:
        return [error_row(label, str(exc), target)]
    finally:
        remove(base)
    if not latencies:
        return [error_row(label, f"none of {s.latency_drops} drops reached the mount", target)]
    p50 = percentile(latencies, 50)
    p99 = percentile(latencies, 99)
    note = (
        f"{len(latencies)} drops landed, {missed} missed (gave up after {timeout:.0f} s); "
        f"min {min(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; watched with {how}; "
        f"agent peak RSS {mib(peak)}"
    )
    return [
        Row(
            benchmark=label,
            domino=f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms",
            target=target,
            met=missed == 0 and p99 <= s.settle + MARGIN,
            note=note,
            values={"p50": p50, "p99": p99, "missed": missed, "latencies": latencies, "peak_rss": peak},
        )
    ]
