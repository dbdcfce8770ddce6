"""Wire shapes of both dialects, and error bodies. Pure: records in, JSON-ready dicts out.

seed:   flat objects; lists as {"data": [...], "offset", "limit", "totalCount"}; errors as
        {"error": {"code": "not_found", "message": "..."}}.
domino: Domino Public API 6.2 envelopes ({"dataset": {...}, "metadata": {"requestId", "notices"}}); paginated
        metadata carries both the nested `pagination` object PaginatedMetadataV1 requires and flat
        offset/limit/totalCount; errors as {"errors": [...], "requestId"} for 401/403 (FailureEnvelopeV1) and
        {"error": "..."} for the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from agent.api.models import Dialect
from agent.emulator.store import DatasetRecord, GrantRecord, SnapshotRecord
from agent.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
)

Json = dict[str, Any]

SEED_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def problem(status: int, message: str, retry_after: float | None = None) -> ApiError:
    """The errors.py exception that the emulator answers as `status` with `message`."""
    if status == 429:
        return RateLimitedError("", "", status, message, retry_after=retry_after)
    if status >= 500:
        return ServerError("", "", status, message, retry_after=retry_after)
    kinds: dict[int, type[ApiError]] = {
        401: AuthenticationError,
        403: PermissionDeniedError,
        404: NotFoundError,
        409: ConflictError,
    }
    return kinds.get(status, BadRequestError)("", "", status, message)


def error_body(dialect: Dialect, status: int, message: str, request_id: str) -> Json:
    if dialect == Dialect.DOMINO:
        if status in (401, 403):
            return {"errors": [message], "requestId": request_id}
        return {"error": message}
    code = SEED_CODES.get(status, "server_error" if status >= 500 else "bad_request")
    return {"error": {"code": code, "message": message}}


def metadata(request_id: str) -> Json:
    return {"requestId": request_id, "notices": []}


def paginated_metadata(request_id: str, offset: int, limit: int, total: int) -> Json:
    page = {"offset": offset, "limit": limit, "totalCount": total}
    return {**metadata(request_id), "pagination": page, **page}


# datasets ----------------------------------------------------------------------------------------------------


def dataset_object(dialect: Dialect, ds: DatasetRecord) -> Json:
    body: Json = {
        "id": ds.id,
        "name": ds.name,
        "description": ds.description,
        "projectId": ds.project_id,
        "createdAt": ds.created_at,
    }
    if dialect == Dialect.SEED:
        body["sizeBytes"] = ds.size_bytes if ds.size_bytes is not None else 0
    body["snapshotIds"] = list(ds.snapshot_ids)
    body["tags"] = dict(ds.tags)
    return body


def dataset_single(dialect: Dialect, ds: DatasetRecord, request_id: str) -> Json:
    if dialect == Dialect.SEED:
        return dataset_object(dialect, ds)
    return {"dataset": dataset_object(dialect, ds), "metadata": metadata(request_id)}


def dataset_page(
    dialect: Dialect,
    version: int,
    datasets: Sequence[DatasetRecord],
    page: tuple[int, int, int],
    request_id: str,
    include_project_info: bool = False,
) -> Json:
    """A page of datasets; `page` is (offset, limit, totalCount). v2 domino items are DatasetRwInfoDtoV1."""
    offset, limit, total = page
    if dialect == Dialect.SEED:
        return {
            "data": [dataset_object(dialect, ds) for ds in datasets],
            "offset": offset,
            "limit": limit,
            "totalCount": total,
        }
    items: list[Json]
    if version == 1:
        items = [dataset_object(dialect, ds) for ds in datasets]
    else:
        items = []
        for ds in datasets:
            item: Json = {"dataset": dataset_object(dialect, ds)}
            if include_project_info:
                item["projectInfo"] = {
                    "projectId": ds.project_id,
                    "projectName": ds.project_id,
                    "projectOwnerUsername": ds.creator_id,
                }
            items.append(item)
    return {"datasets": items, "metadata": paginated_metadata(request_id, offset, limit, total)}


# snapshots ---------------------------------------------------------------------------------------------------


def snapshot_object(dialect: Dialect, snap: SnapshotRecord) -> Json:
    body: Json = {
        "id": snap.id,
        "datasetId": snap.dataset_id,
        "createdAt": snap.created_at,
        "status": snap.status,
        "creatorId": snap.creator_id,
    }
    if dialect == Dialect.SEED:
        body["tags"] = list(snap.tags)
    return body


def snapshot_single(dialect: Dialect, snap: SnapshotRecord, request_id: str) -> Json:
    if dialect == Dialect.SEED:
        return snapshot_object(dialect, snap)
    return {"snapshot": snapshot_object(dialect, snap), "metadata": metadata(request_id)}


def snapshot_page(
    dialect: Dialect, snaps: Sequence[SnapshotRecord], page: tuple[int, int, int], request_id: str
) -> Json:
    offset, limit, total = page
    items = [snapshot_object(dialect, snap) for snap in snaps]
    if dialect == Dialect.SEED:
        return {"data": items, "offset": offset, "limit": limit, "totalCount": total}
    return {"snapshots": items, "metadata": paginated_metadata(request_id, offset, limit, total)}


# tags --------------------------------------------------------------------------------------------------------


def tag_added(dialect: Dialect, ds: DatasetRecord, tag: str, request_id: str) -> Json:
    if dialect == Dialect.SEED:
        return {"datasetId": ds.id, "snapshotId": ds.tags[tag], "tagName": tag}
    return dataset_single(dialect, ds, request_id)


# grants ------------------------------------------------------------------------------------------------------


def grant_object(dialect: Dialect, grant: GrantRecord) -> Json:
    if dialect == Dialect.SEED:
        return {
            "principalType": grant.principal_type,
            "principalId": grant.principal_id,
            "permission": grant.role.value,
        }
    return {"targetId": grant.principal_id, "targetRole": grant.role.domino_name}


def grant_list(dialect: Dialect, grants: Iterable[GrantRecord], request_id: str) -> Json:
    if dialect == Dialect.SEED:
        return {"data": [grant_object(dialect, grant) for grant in grants]}
    details = [
        {
            "targetId": grant.principal_id,
            "targetName": grant.principal_id,
            "targetRole": grant.role.domino_name,
            "isOrganization": grant.principal_type == "organization",
        }
        for grant in grants
    ]
    return {"grantDetails": details, "metadata": metadata(request_id)}


def grant_changed(dialect: Dialect, grant: GrantRecord, grants: Iterable[GrantRecord], request_id: str) -> Json:
    """Answer to adding a grant: the grant (seed) or every grant of the dataset (DatasetRwGrantEnvelopeV1)."""
    if dialect == Dialect.SEED:
        return grant_object(dialect, grant)
    return grant_envelope(grants, request_id)


def grant_envelope(grants: Iterable[GrantRecord], request_id: str) -> Json:
    return {"grants": [grant_object(Dialect.DOMINO, g) for g in grants], "metadata": metadata(request_id)}
