"""Burst: 10,000 files and then a `_SUCCESS` marker land in the source of a running agent whose marker rule
tags a snapshot. Figures: time from the marker's close until the tagged snapshot exists (the harness polls the
API), the API calls the agent made for it (emulator stats, the harness's own polls taken out), and the agent's
peak memory (VmHWM). Each round: a fresh dataset, source, state and agent. For scale, rsync's time to copy the
same files into an empty folder is shown next to it (rsync takes no snapshot).

Bounds: settle (the marker and the last files must hold still), the copy of 10,000 files and one flush of the mount,
the queue's rule that a snapshot waits until every covered file is in the mount, and the emulator's own copy
of the dataset folder into the snapshot."""

from __future__ import annotations

import os
import secrets
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.context import KIB, Context
from bench.measure import MeasureError, median, require_ok, timed_command
from bench.procs import AgentProcess, free_port, status_bytes, write_config
from bench.profiling import Attached, render_file
from bench.report import Row, error_row, mib, seconds
from bench.trees import fresh_dir, remove, summarize

NAME = "burst"
FILE_SIZE = 1 * KIB
MARKER = "_SUCCESS"
POLL = 0.05
MAX_CALLS = 10  # DESIGN.md: "a burst of ten thousand files costs a handful of calls"
MAX_MEMORY = 80 * 2**20  # the footprint target, held for the peak during a burst too
TAGGED_TIMEOUT = 600.0
DATASET_ROUTE = "GET /api/datasetrw/v1/datasets/{datasetId}"


@dataclass(frozen=True, slots=True)
class Burst:
    after_marker: float
    after_first: float
    calls: int
    by_route: dict[str, int]
    peak: int
    snapshot_files: int | None
    in_mount: int  # files in the mount when the tag was seen
    rsync: float | None


def _write_burst(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        with (folder / f"part-{i:05d}.bin").open("wb") as out:
            out.write(os.urandom(FILE_SIZE))


def _one_round(ctx: Context, round_no: int, log: Path, profile_to: Path | None = None) -> Burst:
    s = ctx.sizes
    name = f"bench-burst-{round_no + 1}"
    dataset_id = ctx.api.create_dataset(name)
    mount = ctx.emulator.mount_root / name
    base = ctx.workdir / NAME
    src = fresh_dir(base / "src")
    state = base / "state"
    remove(state)
    port = free_port()
    token = f"r{round_no + 1}-{secrets.token_hex(4)}"
    rule = {"name": "drop", "when": {"marker": MARKER}, "tags": ["burst-{marker}"]}
    config = write_config(
        base / "run.yaml",
        source=src,
        mount=mount,
        state_dir=state,
        url=ctx.emulator.url,
        key=ctx.emulator.key,
        dataset={"id": dataset_id},
        settle=s.settle,
        rules=[rule],
        port=port,
    )
    tag = f"burst-{token}"
    polls = 0
    with AgentProcess(config, log, port) as agent, ExitStack() as profiling:
        if profile_to is not None:
            profiling.enter_context(Attached(agent.pid, profile_to, log))
        ctx.api.reset_stats()
        first = time.monotonic()
        _write_burst(src / "drop", s.burst_files)
        (src / "drop" / MARKER).write_text(token + "\n")
        marker = time.monotonic()
        while True:
            polls += 1
            if tag in ctx.api.dataset_tags(dataset_id):
                tagged = time.monotonic()
                in_mount = summarize(mount).files  # what the agent had landed when the snapshot existed
                break
            if time.monotonic() - marker > TAGGED_TIMEOUT or not agent.alive():
                raise MeasureError(f"no snapshot tagged {tag} after {time.monotonic() - marker:.0f} s")
            time.sleep(POLL)
        profiling.close()
        stats = ctx.api.stats()
        peak = status_bytes(agent.pid, "VmHWM")
    by_route: dict[str, Any] = dict(stats.get("by_route", {}))
    by_route[DATASET_ROUTE] = by_route.get(DATASET_ROUTE, 0) - polls
    by_route = {route: n for route, n in by_route.items() if n}
    snapshot = ctx.emulator.mount_root / f"{name}@{tag}"
    snapshot_files = summarize(snapshot).files if snapshot.exists() else None
    rsync_dst = fresh_dir(base / "rsync-dst")
    rsync = require_ok(timed_command(["rsync", "-a", f"{src / 'drop'}/", f"{rsync_dst}/"], log), "rsync", log)
    remove(base)
    return Burst(
        after_marker=tagged - marker,
        after_first=tagged - first,
        calls=int(stats.get("requests_total", 0)) - polls,
        by_route=by_route,
        peak=peak,
        snapshot_files=snapshot_files,
        in_mount=in_mount,
        rsync=rsync,
    )


def run(ctx: Context) -> list[Row]:
    s = ctx.sizes
    label = f"Burst: {s.burst_files:,} x 1 KiB + {MARKER} until the tagged snapshot exists"
    log = ctx.path("logs", f"{NAME}.log")
    rounds: list[Burst] = []
    try:
        for round_no in range(ctx.rounds):
            ctx.say(f"burst round {round_no + 1}: {s.burst_files:,} files and a marker")
            burst = _one_round(ctx, round_no, log)
            rounds.append(burst)
            ctx.say(
                f"burst round {round_no + 1}: tagged {burst.after_marker:.2f} s after the marker, {burst.calls} calls"
            )
        if ctx.profile:
            output = ctx.path("profiles", f"{NAME}.pyspy.txt")
            ctx.say("burst: profiling one more round with py-spy")
            extra = _one_round(ctx, ctx.rounds, log, profile_to=output)
            title = f"burst, `domino-sync run` from the first file to the tagged snapshot ({extra.after_first:.1f} s)"
            ctx.profiles.append((title, render_file(output, extra.after_first)))
    except MeasureError as exc:
        return [
            error_row(label, str(exc)),
            error_row("Burst: API calls for it", str(exc), f"≤ {MAX_CALLS}"),
            error_row("Burst: agent peak memory (VmHWM)", str(exc), f"≤ {mib(MAX_MEMORY)}"),
        ]
    return _rows(ctx, label, rounds)


def _rows(ctx: Context, label: str, rounds: list[Burst]) -> list[Row]:
    expected = ctx.sizes.burst_files + 1
    after_marker = median([b.after_marker for b in rounds])
    after_first = median([b.after_first for b in rounds])
    rsync = median([b.rsync for b in rounds if b.rsync is not None])
    calls = median([float(b.calls) for b in rounds])
    peak = max(b.peak for b in rounds)
    complete = all(b.snapshot_files == expected for b in rounds)
    routes = ", ".join(f"{route} x{n}" for route, n in sorted(rounds[-1].by_route.items()))
    snapshot_note = (
        f"every snapshot holds all {expected:,} files"
        if complete
        else (
            f"INCOMPLETE: files in each round's snapshot {[b.snapshot_files for b in rounds]}, expected "
            f"{expected:,} (the emulator copies the dataset folder when the snapshot is created; files in the "
            f"mount when the harness first saw the tag: {[b.in_mount for b in rounds]})"
        )
    )
    return [
        Row(
            benchmark=label,
            domino=seconds(after_marker),
            rsync=seconds(rsync),
            note=(
                f"median of {len(rounds)} rounds, after the marker's close; {seconds(after_first)} from the first "
                f"file written; rsync column: rsync -a of the same files into an empty folder (no snapshot); "
                f"{snapshot_note}"
            ),
            met=complete,
            target=f"snapshot holds all {expected:,} files",
            values={"after_marker": after_marker, "after_first": after_first, "rsync": rsync, "rounds": len(rounds)},
        ),
        Row(
            benchmark="Burst: API calls for it",
            domino=f"{calls:.0f}",
            target=f"≤ {MAX_CALLS}",
            met=calls <= MAX_CALLS,
            note=f"emulator stats, harness polls taken out; last round: {routes}",
            values={"calls": calls, "by_route": rounds[-1].by_route},
        ),
        Row(
            benchmark="Burst: agent peak memory (VmHWM)",
            domino=mib(peak),
            target=f"≤ {mib(MAX_MEMORY)}",
            met=peak <= MAX_MEMORY,
            note="highest of the rounds; a fresh agent each round",
            values={"peak_rss": peak},
        ),
    ]
