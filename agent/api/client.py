"""The async Datasets API client: one aiohttp session, both dialects, typed results and typed errors.

    async with DatasetsClient(ClientSettings(url=..., api_key=...)) as client:
        dataset = await client.find_dataset("training-data", "project-456")
        snapshot = await client.create_snapshot(dataset.id, tag="drop-20261125")

Every call goes through one `RequestLimiter` (token bucket + concurrency cap, paused for everyone by a 429),
has a per-request timeout, and is retried with exponential backoff and jitter (`agent.backoff`) when that is
safe. Which calls are repeated, and why:

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

Errors are `agent.errors.ApiError` subclasses whose messages name the method, the path and what the server
said; keys and tokens never appear in them (they are registered with the log scrubber and redacted).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from yarl import URL

from agent import __version__
from agent.api import dialects
from agent.api.auth import Credentials, credentials_for
from agent.api.limiter import RequestLimiter
from agent.api.models import Dataset, Dialect, Grant, Page, Role, Snapshot
from agent.api.settings import ClientSettings
from agent.backoff import backoff_delay, parse_retry_after
from agent.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    ServerError,
)
from agent.logs import get_logger, redact

__all__ = ["ClientSettings", "DatasetsClient", "Observer"]

log = get_logger("agent.api.client")

T = TypeVar("T")
Observer = Callable[[str, str, str, float], None]

V2_DATASETS = "/api/datasetrw/v2/datasets"
DATASETS = "/api/datasetrw/v1/datasets"
DATASET = "/api/datasetrw/v1/datasets/{datasetId}"
SNAPSHOTS = DATASET + "/snapshots"
SNAPSHOT = "/api/datasetrw/v1/snapshots/{snapshotId}"
TAGS = DATASET + "/tags"
TAG = TAGS + "/{tagName}"
GRANTS = DATASET + "/grants"

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


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
        self._observer = observer
        self._wall_clock = wall_clock
        self._base = str(URL(settings.url))
        self._dialect: Dialect | None = None if settings.dialect == "auto" else Dialect(settings.dialect)
        self._credentials: Credentials = credentials_for(settings)
        self._limiter = RequestLimiter(settings.requests_per_second, settings.burst, settings.max_concurrency)
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        known = self._dialect.value if self._dialect else "unknown"
        return f"DatasetsClient(url={self._base!r}, dialect={known!r}, credential={self._credentials.kind!r})"

    @property
    def limiter(self) -> RequestLimiter:
        return self._limiter

    @property
    def known_dialect(self) -> Dialect | None:
        """The dialect if configured or already detected, without asking the server."""
        return self._dialect

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def __aenter__(self) -> DatasetsClient:
        if self._session is not None:
            raise RuntimeError("DatasetsClient is already open")
        connector = aiohttp.TCPConnector(ssl=_ssl_context(self.settings), limit=self.settings.max_concurrency + 2)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"User-Agent": f"domino-sync/{__version__}", "Accept": "application/json"},
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await asyncio.shield(session.close())

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
        offset: int | None = 0
        while offset is not None:
            page = await self.list_datasets(project_id, offset, page_size)
            for dataset in page.items:
                yield dataset
            offset = dialects.next_offset(page, offset, page_size)

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
        offset: int | None = 0
        while offset is not None:
            page = await self.list_snapshots(dataset_id, offset, page_size)
            for snapshot in page.items:
                yield snapshot
            offset = dialects.next_offset(page, offset, page_size)

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
        """Send one logical call (retrying as the module docstring says) and return its decoded JSON body
        (None for an empty answer). `safe` is False for POSTs that must not be repeated blindly."""
        session = self._session
        if session is None:
            raise RuntimeError("use `async with DatasetsClient(...)` before calling the API")
        path = path or route
        url = URL(self._base + path, encoded=True)
        loop = asyncio.get_running_loop()
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            auth = await self._credentials.headers(session)
            failure: BaseException | None = None
            sent = True
            status, text, reason, retry_header = 0, "", "", None
            async with self._limiter.slot():
                started = loop.time()
                try:
                    async with session.request(method, url, params=params, json=json_body, headers=auth) as resp:
                        raw = await resp.read()
                        status, reason = resp.status, resp.reason or ""
                        retry_header = resp.headers.get("Retry-After")
                        text = raw.decode("utf-8", errors="replace")
                except aiohttp.ClientConnectorError as exc:
                    failure, sent = exc, False
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failure = exc
                seconds = loop.time() - started
            outcome = "network" if failure is not None else ("ok" if 200 <= status < 300 else str(status))
            self._observe(method, route, outcome, seconds)
            log.debug("api.request", method=method, route=route, outcome=outcome, ms=round(seconds * 1000, 1))

            retry_after: float | None = None
            if failure is not None:
                error: ApiError = NetworkError(method, path, None, self._describe(failure))
                retry = (safe or not sent) and not isinstance(failure, aiohttp.ClientSSLError)
            elif 200 <= status < 300:
                return self._decode(method, path, status, text)
            else:
                if status == 401 and not renewed:
                    renewed = True
                    if await self._credentials.refresh(session, auth):
                        attempt -= 1
                        continue
                retry_after = parse_retry_after(retry_header, self._wall_clock())
                message = redact(dialects.error_message(text)) or reason or "no reason given"
                error = _error_for(method, path, status, message, retry_after)
                retry = status in RETRY_STATUSES and (safe or status == 429)
            delay = backoff_delay(
                attempt, base=self.settings.backoff_base, cap=self.settings.backoff_cap, retry_after=retry_after
            )
            if status == 429:
                self._limiter.pause(delay)
            if not retry or attempt >= self.settings.max_attempts:
                raise error
            if retry_after is not None and retry_after > self.settings.backoff_cap:
                raise error
            log.info("api.retry", method=method, route=route, outcome=outcome, attempt=attempt, delay=round(delay, 3))
            await asyncio.sleep(delay)

    def _decode(self, method: str, path: str, status: int, text: str) -> Any:
        if status == 204 or not text.strip():
            return None
        try:
            body = json.loads(text)
        except ValueError:
            shown = redact(" ".join(text.split()))[:80]
            raise ProtocolError(method, path, status, f"the answer is not JSON: {shown!r}") from None
        if self._dialect is None:
            found = dialects.detect(body)
            if found is not None:
                self._dialect = found
                log.info("api.dialect_detected", dialect=found.value)
        return body

    def _describe(self, failure: BaseException) -> str:
        if isinstance(failure, TimeoutError) and not str(failure):
            return f"no answer within {self.settings.timeout:g}s"
        detail = redact(str(failure))
        name = failure.__class__.__name__
        return f"{name}: {detail}" if detail else name

    def _observe(self, method: str, route: str, outcome: str, seconds: float) -> None:
        if self._observer is None:
            return
        try:
            self._observer(method, route, outcome, seconds)
        except Exception as exc:  # a broken metrics hook must not break API calls
            log.warning("api.observer_failed", error=exc)


def _error_for(method: str, path: str, status: int, message: str, retry_after: float | None) -> ApiError:
    if status in (400, 422):
        return BadRequestError(method, path, status, message)
    if status == 401:
        return AuthenticationError(method, path, status, message)
    if status == 403:
        return PermissionDeniedError(method, path, status, message)
    if status == 404:
        return NotFoundError(method, path, status, message)
    if status == 409:
        return ConflictError(method, path, status, message)
    if status == 429:
        return RateLimitedError(method, path, status, message, retry_after)
    if status >= 500:
        return ServerError(method, path, status, message, retry_after)
    if status == 408:
        return NetworkError(method, path, status, message)
    return ProtocolError(method, path, status, f"unexpected answer: {message}")


def _path(route: str, **ids: str) -> str:
    return route.format(**{key: quote(value, safe="") for key, value in ids.items()})


def _parse(method: str, path: str, parse: Callable[..., T], *args: Any) -> T:
    try:
        return parse(*args)
    except dialects.ShapeError as exc:
        raise ProtocolError(method, path, None, f"unexpected answer: {exc}") from None


def _ssl_context(settings: ClientSettings) -> ssl.SSLContext | bool:
    """Verification is always on; a CA bundle adds trusted roots (a private CA)."""
    if settings.ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(settings.ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "ca_bundle", str(settings.ca_bundle), f"a readable PEM file of CA certificates ({exc})"
        ) from None
