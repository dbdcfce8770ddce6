"""Dataset bootstrap at start: find (or create) the configured dataset, then apply description and grants.

Idempotent: running it twice changes nothing the second time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from agent.api.models import Dataset, Grant, Role
from agent.api.protocol import DatasetsApi
from agent.config import DatasetConfig, GrantConfig
from agent.errors import ConfigError, NotFoundError
from agent.logs import get_logger

log = get_logger("agent.bootstrap")

KNOWN_FOR = 3600.0
"""How long a burst run trusts the last bootstrap (`state_dir/dataset.json`) instead of asking the API again."""


@dataclass(frozen=True, slots=True)
class GrantPlan:
    """Grants to add and to remove so the dataset's grants match the config. Pure result of `plan_grants`."""

    add: tuple[GrantConfig, ...]
    remove: tuple[Grant, ...]


def plan_grants(declared: tuple[GrantConfig, ...], current: list[Grant], exclusive: bool) -> GrantPlan:
    """Declared grants missing (or at another role) are added; with `exclusive`, undeclared ones are removed,
    except owners (admin): removing the owner could lock the agent itself out of the dataset."""
    have = {(g.principal_type, g.principal_id): g for g in current}
    add = tuple(
        g
        for g in declared
        if (g.principal_type, g.principal) not in have or have[(g.principal_type, g.principal)].role != g.role
    )
    remove: tuple[Grant, ...] = ()
    if exclusive:
        wanted = {(g.principal_type, g.principal) for g in declared}
        remove = tuple(g for key, g in have.items() if key not in wanted and g.role is not Role.ADMIN)
    return GrantPlan(add=add, remove=remove)


async def resolve_dataset(api: DatasetsApi, cfg: DatasetConfig) -> Dataset:
    """The dataset the config names (by id, or by name in project), created when missing and allowed."""
    if cfg.id:
        return await api.get_dataset(cfg.id)
    assert cfg.name is not None  # the config model guarantees id or name
    try:
        return await api.find_dataset(cfg.name, cfg.project_id)
    except NotFoundError:
        if not cfg.create:
            raise NotFoundError(
                "GET",
                "/api/datasetrw/v2/datasets",
                404,
                f"no dataset named {cfg.name!r} in project {cfg.project_id!r}; "
                "set dataset.create: true to create it, or fix dataset.name / dataset.project_id",
            ) from None
    if not cfg.project_id:
        raise ConfigError("dataset.project_id", None, "a project id, to create the dataset in")
    dataset = await api.create_dataset(cfg.name, cfg.project_id, cfg.description or "")
    log.info("bootstrap.created", dataset_id=dataset.id, name=dataset.name, project_id=cfg.project_id)
    return dataset


async def bootstrap(api: DatasetsApi, cfg: DatasetConfig) -> Dataset:
    """Resolve the dataset, then bring its description and grants in line with the config."""
    dataset = await resolve_dataset(api, cfg)
    if cfg.description is not None and dataset.description != cfg.description:
        dataset = await api.update_dataset(dataset.id, description=cfg.description)
        log.info("bootstrap.description_updated", dataset_id=dataset.id)
    if cfg.grants or cfg.grants_exclusive:
        current = await api.list_grants(dataset.id)
        plan = plan_grants(cfg.grants, current, cfg.grants_exclusive)
        for grant in plan.add:
            await api.add_grant(dataset.id, grant.principal, grant.role, grant.principal_type)
            log.info("bootstrap.grant_added", dataset_id=dataset.id, principal=grant.principal, role=grant.role.value)
        for old in plan.remove:
            await api.remove_grant(dataset.id, old.principal_id, old.principal_type)
            log.info("bootstrap.grant_removed", dataset_id=dataset.id, principal=old.principal_id)
    return dataset


def bootstrap_key(url: str, cfg: DatasetConfig) -> str:
    """What a bootstrap result depends on: the API's address and the whole `dataset` section."""
    return hashlib.sha256(f"{url}\n{cfg.model_dump_json()}".encode()).hexdigest()


def load_known(path: Path, key: str, now: float, max_age: float = KNOWN_FOR) -> Dataset | None:
    """The dataset a bootstrap with the same key found less than `max_age` seconds ago, else None."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved["key"] != key or not 0 <= now - float(saved["at"]) < max_age:
            return None
        return Dataset(
            id=str(saved["id"]),
            name=str(saved["name"]),
            description=str(saved.get("description") or ""),
            project_id=saved.get("project_id"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_known(path: Path, key: str, dataset: Dataset, now: float) -> None:
    """Remember a bootstrap's result (best effort: a failed write only costs the next run an API call)."""
    record = {
        "key": key,
        "at": now,
        "id": dataset.id,
        "name": dataset.name,
        "description": dataset.description,
        "project_id": dataset.project_id,
    }
    temp = path.with_name(path.name + ".tmp")
    try:
        temp.write_text(json.dumps(record), encoding="utf-8")
        temp.replace(path)
    except OSError as exc:
        log.warning("bootstrap.not_remembered", path=str(path), error=exc.strerror)


def forget_known(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
