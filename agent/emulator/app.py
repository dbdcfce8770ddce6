"""The aiohttp application: routes, key authentication, and errors rendered in the dialect's shape.

Middlewares, outermost first: counting (stats), errors (ApiError and aiohttp's 404/405/413 become the
dialect's error body; anything unexpected is logged and answered 500 in the same shape), faults.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from contextvars import ContextVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from structlog.typing import FilteringBoundLogger

from agent.api.models import Dialect
from agent.emulator import shapes, validation
from agent.emulator.faults import Stats, counting_middleware, fault_middleware
from agent.emulator.operations import Operations
from agent.emulator.shapes import Json, problem
from agent.errors import ApiError, MountError, StateError
from agent.logs import get_logger

V1 = "/api/datasetrw/v1"
DATASET = V1 + "/datasets/{datasetId}"
REQUEST_ID: ContextVar[str] = ContextVar("emulator_request_id", default="")


def _log() -> FilteringBoundLogger:
    """The logger, fetched at use: a module-level bound logger would keep the configuration of import time."""
    return get_logger("agent.emulator")


def error_middleware(dialect: Dialect) -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        REQUEST_ID.set(request_id)  # each request runs in its own task, so its own context
        try:
            response = await handler(request)
        except ApiError as exc:
            wait = exc.retry_after
            headers = {"Retry-After": str(max(1, math.ceil(wait)))} if wait is not None else {}
            return error_response(dialect, exc.status or 500, exc.message, request_id, headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            messages = {
                404: f"no such endpoint: {request.method} {request.path[:200]}",
                405: f"method {request.method} is not allowed on {request.path[:200]}",
                413: "request body too large",
            }
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
            return error_response(dialect, exc.status, messages.get(exc.status, exc.reason), request_id, headers)
        except web.RequestPayloadError:  # a body that does not decode as its Content-Encoding says (gzip that is not)
            message = "the request body could not be read (a Content-Encoding it does not have?)"
            return error_response(dialect, 400, message, request_id)
        except (MountError, StateError) as exc:
            _log().error("emulator.failed", method=request.method, path=request.path, request_id=request_id, error=exc)
            return error_response(dialect, 500, f"emulator failure: {exc}", request_id)
        except Exception:
            _log().exception("emulator.unexpected", method=request.method, path=request.path, request_id=request_id)
            message = f"internal error in the emulator (request {request_id}; see its log)"
            return error_response(dialect, 500, message, request_id)
        response.headers["X-Request-Id"] = request_id
        return response

    return errors


def error_response(
    dialect: Dialect, status: int, message: str, request_id: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        shapes.error_body(dialect, status, message, request_id),
        status=status,
        headers={"X-Request-Id": request_id, **(headers or {})},
    )


class Api:
    """The Datasets API routes over one Operations, in one dialect, for the users in `keys` (key -> user)."""

    def __init__(self, ops: Operations, dialect: Dialect, keys: Mapping[str, str]) -> None:
        self._ops = ops
        self._dialect = dialect
        self._users = dict(keys)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(V1 + "/datasets", self.list_datasets_v1)
        r.add_get("/api/datasetrw/v2/datasets", self.list_datasets_v2)
        r.add_post(V1 + "/datasets", self.create_dataset)
        r.add_get(DATASET, self.get_dataset)
        r.add_patch(DATASET, self.update_dataset)
        r.add_delete(DATASET, self.delete_dataset)
        r.add_get(DATASET + "/snapshots", self.list_snapshots)
        r.add_post(DATASET + "/snapshots", self.create_snapshot)
        r.add_get(V1 + "/snapshots/{snapshotId}", self.get_snapshot)
        r.add_post(DATASET + "/tags", self.add_tag)
        r.add_delete(DATASET + "/tags/{tagName}", self.remove_tag)
        r.add_get(DATASET + "/grants", self.list_grants)
        r.add_post(DATASET + "/grants", self.add_grant)
        r.add_delete(DATASET + "/grants", self.remove_grant)

    # plumbing ------------------------------------------------------------------------------------------------

    def _user(self, request: web.Request) -> str:
        key = request.headers.get("X-Domino-Api-Key", "").strip()
        if not key:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        if not key:
            raise problem(401, "missing API key: send X-Domino-Api-Key: KEY or Authorization: Bearer KEY")
        user = self._users.get(key)
        if user is None:
            raise problem(401, "unknown API key")
        return user

    @staticmethod
    async def _body(request: web.Request) -> Json:
        return validation.parse_body(await request.read())

    @staticmethod
    def _json(body: Json, status: int = 200) -> web.Response:
        return web.json_response(body, status=status)

    @property
    def _created(self) -> int:
        return 201 if self._dialect == Dialect.SEED else 200

    @staticmethod
    def _rid(request: web.Request) -> str:
        return REQUEST_ID.get()

    @staticmethod
    def _dataset_id(request: web.Request) -> str:
        return validation.dataset_id(request.match_info["datasetId"])

    # datasets ------------------------------------------------------------------------------------------------

    async def list_datasets_v1(self, request: web.Request) -> web.Response:
        return await self._list_datasets(request, 1)

    async def list_datasets_v2(self, request: web.Request) -> web.Response:
        return await self._list_datasets(request, 2)

    async def _list_datasets(self, request: web.Request, version: int) -> web.Response:
        user = self._user(request)
        query = validation.dataset_query(request.query, version)
        found, total = await self._ops.list_datasets(user, query)
        page = (query.offset, query.limit, total)
        body = shapes.dataset_page(self._dialect, version, found, page, self._rid(request), query.include_project_info)
        return self._json(body)

    async def create_dataset(self, request: web.Request) -> web.Response:
        user = self._user(request)
        wanted = validation.new_dataset(self._dialect, await self._body(request))
        record = await self._ops.create_dataset(user, wanted)
        return self._json(shapes.dataset_single(self._dialect, record, self._rid(request)), self._created)

    async def get_dataset(self, request: web.Request) -> web.Response:
        user = self._user(request)
        record = await self._ops.get_dataset(user, self._dataset_id(request))
        return self._json(shapes.dataset_single(self._dialect, record, self._rid(request)))

    async def update_dataset(self, request: web.Request) -> web.Response:
        user = self._user(request)
        dataset_id = self._dataset_id(request)
        change = validation.dataset_change(await self._body(request))
        record = await self._ops.update_dataset(user, dataset_id, change)
        return self._json(shapes.dataset_single(self._dialect, record, self._rid(request)))

    async def delete_dataset(self, request: web.Request) -> web.Response:
        user = self._user(request)
        record = await self._ops.delete_dataset(user, self._dataset_id(request))
        if self._dialect == Dialect.SEED:
            return web.Response(status=204)
        return self._json(shapes.dataset_single(self._dialect, record, self._rid(request)))

    # snapshots -----------------------------------------------------------------------------------------------

    async def list_snapshots(self, request: web.Request) -> web.Response:
        user = self._user(request)
        dataset_id = self._dataset_id(request)
        offset, limit = validation.paging(request.query)
        found, total = await self._ops.list_snapshots(user, dataset_id, offset, limit)
        body = shapes.snapshot_page(self._dialect, found, (offset, limit, total), self._rid(request))
        return self._json(body)

    async def create_snapshot(self, request: web.Request) -> web.Response:
        user = self._user(request)
        dataset_id = self._dataset_id(request)
        wanted = validation.new_snapshot(self._dialect, await self._body(request))
        snap = await self._ops.create_snapshot(user, dataset_id, wanted)
        return self._json(shapes.snapshot_single(self._dialect, snap, self._rid(request)), self._created)

    async def get_snapshot(self, request: web.Request) -> web.Response:
        user = self._user(request)
        snap = await self._ops.get_snapshot(user, validation.snapshot_id(request.match_info["snapshotId"]))
        return self._json(shapes.snapshot_single(self._dialect, snap, self._rid(request)))

    # tags ----------------------------------------------------------------------------------------------------

    async def add_tag(self, request: web.Request) -> web.Response:
        user = self._user(request)
        dataset_id = self._dataset_id(request)
        wanted = validation.new_tag(await self._body(request))
        record = await self._ops.add_tag(user, dataset_id, wanted)
        body = shapes.tag_added(self._dialect, record, wanted.tag, self._rid(request))
        return self._json(body, self._created)

    async def remove_tag(self, request: web.Request) -> web.Response:
        user = self._user(request)
        dataset_id = self._dataset_id(request)
        tag = validation.tag_name(request.match_info["tagName"])
        record = await self._ops.remove_tag(user, dataset_id, tag)
        if self._dialect == Dialect.SEED:
            return web.Response(status=204)
        return self._json(shapes.dataset_single(self._dialect, record, self._rid(request)))

    # grants --------------------------------------------------------------------------------------------------

    async def list_grants(self, request: web.Request) -> web.Response:
        user = self._user(request)
        grants = await self._ops.list_grants(user, self._dataset_id(request))
        return self._json(shapes.grant_list(self._dialect, grants, self._rid(request)))

    async def add_grant(self, request: web.Request) -> web.Response:
        user = self._user(request)
        dataset_id = self._dataset_id(request)
        grant = validation.new_grant(self._dialect, await self._body(request))
        grants = await self._ops.add_grant(user, dataset_id, grant)
        body = shapes.grant_changed(self._dialect, grant, grants, self._rid(request))
        return self._json(body, self._created)

    async def remove_grant(self, request: web.Request) -> web.Response:
        user = self._user(request)
        dataset_id = self._dataset_id(request)
        target = validation.grant_target(self._dialect, await self._body(request))
        grants = await self._ops.remove_grant(user, dataset_id, target)
        if self._dialect == Dialect.SEED:
            return web.Response(status=204)
        return self._json(shapes.grant_envelope(grants, self._rid(request)))


def build_app(
    ops: Operations,
    dialect: Dialect,
    keys: Mapping[str, str],
    stats: Stats,
    fail_rate: float = 0.0,
    latency_ms: int = 0,
    rate_limit: float | None = None,
) -> web.Application:
    """The whole emulator application. `keys` maps API key -> user id."""
    app = web.Application(
        middlewares=[
            counting_middleware(stats),
            error_middleware(dialect),
            fault_middleware(stats, fail_rate, latency_ms, rate_limit),
        ]
    )
    Api(ops, dialect, keys).add_routes(app)

    async def get_stats(_: web.Request) -> web.Response:
        return web.json_response(stats.snapshot())

    async def reset_stats(_: web.Request) -> web.Response:
        stats.reset()
        return web.Response(status=204)

    app.router.add_get("/__emulator__/stats", get_stats)
    app.router.add_delete("/__emulator__/stats", reset_stats)
    return app
