"""Wire shapes of the two dialects of the Datasets API, turned into value objects and back. Pure.

`seed` (the API as the seed documents it): flat objects, lists as `{"data": [...], "offset", "limit",
"totalCount"}`, snapshot creation `{"tag": ...}`, grants `{principalType, principalId, permission}` with
read/write/admin, creates answer 201, errors `{"error": {"code", "message"}}`.

`domino` (Domino Public API 6.2): envelopes `{"dataset": {...}, "metadata": {...}}`, lists
`{"datasets": [{"dataset": {...}, "projectInfo": {...}}], "metadata": {"pagination": {...}}}`, snapshot creation
`{"relativeFilePaths": [""]}` then a tag call, grants `{targetId, targetRole}` with DatasetRwReader/Editor/Owner,
creates answer 200, errors `{"errors": [...]}` or `{"error": "..."}`, status casing that varies.

Requests depend on the dialect; answers are read tolerantly (either envelope or flat object), since the shape
of an answer says which it is. Unknown extra fields are ignored; a missing required field raises `ShapeError`,
which the client reports as a `ProtocolError` naming the call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from agent.api.models import Dataset, Dialect, Grant, Page, Role, Snapshot, SnapshotStatus

MAX_MESSAGE = 300


class ShapeError(ValueError):
    """An answer lacks a field its dialect promises, or holds a value of the wrong type."""


# --- detection -----------------------------------------------------------------------------------------------


def detect(body: Any) -> Dialect | None:
    """The dialect a successful answer is written in, or None when its shape does not say."""
    if not isinstance(body, Mapping):
        return None
    if isinstance(body.get("metadata"), Mapping):
        return Dialect.DOMINO
    if any(key in body for key in ("datasets", "snapshots", "grantDetails")):
        return Dialect.DOMINO
    if "data" in body or "id" in body:
        return Dialect.SEED
    return None


# --- requests ------------------------------------------------------------------------------------------------


def list_datasets_params(dialect: Dialect, project_id: str | None, offset: int, limit: int) -> dict[str, str]:
    """Query of `GET /api/datasetrw/v2/datasets`: domino filters projects with `projectIdsToInclude`."""
    params = {"offset": str(offset), "limit": str(limit)}
    if project_id:
        params["projectIdsToInclude" if dialect is Dialect.DOMINO else "projectId"] = project_id
    return params


def page_params(offset: int, limit: int) -> dict[str, str]:
    return {"offset": str(offset), "limit": str(limit)}


def create_dataset_body(name: str, project_id: str | None, description: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "description": description}
    if project_id:
        body["projectId"] = project_id
    return body


def update_dataset_body(name: str | None, description: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if description is not None:
        body["description"] = description
    return body


def create_snapshot_body(dialect: Dialect, tag: str | None) -> dict[str, Any]:
    """Seed takes the tag in the same call; domino snapshots the whole dataset and is tagged afterwards."""
    if dialect is Dialect.DOMINO:
        return {"relativeFilePaths": [""]}
    return {"tag": tag} if tag else {}


def tag_body(snapshot_id: str, tag: str) -> dict[str, Any]:
    return {"snapshotId": snapshot_id, "tagName": tag}


def grant_body(dialect: Dialect, principal_id: str, role: Role, principal_type: str = "user") -> dict[str, Any]:
    if dialect is Dialect.DOMINO:
        return {"targetId": principal_id, "targetRole": role.domino_name}
    return {"principalType": principal_type, "principalId": principal_id, "permission": role.value}


def grant_removal_body(
    dialect: Dialect, principal_id: str, principal_type: str = "user", role: Role | None = None
) -> dict[str, Any]:
    """Body of `DELETE .../grants`. Domino's schema asks for the role too (`targetRole`)."""
    if dialect is Dialect.DOMINO:
        body: dict[str, Any] = {"targetId": principal_id}
        if role is not None:
            body["targetRole"] = role.domino_name
        return body
    return {"principalType": principal_type, "principalId": principal_id}


# --- answers -------------------------------------------------------------------------------------------------


def parse_dataset(body: Any) -> Dataset:
    """A dataset from `{"dataset": {...}, "metadata": ...}` (domino) or a flat object (seed)."""
    obj = _unwrap(body, "dataset")
    return _dataset(obj)


def parse_dataset_page(body: Any, offset: int, limit: int) -> Page[Dataset]:
    """A page of datasets from seed's `data` list or domino's `datasets` list (v2 items wrap `dataset`)."""
    items, page = _list(body, ("data", "datasets"), offset, limit)
    datasets = []
    for item in items:
        obj = _mapping(item, "dataset list item")
        info = obj.get("projectInfo")
        if isinstance(obj.get("dataset"), Mapping):
            obj = obj["dataset"]
        dataset = _dataset(obj)
        if dataset.project_id is None and isinstance(info, Mapping):
            project = _opt_str(info, "projectId")
            if project:
                dataset = replace(dataset, project_id=project)
        datasets.append(dataset)
    return Page(tuple(datasets), *page)


def parse_snapshot(body: Any, dataset_tags: Mapping[str, str] | None = None) -> Snapshot:
    """A snapshot from `{"snapshot": {...}}` (domino) or a flat object (seed).

    Domino keeps tags on the dataset (tag -> snapshot id); give that map as `dataset_tags` to fill `tags`."""
    return _snapshot(_unwrap(body, "snapshot"), dataset_tags)


def parse_snapshot_page(
    body: Any, offset: int, limit: int, dataset_tags: Mapping[str, str] | None = None
) -> Page[Snapshot]:
    items, page = _list(body, ("data", "snapshots"), offset, limit)
    snapshots = tuple(_snapshot(_unwrap(item, "snapshot"), dataset_tags) for item in items)
    return Page(snapshots, *page)


def parse_grants(body: Any) -> list[Grant]:
    """Grants from seed's `{"data": [{principalType, principalId, permission}]}` or domino's
    `{"grantDetails": [{targetId, targetName, targetRole, isOrganization}]}`."""
    items, _ = _list(body, ("data", "grantDetails", "grants"), 0, 0)
    grants = []
    for item in items:
        obj = _mapping(item, "grant")
        if "targetId" in obj:
            organization = obj.get("isOrganization") is True
            grants.append(
                Grant(
                    principal_id=_req_str(obj, "targetId", "grant"),
                    role=_role(obj, "targetRole"),
                    principal_type="organization" if organization else "user",
                    principal_name=_opt_str(obj, "targetName"),
                    is_organization=organization,
                )
            )
        else:
            kind = _opt_str(obj, "principalType") or "user"
            grants.append(
                Grant(
                    principal_id=_req_str(obj, "principalId", "grant"),
                    role=_role(obj, "permission"),
                    principal_type=kind,
                    principal_name=_opt_str(obj, "principalName"),
                    is_organization=kind.lower() == "organization",
                )
            )
    return grants


def next_offset(page: Page[Any], offset: int, limit: int) -> int | None:
    """Where the next page starts after `page` (asked at `offset` with `limit`), or None when it was the last.

    A page without `totalCount` is the last when it holds fewer items than asked, or more (the server ignored
    paging and sent everything, as the seed's snapshot list may)."""
    count = len(page.items)
    if count == 0:
        return None
    following = offset + count
    if page.total_count is not None:
        return following if following < page.total_count else None
    return following if count == limit else None


def tags_of(dataset_tags: Mapping[str, str], snapshot_id: str) -> tuple[str, ...]:
    """The tags of a dataset's tag map that point at `snapshot_id`, sorted."""
    return tuple(sorted(tag for tag, target in dataset_tags.items() if target == snapshot_id))


def error_message(text: str) -> str:
    """What the server said in an error body, in either dialect; plain text when it is not JSON."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    message = ""
    if isinstance(body, Mapping):
        error = body.get("error")
        errors = body.get("errors")
        if isinstance(error, Mapping):
            message = str(error.get("message") or error.get("code") or "")
        elif isinstance(error, str):
            message = error
        elif isinstance(errors, list) and errors:
            parts = [str(e.get("message", e)) if isinstance(e, Mapping) else str(e) for e in errors]
            message = "; ".join(parts)
        elif isinstance(body.get("message"), str):
            message = body["message"]
    elif isinstance(body, str):
        message = body
    if not message and body is None:
        message = text
    message = " ".join(message.split())
    return message[:MAX_MESSAGE] + ("..." if len(message) > MAX_MESSAGE else "")


# --- helpers -------------------------------------------------------------------------------------------------


def _dataset(obj: Mapping[str, Any]) -> Dataset:
    tags = obj.get("tags")
    tag_map: dict[str, str] = {}
    if isinstance(tags, Mapping):
        tag_map = {str(tag): str(target) for tag, target in tags.items() if target is not None}
    elif tags is not None and not isinstance(tags, list):
        raise ShapeError(f"dataset field 'tags' should be a map of tag to snapshot id, got {_kind(tags)}")
    snapshot_ids = obj.get("snapshotIds")
    if snapshot_ids is not None and not isinstance(snapshot_ids, list):
        raise ShapeError(f"dataset field 'snapshotIds' should be a list, got {_kind(snapshot_ids)}")
    return Dataset(
        id=_req_str(obj, "id", "dataset"),
        name=_req_str(obj, "name", "dataset"),
        description=_opt_str(obj, "description") or "",
        project_id=_opt_str(obj, "projectId"),
        created_at=_opt_str(obj, "createdAt"),
        size_bytes=_opt_int(obj, "sizeBytes"),
        snapshot_ids=tuple(str(s) for s in snapshot_ids or ()),
        tags=tag_map,
    )


def _snapshot(obj: Mapping[str, Any], dataset_tags: Mapping[str, str] | None) -> Snapshot:
    snapshot_id = _req_str(obj, "id", "snapshot")
    raw_tags = obj.get("tags")
    tags: tuple[str, ...] = ()
    if isinstance(raw_tags, list):
        tags = tuple(str(tag) for tag in raw_tags)
    elif isinstance(raw_tags, Mapping):
        tags = tuple(sorted(str(tag) for tag in raw_tags))
    elif raw_tags is not None:
        raise ShapeError(f"snapshot field 'tags' should be a list, got {_kind(raw_tags)}")
    if dataset_tags is not None:
        tags = tuple(dict.fromkeys((*tags, *tags_of(dataset_tags, snapshot_id))))
    status = obj.get("status")
    if status is not None and not isinstance(status, str):
        raise ShapeError(f"snapshot field 'status' should be a string, got {_kind(status)}")
    return Snapshot(
        id=snapshot_id,
        dataset_id=_req_str(obj, "datasetId", "snapshot"),
        created_at=_opt_str(obj, "createdAt"),
        status=SnapshotStatus.parse(status),
        tags=tags,
        creator_id=_opt_str(obj, "creatorId"),
        description=_opt_str(obj, "description"),
    )


def _list(body: Any, keys: tuple[str, ...], offset: int, limit: int) -> tuple[list[Any], tuple[int, int, int | None]]:
    """The items of a list answer and its (offset, limit, totalCount), falling back to what was asked."""
    if isinstance(body, list):
        return body, (offset, limit, None)
    obj = _mapping(body, "list answer")
    for key in keys:
        if key in obj:
            items = obj[key]
            break
    else:
        raise ShapeError(f"list answer has none of the fields {', '.join(keys)}")
    if not isinstance(items, list):
        raise ShapeError(f"list answer field should be a list, got {_kind(items)}")
    paging: Mapping[str, Any] = obj
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping):
        pagination = metadata.get("pagination")
        paging = pagination if isinstance(pagination, Mapping) else metadata
    got_offset = _opt_int(paging, "offset")
    got_limit = _opt_int(paging, "limit")
    total = _opt_int(paging, "totalCount")
    return items, (offset if got_offset is None else got_offset, limit if got_limit is None else got_limit, total)


def _unwrap(body: Any, key: str) -> Mapping[str, Any]:
    obj = _mapping(body, f"{key} answer")
    inner = obj.get(key)
    if isinstance(inner, Mapping):
        return inner
    if inner is not None or "id" not in obj:
        raise ShapeError(f"{key} answer has neither a {key!r} object nor an 'id'")
    return obj


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ShapeError(f"{what} should be a JSON object, got {_kind(value)}")
    return value


def _req_str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = _opt_str(obj, key)
    if not value:
        raise ShapeError(f"{what} lacks the field {key!r}")
    return value


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ShapeError(f"field {key!r} should be a string, got {_kind(value)}")
    return str(value)


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ShapeError(f"field {key!r} should be a whole number, got {_kind(value)}")
    return value


def _role(obj: Mapping[str, Any], key: str) -> Role:
    text = _req_str(obj, key, "grant")
    try:
        return Role.parse(text)
    except ValueError:
        raise ShapeError(f"grant field {key!r} holds an unknown role {text!r}") from None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
