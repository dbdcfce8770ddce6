"""The `domino-sync` command: a click group with one module per family of subcommands.

Errors raised on purpose (AgentError) become one line on stderr: exit 2 for configuration and usage errors,
1 for everything else. No traceback reaches the user.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from agent import __version__
from agent.errors import AgentError, ConfigError
from agent.logs import configure_logging, get_logger, redact

LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)

_AGENT = "agent.cli.agent_commands"
_API = "agent.cli.api_commands"
COMMAND_MODULES = {
    **dict.fromkeys(["run", "once", "check", "status", "snapshot", "retry"], _AGENT),
    **dict.fromkeys(["datasets", "snapshots", "tags", "grants"], _API),
    "emulator": "agent.cli.emulator_command",
}
"""Which module holds each subcommand: a command's module is imported only when it runs (or for --help), so
`domino-sync once` does not pay for the API commands' HTTP stack nor the emulator's server."""


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is None:
            return None
        commands: list[click.Command] = importlib.import_module(module).COMMANDS
        return next((c for c in commands if c.name == cmd_name), None)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version", prog_name="domino-sync")
@click.option("--log-level", type=LOG_LEVELS, default=None, help="Log level (default: info, or the config's).")
@click.option(
    "--log-format", type=click.Choice(["auto", "json", "console"]), default=None,
    help="Logs as JSON lines or console lines (default: JSON off a TTY, console on one).",
)  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, log_level: str | None, log_format: str | None) -> None:
    """Sync a local folder into a Domino Dataset and snapshot it when rules fire.

    Also a command line for every Datasets API endpoint, and a local emulator of the API.
    """
    ctx.ensure_object(dict)
    ctx.obj["log_level"] = log_level
    ctx.obj["log_format"] = log_format
    configure_logging(log_level or "warning", log_format or "auto")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and turn AgentErrors into one line and an exit code.

    From the command line (`argv` None) the process then leaves at once: output flushed, logging shut down,
    no teardown of the interpreter's modules and objects (100 ms and more after a `once` over 100,000 files,
    a sixth of a no-op run). Everything the agent opened is closed by then; in-process callers (tests) and
    runs under coverage exit the usual way."""
    try:
        _main(argv)
    except SystemExit as exc:
        if argv is None and "coverage" not in sys.modules:
            _leave(exc.code)
        raise


def _leave(code: object) -> None:
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what sys.exit("text") prints
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
    finally:
        os._exit(code or 0)


def _main(argv: list[str] | None) -> None:
    try:
        result = cli.main(args=argv, prog_name="domino-sync", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        fail(f"{exc.format_message()}{hint}", exc.exit_code)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        fail(exc, 2)
    except AgentError as exc:
        fail(exc, 1)
    except KeyboardInterrupt:
        sys.exit(130)
    except ExceptionGroup as group:  # a task group's: one AgentError inside is that error
        sole = _sole(group)
        if isinstance(sole, AgentError):
            fail(sole, 2 if isinstance(sole, ConfigError) else 1)
        _internal(group)
    except Exception as exc:  # a bug of ours: one line, not a traceback; `--log-level debug` logs where it was
        _internal(exc)
    sys.exit(result if isinstance(result, int) else 0)


def _internal(exc: BaseException) -> None:
    get_logger("agent.cli").debug("cli.internal_error", exc_info=True)
    fail(f"internal error: {exc.__class__.__name__}: {exc} (please report it; --log-level debug shows where)", 1)


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception nested groups wrap, or the group itself when there are several."""
    while len(group.exceptions) == 1:
        inner = group.exceptions[0]
        if not isinstance(inner, BaseExceptionGroup):
            return inner
        group = inner
    return group


def fail(exc: BaseException | str, code: int) -> Any:
    """Print one redacted line on stderr and exit with `code`."""
    click.echo(f"domino-sync: error: {redact(str(exc))}", err=True)
    sys.exit(code)
