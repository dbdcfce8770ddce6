"""Wire shapes: the seed's flat objects, and domino envelopes that validate against the reference OpenAPI schemas."""

from __future__ import annotations

from typing import Any

import pytest

from agent.api.models import Dialect, Role
from agent.emulator import shapes
from agent.emulator.store import DatasetRecord, GrantRecord, SnapshotRecord
from agent.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
)

DS = DatasetRecord(
    id="dataset-0123456789ab",
    name="training-data",
    description="Training dataset",
    project_id="project-456",
    created_at="2024-01-15T10:00:00.000Z",
    creator_id="alice",
    snapshot_ids=("snapshot-0123456789ab",),
    tags={"v1": "snapshot-0123456789ab"},
    size_bytes=1024,
)
SNAP = SnapshotRecord(
    id="snapshot-0123456789ab",
    dataset_id=DS.id,
    created_at="2024-01-15T10:00:01.000Z",
    creator_id="alice",
    tags=("v1",),
)
GRANTS = [GrantRecord("user", "alice", Role.ADMIN), GrantRecord("organization", "ml-team", Role.READ)]
RID = "bbd78579-93c4-45ee-a983-0d5c8da6d5b1"


def test_seed_dataset_is_flat_with_size() -> None:
    """A seed dataset has the documented fields, sizeBytes included, plus snapshotIds and the tag map."""
    body = shapes.dataset_single(Dialect.SEED, DS, RID)
    assert body == {
        "id": DS.id,
        "name": "training-data",
        "description": "Training dataset",
        "projectId": "project-456",
        "createdAt": "2024-01-15T10:00:00.000Z",
        "sizeBytes": 1024,
        "snapshotIds": [SNAP.id],
        "tags": {"v1": SNAP.id},
    }


def test_seed_pages_and_snapshots() -> None:
    """Seed lists are {data, offset, limit, totalCount}; a seed snapshot carries its tags and status."""
    page = shapes.dataset_page(Dialect.SEED, 2, [DS], (0, 50, 1), RID)
    assert set(page) == {"data", "offset", "limit", "totalCount"} and page["totalCount"] == 1
    snaps = shapes.snapshot_page(Dialect.SEED, [SNAP], (0, 50, 1), RID)
    assert snaps["data"][0] == {
        "id": SNAP.id,
        "datasetId": DS.id,
        "createdAt": SNAP.created_at,
        "status": "active",
        "creatorId": "alice",
        "tags": ["v1"],
    }


def test_seed_grants_and_tags() -> None:
    """Seed grants are {principalType, principalId, permission}; a tag answer names dataset, snapshot and tag."""
    assert shapes.grant_list(Dialect.SEED, GRANTS, RID)["data"][1] == {
        "principalType": "organization",
        "principalId": "ml-team",
        "permission": "read",
    }
    assert shapes.tag_added(Dialect.SEED, DS, "v1", RID) == {"datasetId": DS.id, "snapshotId": SNAP.id, "tagName": "v1"}


@pytest.mark.parametrize(
    ("schema", "build"),
    [
        ("DatasetRwEnvelopeV1", lambda: shapes.dataset_single(Dialect.DOMINO, DS, RID)),
        ("PaginatedDatasetRwEnvelopeV1", lambda: shapes.dataset_page(Dialect.DOMINO, 1, [DS], (0, 10, 1), RID)),
        ("PaginatedDatasetRwEnvelopeV2", lambda: shapes.dataset_page(Dialect.DOMINO, 2, [DS], (0, 10, 1), RID, True)),
        ("SnapshotEnvelopeV1", lambda: shapes.snapshot_single(Dialect.DOMINO, SNAP, RID)),
        ("PaginatedSnapshotEnvelopeV1", lambda: shapes.snapshot_page(Dialect.DOMINO, [SNAP], (5, 10, 6), RID)),
        ("DatasetRwGrantDetailsEnvelopeV1", lambda: shapes.grant_list(Dialect.DOMINO, GRANTS, RID)),
        ("DatasetRwGrantEnvelopeV1", lambda: shapes.grant_changed(Dialect.DOMINO, GRANTS[0], GRANTS, RID)),
        ("PaginatedMetadataV1", lambda: shapes.paginated_metadata(RID, 0, 10, 0)),
        ("FailureEnvelopeV1", lambda: shapes.error_body(Dialect.DOMINO, 401, "unknown API key", RID)),
    ],
)
def test_domino_shapes_validate_against_reference_schemas(openapi: Any, schema: str, build: Any) -> None:
    """Each domino envelope validates against the reference OpenAPI component schema of that name."""
    openapi.schema(schema, build())


def test_domino_dataset_has_tag_map_and_no_seed_fields() -> None:
    """A domino dataset carries snapshotIds and the tag -> snapshot map; its snapshots carry no tag list."""
    body = shapes.dataset_single(Dialect.DOMINO, DS, RID)["dataset"]
    assert body["tags"] == {"v1": SNAP.id} and body["snapshotIds"] == [SNAP.id]
    assert "sizeBytes" not in body
    assert "tags" not in shapes.snapshot_single(Dialect.DOMINO, SNAP, RID)["snapshot"]


def test_paginated_metadata_is_nested_and_flat() -> None:
    """Paginated metadata carries the pagination object and the same figures flat."""
    meta = shapes.paginated_metadata(RID, 5, 10, 6)
    assert meta["pagination"] == {"offset": 5, "limit": 10, "totalCount": 6}
    assert (meta["offset"], meta["limit"], meta["totalCount"]) == (5, 10, 6)
    assert meta["requestId"] == RID and meta["notices"] == []


@pytest.mark.parametrize(
    ("status", "seed_code", "domino"),
    [
        (400, "bad_request", {"error": "m"}),
        (401, "unauthorized", {"errors": ["m"], "requestId": RID}),
        (403, "forbidden", {"errors": ["m"], "requestId": RID}),
        (404, "not_found", {"error": "m"}),
        (409, "conflict", {"error": "m"}),
        (429, "rate_limited", {"error": "m"}),
        (500, "internal_error", {"error": "m"}),
        (503, "unavailable", {"error": "m"}),
    ],
)
def test_error_bodies_per_dialect(status: int, seed_code: str, domino: dict[str, Any]) -> None:
    """Errors are {"error": {code, message}} in the seed dialect and errors/error bodies in the domino one."""
    assert shapes.error_body(Dialect.SEED, status, "m", RID) == {"error": {"code": seed_code, "message": "m"}}
    assert shapes.error_body(Dialect.DOMINO, status, "m", RID) == domino


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (429, RateLimitedError),
        (503, ServerError),
    ],
)
def test_problem_uses_the_shared_error_family(status: int, kind: type[Exception]) -> None:
    """problem() builds the errors.py exception for each status, carrying status and message."""
    exc = shapes.problem(status, "why")
    assert isinstance(exc, kind) and exc.status == status and exc.message == "why"


def test_schema_checker_is_not_vacuous(openapi: Any) -> None:
    """The reference checker rejects an envelope missing a required field, so passing checks mean something."""
    body = shapes.dataset_single(Dialect.DOMINO, DS, RID)
    del body["dataset"]["snapshotIds"]
    with pytest.raises(Exception, match="snapshotIds"):
        openapi.schema("DatasetRwEnvelopeV1", body)
