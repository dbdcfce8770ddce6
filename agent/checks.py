"""`domino-sync check`: reach everything the agent needs and say what is wrong, without changing anything."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from agent.api.settings import in_domino_section
from agent.config import Config
from agent.errors import AgentError, ConfigError, NotFoundError

CheckResult = tuple[str, bool, str]


def _writable_folder(path: Path) -> tuple[bool, str]:
    if not path.exists():
        return False, f"{path} does not exist"
    if not path.is_dir():
        return False, f"{path} is not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".domino-sync-check-"):
            pass
    except OSError as exc:
        return False, f"{path} is not writable ({exc.strerror})"
    return True, str(path)


async def run_checks(config: Config) -> list[CheckResult]:
    """Each check as (name, ok, detail), in the order a person would fix them."""
    from agent.daemon import Agent

    results: list[CheckResult] = [("config", True, "valid")]
    source = config.source.path
    if source.is_dir() and os.access(source, os.R_OK | os.X_OK):
        results.append(("source", True, str(source)))
    elif config.source.create and not source.exists() and _creatable(source):
        results.append(("source", True, f"{source} will be created (source.create)"))
    else:
        results.append(("source", False, f"{source} is not a readable folder"))
    agent = Agent(config)
    try:
        async with agent._endpoint() as endpoint:
            from agent.api.client import DatasetsClient

            async with DatasetsClient(endpoint.settings) as client:
                try:
                    dialect = await client.dialect()
                    results.append(("api", True, f"{endpoint.url} answers ({dialect.value} dialect)"))
                except ConfigError as exc:  # a token file or CA bundle the client cannot use: the config is bad
                    raise in_domino_section(exc) from None
                except AgentError as exc:
                    results.append(("api", False, str(exc)))
                    return results
                name = config.dataset.name
                creating = False
                try:
                    if config.dataset.id:
                        dataset = await client.get_dataset(config.dataset.id)
                    else:
                        assert name is not None
                        dataset = await client.find_dataset(name, config.dataset.project_id)
                    results.append(("dataset", True, f"{dataset.name} ({dataset.id})"))
                    name = dataset.name
                except NotFoundError as exc:
                    if config.dataset.create and not config.dataset.id:
                        results.append(("dataset", True, f"{name} does not exist yet; it will be created"))
                        creating = True
                    else:
                        results.append(("dataset", False, str(exc)))
                except AgentError as exc:
                    results.append(("dataset", False, str(exc)))
                try:
                    mount = agent._mount_for(endpoint, name or "")
                except AgentError as exc:
                    results.append(("mount", False, str(exc)))
                else:
                    if creating and not mount.exists():  # an existing dataset's mount must be there now
                        results.append(
                            ("mount", True, f"{mount} does not exist yet; it appears when the new dataset is mounted")
                        )
                    else:
                        ok, detail = _writable_folder(mount)
                        results.append(("mount", ok, detail))
    except ConfigError as exc:
        raise in_domino_section(exc) from None
    except AgentError as exc:
        results.append(("api", False, str(exc)))
    state = config.state_dir
    if state.exists():
        ok, detail = _writable_folder(state)
        results.append(("state_dir", ok, detail))
    else:
        parent = next((p for p in state.parents if p.exists()), Path("/"))
        ok = os.access(parent, os.W_OK)
        results.append(("state_dir", ok, f"{state} will be created" if ok else f"cannot create {state}"))
    return results


def _creatable(path: Path) -> bool:
    """The nearest existing folder above `path` lets us create what is missing under it."""
    for parent in path.absolute().parents:
        if parent.exists():
            return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)
    return False
