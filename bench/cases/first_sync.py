"""First sync: copy a generated tree into an empty folder with `domino-sync once`, `rsync -a` and `cp -a`.

Every round each tool gets a new destination folder (and domino-sync a new state folder), in an order that
rotates round by round. No copy is removed before the case ends: ext4 will not reuse an inode deleted in the
last few seconds, and creating 20,000 files right after deleting the previous copy's 20,000 made every create
scan past them (perf: `ext4_create` -> `recently_deleted`), several times over for whichever tool came next.
The page cache is dropped before each command when root allows it (then each tool's own program is loaded
again: the data is cold, the tools are not). Timed: the command from start to exit. Also reported: the same
plus a `sync` afterwards (until the bytes are on disk: all three leave dirty pages to the kernel; domino-sync
flushes the mount before a snapshot, and `once` takes none here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.context import Context
from bench.emulator import PROJECT
from bench.machine import drop_page_cache, flush
from bench.measure import MeasureError, require_ok, rotate, timed_command
from bench.procs import once_command, write_config
from bench.profiling import profile_once
from bench.report import Row, comparison_row, mib
from bench.trees import TreeSpec, check_copy, ensure_tree, fresh_dir, remove

NAME = "first-sync"
DOMINO = "domino-sync"
ROUNDS_FACTOR = 3
"""Rounds of this case per `--rounds`: on a shared 2-core VM its rounds differ by 40-70%, and a median of 3
put one run at 0.96x rsync where two 9-round runs of the same code an hour later gave 0.79x and 0.66x."""


def spec_for(ctx: Context) -> TreeSpec:
    s = ctx.sizes
    return TreeSpec(
        NAME, s.first_small_files, s.first_small_dirs, s.first_small_size, s.first_big_files, s.first_big_size
    )


def run(ctx: Context) -> list[Row]:
    spec = spec_for(ctx)
    ctx.say(f"first sync: preparing {spec.label()}")
    src = ensure_tree(ctx.trees, spec)
    runs = ctx.path(NAME, "runs")  # one new destination and state folder per command; removed at the end
    log = ctx.path("logs", f"{NAME}.log")

    def commands_for(dst: Path, state: Path, config: Path) -> dict[str, list[str]]:
        write_config(
            config,
            source=src,
            mount=dst,
            state_dir=state,
            url=ctx.emulator.url,
            key=ctx.emulator.key,
            dataset={"name": "bench-first-sync", "project_id": PROJECT, "create": True},
        )
        return {
            DOMINO: once_command(config),
            "rsync": ["rsync", "-a", f"{src}/", f"{dst}/"],
            "cp": ["cp", "-a", f"{src}/.", f"{dst}/"],
        }

    tools = [DOMINO, "rsync", "cp"]
    plain: dict[str, list[float]] = {tool: [] for tool in tools}
    durable: dict[str, list[float]] = {tool: [] for tool in tools}
    errors: dict[str, str] = {}
    peak: list[int] = []
    for round_no in range(ctx.rounds * ROUNDS_FACTOR):
        for tool in rotate(tools, round_no):
            if tool in errors:
                continue
            run = runs / f"{tool}-{round_no}"
            dst = fresh_dir(run / "dst")
            command = commands_for(dst, run / "state", run / "config.yaml")[tool]
            _settle_disk(ctx)
            result = timed_command(command, log)
            try:
                took = require_ok(result, tool, log)
            except MeasureError as exc:
                errors[tool] = str(exc)
                ctx.say(f"first sync: {tool} failed: {exc}")
                continue
            written = flush()
            problem = check_copy(dst, spec)
            if problem:
                errors[tool] = f"wrong copy: {problem}"
                continue
            _drop_big_files(dst, spec)
            plain[tool].append(took)
            durable[tool].append(took + written)
            if tool == DOMINO:
                peak.append(result.max_rss)
            ctx.say(f"first sync round {round_no + 1}: {tool} {took:.2f} s (+ sync {written:.2f} s)")
    if ctx.profile and DOMINO not in errors:
        run = runs / "profile"
        profiled = commands_for(fresh_dir(run / "dst"), run / "state", run / "config.yaml")[DOMINO]

        def prepare() -> None:
            fresh_dir(run / "dst")
            remove(run / "state")
            _settle_disk(ctx)

        title = "first sync, `domino-sync once`"
        profile_once(ctx, title, profiled, log, prepare, NAME)
    remove(runs)
    gib = spec.bytes / 2**30
    extra = f"{spec.files:,} files, {gib:.2f} GiB"
    if peak:
        extra += f"; domino-sync peak RSS {mib(max(peak))}"
    label = f"First sync ({spec.label()})"
    return [
        comparison_row(label, plain, errors, max_ratio=0.8, extra_note=extra),
        comparison_row("First sync, until on disk (command + sync)", durable, errors, max_ratio=None),
    ]


def _drop_big_files(dst: Path, spec: TreeSpec) -> None:
    """Free a checked copy's big files at once (27 copies of 0.7 GiB would not fit everywhere); its small files
    stay until the case ends (removing 20,000 files slows ext4's next creates, see above)."""
    for entry in dst.iterdir():
        if entry.is_file() and entry.stat().st_size > spec.small_size:
            entry.unlink()


def _settle_disk(ctx: Context) -> None:
    """Start each command from the same place: nothing dirty, and (when allowed) a cold page cache for the data
    with every tool's own program loaded (as on a host that runs it regularly): the figure is the copy, not
    reading rsync's binary or domino-sync's Python modules from disk."""
    if not (ctx.drop_caches and drop_page_cache()):
        flush()
        return
    for command in PROGRAM_WARMUP:
        subprocess.run(command, capture_output=True, check=False)  # noqa: S603 - fixed commands


PROGRAM_WARMUP = (
    ["rsync", "--version"],
    ["cp", "--version"],
    [sys.executable, "-c", "import agent.cli.agent_commands, agent.daemon, agent.api.client, agent.sync.copier"],
)
