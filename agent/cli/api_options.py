"""What every API command shares: the connection options, the ways to name a dataset, and their validation.

`@api_options` adds `--url`, `--api-key`, `--dialect`, `--ca-bundle`, `--timeout`, `--max-attempts` and
`--output`, and hands the command a `Connection`; `@dataset_options` adds `--dataset`/`--name`/`--project`
(and optionally a DATASET_ID argument) and hands it a `DatasetRef`.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from agent.api.client import DatasetsClient
from agent.api.models import Role
from agent.api.names import tag_problem
from agent.api.settings import DIALECT_CHOICES, ENV_API_KEY, ENV_API_PROXY, ENV_TOKEN_FILE, ENV_URL, ClientSettings
from agent.cli.output import OUTPUT_CHOICES, OutputFormat

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Connection:
    """The common options of every API command."""

    url: str | None
    api_key: str | None
    dialect: str
    ca_bundle: Path | None
    timeout: float
    max_attempts: int
    output: OutputFormat

    def __repr__(self) -> str:
        return f"Connection(url={self.url!r}, dialect={self.dialect!r}, output={self.output!r})"

    def settings(self) -> ClientSettings:
        env = dict(os.environ)
        if self.api_key:  # an explicit key wins over every credential of the environment
            for name in (ENV_TOKEN_FILE, ENV_API_PROXY, ENV_API_KEY):
                env.pop(name, None)
        if not (self.url or env.get(ENV_URL)):
            raise click.UsageError(f"no API URL: give --url or set {ENV_URL}")
        return ClientSettings.from_env(
            env,
            url=self.url,
            api_key=self.api_key,
            dialect=self.dialect,
            ca_bundle=self.ca_bundle,
            timeout=self.timeout,
            max_attempts=self.max_attempts,
        )

    def run(self, work: Callable[[DatasetsClient], Awaitable[T]]) -> T:
        """Open a client, do `work` with it, close it."""
        settings = self.settings()

        async def main() -> T:
            async with DatasetsClient(settings) as client:
                return await work(client)

        return anyio.run(main)


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """How the user named a dataset: an id, or a name (and project)."""

    dataset_id: str | None
    name: str | None
    project: str | None

    def check(self) -> None:
        if self.dataset_id and self.name:
            raise click.UsageError("name the dataset by id or by --name, not both")
        if not self.dataset_id and not self.name:
            raise click.UsageError("name a dataset: its id (argument or --dataset), or --name with --project")

    async def resolve(self, client: DatasetsClient) -> str:
        if self.dataset_id:
            return self.dataset_id
        assert self.name is not None  # check() ran
        return (await client.find_dataset(self.name, self.project)).id


def api_options(func: F) -> F:
    """Add the common options and pass them to `func` as its first argument, a Connection."""

    @click.option("--url", metavar="URL", help=f"The Datasets API's base URL (default: ${ENV_URL}).")
    @click.option(
        "--api-key", metavar="KEY",
        help=f"API key sent as X-Domino-Api-Key (default: ${ENV_API_KEY}; ${ENV_API_PROXY} and ${ENV_TOKEN_FILE} "
        "are used when set, unless this is given).",
    )  # fmt: skip
    @click.option(
        "--dialect", type=click.Choice(DIALECT_CHOICES), default="auto", show_default=True,
        help="The API's shapes: the seed's, Domino Public API 6.2's, or detected from the answers.",
    )  # fmt: skip
    @click.option(
        "--ca-bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="A PEM file of CA certificates to trust (TLS is always verified).",
    )  # fmt: skip
    @click.option(
        "--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True, help="Seconds per request."
    )
    @click.option(
        "--max-attempts", type=click.IntRange(min=1), default=5, show_default=True,
        help="Tries per call for calls that are safe to repeat (with backoff and jitter).",
    )  # fmt: skip
    @click.option(
        "--output", "-o", type=click.Choice(OUTPUT_CHOICES), default="json", show_default=True,
        help="JSON for programs, an aligned table for people.",
    )  # fmt: skip
    @functools.wraps(func)
    def wrapper(
        *args: Any,
        url: str | None,
        api_key: str | None,
        dialect: str,
        ca_bundle: Path | None,
        timeout: float,
        max_attempts: int,
        output: OutputFormat,
        **kwargs: Any,
    ) -> Any:
        conn = Connection(url, api_key, dialect, ca_bundle, timeout, max_attempts, output)
        return func(conn, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def dataset_options(positional: bool) -> Callable[[F], F]:
    """Add the ways to name a dataset; `positional` adds an optional DATASET_ID argument too."""

    def decorate(func: F) -> F:
        @click.option("--dataset", "dataset_opt", metavar="ID", help="The dataset's id.")
        @click.option("--name", metavar="NAME", help="The dataset's name (instead of its id).")
        @click.option("--project", metavar="PROJECT_ID", help="The project of the dataset named by --name.")
        @functools.wraps(func)
        def wrapper(
            conn: Connection, *args: Any, dataset_opt: str | None, name: str | None, project: str | None, **kw: Any
        ) -> Any:
            positional_id = kw.pop("dataset_id", None)
            if positional_id and dataset_opt and positional_id != dataset_opt:
                raise click.UsageError("give the dataset id once (argument or --dataset)")
            ref = DatasetRef(positional_id or dataset_opt, name, project)
            ref.check()
            return func(conn, ref, *args, **kw)

        if positional:
            wrapper = click.argument("dataset_id", required=False, metavar="[DATASET_ID]")(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


def valid_tag(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (problem := tag_problem(value)):
        raise click.BadParameter(problem)
    return value


def valid_tags(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        valid_tag(ctx, param, value)
    return tuple(dict.fromkeys(values))


def valid_role(ctx: click.Context, param: click.Parameter, value: str) -> Role:
    try:
        return Role.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def confirm_delete(what: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"refusing to delete {what} without --yes (no terminal to ask on)")
    click.confirm(f"Delete {what}?", abort=True, err=True)
