"""`domino-sync emulator`: serve a local Domino Datasets API until SIGINT or SIGTERM (then exit 0).

Prints one line at start with the URL and, when no --user was given, the default user's key: the one place
a key is printed, on purpose, for the person who started it. Bad flags: one line on stderr, exit 2.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import click

from agent.api.models import Dialect
from agent.emulator.options import KEY_RE, USER_RE, EmulatorOptions

if TYPE_CHECKING:
    from agent.emulator import RunningEmulator


class _OneLineErrors(click.Command):
    """Usage errors as one line (not click's usage block), exit 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            click.echo(f"domino-sync: error: emulator: {exc.format_message()}", err=True)
            sys.exit(2)  # not click's Exit: the entry point runs click with standalone_mode=False


def _users(_: click.Context, __: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    users: dict[str, str] = {}
    for value in values:
        name, sep, key = value.partition(":")
        if not sep or not USER_RE.fullmatch(name) or not KEY_RE.fullmatch(key):
            raise click.BadParameter(
                "expected NAME:KEY (name of letters, digits, '.', '_', '@', '-'; key of printable characters "
                "without spaces)",
                param_hint="--user",
            )
        if name in users:
            raise click.BadParameter(f"user {name!r} given twice", param_hint="--user")
        users[name] = key
    return users


def banner(emu: RunningEmulator, show_key: bool) -> str:
    """The start line: URL, dialect, folders, and the default key when there were no --user flags."""
    line = (
        f"domino-sync emulator: listening on {emu.url} (dialect {emu.dialect.value}, "
        f"data dir {emu.data_dir}, mount root {emu.mount_root})"
    )
    if show_key:
        name, key = next(iter(emu.keys.items()))
        return f"{line}; user {name} key {key}"
    return f"{line}; users {', '.join(emu.keys)}"


async def serve(options: EmulatorOptions, show_key: bool) -> None:
    """Run the emulator until SIGINT or SIGTERM."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        from agent.emulator import running_emulator  # the server's modules load only when one is started

        async with running_emulator(options) as emu:
            click.echo(banner(emu, show_key))
            async for _ in signals:
                break


@click.command("emulator", cls=_OneLineErrors)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8899, show_default=True, help="0: any free port.")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".domino-sync/emulator"),
    show_default=True, help="Where the state database (and by default the mount root) live.",
)  # fmt: skip
@click.option(
    "--mount-root", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Dataset folders go here (default: DATA_DIR/mnt/data).",
)  # fmt: skip
@click.option(
    "--dialect", type=click.Choice([d.value for d in Dialect]), default=Dialect.SEED.value, show_default=True,
    help="seed: the seed document's shapes; domino: Domino Public API 6.2 envelopes.",
)  # fmt: skip
@click.option(
    "--user", "users", multiple=True, callback=_users, metavar="NAME:KEY",
    help="A user and their API key (repeatable). None: one user 'admin' whose key is printed.",
)  # fmt: skip
@click.option(
    "--fail-rate", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
    help="Share of API requests answered 500 or 503 at random.",
)  # fmt: skip
@click.option("--latency-ms", type=click.IntRange(min=0), default=0, show_default=True, help="Delay every answer.")
@click.option(
    "--rate-limit", type=click.FloatRange(min=0.0, min_open=True), default=None,
    help="Requests per second (sliding window); over it: 429 with Retry-After.",
)  # fmt: skip
@click.option(
    "--max-active-snapshots", type=click.IntRange(min=0), default=20, show_default=True,
    help="Past this many active snapshots of a dataset the oldest untagged one is marked for deletion "
    "(Domino's default); 0: no limit.",
)  # fmt: skip
@click.option(
    "--snapshot-delay", type=click.FloatRange(min=0.0), default=0.0, show_default=True, metavar="SECONDS",
    help="Take snapshots as Domino does, in the background: a create answers `pending` at once and the copy "
    "is taken this much later (0: during the call).",
)  # fmt: skip
def emulator(**flags: Any) -> None:
    """Serve a local Domino Datasets API with real dataset folders, keys, grants and injectable faults."""
    options = EmulatorOptions(
        data_dir=flags["data_dir"],
        mount_root=flags["mount_root"],
        dialect=Dialect(flags["dialect"]),
        users=flags["users"],
        fail_rate=flags["fail_rate"],
        latency_ms=flags["latency_ms"],
        rate_limit=flags["rate_limit"],
        max_active_snapshots=flags["max_active_snapshots"],
        snapshot_delay=flags["snapshot_delay"],
        host=flags["host"],
        port=flags["port"],
    )
    anyio.run(serve, options, not flags["users"])


COMMANDS: list[click.Command] = [emulator]
