"""Domino's default of 20 active snapshots per dataset: past the limit the oldest untagged one is marked for
deletion; tagged ones are kept."""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import api_client

from agent.api.models import Dialect, SnapshotStatus
from agent.emulator.options import EmulatorOptions


@pytest.mark.parametrize("dialect", [Dialect.SEED, Dialect.DOMINO])
async def test_the_oldest_untagged_snapshots_are_marked_past_the_limit(emulator_factory: Any, dialect: Dialect) -> None:
    """With a limit of 3, the 4th and 5th snapshots mark the oldest untagged ones; the tagged one stays active."""
    emu = await emulator_factory(max_active_snapshots=3, dialect=dialect)
    async with api_client(emu) as client:
        dataset = await client.create_dataset("limited", "p1")
        (emu.mount_root / "limited" / "f.txt").write_text("f")
        first = await client.create_snapshot(dataset.id)
        kept = await client.create_snapshot(dataset.id, tag="keep")
        third = await client.create_snapshot(dataset.id)
        assert (await client.get_snapshot(first.id)).status is SnapshotStatus.ACTIVE
        await client.create_snapshot(dataset.id)
        assert (await client.get_snapshot(first.id)).status is SnapshotStatus.MARK_FOR_DELETION
        assert (await client.get_snapshot(third.id)).status is SnapshotStatus.ACTIVE
        await client.create_snapshot(dataset.id)
        assert (await client.get_snapshot(third.id)).status is SnapshotStatus.MARK_FOR_DELETION
        assert (await client.get_snapshot(kept.id)).status is SnapshotStatus.ACTIVE
        statuses = [s.status async for s in client.iter_snapshots(dataset.id)]
    assert statuses.count(SnapshotStatus.ACTIVE) == 3


async def test_the_snapshot_just_made_is_never_the_one_retired(emulator_factory: Any) -> None:
    """When every older snapshot is tagged, a new untagged one (domino: untagged until its tag call) stays
    active even past the limit: only older untagged snapshots are retired."""
    emu = await emulator_factory(max_active_snapshots=2, dialect=Dialect.DOMINO)
    async with api_client(emu) as client:
        dataset = await client.create_dataset("all-tagged", "p1")
        for n in range(3):
            snap = await client.create_snapshot(dataset.id)
            assert (await client.get_snapshot(snap.id)).status is SnapshotStatus.ACTIVE
            await client.add_tag(dataset.id, snap.id, f"t{n}")
        assert {s.status async for s in client.iter_snapshots(dataset.id)} == {SnapshotStatus.ACTIVE}


async def test_zero_means_no_limit(emulator_factory: Any) -> None:
    """max_active_snapshots 0 keeps every snapshot active; a negative limit is a config error."""
    emu = await emulator_factory(max_active_snapshots=0)
    async with api_client(emu) as client:
        dataset = await client.create_dataset("unlimited", "p1")
        for _ in range(4):
            await client.create_snapshot(dataset.id)
        assert {s.status async for s in client.iter_snapshots(dataset.id)} == {SnapshotStatus.ACTIVE}
    with pytest.raises(Exception, match="max_active_snapshots"):
        EmulatorOptions(data_dir=emu.mount_root, max_active_snapshots=-1).validate()
