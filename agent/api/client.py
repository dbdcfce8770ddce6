"""The async Datasets API client: one aiohttp session, both dialects, typed results and typed errors.

    async with DatasetsClient(ClientSettings(url=..., api_key=...)) as client:
        dataset = await client.find_dataset("training-data", "project-456")
        snapshot = await client.create_snapshot(dataset.id, tag="drop-20261125")

This module holds the endpoints and the dialect logic; `agent.api.transport` carries the calls out. Every call
goes through one `RequestLimiter` (token bucket + concurrency cap, paused for everyone by a 429), has a
per-request timeout, and is retried with exponential backoff and jitter (`agent.backoff`) when that is safe.
Which calls are repeated, and why:

- Connection errors, timeouts and 408/429/500/502/503/504 are retried for calls that are safe to repeat:
  GET, PATCH and DELETE (their effect is the same however often they land), `POST .../tags` (pointing a tag
  at the same snapshot again changes nothing) and `POST .../grants` (adding a grant that exists changes
  nothing).
- `POST /datasets` and `POST .../snapshots` are NOT repeated after a timeout, a dropped connection or a 5xx:
  the first request may have been carried out before the answer was lost, and a repeat would create a second
  dataset (or a 409) or a second, untagged snapshot that counts against Domino's limit of 20. They are
  repeated only when the server certainly did nothing: a 429 (refused before any work), or
  `aiohttp.ClientConnectorError` (the connection was never made, so the request was never sent). Anything
  else is raised to the caller (the agent's durable queue), which can look before it tries again.
- A 401 is retried once, immediately, when the credential can be renewed (a new proxy token, a rotated token
  file): the server did nothing with the rejected request.
- `Retry-After` (seconds or HTTP-date) is a floor for the next delay; a 429 also pauses the shared limiter
  until then. When the server asks for longer than `backoff_cap`, the error is raised at once (it carries
  `retry_after`) so the caller can park the work instead of holding a connection slot.

In the domino dialect a tagged snapshot takes two calls (create, then tag). If the tag call fails for good, the
error is raised and `api.snapshot_untagged` is logged with the snapshot id; the snapshot exists, untagged.

Errors are `agent.errors.ApiError` subclasses whose messages name the method, the path and what the server
said; keys and tokens never appear in them (they are registered with the log scrubber and redacted).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

from agent.api import dialects
from agent.api.limiter import RequestLimiter
from agent.api.models import Dataset, Dialect, Grant, Page, Role, Snapshot
from agent.api.settings import ClientSettings
from agent.api.transport import Observer, Transport
from agent.errors import ApiError, ConflictError, NotFoundError, PermissionDeniedError, ProtocolError
from agent.logs import get_logger

__all__ = ["ClientSettings", "DatasetsClient", "Observer"]

log = get_logger("agent.api.client")

T = TypeVar("T")

V2_DATASETS = "/api/datasetrw/v2/datasets"
DATASETS = "/api/datasetrw/v1/datasets"
DATASET = "/api/datasetrw/v1/datasets/{datasetId}"
SNAPSHOTS = DATASET + "/snapshots"
SNAPSHOT = "/api/datasetrw/v1/snapshots/{snapshotId}"
TAGS = DATASET + "/tags"
TAG = TAGS + "/{tagName}"
GRANTS = DATASET + "/grants"


async def paged(
    fetch: Callable[[int, int], Awaitable[Page[T]]], offset: int = 0, page_size: int = 50, limit: int | None = None
) -> AsyncIterator[T]:
    """The items from `offset` on (at most `limit`; None: all), fetched `page_size` at a time by
    `fetch(offset, size)` until the server says it was the last page."""
    at: int | None = offset
    given = 0
    while at is not None and (limit is None or given < limit):
        size = page_size if limit is None else min(page_size, limit - given)
        page = await fetch(at, size)
        for item in page.items[: None if limit is None else limit - given]:
            yield item
            given += 1
        at = dialects.next_offset(page, at, size)


class DatasetsClient:
    """Implements `agent.api.protocol.DatasetsApi` over HTTP. Use as an async context manager.

    `observer(method, route_template, outcome, seconds)` is called after every HTTP attempt, with outcome
    "ok", the status code ("429", "500", ...) or "network". `wall_clock` (epoch seconds) reads HTTP-date
    `Retry-After` headers; tests may replace it.
    """

    def __init__(
        self,
        settings: ClientSettings,
        observer: Observer | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._transport = Transport(settings, observer, wall_clock)
        self._dialect: Dialect | None = None if settings.dialect == "auto" else Dialect(settings.dialect)

    def __repr__(self) -> str:
        known = self._dialect.value if self._dialect else "unknown"
        kind = self._transport.credentials.kind
        return f"DatasetsClient(url={self._transport.base!r}, dialect={known!r}, credential={kind!r})"

    @property
    def limiter(self) -> RequestLimiter:
        """The token bucket, pause and concurrency cap every call of this client goes through."""
        return self._transport.limiter

    @property
    def known_dialect(self) -> Dialect | None:
        """The dialect if configured or already detected, without asking the server."""
        return self._dialect

    async def __aenter__(self) -> DatasetsClient:
        await self._transport.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.close()

    # --- datasets --------------------------------------------------------------------------------------------

    async def dialect(self) -> Dialect:
        """The server's dialect: configured, detected from an earlier answer, or asked with one cheap call."""
        if self._dialect is None:
            await self._call("GET", V2_DATASETS, params=dialects.page_params(0, 1))
            if self._dialect is None:
                raise ProtocolError(
                    "GET", V2_DATASETS, 200, "cannot tell the API's dialect from its answer: set dialect seed or domino"
                )
        return self._dialect

    async def list_datasets(self, project_id: str | None = None, offset: int = 0, limit: int = 50) -> Page[Dataset]:
        dialect = await self.dialect() if project_id else (self._dialect or Dialect.SEED)
        params = dialects.list_datasets_params(dialect, project_id, offset, limit)
        body = await self._call("GET", V2_DATASETS, params=params)
        return _parse("GET", V2_DATASETS, dialects.parse_dataset_page, body, offset, limit)

    async def iter_datasets(self, project_id: str | None = None, page_size: int = 50) -> AsyncIterator[Dataset]:
        """Every dataset (of `project_id`, when given), page by page."""
        async for dataset in paged(lambda at, size: self.list_datasets(project_id, at, size), page_size=page_size):
            yield dataset

    async def find_dataset(self, name: str, project_id: str | None = None) -> Dataset:
        """The dataset called `name` (in `project_id`, when given); NotFoundError when there is none."""
        found: list[Dataset] = []
        async for dataset in self.iter_datasets(project_id):
            if dataset.name == name and (not project_id or dataset.project_id in (None, project_id)):
                found.append(dataset)
        where = f" in project {project_id!r}" if project_id else ""
        if not found:
            raise NotFoundError("GET", V2_DATASETS, None, f"no dataset named {name!r}{where}")
        if len(found) > 1:
            projects = ", ".join(sorted({d.project_id or "?" for d in found}))
            raise ConflictError(
                "GET",
                V2_DATASETS,
                None,
                f"{len(found)} datasets named {name!r} (projects {projects}): name the project",
            )
        return found[0]

    async def create_dataset(self, name: str, project_id: str | None, description: str = "") -> Dataset:
        body = dialects.create_dataset_body(name, project_id, description)
        answer = await self._call("POST", DATASETS, json_body=body, safe=False)
        return _parse("POST", DATASETS, dialects.parse_dataset, answer)

    async def get_dataset(self, dataset_id: str) -> Dataset:
        path = _path(DATASET, datasetId=dataset_id)
        answer = await self._call("GET", DATASET, path)
        return _parse("GET", path, dialects.parse_dataset, answer)

    async def update_dataset(self, dataset_id: str, name: str | None = None, description: str | None = None) -> Dataset:
        body = dialects.update_dataset_body(name, description)
        if not body:
            return await self.get_dataset(dataset_id)
        path = _path(DATASET, datasetId=dataset_id)
        answer = await self._call("PATCH", DATASET, path, json_body=body)
        return _parse("PATCH", path, dialects.parse_dataset, answer)

    async def delete_dataset(self, dataset_id: str) -> None:
        await self._call("DELETE", DATASET, _path(DATASET, datasetId=dataset_id))

    # --- snapshots -------------------------------------------------------------------------------------------

    async def list_snapshots(self, dataset_id: str, offset: int = 0, limit: int = 50) -> Page[Snapshot]:
        """A page of the dataset's snapshots. In the domino dialect tags live on the dataset, so one more call
        fetches them to fill `Snapshot.tags`."""
        path = _path(SNAPSHOTS, datasetId=dataset_id)
        params = dialects.page_params(offset, limit)
        answer = await self._call("GET", SNAPSHOTS, path, params=params)
        page = _parse("GET", path, dialects.parse_snapshot_page, answer, offset, limit)
        if page.items and self._dialect is Dialect.DOMINO:
            tags = await self._dataset_tags(dataset_id)
            if tags:
                page = _parse("GET", path, dialects.parse_snapshot_page, answer, offset, limit, tags)
        return page

    async def iter_snapshots(self, dataset_id: str, page_size: int = 50) -> AsyncIterator[Snapshot]:
        async for snapshot in paged(lambda at, size: self.list_snapshots(dataset_id, at, size), page_size=page_size):
            yield snapshot

    async def create_snapshot(self, dataset_id: str, tag: str | None = None) -> Snapshot:
        """Snapshot the dataset, tagged `tag` when given (seed: in the same call; domino: a second call)."""
        dialect = await self.dialect()
        path = _path(SNAPSHOTS, datasetId=dataset_id)
        body = dialects.create_snapshot_body(dialect, tag)
        answer = await self._call("POST", SNAPSHOTS, path, json_body=body, safe=False)
        snapshot = _parse("POST", path, dialects.parse_snapshot, answer)
        if dialect is Dialect.DOMINO and tag:
            try:
                tagged = await self._add_tag(dataset_id, snapshot.id, tag)
            except ApiError as exc:
                log.warning("api.snapshot_untagged", dataset=dataset_id, snapshot=snapshot.id, tag=tag, error=exc)
                raise
            tags = tagged.tags if tagged is not None else {tag: snapshot.id}
            snapshot = _parse("POST", path, dialects.parse_snapshot, answer, {**tags, tag: snapshot.id})
        return snapshot

    async def get_snapshot(self, snapshot_id: str, *, with_tags: bool = True) -> Snapshot:
        """One snapshot. In the domino dialect `with_tags` costs one more call (tags live on the dataset)."""
        path = _path(SNAPSHOT, snapshotId=snapshot_id)
        answer = await self._call("GET", SNAPSHOT, path)
        snapshot = _parse("GET", path, dialects.parse_snapshot, answer)
        if with_tags and self._dialect is Dialect.DOMINO:
            tags = await self._dataset_tags(snapshot.dataset_id)
            if tags:
                snapshot = _parse("GET", path, dialects.parse_snapshot, answer, tags)
        return snapshot

    async def _dataset_tags(self, dataset_id: str) -> Mapping[str, str]:
        try:
            return (await self.get_dataset(dataset_id)).tags
        except (NotFoundError, PermissionDeniedError):
            return {}

    # --- tags ------------------------------------------------------------------------------------------------

    async def add_tag(self, dataset_id: str, snapshot_id: str, tag: str) -> None:
        """Point `tag` at `snapshot_id` (moving it if it pointed elsewhere)."""
        await self._add_tag(dataset_id, snapshot_id, tag)

    async def _add_tag(self, dataset_id: str, snapshot_id: str, tag: str) -> Dataset | None:
        path = _path(TAGS, datasetId=dataset_id)
        body = dialects.tag_body(snapshot_id, tag)
        answer = await self._call("POST", TAGS, path, json_body=body)
        if isinstance(answer, Mapping) and isinstance(answer.get("dataset"), Mapping):
            return _parse("POST", path, dialects.parse_dataset, answer)
        return None

    async def remove_tag(self, dataset_id: str, tag: str) -> None:
        path = _path(TAG, datasetId=dataset_id, tagName=tag)
        await self._call("DELETE", TAG, path)

    # --- grants ----------------------------------------------------------------------------------------------

    async def list_grants(self, dataset_id: str) -> list[Grant]:
        path = _path(GRANTS, datasetId=dataset_id)
        answer = await self._call("GET", GRANTS, path)
        return _parse("GET", path, dialects.parse_grants, answer)

    async def add_grant(self, dataset_id: str, principal_id: str, role: Role, principal_type: str = "user") -> None:
        dialect = await self.dialect()
        path = _path(GRANTS, datasetId=dataset_id)
        body = dialects.grant_body(dialect, principal_id, role, principal_type)
        await self._call("POST", GRANTS, path, json_body=body)

    async def remove_grant(self, dataset_id: str, principal_id: str, principal_type: str = "user") -> None:
        """Remove the principal's grant. Domino's body names the role too, so it is looked up first."""
        dialect = await self.dialect()
        role: Role | None = None
        if dialect is Dialect.DOMINO:
            for grant in await self.list_grants(dataset_id):
                if grant.principal_id == principal_id:
                    role = grant.role
                    break
        path = _path(GRANTS, datasetId=dataset_id)
        body = dialects.grant_removal_body(dialect, principal_id, principal_type, role)
        await self._call("DELETE", GRANTS, path, json_body=body)

    # --- transport -------------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        route: str,
        path: str | None = None,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        safe: bool = True,
    ) -> Any:
        """One call through the transport; the first answer whose shape says so fixes the dialect."""
        body = await self._transport.call(method, route, path or route, params=params, json_body=json_body, safe=safe)
        if self._dialect is None and body is not None:
            found = dialects.detect(body)
            if found is not None:
                self._dialect = found
                log.info("api.dialect_detected", dialect=found.value)
        return body


def _path(route: str, **ids: str) -> str:
    return route.format(**{key: quote(value, safe="") for key, value in ids.items()})


def _parse(method: str, path: str, parse: Callable[..., T], *args: Any) -> T:
    try:
        return parse(*args)
    except dialects.ShapeError as exc:
        raise ProtocolError(method, path, None, f"unexpected answer: {exc}") from None
