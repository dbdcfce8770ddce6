"""Wire shapes of both dialects: request bodies, answers parsed into value objects, errors, paging, detection."""

from __future__ import annotations

from typing import Any

import pytest

from agent.api import dialects
from agent.api.dialects import ShapeError
from agent.api.models import Dataset, Dialect, Grant, Page, Role, Snapshot, SnapshotStatus

META = {"requestId": "r-1", "notices": []}
SEED_DS = {
    "id": "ds-1",
    "name": "training-data",
    "description": "Training dataset",
    "projectId": "p-1",
    "createdAt": "2024-01-15T10:00:00Z",
    "sizeBytes": 1073741824,
}
DOMINO_DS = {
    "id": "ds-1",
    "name": "training-data",
    "description": "Training dataset",
    "projectId": "p-1",
    "createdAt": "2024-01-15T10:00:00Z",
    "snapshotIds": ["s-1", "s-2"],
    "tags": {"latest": "s-2", "v1": "s-1"},
}


def test_seed_dataset_parses_flat_object() -> None:
    """A seed dataset is a flat object and every documented field lands in the value object."""
    ds = dialects.parse_dataset(SEED_DS)
    assert ds == Dataset("ds-1", "training-data", "Training dataset", "p-1", "2024-01-15T10:00:00Z", 1073741824)


def test_domino_dataset_unwraps_envelope_with_tags() -> None:
    """A domino dataset comes in a {dataset, metadata} envelope; snapshot ids and the tag map are kept."""
    ds = dialects.parse_dataset({"dataset": DOMINO_DS, "metadata": META})
    assert ds.id == "ds-1" and ds.size_bytes is None
    assert ds.snapshot_ids == ("s-1", "s-2")
    assert dict(ds.tags) == {"latest": "s-2", "v1": "s-1"}


def test_extra_fields_are_ignored() -> None:
    """Unknown fields in an answer do not matter."""
    assert dialects.parse_dataset({**SEED_DS, "owner": {"x": 1}, "future": [1]}).name == "training-data"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x"},
        {"id": "ds-1"},
        {"dataset": {"name": "x"}, "metadata": META},
        {"dataset": None, "metadata": META},
        [SEED_DS],
        "ds-1",
        {**SEED_DS, "sizeBytes": "big"},
        {**SEED_DS, "tags": "latest"},
    ],
)
def test_missing_or_mistyped_required_fields_raise(body: Any) -> None:
    """A dataset without id or name, or with a mistyped field, is a ShapeError."""
    with pytest.raises(ShapeError):
        dialects.parse_dataset(body)


def test_seed_dataset_page_reads_paging_fields() -> None:
    """A seed list is {data, offset, limit, totalCount}."""
    page = dialects.parse_dataset_page({"data": [SEED_DS], "offset": 5, "limit": 1, "totalCount": 9}, 0, 50)
    assert page == Page((dialects.parse_dataset(SEED_DS),), 5, 1, 9)


def test_domino_v2_page_unwraps_items_and_project_info() -> None:
    """A domino v2 list wraps each dataset with projectInfo; a missing projectId comes from projectInfo."""
    item = {"dataset": {**DOMINO_DS, "projectId": None}, "projectInfo": {"projectId": "p-9", "projectName": "n"}}
    body = {"datasets": [item], "metadata": {**META, "pagination": {"offset": 0, "limit": 10, "totalCount": 1}}}
    page = dialects.parse_dataset_page(body, 0, 10)
    assert page.total_count == 1 and page.limit == 10
    assert page.items[0].project_id == "p-9"


def test_domino_v1_page_and_flat_pagination_metadata() -> None:
    """A v1 list holds bare datasets; pagination may also sit directly in metadata."""
    body = {"datasets": [DOMINO_DS], "metadata": {**META, "offset": 3, "limit": 1, "totalCount": 7}}
    page = dialects.parse_dataset_page(body, 0, 50)
    assert (page.offset, page.limit, page.total_count) == (3, 1, 7)
    assert page.items[0].name == "training-data"


def test_seed_snapshot_list_without_paging_fields_uses_asked_values() -> None:
    """The seed's snapshot list shows only `data`: offset and limit fall back to what was asked."""
    body = {"data": [{"id": "s-1", "datasetId": "ds-1", "createdAt": "t", "tags": ["v1.0", "production"]}]}
    page = dialects.parse_snapshot_page(body, 0, 50)
    assert page.total_count is None and (page.offset, page.limit) == (0, 50)
    assert page.items[0].tags == ("v1.0", "production")
    assert page.items[0].status is SnapshotStatus.ACTIVE


@pytest.mark.parametrize(
    ("wire", "status"),
    [("active", "active"), ("Active", "active"), ("PENDING", "pending"), ("MarkForDeletion", "markForDeletion"),
     ("weird", "unknown")],
)  # fmt: skip
def test_snapshot_status_is_case_insensitive(wire: str, status: str) -> None:
    """Domino's status casing varies; the value object holds one canonical status."""
    snap = dialects.parse_snapshot({"snapshot": {"id": "s", "datasetId": "d", "status": wire}, "metadata": META})
    assert snap.status == SnapshotStatus(status)


def test_domino_snapshot_gets_tags_from_dataset_map() -> None:
    """Tags pointing at a domino snapshot come from the dataset's tag map."""
    snap = dialects.parse_snapshot({"snapshot": {"id": "s-2", "datasetId": "ds-1"}}, {"latest": "s-2", "v1": "s-1"})
    assert snap.tags == ("latest",)


def test_snapshot_without_dataset_id_raises() -> None:
    """datasetId is required of a snapshot."""
    with pytest.raises(ShapeError, match="datasetId"):
        dialects.parse_snapshot({"id": "s-1"})


def test_grants_parse_in_both_dialects() -> None:
    """Seed grants (principal/permission) and domino grant details (target/role) give the same Grants."""
    seed = dialects.parse_grants({"data": [{"principalType": "user", "principalId": "u-1", "permission": "write"}]})
    domino = dialects.parse_grants(
        {
            "grantDetails": [
                {"targetId": "u-1", "targetName": "alice", "targetRole": "DatasetRwEditor", "isOrganization": False},
                {"targetId": "o-1", "targetName": "org", "targetRole": "DatasetRwReader", "isOrganization": True},
            ],
            "metadata": META,
        }
    )
    assert seed == [Grant("u-1", Role.WRITE)]
    assert domino[0] == Grant("u-1", Role.WRITE, "user", "alice", False)
    assert domino[1].principal_type == "organization" and domino[1].role is Role.READ


def test_unknown_role_raises() -> None:
    """A grant with an unknown role is a ShapeError."""
    with pytest.raises(ShapeError, match="role"):
        dialects.parse_grants({"data": [{"principalId": "u", "permission": "superuser"}]})


def test_request_bodies_per_dialect() -> None:
    """Snapshot creation, grants and list queries are spelled differently by the two dialects."""
    assert dialects.create_snapshot_body(Dialect.SEED, "v1") == {"tag": "v1"}
    assert dialects.create_snapshot_body(Dialect.SEED, None) == {}
    assert dialects.create_snapshot_body(Dialect.DOMINO, "v1") == {"relativeFilePaths": [""]}
    assert dialects.grant_body(Dialect.SEED, "u-1", Role.ADMIN) == {
        "principalType": "user",
        "principalId": "u-1",
        "permission": "admin",
    }
    assert dialects.grant_body(Dialect.DOMINO, "u-1", Role.ADMIN) == {"targetId": "u-1", "targetRole": "DatasetRwOwner"}
    assert dialects.grant_removal_body(Dialect.SEED, "u-1") == {"principalType": "user", "principalId": "u-1"}
    assert dialects.grant_removal_body(Dialect.DOMINO, "u-1", role=Role.READ) == {
        "targetId": "u-1",
        "targetRole": "DatasetRwReader",
    }
    assert dialects.list_datasets_params(Dialect.SEED, "p", 0, 5) == {"offset": "0", "limit": "5", "projectId": "p"}
    assert dialects.list_datasets_params(Dialect.DOMINO, "p", 0, 5)["projectIdsToInclude"] == "p"
    assert dialects.create_dataset_body("n", None) == {"name": "n", "description": ""}
    assert dialects.update_dataset_body(None, "d") == {"description": "d"}
    assert dialects.tag_body("s-1", "prod") == {"snapshotId": "s-1", "tagName": "prod"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"error": {"code": "not_found", "message": "no dataset ds-9"}}', "no dataset ds-9"),
        ('{"error": {"code": "conflict"}}', "conflict"),
        ('{"errors": ["name taken", "try again"], "requestId": "r"}', "name taken; try again"),
        ('{"error": "Dataset not found"}', "Dataset not found"),
        ('{"message": "plain"}', "plain"),
        ("<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        ("", ""),
        ("x" * 1000, "x" * 300 + "..."),
    ],
)
def test_error_messages_of_both_dialects(text: str, message: str) -> None:
    """The server's message is pulled out of either dialect's error body, or the text itself, shortened."""
    assert dialects.error_message(text) == message


@pytest.mark.parametrize(
    ("body", "dialect"),
    [
        ({"dataset": DOMINO_DS, "metadata": META}, Dialect.DOMINO),
        ({"datasets": [], "metadata": META}, Dialect.DOMINO),
        ({"grantDetails": []}, Dialect.DOMINO),
        ({"data": []}, Dialect.SEED),
        (SEED_DS, Dialect.SEED),
        ({"tagName": "x"}, None),
        ([], None),
    ],
)
def test_detect_from_answer_shape(body: Any, dialect: Dialect | None) -> None:
    """Envelopes with metadata mean domino; flat objects or `data` lists mean seed; others say nothing."""
    assert dialects.detect(body) is dialect


@pytest.mark.parametrize(
    ("count", "total", "offset", "limit", "expected"),
    [
        (10, 25, 0, 10, 10),
        (5, 25, 20, 10, None),
        (10, None, 0, 10, 10),
        (3, None, 10, 10, None),
        (80, None, 0, 50, None),
        (0, 100, 0, 10, None),
    ],
)
def test_next_offset(count: int, total: int | None, offset: int, limit: int, expected: int | None) -> None:
    """Paging stops at totalCount, at a short page, at an empty page, or when the server ignored the limit."""
    items = tuple(Snapshot(str(i), "d") for i in range(count))
    assert dialects.next_offset(Page(items, offset, limit, total), offset, limit) == expected
