"""The `domino-sync` console script (and `python -m agent`): `once` forks its walk first, before the CLI's
imports (sync/earlyscan.py `prestart`), then the CLI runs as from `agent.cli.main`.

The process is then the agent's own, which lets `freeze_heap` take what the agent was started with (modules,
classes, the config and its models: some 50,000 objects) out of the cyclic garbage collector's passes. Each
full pass walked them all again: the main process's collections took 130-190 ms of a 20,000-file first sync
(the GIL held throughout), 110-120 ms after the freeze. A command run in another process (the tests call the
CLI in theirs) freezes nothing."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

GLOBAL_OPTIONS_WITH_VALUE = ("--log-level", "--log-format")

_own_process = False


def freeze_heap() -> None:
    """Once the agent is assembled (`run`, `once`): what it holds so far is never garbage, so the collector need
    not walk it again (`gc.freeze`). Only in the console script's own process."""
    if _own_process:
        gc.freeze()


def main() -> None:
    global _own_process
    _own_process = True
    config = once_config(sys.argv[1:])
    if config is not None:
        from agent.sync.earlyscan import prestart

        prestart(config)
    from agent.cli.main import main as run_cli

    run_cli()


def once_config(args: Sequence[str]) -> str | None:
    """The config file of a `once` that will walk (not a dry run, not a call for help), else None. A light
    reading of the arguments: click parses them for real afterwards, and a wrong guess costs a walk only."""
    rest = iter(args)
    for arg in rest:
        if arg in GLOBAL_OPTIONS_WITH_VALUE:
            next(rest, None)
        elif not arg.startswith("-"):
            if arg != "once":
                return None
            break
        elif not arg.startswith(tuple(f"{option}=" for option in GLOBAL_OPTIONS_WITH_VALUE)):
            return None  # --help, --version, or an option this reading does not know
    else:
        return None
    config = None
    rest_list = list(rest)
    for i, arg in enumerate(rest_list):
        if arg in ("--dry-run", "--help", "-h"):
            return None
        if arg in ("--config", "-c") and i + 1 < len(rest_list):
            config = rest_list[i + 1]
        elif arg.startswith("--config="):
            config = arg.removeprefix("--config=")
        elif arg.startswith("-c") and not arg.startswith("--"):
            config = arg[2:]
    return config or None
