"""Helpers for end-to-end tests of the agent against a real emulator over a real socket.

Importable from any test module as `e2e_support` (pytest's pythonpath includes tests/)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from agent.api.client import ClientSettings, DatasetsClient
from agent.config import Config, parse_config
from agent.daemon import Agent

DATASET = "e2e"
PROJECT = "project-e2e"


def make_config(emu: Any, tmp_path: Path, **overrides: Any) -> Config:
    """A config for an agent syncing tmp_path/src into the emulator's dataset folder."""
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    doc: dict[str, Any] = {
        "source": {"path": str(source), "settle": "150ms", "rescan": "5s"},
        "dataset": {
            "name": DATASET,
            "project_id": PROJECT,
            "create": True,
            "mount": str(emu.mount_root / DATASET),
        },
        "domino": {"url": emu.url, "api_key": emu.keys["alice"], "requests_per_second": 50, "burst": 20},
        "state_dir": str(tmp_path / "state"),
        "server": {"listen": "127.0.0.1:0"},
        "shutdown_timeout": "5s",
    }
    for key, value in overrides.items():
        section, _, sub = key.partition("__")
        if sub:
            doc.setdefault(section, {})[sub] = value
        else:
            doc[section] = value
    return parse_config(doc, env={})


@asynccontextmanager
async def running_agent(config: Config, listen_port: int = 0, **options: Any) -> AsyncIterator[Agent]:
    """An agent running in daemon mode in this event loop until the block ends."""
    agent = Agent(config, env={}, listen_port=listen_port, **options)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        await wait_for(lambda: agent.readiness()[0], 20, "agent ready")
        try:
            yield agent
        finally:
            tg.cancel_scope.cancel()


async def wait_for(predicate: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await anyio.sleep(0.05)


async def wait_for_async(predicate: Callable[[], Awaitable[bool]], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await anyio.sleep(0.1)


@asynccontextmanager
async def api_client(emu: Any, user: str = "alice") -> AsyncIterator[DatasetsClient]:
    async with DatasetsClient(ClientSettings(url=emu.url, api_key=emu.keys[user])) as client:
        yield client


def write(root: Path, rel: str, data: bytes | str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every regular file under root (a file that goes away while it is read, such
    as a copy's temp file renamed meanwhile, is left out)."""
    if not root.exists():
        return {}
    found: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        try:
            if path.is_file():
                found[str(path.relative_to(root))] = path.read_bytes()
        except FileNotFoundError:
            continue
    return found
