"""Footprint: `domino-sync run` watching the no-op case's 100,000-file tree (already synced, state DB warm).
Once it is ready (first scan done) and a short grace has passed, the harness samples its resident memory
(VmRSS, every second) and its CPU time (utime + stime of all its threads) over an idle period of 60 s.
Targets: at most 80 MiB resident, at most 0.5% of one core.

Bounds: memory holds the interpreter and libraries (~40 MiB before any work), the per-path state the engine
keeps in memory and the inotify watches; idle CPU is whatever the agent wakes up for (tickers, polls)."""

from __future__ import annotations

import time

from bench.cases.noop import DATASET, DOMINO, warm_tree
from bench.context import Context
from bench.measure import MeasureError
from bench.procs import AgentProcess, cpu_seconds, free_port, status_bytes, write_config
from bench.profiling import Attached, render_file
from bench.report import Row, error_row, mib

NAME = "footprint"
MAX_RSS = 80 * 2**20
MAX_CPU = 0.005  # of one core
GRACE = 3.0  # seconds after ready before the idle period starts


def run(ctx: Context) -> list[Row]:
    warm = warm_tree(ctx)
    idle = ctx.sizes.idle_seconds
    rss_label = f"Footprint: RSS of `run` watching {warm.spec.files:,} files"
    cpu_label = f"Footprint: CPU of `run` idle for {idle:.0f} s"
    rss_target, cpu_target = f"≤ {mib(MAX_RSS)}", f"≤ {MAX_CPU:.1%} of a core"
    if DOMINO in warm.errors:
        message = f"no synced tree to watch: {warm.errors[DOMINO]}"
        return [error_row(rss_label, message, rss_target), error_row(cpu_label, message, cpu_target)]
    port = free_port()
    config = write_config(
        ctx.workdir / NAME / "run.yaml",
        source=warm.src,
        mount=warm.mount,
        state_dir=warm.state,
        url=ctx.emulator.url,
        key=ctx.emulator.key,
        dataset=DATASET,
        port=port,
    )
    log = ctx.path("logs", f"{NAME}.log")
    ctx.say(f"footprint: starting `run` over {warm.spec.files:,} files, then {idle:.0f} s idle")
    try:
        with AgentProcess(config, log, port, ready_timeout=1200) as agent:
            time.sleep(GRACE)
            rss_samples = [status_bytes(agent.pid, "VmRSS")]
            cpu_start, wall_start = cpu_seconds(agent.pid), time.monotonic()
            while (left := idle - (time.monotonic() - wall_start)) > 0:
                time.sleep(min(1.0, left))
                rss_samples.append(status_bytes(agent.pid, "VmRSS"))
            cpu_used = cpu_seconds(agent.pid) - cpu_start
            wall = time.monotonic() - wall_start
            peak = status_bytes(agent.pid, "VmHWM")
            if ctx.profile:
                output = ctx.path("profiles", f"{NAME}.txt")
                ctx.say("footprint: profiling the idle agent with py-spy")
                with Attached(agent.pid, output, log):
                    time.sleep(min(idle, 30.0))
                ctx.profiles.append(("footprint, idle `domino-sync run`", render_file(output, min(idle, 30.0))))
            ready = agent.ready_seconds
    except MeasureError as exc:
        return [error_row(rss_label, str(exc), rss_target), error_row(cpu_label, str(exc), cpu_target)]
    rss = max(rss_samples)
    share = cpu_used / wall if wall > 0 else 0.0
    return [
        Row(
            benchmark=rss_label,
            domino=mib(rss),
            target=rss_target,
            met=rss <= MAX_RSS,
            note=(
                f"highest VmRSS sampled each second while idle; peak since start (VmHWM, includes the start scan) "
                f"{mib(peak)}; ready {ready:.1f} s after start"
            ),
            values={"rss": rss, "hwm": peak, "ready_seconds": ready},
        ),
        Row(
            benchmark=cpu_label,
            domino=f"{share:.2%} of a core",
            target=cpu_target,
            met=share <= MAX_CPU,
            note=f"{cpu_used:.2f} CPU seconds (user + system, all threads) over {wall:.1f} s, starting {GRACE:.0f} s "
            "after ready",
            values={"cpu_seconds": cpu_used, "wall_seconds": wall, "share": share},
        ),
    ]
