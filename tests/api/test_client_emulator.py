"""DatasetsClient against the real emulator over a socket on 127.0.0.1, in both dialects, detected on its own."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from agent.api.client import DatasetsClient
from agent.api.models import Dialect, Role, SnapshotStatus
from agent.api.settings import ClientSettings
from agent.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
)

FAST: dict[str, Any] = {
    "timeout": 10.0,
    "backoff_base": 0.01,
    "backoff_cap": 2.0,
    "requests_per_second": 500,
    "burst": 100,
}


def settings_for(emu: Any, user: str = "alice", **overrides: Any) -> ClientSettings:
    values: dict[str, Any] = {"url": emu.url, "api_key": emu.keys[user], **FAST, **overrides}
    return ClientSettings(**values)


@pytest.fixture(params=["seed", "domino"])
async def emu(request: pytest.FixtureRequest, emulator_factory: Any) -> Any:
    """The emulator (users alice, bob, carol) in each dialect."""
    return await emulator_factory(dialect=Dialect(request.param))


async def test_every_endpoint_round_trips(emu: Any) -> None:
    """Create, list, find, get, update, snapshot, tag, grant and delete: the same calls work in both dialects."""
    async with DatasetsClient(settings_for(emu)) as client:
        assert await client.dialect() is emu.dialect
        ds = await client.create_dataset("training-data", "project-1", "first")
        assert (ds.name, ds.project_id, ds.description) == ("training-data", "project-1", "first")
        assert [d.id for d in (await client.list_datasets("project-1")).items] == [ds.id]
        assert (await client.find_dataset("training-data", "project-1")).id == ds.id
        assert (await client.get_dataset(ds.id)).name == "training-data"
        renamed = await client.update_dataset(ds.id, name="training", description="second")
        assert (renamed.name, renamed.description) == ("training", "second")

        first = await client.create_snapshot(ds.id, tag="v1")
        assert first.tags == ("v1",) and first.dataset_id == ds.id
        assert first.status in (SnapshotStatus.ACTIVE, SnapshotStatus.PENDING)
        second = await client.create_snapshot(ds.id)
        assert second.tags == () and second.id != first.id
        got = await client.get_snapshot(first.id)
        assert (got.id, got.tags) == (first.id, ("v1",))

        await client.add_tag(ds.id, second.id, "latest")
        await client.add_tag(ds.id, second.id, "latest")  # idempotent
        tags = {s.id: s.tags async for s in client.iter_snapshots(ds.id, page_size=1)}
        assert tags == {first.id: ("v1",), second.id: ("latest",)}
        assert dict((await client.get_dataset(ds.id)).tags) == {"v1": first.id, "latest": second.id}
        await client.remove_tag(ds.id, "v1")
        assert (await client.get_snapshot(first.id)).tags == ()

        await client.add_grant(ds.id, "bob", Role.READ)
        grants = {g.principal_id: g.role for g in await client.list_grants(ds.id)}
        assert grants == {"alice": Role.ADMIN, "bob": Role.READ}
        await client.remove_grant(ds.id, "bob")
        assert [g.principal_id for g in await client.list_grants(ds.id)] == ["alice"]

        await client.delete_dataset(ds.id)
        with pytest.raises(NotFoundError):
            await client.get_dataset(ds.id)


async def test_paging_over_the_socket(emu: Any) -> None:
    """iter_datasets walks real pages; list_datasets honours offset and limit."""
    async with DatasetsClient(settings_for(emu)) as client:
        made = [(await client.create_dataset(f"data-{i}", "project-p")).id for i in range(5)]
        await client.create_dataset("elsewhere", "project-q")
        assert sorted([d.id async for d in client.iter_datasets("project-p", page_size=2)]) == sorted(made)
        page = await client.list_datasets("project-p", offset=2, limit=2)
        assert len(page.items) == 2 and page.total_count == 5
        assert len([d async for d in client.iter_datasets(page_size=4)]) == 6


async def test_errors_over_the_socket(emu: Any) -> None:
    """Unknown key, missing grant, duplicate name and a bad name map to their error classes."""
    async with DatasetsClient(settings_for(emu)) as alice:
        ds = await alice.create_dataset("shared", "project-1")
        with pytest.raises(ConflictError, match="shared"):
            await alice.create_dataset("shared", "project-1")
        with pytest.raises(BadRequestError):
            await alice.create_dataset("bad/name", "project-1")
        with pytest.raises(NotFoundError):
            await alice.get_snapshot("snapshot-missing")
        async with DatasetsClient(settings_for(emu, "bob")) as bob:
            with pytest.raises(PermissionDeniedError, match="bob"):
                await bob.get_dataset(ds.id)
            await alice.add_grant(ds.id, "bob", Role.READ)
            assert (await bob.get_dataset(ds.id)).id == ds.id
            with pytest.raises(PermissionDeniedError):
                await bob.create_snapshot(ds.id, "nope")
    async with DatasetsClient(settings_for(emu, api_key="key-nobody")) as stranger:
        with pytest.raises(AuthenticationError, match="HTTP 401"):
            await stranger.get_dataset(ds.id)


async def test_proxy_token_renewed_against_emulator(emu: Any, token_proxy: Any) -> None:
    """An expired proxy token gets a 401 from the server; the client fetches a fresh one and succeeds."""
    token_proxy.tokens = ["key-expired-0001", emu.keys["alice"]]
    async with DatasetsClient(settings_for(emu, api_key=None, api_proxy=token_proxy.url)) as client:
        assert (await client.create_dataset("via-proxy", "project-1")).name == "via-proxy"
    assert token_proxy.fetches == 2


async def test_token_file_against_emulator(emu: Any, tmp_path: Path) -> None:
    """A token file is sent as Bearer; rotating it to another user's token changes who the server sees."""
    token_file = tmp_path / "token"
    token_file.write_text(emu.keys["alice"])
    async with DatasetsClient(settings_for(emu, api_key=None, token_file=token_file)) as client:
        ds = await client.create_dataset("by-file", "project-1")
        token_file.write_text(emu.keys["carol"] + "\n")
        with pytest.raises(PermissionDeniedError, match="carol"):
            await client.get_dataset(ds.id)


async def test_retries_ride_out_injected_failures(emulator_factory: Any) -> None:
    """With a third of the answers 500/503 (503 with Retry-After: 1), safe calls still succeed; a failed creating
    POST is the caller's to redo."""
    emu = await emulator_factory(fail_rate=0.3)
    async with DatasetsClient(settings_for(emu, max_attempts=20, backoff_cap=1.5)) as client:
        ds = None
        for _ in range(30):  # creation is not retried by the client: here the caller looks, then tries again
            try:
                ds = await client.create_dataset("flaky", "project-1")
                break
            except ServerError:
                continue
            except ConflictError:  # an earlier attempt did land
                ds = await client.find_dataset("flaky", "project-1")
                break
        assert ds is not None
        for _ in range(8):
            assert (await client.get_dataset(ds.id)).id == ds.id
    stats = emu.stats()
    assert stats["by_status"].get("200", 0) >= 8


async def test_creating_post_not_repeated_on_server_error(emulator_factory: Any) -> None:
    """Against a server failing everything, POST datasets is sent exactly once while a GET is retried."""
    emu = await emulator_factory(fail_rate=1.0)
    async with DatasetsClient(settings_for(emu, dialect="seed", max_attempts=3, backoff_cap=1.5)) as client:
        with pytest.raises(ServerError):
            await client.create_dataset("never", "project-1")
        with pytest.raises(ServerError):
            await client.get_dataset("dataset-x")
    routes = emu.stats()["by_route"]
    assert routes["POST /api/datasetrw/v1/datasets"] == 1
    assert routes["GET /api/datasetrw/v1/datasets/{datasetId}"] == 3


async def test_429_and_retry_after_from_the_server(emulator_factory: Any) -> None:
    """A server rate limit answers 429 with Retry-After; the client pauses, retries, and every call succeeds."""
    emu = await emulator_factory(rate_limit=5)
    async with DatasetsClient(settings_for(emu)) as client:
        ds = await client.create_dataset("busy", "project-1")
        for _ in range(8):
            assert (await client.get_dataset(ds.id)).id == ds.id
    assert emu.stats()["responses_429"] >= 1


async def test_token_bucket_keeps_under_the_server_limit(emulator_factory: Any) -> None:
    """A client bucket slower than the server's limit never gets a 429."""
    emu = await emulator_factory(rate_limit=20, dialect=Dialect.DOMINO)
    started = time.monotonic()
    async with DatasetsClient(settings_for(emu, requests_per_second=10, burst=2)) as client:
        ds = await client.create_dataset("steady", "project-1")
        for _ in range(9):
            await client.get_dataset(ds.id)
    assert emu.stats()["responses_429"] == 0
    assert time.monotonic() - started >= 0.7  # 10 requests, 2 at once then 10 per second
