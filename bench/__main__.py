"""`python -m bench [--quick] [--only NAME] [--rounds N] [--markdown OUT]`: run the benchmarks, print the table.

Progress goes to stderr, the report (markdown) to stdout. Exit 0 when every figure was measured (met or not),
1 when a measurement failed (or, with --strict, a target was missed), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import compileall
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from bench import machine
from bench.cases import CASES
from bench.context import FULL, QUICK, Context
from bench.emulator import EmulatorApi, EmulatorProcess
from bench.profiling import py_spy
from bench.report import Row, as_json, error_row, markdown
from bench.trees import remove

DEFAULT_WORKDIR = Path(os.environ.get("BENCH_WORKDIR") or Path(tempfile.gettempdir()) / "domino-sync-bench")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks of domino-sync side by side with rsync and cp."
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 5 s idle, warm cache: a smoke run")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these (repeatable or comma-separated): {', '.join(CASES)}",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per comparison; medians are reported")
    parser.add_argument("--markdown", type=Path, metavar="OUT", help="also write the report to this file")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the raw figures as JSON to this file")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"scratch folder on the disk to measure ({DEFAULT_WORKDIR})",
    )
    parser.add_argument("--profile", action="store_true", help="also profile each domino-sync case with py-spy")
    parser.add_argument("--no-drop-caches", action="store_true", help="keep the page cache warm between commands")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    args.only = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in CASES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(CASES)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.profile and py_spy() is None:
        parser.error("--profile needs py-spy: pip install py-spy")
    return args


def _clean(workdir: Path) -> None:
    """Everything but the cached source trees goes: each run starts from fresh folders and a fresh emulator."""
    workdir.mkdir(parents=True, exist_ok=True)
    for entry in workdir.iterdir():
        if entry.name != "trees":
            remove(entry)


def _compile_package() -> None:
    """Byte-compile domino-sync's modules, as `pip install` does for an installed package: an editable checkout
    (or PYTHONDONTWRITEBYTECODE=1) would otherwise compile every module from source at every start, about
    0.15 s a run that no installed copy pays."""
    import agent

    compileall.compile_dir(Path(agent.__file__).parent, quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from agent.logs import configure_logging

    configure_logging("warning", "json", stream=sys.stderr)  # the client's logs must not reach the report
    workdir = args.workdir.resolve()
    _clean(workdir)
    _compile_package()
    drop = not args.quick and not args.no_drop_caches and machine.drop_page_cache()
    names = args.only or list(CASES)
    info = machine.describe(workdir, drop)  # at the start: the commit measured, not the one at the end
    rows: list[Row] = []
    started = time.monotonic()
    with EmulatorProcess(workdir / "emulator", workdir / "logs" / "emulator.log") as emulator:
        ctx = Context(
            workdir=workdir,
            sizes=QUICK if args.quick else FULL,
            rounds=args.rounds,
            quick=args.quick,
            drop_caches=drop,
            profile=args.profile,
            emulator=emulator,
            api=EmulatorApi(emulator.url, emulator.key),
        )
        for name in names:
            ctx.say(f"== {name}")
            try:
                rows += CASES[name](ctx)
            except Exception as exc:  # one broken case must not lose the others' figures
                traceback.print_exc(file=sys.stderr)
                rows.append(error_row(name, f"{exc.__class__.__name__}: {exc}"))
    info["run"] = (
        f"python -m bench {' '.join(sys.argv[1:] if argv is None else argv)}".strip()
        + f" ({time.monotonic() - started:.0f} s, {args.rounds} rounds, {'quick' if args.quick else 'full'} sizes)"
    )
    report = markdown(rows, info, ctx.profiles)
    sys.stdout.write(report)
    if args.markdown:
        args.markdown.write_text(report)
    if args.json:
        options = {"quick": args.quick, "rounds": args.rounds, "only": names, "drop_caches": drop}
        args.json.write_text(as_json(rows, info, options))
    failed = any(row.failed for row in rows)
    missed = any(row.met is False for row in rows)
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
