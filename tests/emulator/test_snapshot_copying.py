"""A snapshot is listed as `copying` while the emulator makes it (as Domino lists one it is still making), so a
client that lost the create's answer can find it; a failed copy leaves a `failed` record and the tag as it was."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from e2e_support import api_client

from agent.api.models import Dialect, SnapshotStatus
from agent.emulator.folders import Folders
from agent.errors import ServerError


async def test_a_snapshot_being_made_is_listed_as_copying(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the copy runs the snapshot is listed, `copying`, with its tag; then it is `active`."""
    release = threading.Event()
    original = Folders.snapshot

    def slow(self: Folders, *args: Any, **kwargs: Any) -> None:
        release.wait(10)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Folders, "snapshot", slow)
    async with api_client(emulator) as client:
        dataset = await client.create_dataset("slow", "p1")
        made: list[Any] = []
        async with anyio.create_task_group() as tg:

            async def create() -> None:
                made.append(await client.create_snapshot(dataset.id, tag="v1"))

            tg.start_soon(create)
            with anyio.fail_after(10):
                while True:
                    listed = [s async for s in client.iter_snapshots(dataset.id)]
                    if listed:
                        break
                    await anyio.sleep(0.02)
            assert listed[0].status is SnapshotStatus.COPYING and "v1" in listed[0].tags
            release.set()
        assert (await client.get_snapshot(made[0].id)).status is SnapshotStatus.ACTIVE


async def test_a_failed_copy_leaves_a_failed_record_and_the_tag_where_it_was(
    emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the copy fails the answer is a 5xx, the record says `failed`, and the tag still names the old one."""
    async with api_client(emulator) as client:
        dataset = await client.create_dataset("flaky", "p1")
        first = await client.create_snapshot(dataset.id, tag="v1")

        def broken(self: Folders, *args: Any, **kwargs: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(Folders, "snapshot", broken)
        with pytest.raises(ServerError):
            await client.create_snapshot(dataset.id, tag="v1")
        statuses = {s.id: s.status async for s in client.iter_snapshots(dataset.id)}
        assert statuses[first.id] is SnapshotStatus.ACTIVE
        assert sorted(statuses.values()) == sorted([SnapshotStatus.ACTIVE, SnapshotStatus.FAILED])
        assert (await client.get_dataset(dataset.id)).tags["v1"] == first.id


@pytest.mark.parametrize("dialect", ["seed", "domino"])
async def test_with_a_snapshot_delay_the_answer_is_pending_and_the_copy_comes_later(
    emulator_factory: Any, dialect: str
) -> None:
    """With `snapshot_delay` a create answers `pending` at once (with its tag); the copy is taken that much later,
    holding what the folder holds then, and the snapshot turns `active`."""
    emu = await emulator_factory(snapshot_delay=0.3, dialect=Dialect(dialect))
    async with api_client(emu) as client:
        dataset = await client.create_dataset("later", "p1")
        folder = emu.mount_root / "later"
        (folder / "before.txt").write_text("b")
        made = await client.create_snapshot(dataset.id, tag="v1")
        assert made.status is SnapshotStatus.PENDING
        (folder / "after.txt").write_text("a")  # written after the answer, before the copy: Domino keeps it too
        with anyio.fail_after(10):
            while (await client.get_snapshot(made.id)).status is not SnapshotStatus.ACTIVE:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        frozen = emu.mount_root / "later@v1"
        assert sorted(p.name for p in frozen.iterdir()) == ["after.txt", "before.txt"]
