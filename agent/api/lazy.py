"""A DatasetsApi that opens its HTTP client at the first call.

A burst run (`domino-sync once`) over an unchanged tree with a known dataset has nothing to ask the API: with
this wrapper it never imports the HTTP stack (aiohttp, ssl and certificates: about 0.2 s and 10 MiB) nor
opens a connection. The first call opens a `DatasetsClient`; `aclose()` closes it when one was opened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio

from agent.api.models import Dataset, Dialect, Grant, Page, Role, Snapshot
from agent.api.settings import ClientSettings

if TYPE_CHECKING:
    from agent.api.client import DatasetsClient
    from agent.api.transport import Observer


class LazyClient:
    """Implements `agent.api.protocol.DatasetsApi` by handing every call to a DatasetsClient opened on demand."""

    def __init__(self, settings: ClientSettings, observer: Observer | None = None) -> None:
        self.settings = settings
        self._observer = observer
        self._client: DatasetsClient | None = None
        self._lock = anyio.Lock()

    @property
    def opened(self) -> bool:
        """A call was made (and the client is open until `aclose`)."""
        return self._client is not None

    async def client(self) -> DatasetsClient:
        """The open client (opened now if this is the first call)."""
        async with self._lock:
            if self._client is None:
                from agent.api.client import DatasetsClient

                client = DatasetsClient(self.settings, self._observer)
                await client.__aenter__()
                self._client = client
            return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def dialect(self) -> Dialect:
        return await (await self.client()).dialect()

    async def list_datasets(self, project_id: str | None = None, offset: int = 0, limit: int = 50) -> Page[Dataset]:
        return await (await self.client()).list_datasets(project_id, offset, limit)

    async def iter_datasets(self, project_id: str | None = None, page_size: int = 50) -> AsyncIterator[Dataset]:
        async for dataset in (await self.client()).iter_datasets(project_id, page_size):
            yield dataset

    async def create_dataset(self, name: str, project_id: str | None, description: str = "") -> Dataset:
        return await (await self.client()).create_dataset(name, project_id, description)

    async def get_dataset(self, dataset_id: str) -> Dataset:
        return await (await self.client()).get_dataset(dataset_id)

    async def find_dataset(self, name: str, project_id: str | None) -> Dataset:
        return await (await self.client()).find_dataset(name, project_id)

    async def update_dataset(self, dataset_id: str, name: str | None = None, description: str | None = None) -> Dataset:
        return await (await self.client()).update_dataset(dataset_id, name, description)

    async def delete_dataset(self, dataset_id: str) -> None:
        await (await self.client()).delete_dataset(dataset_id)

    async def list_snapshots(self, dataset_id: str, offset: int = 0, limit: int = 50) -> Page[Snapshot]:
        return await (await self.client()).list_snapshots(dataset_id, offset, limit)

    async def iter_snapshots(self, dataset_id: str, page_size: int = 50) -> AsyncIterator[Snapshot]:
        async for snapshot in (await self.client()).iter_snapshots(dataset_id, page_size):
            yield snapshot

    async def create_snapshot(self, dataset_id: str, tag: str | None = None) -> Snapshot:
        return await (await self.client()).create_snapshot(dataset_id, tag)

    async def get_snapshot(self, snapshot_id: str, *, with_tags: bool = True) -> Snapshot:
        return await (await self.client()).get_snapshot(snapshot_id, with_tags=with_tags)

    async def add_tag(self, dataset_id: str, snapshot_id: str, tag: str) -> None:
        await (await self.client()).add_tag(dataset_id, snapshot_id, tag)

    async def remove_tag(self, dataset_id: str, tag: str) -> None:
        await (await self.client()).remove_tag(dataset_id, tag)

    async def list_grants(self, dataset_id: str) -> list[Grant]:
        return await (await self.client()).list_grants(dataset_id)

    async def add_grant(self, dataset_id: str, principal_id: str, role: Role, principal_type: str = "user") -> None:
        await (await self.client()).add_grant(dataset_id, principal_id, role, principal_type)

    async def remove_grant(self, dataset_id: str, principal_id: str, principal_type: str = "user") -> None:
        await (await self.client()).remove_grant(dataset_id, principal_id, principal_type)
