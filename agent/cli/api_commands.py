"""`domino-sync datasets|snapshots|tags|grants ...`: a command for every Datasets API endpoint.

Every command takes `--url` (else DOMINO_API_HOST), `--api-key` (else DOMINO_USER_API_KEY; DOMINO_TOKEN_FILE
and DOMINO_API_PROXY are honoured too, proxy > token file > key, and an explicit --api-key wins over all of
them), `--dialect`, `--ca-bundle`, `--timeout`, `--max-attempts` and `--output json|table`.
A dataset is named by its id (an argument or `--dataset`) or by `--name` (with `--project` where names repeat
across projects).
Results are JSON on stdout; errors are one line on stderr (exit 1; 2 for usage errors).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import click

from agent.api.client import DatasetsClient, paged
from agent.api.models import Dataset, Role, Snapshot
from agent.api.names import dataset_name_problem
from agent.cli.api_options import (
    Connection,
    DatasetRef,
    api_options,
    confirm_delete,
    dataset_options,
    valid_role,
    valid_tag,
    valid_tags,
)
from agent.cli.output import emit

PAGE_SIZE = 50


# --- datasets ------------------------------------------------------------------------------------------------


@click.group("datasets")
def datasets() -> None:
    """List, create, get, update and delete datasets."""


@datasets.command("list")
@click.option("--project", metavar="PROJECT_ID", help="Only the datasets of this project.")
@click.option("--limit", type=click.IntRange(min=1), help="Print at most this many (default: all).")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Skip this many first.")
@api_options
def datasets_list(conn: Connection, project: str | None, limit: int | None, offset: int) -> None:
    """List datasets, paging through all of them."""

    async def work(client: DatasetsClient) -> list[Dataset]:
        return [d async for d in paged(partial(client.list_datasets, project), offset, PAGE_SIZE, limit)]

    emit(conn.run(work), conn.output)


@datasets.command("create")
@click.argument("name")
@click.option("--project", metavar="PROJECT_ID", help="The project the dataset belongs to.")
@click.option("--description", default="", help="What the dataset holds.")
@api_options
def datasets_create(conn: Connection, name: str, project: str | None, description: str) -> None:
    """Create a dataset called NAME."""
    if problem := dataset_name_problem(name):
        raise click.BadParameter(problem, param_hint="NAME")
    emit(conn.run(lambda client: client.create_dataset(name, project, description)), conn.output)


@datasets.command("get")
@api_options
@dataset_options(positional=True)
def datasets_get(conn: Connection, ref: DatasetRef) -> None:
    """Show one dataset."""

    async def work(client: DatasetsClient) -> Dataset:
        if ref.dataset_id:
            return await client.get_dataset(ref.dataset_id)
        assert ref.name is not None  # DatasetRef.check ran
        return await client.find_dataset(ref.name, ref.project)

    emit(conn.run(work), conn.output)


@datasets.command("update")
@click.option("--new-name", metavar="NAME", help="Rename the dataset.")
@click.option("--description", help="Replace the description.")
@api_options
@dataset_options(positional=True)
def datasets_update(conn: Connection, ref: DatasetRef, new_name: str | None, description: str | None) -> None:
    """Rename a dataset or change its description."""
    if new_name is None and description is None:
        raise click.UsageError("nothing to change: give --new-name and/or --description")
    if new_name is not None and (problem := dataset_name_problem(new_name)):
        raise click.BadParameter(problem, param_hint="--new-name")

    async def work(client: DatasetsClient) -> Dataset:
        return await client.update_dataset(await ref.resolve(client), new_name, description)

    emit(conn.run(work), conn.output)


@datasets.command("delete")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@api_options
@dataset_options(positional=True)
def datasets_delete(conn: Connection, ref: DatasetRef, yes: bool) -> None:
    """Delete a dataset (Domino marks it for deletion)."""
    confirm_delete(f"dataset {ref.dataset_id or ref.name}", yes)

    async def work(client: DatasetsClient) -> dict[str, Any]:
        dataset_id = await ref.resolve(client)
        await client.delete_dataset(dataset_id)
        return {"deleted": dataset_id}

    emit(conn.run(work), conn.output)


# --- snapshots -----------------------------------------------------------------------------------------------


@click.group("snapshots")
def snapshots() -> None:
    """List, create and get snapshots of a dataset."""


@snapshots.command("list")
@click.option("--limit", type=click.IntRange(min=1), help="Print at most this many (default: all).")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Skip this many first.")
@api_options
@dataset_options(positional=True)
def snapshots_list(conn: Connection, ref: DatasetRef, limit: int | None, offset: int) -> None:
    """List a dataset's snapshots, paging through all of them."""

    async def work(client: DatasetsClient) -> list[Snapshot]:
        dataset_id = await ref.resolve(client)
        return [s async for s in paged(partial(client.list_snapshots, dataset_id), offset, PAGE_SIZE, limit)]

    emit(conn.run(work), conn.output)


@snapshots.command("create")
@click.option("--tag", "tags", multiple=True, callback=valid_tags, help="Tag the new snapshot (repeatable).")
@api_options
@dataset_options(positional=True)
def snapshots_create(conn: Connection, ref: DatasetRef, tags: tuple[str, ...]) -> None:
    """Snapshot a dataset as it is now, optionally tagged (the first tag in the create call, the others after)."""

    async def work(client: DatasetsClient) -> Snapshot:
        dataset_id = await ref.resolve(client)
        snapshot = await client.create_snapshot(dataset_id, tags[0] if tags else None)
        for tag in tags[1:]:
            await client.add_tag(dataset_id, snapshot.id, tag)
        return replace(snapshot, tags=tuple(dict.fromkeys([*snapshot.tags, *tags]))) if tags[1:] else snapshot

    emit(conn.run(work), conn.output)


@snapshots.command("get")
@click.argument("snapshot_id")
@api_options
def snapshots_get(conn: Connection, snapshot_id: str) -> None:
    """Show one snapshot."""
    emit(conn.run(lambda client: client.get_snapshot(snapshot_id)), conn.output)


# --- tags ----------------------------------------------------------------------------------------------------


@click.group("tags")
def tags() -> None:
    """Point a tag at a snapshot, or remove it."""


@tags.command("add")
@click.argument("tag", callback=valid_tag)
@click.option("--snapshot", "snapshot_id", required=True, metavar="SNAPSHOT_ID", help="The snapshot to tag.")
@click.option("--dataset", "dataset_opt", metavar="ID", help="The dataset's id (default: the snapshot's).")
@click.option("--name", metavar="NAME", help="The dataset's name (instead of its id).")
@click.option("--project", metavar="PROJECT_ID", help="The project of the dataset named by --name.")
@api_options
def tags_add(
    conn: Connection, tag: str, snapshot_id: str, dataset_opt: str | None, name: str | None, project: str | None
) -> None:
    """Point TAG at a snapshot (moving it if it pointed elsewhere)."""
    ref = DatasetRef(dataset_opt, name, project)
    if dataset_opt and name:
        ref.check()

    async def work(client: DatasetsClient) -> dict[str, Any]:
        if ref.dataset_id or ref.name:
            dataset_id = await ref.resolve(client)
        else:
            dataset_id = (await client.get_snapshot(snapshot_id, with_tags=False)).dataset_id
        await client.add_tag(dataset_id, snapshot_id, tag)
        return {"dataset_id": dataset_id, "snapshot_id": snapshot_id, "tag": tag}

    emit(conn.run(work), conn.output)


@tags.command("remove")
@click.argument("tag")
@api_options
@dataset_options(positional=False)
def tags_remove(conn: Connection, ref: DatasetRef, tag: str) -> None:
    """Remove TAG from a dataset (the snapshot stays)."""

    async def work(client: DatasetsClient) -> dict[str, Any]:
        dataset_id = await ref.resolve(client)
        await client.remove_tag(dataset_id, tag)
        return {"dataset_id": dataset_id, "removed_tag": tag}

    emit(conn.run(work), conn.output)


# --- grants --------------------------------------------------------------------------------------------------

PRINCIPAL_TYPES = click.Choice(["user", "organization"])


@click.group("grants")
def grants() -> None:
    """List, add and remove who may read, write or administer a dataset."""


@grants.command("list")
@api_options
@dataset_options(positional=True)
def grants_list(conn: Connection, ref: DatasetRef) -> None:
    """List a dataset's grants."""

    async def work(client: DatasetsClient) -> list[Any]:
        return list(await client.list_grants(await ref.resolve(client)))

    emit(conn.run(work), conn.output)


PRINCIPAL_TYPE_OPTION = click.option(
    "--principal-type",
    type=PRINCIPAL_TYPES,
    default="user",
    show_default=True,
    help="Whether PRINCIPAL is a user or an organization.",
)


@grants.command("add")
@click.argument("principal")
@click.option(
    "--role", required=True, callback=valid_role, metavar="read|write|admin",
    help="read, write or admin (DatasetRwReader/Editor/Owner are accepted too).",
)  # fmt: skip
@PRINCIPAL_TYPE_OPTION
@api_options
@dataset_options(positional=False)
def grants_add(conn: Connection, ref: DatasetRef, principal: str, role: Role, principal_type: str) -> None:
    """Grant PRINCIPAL (a user or organization id) a role on a dataset."""

    async def work(client: DatasetsClient) -> dict[str, Any]:
        dataset_id = await ref.resolve(client)
        await client.add_grant(dataset_id, principal, role, principal_type)
        return {"dataset_id": dataset_id, "principal_id": principal, "principal_type": principal_type, "role": role}

    emit(conn.run(work), conn.output)


@grants.command("remove")
@click.argument("principal")
@PRINCIPAL_TYPE_OPTION
@api_options
@dataset_options(positional=False)
def grants_remove(conn: Connection, ref: DatasetRef, principal: str, principal_type: str) -> None:
    """Remove PRINCIPAL's grant from a dataset."""

    async def work(client: DatasetsClient) -> dict[str, Any]:
        dataset_id = await ref.resolve(client)
        await client.remove_grant(dataset_id, principal, principal_type)
        return {"dataset_id": dataset_id, "removed_principal_id": principal, "principal_type": principal_type}

    emit(conn.run(work), conn.output)


COMMANDS: list[click.Command] = [datasets, snapshots, tags, grants]
