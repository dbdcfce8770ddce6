"""Footprint: `domino-sync run` watching the no-op case's 100,000-file tree (already synced, state DB warm).
Once it is ready (first scan done) and a short grace has passed, the harness samples its resident memory
(VmRSS, every second) and its CPU time (utime + stime of all its threads) over an idle period of 60 s.
Targets: at most 80 MiB resident, at most 0.5% of one core.

Bounds: memory holds the interpreter and libraries (~40 MiB before any work), the per-path state the engine
keeps in memory and the inotify watches; idle CPU is whatever the agent wakes up for (tickers, polls)."""

from __future__ import annotations

import time
from pathlib import Path

from bench.cases.noop import DATASET, DOMINO, warm_tree
from bench.context import Context
from bench.measure import MeasureError
from bench.procs import AgentProcess, cpu_seconds, free_port, status_bytes, thread_switches, write_config
from bench.profiling import Attached, render_file, render_strace, strace
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
            switches = thread_switches(agent.pid)
            cpu_start, wall_start = cpu_seconds(agent.pid), time.monotonic()
            while (left := idle - (time.monotonic() - wall_start)) > 0:
                time.sleep(min(1.0, left))
                rss_samples.append(status_bytes(agent.pid, "VmRSS"))
            cpu_used = cpu_seconds(agent.pid) - cpu_start
            wall = time.monotonic() - wall_start
            after = thread_switches(agent.pid)
            peak = status_bytes(agent.pid, "VmHWM")
            wakes = {tid: (after[tid] - switches.get(tid, 0)) / wall for tid in after}
            if ctx.profile:
                _profile(ctx, agent.pid, log, min(idle, 20.0))
            ready = agent.ready_seconds
            agent_pid = agent.pid
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
            note=(
                f"{cpu_used:.2f} CPU seconds (user + system, all threads) over {wall:.1f} s, starting {GRACE:.0f} s "
                f"after ready; {sum(wakes.values()):.0f} thread wake-ups a second: {_wakes(wakes, agent_pid)}"
            ),
            values={"cpu_seconds": cpu_used, "wall_seconds": wall, "share": share, "wakeups_per_second": wakes},
        ),
    ]


def _wakes(wakes: dict[int, float], pid: int) -> str:
    """`main 80/s, 3 others 120/s, 20/s, 0/s`: context switches a second, busiest threads first."""
    main = wakes.get(pid, 0.0)
    others = sorted((n for tid, n in wakes.items() if tid != pid), reverse=True)
    return f"main thread {main:.0f}/s, other threads " + ", ".join(f"{n:.0f}/s" for n in others)


def _profile(ctx: Context, pid: int, log: Path, seconds: float) -> None:
    """py-spy, then strace, each attached to the idle agent for `seconds`."""
    ctx.say(f"footprint: profiling the idle agent ({seconds:.0f} s py-spy, {seconds:.0f} s strace)")
    spied = ctx.path("profiles", f"{NAME}.pyspy.txt")
    with Attached(pid, spied, log):
        time.sleep(seconds)
    parts = [render_file(spied, seconds)]
    if strace() is not None:
        traced = ctx.path("profiles", f"{NAME}.strace.txt")
        with Attached(pid, traced, log, tool="strace"):
            time.sleep(seconds)
        parts.append(render_strace(traced, seconds))
    ctx.profiles.append(("footprint, idle `domino-sync run`", "\n\n".join(parts)))
