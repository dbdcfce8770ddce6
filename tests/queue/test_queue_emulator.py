"""The queue with the real client against a real emulator: tagged snapshots appear, one per job, even when
the server fails 30% of requests and rate-limits, and the client's limiter holds the request rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.api.client import ClientSettings, DatasetsClient
from agent.api.models import Dataset, Dialect
from agent.errors import ApiError
from agent.queue import TaskQueue
from agent.rules.engine import SnapshotRequest


def req(*tags: str) -> SnapshotRequest:
    return SnapshotRequest(rules=("r",), tags=tags, scopes=("",), requested_at=0.0)


async def create_dataset(client: DatasetsClient, name: str) -> Dataset:
    """Create a dataset on a faulty server: a failed create may or may not have made it, so look first."""
    for _ in range(20):
        found = [d async for d in client.iter_datasets() if d.name == name]
        if found:
            return found[0]
        try:
            return await client.create_dataset(name, "project-1")
        except ApiError:
            continue
    raise AssertionError("could not create the dataset")


@pytest.mark.parametrize("dialect", [Dialect.SEED, Dialect.DOMINO])
async def test_jobs_become_tagged_snapshots_on_the_emulator(
    tmp_path: Path, emulator_factory: Any, dialect: Dialect
) -> None:
    """Each job gives one snapshot carrying its tags, visible as `<dataset>@<tag>` under the mount root."""
    emu = await emulator_factory(dialect=dialect)
    settings = ClientSettings(url=emu.url, api_key=emu.keys["alice"], requests_per_second=50, burst=20)
    async with DatasetsClient(settings) as client:
        dataset = await client.create_dataset("queue-it", "project-1")
        (emu.mount_root / "queue-it" / "a.txt").write_text("hello")
        q = TaskQueue(tmp_path / "state.db", client, dataset.id, covered=lambda _r: True, poll_interval=0.01)
        try:
            q.submit(req("drop-1", "latest"))
            assert await q.drain(20)
            q.submit(req("drop-2", "latest"))
            assert await q.drain(20)
        finally:
            q.close()
        snapshots = [s async for s in client.iter_snapshots(dataset.id)]
        tags = (await client.get_dataset(dataset.id)).tags
    assert len(snapshots) == 2
    assert tags["drop-2"] == tags["latest"] != tags["drop-1"]
    assert (emu.mount_root / "queue-it@latest" / "a.txt").read_text() == "hello"


async def test_faults_and_rate_limit_still_give_one_snapshot_per_job(tmp_path: Path, emulator_factory: Any) -> None:
    """At a 30% failure rate with a server rate limit, every job completes with exactly one snapshot and the
    server never sees more than the client's rate plus burst in any second."""
    emu = await emulator_factory(fail_rate=0.3, rate_limit=8.0)
    rate, burst = 5.0, 2
    settings = ClientSettings(
        url=emu.url,
        api_key=emu.keys["alice"],
        requests_per_second=rate,
        burst=burst,
        backoff_base=0.05,
        backoff_cap=2.0,  # the emulator's Retry-After (1 s) must fit under it, or the client gives up at once
        max_attempts=10,
    )
    async with DatasetsClient(settings) as client:
        dataset = await create_dataset(client, "faulty")
        emu.reset_stats()
        q = TaskQueue(
            tmp_path / "state.db",
            client,
            dataset.id,
            covered=lambda _r: True,
            poll_interval=0.01,
            backoff_base=0.05,
            backoff_cap=0.5,
            max_attempts=40,
            inflight_grace=0.5,  # the emulator's injected 500s come before any work: a short look-again will do
        )
        try:
            for n in range(4):
                q.submit(req(f"drop-{n}", "latest"))
                assert await q.drain(60), q.status()
        finally:
            q.close()
        stats = emu.stats()
        snapshots = [s async for s in client.iter_snapshots(dataset.id)]
        tags = (await client.get_dataset(dataset.id)).tags
    assert len(snapshots) == 4
    assert {f"drop-{n}" for n in range(4)} <= set(tags)
    assert tags["latest"] == tags["drop-3"]
    assert stats["max_requests_in_any_1s"] <= rate + burst
