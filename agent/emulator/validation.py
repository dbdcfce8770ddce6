"""Request checks: JSON bodies, path ids and query parameters in, typed requests out, or a 400/404 problem.

Pure. Every refusal is a BadRequestError (or NotFoundError for ids that cannot exist) whose message names the
field and what was expected, so bad input never reaches the code that could fail with a 500.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, Protocol

from agent.api.models import Dialect, Role
from agent.api.names import dataset_name_problem, tag_problem
from agent.emulator.shapes import problem
from agent.emulator.store import GrantRecord
from agent.errors import ApiError

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_DESCRIPTION = 10_000
MAX_PATHS = 1000
MAX_PATH = 4096
DATASET_ID_RE = re.compile(r"dataset-[0-9a-f]{12}")
SNAPSHOT_ID_RE = re.compile(r"snapshot-[0-9a-f]{12}")
PROJECT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # fullmatch
PRINCIPAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")  # fullmatch
PRINCIPAL_TYPES = ("user", "organization")
MINIMUM_PERMISSIONS = {
    "ListDatasetRwV2": Role.READ,
    "ReadDatasetRwV2": Role.READ,
    "UpdateDatasetRwV2": Role.WRITE,
    "PerformDatasetRwActionsInProjectV2": Role.WRITE,
    "DeleteDatasetRwV2": Role.ADMIN,
    "EditSecurityDatasetRwV2": Role.ADMIN,
    "PermanentDeleteDatasetRwV2": Role.ADMIN,
    "PerformDatasetRwActionsAsAdminV2": Role.ADMIN,
}


class Query(Protocol):
    """What aiohttp's request.query offers (a multidict)."""

    def getall(self, key: str, default: list[str]) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class NewDataset:
    name: str
    description: str = ""
    project_id: str | None = None
    snapshot_id: str | None = None
    grants: tuple[GrantRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class DatasetChange:
    name: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class NewSnapshot:
    tag: str | None = None
    paths: tuple[str, ...] = ("",)  # "" is the whole folder


@dataclass(frozen=True, slots=True)
class NewTag:
    snapshot_id: str
    tag: str


@dataclass(frozen=True, slots=True)
class GrantTarget:
    principal_type: str
    principal_id: str


@dataclass(frozen=True, slots=True)
class DatasetQuery:
    offset: int = 0
    limit: int = DEFAULT_LIMIT
    include: frozenset[str] | None = None  # project ids; None: every project
    exclude: frozenset[str] = frozenset()
    minimum: Role = Role.READ
    include_project_info: bool = False


def bad(message: str) -> ApiError:
    return problem(400, message)


# bodies ------------------------------------------------------------------------------------------------------


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object. An empty body counts as `{}`."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad("request body must be UTF-8 encoded JSON") from None
    except (ValueError, RecursionError) as exc:
        raise bad(f"request body is not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(value, dict):
        raise bad(f"request body must be a JSON object, got {_json_type(value)}")
    return value


def new_dataset(dialect: Dialect, body: Mapping[str, Any]) -> NewDataset:
    if dialect == Dialect.SEED:
        _fields(body, "dataset", required={"name"}, optional={"description", "projectId"})
    else:
        _fields(body, "dataset", required={"name"}, optional={"description", "projectId", "snapshotId", "grants"})
    name = _name(body["name"])
    description = _text(body, "description", MAX_DESCRIPTION, multiline=True) if "description" in body else ""
    project_id = _project_id(body["projectId"]) if "projectId" in body else None
    snapshot_id = _text(body, "snapshotId", 200) if "snapshotId" in body else None
    if dialect == Dialect.DOMINO and project_id is None and snapshot_id is None:
        raise bad("either projectId or snapshotId must be given")
    grants: tuple[GrantRecord, ...] = ()
    if "grants" in body:
        items = body["grants"]
        if not isinstance(items, list):
            raise bad(f"grants must be an array of {{targetId, targetRole}} objects, got {_json_type(items)}")
        grants = tuple(_domino_grant(item, f"grants[{i}]") for i, item in enumerate(items))
    return NewDataset(name, description, project_id, snapshot_id, grants)


def dataset_change(body: Mapping[str, Any]) -> DatasetChange:
    _fields(body, "dataset update", required=set(), optional={"name", "description"})
    name = _name(body["name"]) if "name" in body else None
    description = _text(body, "description", MAX_DESCRIPTION, multiline=True) if "description" in body else None
    return DatasetChange(name, description)


def new_snapshot(dialect: Dialect, body: Mapping[str, Any]) -> NewSnapshot:
    if dialect == Dialect.SEED:
        _fields(body, "snapshot", required=set(), optional={"tag"})
        return NewSnapshot(tag=_tag(_text(body, "tag", 200)) if "tag" in body else None)
    _fields(body, "snapshot", required={"relativeFilePaths"}, optional=set())
    paths = body["relativeFilePaths"]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise bad(f'relativeFilePaths must be an array of strings (use [""] for everything), got {_json_type(paths)}')
    if not paths:
        raise bad('relativeFilePaths must not be empty: use [""] to snapshot the whole dataset')
    if len(paths) > MAX_PATHS:
        raise bad(f"relativeFilePaths may hold at most {MAX_PATHS} paths")
    return NewSnapshot(paths=tuple(dict.fromkeys(_relative_path(p) for p in paths)))


def new_tag(body: Mapping[str, Any]) -> NewTag:
    _fields(body, "tag", required={"snapshotId", "tagName"}, optional=set())
    return NewTag(snapshot_id=_text(body, "snapshotId", 200), tag=_tag(_text(body, "tagName", 200)))


def new_grant(dialect: Dialect, body: Mapping[str, Any]) -> GrantRecord:
    if dialect == Dialect.DOMINO:
        return _domino_grant(body, "grant")
    _fields(body, "grant", required={"principalId", "permission"}, optional={"principalType"})
    return GrantRecord(_principal_type(body), _principal(body, "principalId"), _role(body, "permission"))


def grant_target(dialect: Dialect, body: Mapping[str, Any]) -> GrantTarget:
    if dialect == Dialect.DOMINO:
        _fields(body, "grant", required={"targetId"}, optional={"targetRole"})
        if "targetRole" in body:
            _role(body, "targetRole")
        return GrantTarget("user", _principal(body, "targetId"))
    _fields(body, "grant", required={"principalId"}, optional={"principalType"})
    return GrantTarget(_principal_type(body), _principal(body, "principalId"))


# path and query parameters -----------------------------------------------------------------------------------


def dataset_id(text: str) -> str:
    if not DATASET_ID_RE.fullmatch(text):
        raise problem(404, f"no dataset with id {text[:80]!r}")
    return text


def snapshot_id(text: str) -> str:
    if not SNAPSHOT_ID_RE.fullmatch(text):
        raise problem(404, f"no snapshot with id {text[:80]!r}")
    return text


def tag_name(text: str) -> str:
    return _tag(text)


def paging(query: Query) -> tuple[int, int]:
    """(offset, limit) from the query: whole numbers, offset >= 0, 1 <= limit <= 1000."""
    offset = _whole(query, "offset", 0)
    limit = _whole(query, "limit", DEFAULT_LIMIT)
    if not 1 <= limit <= MAX_LIMIT:
        raise bad(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return offset, limit


def dataset_query(query: Query, version: int) -> DatasetQuery:
    offset, limit = paging(query)
    include = _ids(query, "projectId")
    if version == 1:
        return DatasetQuery(offset, limit, frozenset(include) or None)
    include |= _ids(query, "projectIdsToInclude")
    exclude = _ids(query, "projectIdsToExclude")
    minimum = Role.READ
    if text := _single(query, "minimumPermission"):
        if text in MINIMUM_PERMISSIONS:
            minimum = MINIMUM_PERMISSIONS[text]
        else:
            try:
                minimum = Role.parse(text)
            except ValueError:
                choices = ", ".join(MINIMUM_PERMISSIONS)
                raise bad(f"minimumPermission must be one of {choices}; got {text[:80]!r}") from None
    info = _single(query, "includeProjectInfo")
    if info not in (None, "true", "false"):
        raise bad(f"includeProjectInfo must be true or false, got {info[:40]!r}")
    return DatasetQuery(offset, limit, frozenset(include) or None, frozenset(exclude), minimum, info == "true")


# helpers -----------------------------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _fields(body: Mapping[str, Any], what: str, required: Set[str], optional: Set[str]) -> None:
    allowed = ", ".join(sorted(required | optional)) or "none"
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise bad(f"unknown field {unknown[0][:80]!r} in {what} body (allowed: {allowed})")
    missing = sorted(set(required) - set(body))
    if missing:
        raise bad(f"missing field {missing[0]!r} in {what} body")


def _text(body: Mapping[str, Any], key: str, max_len: int, multiline: bool = False) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise bad(f"{key} must be a string, got {_json_type(value)}")
    if len(value) > max_len:
        raise bad(f"{key} must be at most {max_len} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad(f"{key} must be valid Unicode text (no lone surrogates)") from None
    allowed = "\n\r\t" if multiline else ""
    if any((ord(c) < 32 or ord(c) == 127) and c not in allowed for c in value):
        raise bad(f"{key} must not contain control characters")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str):
        raise bad(f"name must be a string, got {_json_type(value)}")
    if why := dataset_name_problem(value):
        raise bad(f"invalid dataset name: {why}")
    return value


def _tag(value: str) -> str:
    if not value.isprintable():  # names.TAG_RE uses `$`, which lets a trailing newline through
        raise bad(f"invalid tag name {value[:80]!r}: tag name must not contain control characters")
    if why := tag_problem(value):
        raise bad(f"invalid tag name {value[:80]!r}: {why}")
    return value


def _project_id(value: Any) -> str:
    if not isinstance(value, str):
        raise bad(f"projectId must be a string, got {_json_type(value)}")
    if not PROJECT_ID_RE.fullmatch(value):
        raise bad("projectId must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def _principal(body: Mapping[str, Any], key: str) -> str:
    value = _text(body, key, 100)
    if not PRINCIPAL_RE.fullmatch(value):
        raise bad(f"{key} must be 1-100 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    return value


def _principal_type(body: Mapping[str, Any]) -> str:
    if "principalType" not in body:
        return "user"
    value = _text(body, "principalType", 40).lower()
    if value not in PRINCIPAL_TYPES:
        raise bad(f"principalType must be user or organization, got {body['principalType'][:40]!r}")
    return value


def _role(body: Mapping[str, Any], key: str) -> Role:
    value = _text(body, key, 40)
    try:
        return Role.parse(value)
    except ValueError:
        raise bad(f"{key} must be read, write or admin (or DatasetRwReader, DatasetRwEditor, DatasetRwOwner), "
                  f"got {value!r}") from None  # fmt: skip


def _domino_grant(item: Any, what: str) -> GrantRecord:
    if not isinstance(item, dict):
        raise bad(f"{what} must be an object with targetId and targetRole, got {_json_type(item)}")
    _fields(item, what, required={"targetId", "targetRole"}, optional=set())
    return GrantRecord("user", _principal(item, "targetId"), _role(item, "targetRole"))


def _relative_path(path: str) -> str:
    """A path inside the dataset, normalised ("" for the whole folder)."""
    _text({"relativeFilePaths": path}, "relativeFilePaths", MAX_PATH)
    if path.startswith("/") or "\\" in path:
        raise bad(f"relativeFilePaths must be relative paths with '/' separators, got {path[:80]!r}")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise bad(f"relativeFilePaths must stay inside the dataset ('..' is not allowed), got {path[:80]!r}")
    return "/".join(parts)


def _single(query: Query, name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise bad(f"query parameter {name} given more than once")
    return values[0] if values else None


def _whole(query: Query, name: str, default: int) -> int:
    text = _single(query, name)
    if text is None:
        return default
    if re.fullmatch(r"-[0-9]+", text):
        raise bad(f"{name} must not be negative, got {text[:40]}")
    if not re.fullmatch(r"[0-9]{1,15}", text):
        raise bad(f"{name} must be a whole number (at most 15 digits), got {text[:40]!r}")
    return int(text)


def _ids(query: Query, name: str) -> set[str]:
    """Project ids from a repeated and/or comma-separated parameter."""
    found: set[str] = set()
    for value in query.getall(name, []):
        for part in value.split(","):
            if part := part.strip():
                found.add(_project_id(part))
    return found
