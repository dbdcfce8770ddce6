"""The agent's own commands: run, once, check, status, snapshot, retry."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from agent.cli.console import freeze_heap
from agent.cli.output import say, writing
from agent.config import Config, load_config
from agent.errors import AgentError, NoAgentError
from agent.logs import configure_logging, redact

CONFIG_OPTION = click.option(
    "--config", "-c", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="The YAML configuration file.",
)  # fmt: skip


def wants_progress() -> bool:
    """A progress bar only for people: stderr is a terminal (the progress module is imported only then)."""
    if not sys.stderr.isatty():
        return False
    from agent.cli.progress import wants_progress as tty_says

    return tty_says()


def _load(ctx: click.Context, path: Path, quiet_default: bool = False) -> Config:
    """Load the config and set up logging: flags, then the config. `quiet_default` shows only warnings unless a
    level was asked for (a progress bar on a terminal reads badly between info lines)."""
    config = load_config(path)
    obj = ctx.find_root().obj or {}
    level = obj.get("log_level") or ("warning" if quiet_default else config.log.level)
    configure_logging(level, obj.get("log_format") or config.log.format)
    return config


@click.command()
@CONFIG_OPTION
@click.pass_context
def run(ctx: click.Context, config_path: Path) -> None:
    """Run the agent: watch the source, sync into the mount, snapshot when rules fire.

    Stops cleanly on SIGTERM or SIGINT (finishing copies and API calls in flight).
    """
    config = _load(ctx, config_path)
    from agent.daemon import Agent

    code = anyio.run(Agent(config, progress=wants_progress(), on_assembled=freeze_heap).run)
    sys.exit(code)


@click.command()
@CONFIG_OPTION
@click.option("--dry-run", is_flag=True, help="Print what would be copied, deleted and snapshotted; change nothing.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=1e9),
    default=600.0,
    show_default=True,
    callback=lambda _ctx, _param, value: _a_number(value),
    help="Seconds to wait for the queue to drain.",
)
@click.pass_context
def once(ctx: click.Context, config_path: Path, dry_run: bool, timeout: float) -> None:
    """Sync everything pending, apply the rules, drain the queue, then exit.

    Exit 0 when everything was done, 1 when something could not be (the summary on stdout says what).
    """
    progress = wants_progress()
    config = _load(ctx, config_path, quiet_default=progress)
    early = None
    if not dry_run:  # the walk starts now, in a child, while the rest of the agent is imported and assembled
        from agent.sync.earlyscan import EarlyScan

        early = EarlyScan.start(config.source, config.dataset.mount, config.state_dir)
    try:
        from agent.daemon import Agent

        agent = Agent(config, progress=progress, early_scan=early, on_assembled=freeze_heap)
        if dry_run:
            from agent.dryrun import dry_run as run_dry

            summary = anyio.run(run_dry, agent)
            say(json.dumps(summary, indent=2, default=str))
            return
        code, summary = anyio.run(lambda: agent.once(drain_timeout=timeout))
    finally:
        if early is not None:
            early.close()  # not taken (the agent did not get that far): stop the child
    say(json.dumps(summary, indent=2, default=str))
    sys.exit(code)


@click.command()
@CONFIG_OPTION
@click.pass_context
def check(ctx: click.Context, config_path: Path) -> None:
    """Validate the config and reach the API, the dataset and the mount.

    Exit 0 when all is well, 1 with the reason when something is unreachable, 2 for an invalid config.
    """
    config = _load(ctx, config_path, quiet_default=True)  # a report: the agent's info lines would cut into it
    from agent.checks import run_checks

    results = anyio.run(run_checks, config)
    failed = False
    for name, ok, detail in results:
        say(redact(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}"))
        failed = failed or not ok
    sys.exit(1 if failed else 0)


def _a_number(value: float) -> float:
    if math.isnan(value):  # FloatRange lets NaN through: every comparison with it is false
        raise click.BadParameter("a number of seconds, not nan")
    return value


def _agent_url(config: Config) -> str:
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a listen address, read to reach the agent locally
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address, as a URL writes it
    return f"http://{host}:{config.server.port}"


async def _call_agent(config: Config, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    import aiohttp  # only the commands that talk to a running agent need an HTTP client

    if not config.server.enabled:
        raise NoAgentError(
            "this config turns the agent's HTTP server off (server.enabled: false), and status, snapshot and retry "
            "talk to a running agent through it: enable it to use them"
        )
    url = _agent_url(config) + path
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.request(method, url, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                raise AgentError(f"{method} {url}: HTTP {resp.status}: {data.get('error', data)}")
            return data
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NoAgentError(
            f"no agent answers at {_agent_url(config)} ({exc.__class__.__name__}); is `domino-sync run` running "
            "with this config?"
        ) from None


@click.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_context
def status(ctx: click.Context, config_path: Path, as_json: bool) -> None:
    """Show the running agent's status: scan, pending files, queue, dead letters, last snapshot."""
    from agent.cli.status_view import render_status

    config = _load(ctx, config_path)
    data = anyio.run(_call_agent, config, "GET", "/status")
    if as_json:
        say(json.dumps(data, indent=2, default=str))
    else:
        with writing():
            render_status(data, sys.stdout)


@click.command()
@CONFIG_OPTION
@click.option("--tag", "tags", multiple=True, help="A tag for the snapshot (repeatable).")
@click.pass_context
def snapshot(ctx: click.Context, config_path: Path, tags: tuple[str, ...]) -> None:
    """Ask the running agent for a snapshot now (once every pending file is in the mount)."""
    config = _load(ctx, config_path)
    data = anyio.run(_call_agent, config, "POST", "/snapshot", {"tags": list(tags)})
    say(json.dumps(data))


@click.command()
@CONFIG_OPTION
@click.option("--id", "job_id", type=int, default=None, help="One dead letter's id (default: all of them).")
@click.pass_context
def retry(ctx: click.Context, config_path: Path, job_id: int | None) -> None:
    """Requeue dead letters (jobs parked after failing): in the running agent, or, when none runs, in the state
    folder, for the next `once` or `run` to send."""
    config = _load(ctx, config_path)
    body = {} if job_id is None else {"id": job_id}
    try:
        data = anyio.run(_call_agent, config, "POST", "/dead-letters/retry", body)
    except NoAgentError:  # no agent runs (a `once` loop): requeue in the state folder, for the next run to send
        data = _retry_in_state(config, job_id)
    say(json.dumps(data))


def _retry_in_state(config: Config, job_id: int | None) -> dict[str, Any]:
    """Requeue dead letters straight in the state DB, under the state folder's lock (so no agent is running)."""
    from agent.queue_store import QueueStore
    from agent.statelock import state_lock

    db = config.state_dir / "state.db"
    if not db.exists():
        raise AgentError(f"no state DB at {db}: nothing was ever queued with this config")
    with state_lock(config.state_dir):
        store = QueueStore(db)
        try:
            count = store.revive(job_id)
        finally:
            store.close()
    if job_id is not None and count == 0:
        raise AgentError(f"no dead letter with id {job_id} (`domino-sync status` lists them)")
    return {"requeued": count, "in": "state_dir", "sent_by": "the next `domino-sync once` or `run`"}


COMMANDS: list[click.Command] = [run, once, check, status, snapshot, retry]
