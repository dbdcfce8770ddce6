"""LazyClient: no connection and no HTTP stack until the first call, then every call goes to a real client."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from agent.api.lazy import LazyClient
from agent.api.models import Role
from agent.api.settings import ClientSettings


def settings_for(emu: Any) -> ClientSettings:
    return ClientSettings(url=emu.url, api_key=emu.keys["alice"])


async def test_nothing_opens_until_the_first_call(emulator: Any) -> None:
    """A LazyClient that is never called makes no request; the first call opens it and later calls reuse it."""
    client = LazyClient(settings_for(emulator))
    assert not client.opened
    await client.aclose()
    assert emulator.stats()["requests_total"] == 0
    client = LazyClient(settings_for(emulator))
    dataset = await client.create_dataset("lazy-one", "p1", "d")
    assert client.opened
    assert (await client.get_dataset(dataset.id)).name == "lazy-one"
    assert (await client.find_dataset("lazy-one", "p1")).id == dataset.id
    snapshot = await client.create_snapshot(dataset.id)
    await client.add_tag(dataset.id, snapshot.id, "t1")
    assert [s.id async for s in client.iter_snapshots(dataset.id)] == [snapshot.id]
    assert dataset.id in [d.id async for d in client.iter_datasets("p1")]
    await client.add_grant(dataset.id, "bob", Role.READ)
    assert "bob" in [g.principal_id for g in await client.list_grants(dataset.id)]
    await client.remove_grant(dataset.id, "bob")
    await client.remove_tag(dataset.id, "t1")
    await client.aclose()
    assert not client.opened
    assert emulator.stats()["requests_total"] >= 10


def test_the_burst_path_imports_no_http_stack() -> None:
    """Importing what `domino-sync once` needs loads neither aiohttp nor watchfiles nor croniter."""
    probe = (
        "import sys, agent.cli.main, agent.cli.agent_commands, agent.daemon\n"
        "print(sorted(m for m in ('aiohttp', 'watchfiles', 'croniter', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
