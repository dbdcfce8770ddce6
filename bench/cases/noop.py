"""No-op resync: run `domino-sync once` and `rsync -a` again over an unchanged 100,000-file tree they already
copied (domino-sync's state DB warm). The page cache is warm too: this is the periodic resync of a quiet
folder, bounded by stat() calls and, for domino-sync, by reading its state DB.

The synced tree is shared: the footprint case runs `domino-sync run` over the same source, mount and state."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.context import Context
from bench.emulator import PROJECT
from bench.machine import flush
from bench.measure import MeasureError, require_ok, rotate, timed_command
from bench.procs import once_command, write_config
from bench.profiling import profile_once
from bench.report import Row, comparison_row, error_row, seconds
from bench.trees import TreeSpec, check_copy, ensure_tree, fresh_dir, remove

NAME = "noop"
DOMINO = "domino-sync"
DATASET = {"name": "bench-noop", "project_id": PROJECT, "create": True}
ROUNDS_FACTOR = 2  # a no-op run takes a second or two and wobbles more than that: twice the rounds


@dataclass(slots=True)
class WarmTree:
    """A source tree already copied by domino-sync (into `mount`, state in `state`) and by rsync (`rsync_dst`)."""

    spec: TreeSpec
    src: Path
    mount: Path
    state: Path
    rsync_dst: Path
    config: Path
    log: Path
    initial: dict[str, float] = field(default_factory=dict)  # tool -> seconds of its first copy
    errors: dict[str, str] = field(default_factory=dict)


def warm_tree(ctx: Context) -> WarmTree:
    """The shared, already-synced 100,000-file tree (made once per harness run)."""
    cached = ctx.shared.get(NAME)
    if isinstance(cached, WarmTree):
        return cached
    s = ctx.sizes
    spec = TreeSpec(NAME, s.noop_files, s.noop_dirs, s.noop_size)
    ctx.say(f"no-op: preparing {spec.label()}")
    src = ensure_tree(ctx.trees, spec)
    base = ctx.workdir / NAME
    warm = WarmTree(
        spec=spec,
        src=src,
        mount=fresh_dir(base / "mount"),
        state=base / "state",
        rsync_dst=fresh_dir(base / "rsync-dst"),
        config=base / "once.yaml",
        log=ctx.path("logs", f"{NAME}.log"),
    )
    remove(warm.state)
    write_config(
        warm.config,
        source=src,
        mount=warm.mount,
        state_dir=warm.state,
        url=ctx.emulator.url,
        key=ctx.emulator.key,
        dataset=DATASET,
    )
    firsts = {DOMINO: (once_command(warm.config), warm.mount), "rsync": (_rsync(warm), warm.rsync_dst)}
    for tool, (command, dst) in firsts.items():
        flush()
        try:
            took = require_ok(timed_command(command, warm.log), f"{tool} (first copy)", warm.log)
        except MeasureError as exc:
            warm.errors[tool] = str(exc)
            continue
        problem = check_copy(dst, spec)
        if problem:
            warm.errors[tool] = f"wrong first copy: {problem}"
            continue
        warm.initial[tool] = took
        ctx.say(f"no-op: first copy by {tool} took {took:.1f} s")
    ctx.shared[NAME] = warm
    return warm


def _rsync(warm: WarmTree) -> list[str]:
    return ["rsync", "-a", f"{warm.src}/", f"{warm.rsync_dst}/"]


def run(ctx: Context) -> list[Row]:
    warm = warm_tree(ctx)
    label = f"No-op resync ({warm.spec.label()}, unchanged)"
    if "rsync" in warm.errors and DOMINO in warm.errors:
        return [error_row(label, "; ".join(warm.errors.values()))]
    commands = {DOMINO: once_command(warm.config), "rsync": _rsync(warm)}
    samples: dict[str, list[float]] = {tool: [] for tool in commands}
    errors = dict(warm.errors)
    for round_no in range(ctx.rounds * ROUNDS_FACTOR):
        for tool in rotate(list(commands), round_no):
            if tool in errors:
                continue
            flush()
            try:
                took = require_ok(timed_command(commands[tool], warm.log), tool, warm.log)
            except MeasureError as exc:
                errors[tool] = str(exc)
                continue
            samples[tool].append(took)
            ctx.say(f"no-op round {round_no + 1}: {tool} {took:.2f} s")
    for tool, dst in ((DOMINO, warm.mount), ("rsync", warm.rsync_dst)):
        problem = None if tool in errors else check_copy(dst, warm.spec)
        if problem:
            errors[tool] = f"tree changed by a no-op run: {problem}"
            samples[tool] = []
    if ctx.profile and DOMINO not in errors:
        title = "no-op resync, `domino-sync once`"
        profile_once(ctx, title, commands[DOMINO], warm.log, flush, NAME)
    firsts = ", ".join(f"{tool} {seconds(took)}" for tool, took in warm.initial.items())
    extra = f"page cache warm; first copy of this tree: {firsts}" if firsts else "page cache warm"
    return [comparison_row(label, samples, errors, max_ratio=1.0, extra_note=extra)]
