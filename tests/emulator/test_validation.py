"""Bad input over real sockets gets a 4xx with a clear message in the dialect's error shape, never a 500; and
the pure request checks behind it."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from agent.api.models import Dialect, Role
from agent.emulator import EmulatorOptions, EmulatorThread, validation
from agent.errors import BadRequestError, NotFoundError

S, D = Dialect.SEED, Dialect.DOMINO
DS = "/datasets/{ds}"
LONG = "a" * 101

V2 = "/api/datasetrw/v2/datasets"
SNAPS, TAGS, GRANTS = DS + "/snapshots", DS + "/tags", DS + "/grants"
NO_DS, NO_SNAP = "dataset-000000000000", "snapshot-000000000000"
READ_GRANT = {"principalType": "user", "principalId": "bob", "permission": "read"}


GZIP = {"Content-Encoding": "gzip", "Content-Type": "application/json"}


def j(body: Any) -> dict[str, Any]:
    return {"json_body": body}


def raw(data: bytes) -> dict[str, Any]:
    return {"data": data}


def q(params: Any) -> dict[str, Any]:
    return {"params": params}


def tag_body(snapshot: str = "{snap}", name: Any = "t") -> dict[str, Any]:
    return j({"snapshotId": snapshot, "tagName": name})


# (case id, dialect, method, path, request kwargs, expected status or statuses)
CASES: list[tuple[str, Dialect, str, str, dict[str, Any], int | set[int]]] = [
    ("body not json", S, "POST", "/datasets", raw(b"{bad"), 400),
    ("body json array", S, "POST", "/datasets", raw(b"[]"), 400),
    ("body json string", S, "POST", "/datasets", raw(b'"name"'), 400),
    ("body not utf-8", S, "POST", "/datasets", raw(b"\xff\xfe{}"), 400),
    ("body nested too deep", S, "POST", "/datasets", raw(b"[" * 100_000), 400),
    ("body too large", S, "POST", "/datasets", raw(b"{" + b" " * (2 << 20) + b"}"), 413),
    ("body not the gzip it claims", S, "POST", "/datasets", {**raw(b"notgzip"), "headers": GZIP}, 400),
    ("body not the gzip it claims (domino)", D, "POST", "/datasets", {**raw(b"notgzip"), "headers": GZIP}, 400),
    ("name missing", S, "POST", "/datasets", j({}), 400),
    ("name not a string", S, "POST", "/datasets", j({"name": 5}), 400),
    ("name null", S, "POST", "/datasets", j({"name": None}), 400),
    ("name empty", S, "POST", "/datasets", j({"name": ""}), 400),
    ("name blank", S, "POST", "/datasets", j({"name": "   "}), 400),
    ("name overlong", S, "POST", "/datasets", j({"name": LONG}), 400),
    ("name with slash", S, "POST", "/datasets", j({"name": "a/b"}), 400),
    ("name with dotdot", S, "POST", "/datasets", j({"name": "a..b"}), 400),
    ("name is dotdot", S, "POST", "/datasets", j({"name": ".."}), 400),
    ("name with at", S, "POST", "/datasets", j({"name": "a@v1"}), 400),
    ("name with newline", S, "POST", "/datasets", j({"name": "a\nb"}), 400),
    ("extra field", S, "POST", "/datasets", j({"name": "x", "color": "red"}), 400),
    ("description not a string", S, "POST", "/datasets", j({"name": "x", "description": 1}), 400),
    ("description lone surrogate", S, "POST", "/datasets", raw(b'{"name": "x", "description": "\\ud800"}'), 400),
    ("projectId array", S, "POST", "/datasets", j({"name": "x", "projectId": []}), 400),
    ("projectId with slash", S, "POST", "/datasets", j({"name": "x", "projectId": "a/b"}), 400),
    ("duplicate name", S, "POST", "/datasets", j({"name": "main", "projectId": "p"}), 409),
    ("offset negative", S, "GET", V2, q({"offset": "-1"}), 400),
    ("offset fraction", S, "GET", V2, q({"offset": "1.5"}), 400),
    ("offset 5000 digits", S, "GET", V2, q({"offset": "9" * 5000}), 400),
    ("offset unicode digit", S, "GET", V2, q({"offset": "\u0663"}), 400),
    ("limit not a number", S, "GET", "/datasets", q({"limit": "abc"}), 400),
    ("limit over 1000", S, "GET", "/datasets", q({"limit": "1001"}), 400),
    ("limit zero", S, "GET", "/datasets", q({"limit": "0"}), 400),
    ("limit twice", S, "GET", "/datasets", q([("limit", "1"), ("limit", "2")]), 400),
    ("snapshot paging negative", S, "GET", SNAPS, q({"offset": "-5"}), 400),
    ("includeProjectInfo maybe", S, "GET", V2, q({"includeProjectInfo": "x"}), 400),
    ("minimumPermission unknown", S, "GET", V2, q({"minimumPermission": "X"}), 400),
    ("project filter bad id", S, "GET", V2, q({"projectIdsToInclude": "a/b"}), 400),
    ("unknown dataset id", S, "GET", f"/datasets/{NO_DS}", {}, 404),
    ("garbage dataset id", S, "GET", "/datasets/..%2F..%2Fetc", {}, 404),
    ("invalid utf-8 in id", S, "GET", "/datasets/%ff%fe", {}, 404),
    ("unknown snapshot id", S, "GET", f"/snapshots/{NO_SNAP}", {}, 404),
    ("garbage snapshot id", S, "GET", "/snapshots/nope", {}, 404),
    ("patch name not a string", S, "PATCH", DS, j({"name": ["x"]}), 400),
    ("patch unknown field", S, "PATCH", DS, j({"size": 1}), 400),
    ("patch body array", S, "PATCH", DS, j([1]), 400),
    ("patch unknown dataset", S, "PATCH", f"/datasets/{NO_DS}", j({}), 404),
    ("snapshot tag not a string", S, "POST", SNAPS, j({"tag": 5}), 400),
    ("snapshot tag with space", S, "POST", SNAPS, j({"tag": "a b"}), 400),
    ("snapshot tag like an id", S, "POST", SNAPS, j({"tag": "snapshot-1"}), 400),
    ("snapshot tag trailing newline", S, "POST", SNAPS, j({"tag": "v1\n"}), 400),
    ("snapshot extra field", S, "POST", SNAPS, j({"tag": "v1", "x": 1}), 400),
    ("snapshot domino field in seed", S, "POST", SNAPS, j({"relativeFilePaths": [""]}), 400),
    ("tag missing snapshotId", S, "POST", TAGS, j({"tagName": "t"}), 400),
    ("tag unknown snapshot", S, "POST", TAGS, tag_body(NO_SNAP), 404),
    ("tag other dataset's snapshot", S, "POST", TAGS, tag_body("{other_snap}"), 400),
    ("tag name dotdot", S, "POST", TAGS, tag_body(name=".."), 400),
    ("tag name overlong", S, "POST", TAGS, tag_body(name=LONG), 400),
    ("tag name not a string", S, "POST", TAGS, tag_body(name=True), 400),
    ("remove unknown tag", S, "DELETE", TAGS + "/nope", {}, 404),
    ("remove invalid tag", S, "DELETE", TAGS + "/%20x", {}, 400),
    ("remove tag with encoded slash", S, "DELETE", TAGS + "/a%2Fb", {}, {400, 404}),
    ("grant unknown permission", S, "POST", GRANTS, j({"principalId": "bob", "permission": "root"}), 400),
    ("grant unknown principal type", S, "POST", GRANTS, j({**READ_GRANT, "principalType": "robot"}), 400),
    ("grant missing principal", S, "POST", GRANTS, j({"permission": "read"}), 400),
    ("grant principal with slash", S, "POST", GRANTS, j({"principalId": "a/b", "permission": "read"}), 400),
    ("revoke absent grant", S, "DELETE", GRANTS, j({"principalId": "nobody"}), 404),
    ("revoke body not json", S, "DELETE", GRANTS, raw(b"principalId=bob"), 400),
    ("wrong method", S, "PUT", DS, {}, 405),
    ("unknown endpoint", S, "GET", "/api/datasetrw/v1/everything", {}, 404),
    ("domino snapshot missing paths", D, "POST", SNAPS, j({}), 400),
    ("domino snapshot paths string", D, "POST", SNAPS, j({"relativeFilePaths": "all"}), 400),
    ("domino snapshot paths empty", D, "POST", SNAPS, j({"relativeFilePaths": []}), 400),
    ("domino snapshot path escapes", D, "POST", SNAPS, j({"relativeFilePaths": ["../x"]}), 400),
    ("domino snapshot path absolute", D, "POST", SNAPS, j({"relativeFilePaths": ["/etc"]}), 400),
    ("domino snapshot path missing", D, "POST", SNAPS, j({"relativeFilePaths": ["no.txt"]}), 400),
    ("domino snapshot seed tag", D, "POST", SNAPS, j({"relativeFilePaths": [""], "tag": "v1"}), 400),
    ("domino create without project", D, "POST", "/datasets", j({"name": "x"}), 400),
    ("domino create grants not a list", D, "POST", "/datasets", j({"name": "x", "projectId": "p", "grants": {}}), 400),
    ("domino create bad grant role", D, "POST", "/datasets",
     j({"name": "x", "projectId": "p", "grants": [{"targetId": "b", "targetRole": "Boss"}]}), 400),
    ("domino create unknown snapshot", D, "POST", "/datasets", j({"name": "x", "snapshotId": NO_SNAP}), 404),
    ("domino grant seed fields", D, "POST", GRANTS, j({"principalId": "b", "permission": "read"}), 400),
    ("domino grant role wrong type", D, "POST", GRANTS, j({"targetId": "b", "targetRole": 3}), 400),
    ("domino tag other dataset's snapshot", D, "POST", TAGS, tag_body("{other_snap}"), 400),
]  # fmt: skip

# what each refusal's message must mention (proves the case was refused for its own reason)
WHY = {
    "body not json": "not valid JSON",
    "body json array": "must be a JSON object, got an array",
    "body json string": "must be a JSON object, got a string",
    "body not utf-8": "UTF-8",
    "body nested too deep": "not valid JSON",
    "body too large": "too large",
    "body not the gzip it claims": "could not be read",
    "body not the gzip it claims (domino)": "could not be read",
    "name missing": "missing field 'name'",
    "name not a string": "name must be a string, got a number",
    "name null": "name must be a string, got null",
    "name empty": "must not be empty",
    "name blank": "must not be empty",
    "name overlong": "at most 100",
    "name with slash": "must not contain",
    "name with dotdot": "must not contain",
    "name is dotdot": "must not contain",
    "name with at": "must not contain",
    "name with newline": "invalid dataset name",
    "extra field": "unknown field 'color'",
    "description not a string": "description must be a string",
    "description lone surrogate": "surrogates",
    "projectId array": "projectId must be a string",
    "projectId with slash": "projectId must be",
    "duplicate name": "already exists",
    "offset negative": "offset must not be negative",
    "offset fraction": "offset must be a whole number",
    "offset 5000 digits": "at most 15 digits",
    "offset unicode digit": "offset must be a whole number",
    "limit not a number": "limit must be a whole number",
    "limit over 1000": "between 1 and 1000",
    "limit zero": "between 1 and 1000",
    "limit twice": "more than once",
    "snapshot paging negative": "offset must not be negative",
    "includeProjectInfo maybe": "includeProjectInfo must be true or false",
    "minimumPermission unknown": "minimumPermission must be one of",
    "project filter bad id": "projectId must be",
    "unknown dataset id": "no dataset",
    "garbage dataset id": "no dataset",
    "invalid utf-8 in id": "no dataset",
    "unknown snapshot id": "no snapshot",
    "garbage snapshot id": "no snapshot",
    "patch name not a string": "name must be a string",
    "patch unknown field": "unknown field 'size'",
    "patch body array": "must be a JSON object",
    "patch unknown dataset": "no dataset",
    "snapshot tag not a string": "tag must be a string",
    "snapshot tag with space": "invalid tag name",
    "snapshot tag like an id": "snapshot-",
    "snapshot tag trailing newline": "control characters",
    "snapshot extra field": "unknown field 'x'",
    "snapshot domino field in seed": "unknown field 'relativeFilePaths'",
    "tag missing snapshotId": "missing field 'snapshotId'",
    "tag unknown snapshot": "no snapshot",
    "tag other dataset's snapshot": "belongs to another dataset",
    "tag name dotdot": "must not contain '..'",
    "tag name overlong": "at most 100",
    "tag name not a string": "tagName must be a string",
    "remove unknown tag": "has no tag 'nope'",
    "remove invalid tag": "invalid tag name",
    "remove tag with encoded slash": "",
    "grant unknown permission": "permission must be read, write or admin",
    "grant unknown principal type": "principalType must be user or organization",
    "grant missing principal": "missing field 'principalId'",
    "grant principal with slash": "principalId must be",
    "revoke absent grant": "has no grant for user 'nobody'",
    "revoke body not json": "not valid JSON",
    "wrong method": "not allowed",
    "unknown endpoint": "no such endpoint",
    "domino snapshot missing paths": "missing field 'relativeFilePaths'",
    "domino snapshot paths string": "must be an array of strings",
    "domino snapshot paths empty": "must not be empty",
    "domino snapshot path escapes": "'..' is not allowed",
    "domino snapshot path absolute": "relative paths",
    "domino snapshot path missing": "does not exist",
    "domino snapshot seed tag": "unknown field 'tag'",
    "domino create without project": "projectId or snapshotId",
    "domino create grants not a list": "grants must be an array",
    "domino create bad grant role": "targetRole must be",
    "domino create unknown snapshot": "no snapshot",
    "domino grant seed fields": "unknown field",
    "domino grant role wrong type": "targetRole must be a string",
    "domino tag other dataset's snapshot": "belongs to another dataset",
}


def fill(value: Any, ids: dict[str, str]) -> Any:
    """The body with "{snap}" / "{other_snap}" placeholders replaced by the ids made for the test."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in ids:
        return ids[value[1:-1]]
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("case", "dialect", "method", "path", "kwargs", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_a_clear_4xx(
    emulator_factory: Any,
    connect: Any,
    errors: Any,
    case: str,
    dialect: Dialect,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    expected: Any,
) -> None:
    """The bad request is refused with the expected 4xx and a message in the dialect's error shape; no 5xx."""
    emu = await emulator_factory(dialect=dialect)
    api = connect(emu)
    ids: dict[str, str] = {}
    for key, name in (("ds", "main"), ("other", "other")):
        made = await api.post("/datasets", {"name": name, "projectId": "p"})
        ids[key] = made.body["id"] if dialect == S else made.body["dataset"]["id"]
        body = {} if dialect == S else {"relativeFilePaths": [""]}
        snap = await api.post(f"/datasets/{ids[key]}/snapshots", body)
        ids["snap" if key == "ds" else "other_snap"] = snap.body["id"] if dialect == S else snap.body["snapshot"]["id"]
    sent = {k: fill(v, ids) if k == "json_body" else v for k, v in kwargs.items()}
    reply = await api.call(method, path.format(**ids), **sent)
    statuses = expected if isinstance(expected, set) else {expected}
    assert reply.status in statuses, (reply.status, reply.body)
    message = errors.seed(reply, reply.status) if dialect == S else errors.domino(reply, reply.status)
    assert WHY[case] in message, message
    assert "Traceback" not in message and len(message) < 400
    assert not any(status.startswith("5") for status in emu.stats()["by_status"])


def test_at_least_thirty_bad_input_cases() -> None:
    """The bad-input table holds at least 30 cases, across both dialects, each with the reason it must give."""
    assert len(CASES) >= 30 and {c[1] for c in CASES} == {S, D}
    assert {c[0] for c in CASES} == set(WHY)


def test_empty_body_is_an_empty_object() -> None:
    """An empty or blank body parses as {} (so optional-only bodies may be omitted)."""
    assert validation.parse_body(b"") == {} and validation.parse_body(b"  \n") == {}


def test_relative_paths_are_normalised() -> None:
    """Snapshot paths drop '.', empty parts and duplicates; '' and '.' mean the whole folder."""
    got = validation.new_snapshot(D, {"relativeFilePaths": ["./a//b/", "a/b", "."]})
    assert got.paths == ("a/b", "")


def test_minimum_permission_spellings() -> None:
    """minimumPermission takes Domino's permission names or role spellings."""
    query = MultiDict([("minimumPermission", "UpdateDatasetRwV2")])
    assert validation.dataset_query(query, 2).minimum == Role.WRITE
    assert validation.dataset_query(MultiDict([("minimumPermission", "DatasetRwOwner")]), 2).minimum == Role.ADMIN


def test_id_format_errors_are_not_found() -> None:
    """A path id that cannot be an emulator id is 404 (no such thing), not 400."""
    with pytest.raises(NotFoundError):
        validation.dataset_id("dataset-123")
    with pytest.raises(BadRequestError):
        validation.tag_name("a/b")


def test_grant_roles_accept_both_spellings() -> None:
    """Seed grants accept domino role names and vice versa, through Role.parse."""
    assert validation.new_grant(S, {"principalId": "b", "permission": "DatasetRwEditor"}).role == Role.WRITE
    assert validation.new_grant(D, {"targetId": "b", "targetRole": "read"}).role == Role.READ


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)
FIELDS = ["name", "description", "projectId", "snapshotId", "grants", "tag", "relativeFilePaths", "tagName",
          "principalId", "principalType", "permission", "targetId", "targetRole"]  # fmt: skip
BODIES = JSON | st.dictionaries(st.sampled_from(FIELDS), JSON | st.sampled_from(["{snap}", "v1", "bob", "read", ""]))
ROUTES = [
    ("POST", "/datasets"),
    ("PATCH", "/datasets/{ds}"),
    ("POST", "/datasets/{ds}/snapshots"),
    ("POST", "/datasets/{ds}/tags"),
    ("POST", "/datasets/{ds}/grants"),
    ("DELETE", "/datasets/{ds}/grants"),
]


@pytest.mark.parametrize("dialect", [S, D])
def test_random_bodies_never_cause_a_server_error(tmp_path: Any, dialect: Dialect) -> None:
    """Hypothesis-generated JSON bodies (random shapes, and objects with the API's own field names) sent to every
    endpoint that reads a body get answers below 500."""
    options = EmulatorOptions(data_dir=tmp_path, users={"alice": "key-alice"}, dialect=dialect)
    with EmulatorThread(options) as emu, requests.Session() as session:
        session.headers["X-Domino-Api-Key"] = "key-alice"
        base = emu.url + "/api/datasetrw/v1"
        made = session.post(base + "/datasets", json={"name": "fuzz", "projectId": "p"}, timeout=10).json()
        ds = made["id"] if dialect == S else made["dataset"]["id"]
        snap_body = {} if dialect == S else {"relativeFilePaths": [""]}
        snapped = session.post(f"{base}/datasets/{ds}/snapshots", json=snap_body, timeout=10).json()
        ids = {"ds": ds, "snap": snapped["id"] if dialect == S else snapped["snapshot"]["id"]}

        @settings(max_examples=120, deadline=None, database=None)
        @given(route=st.sampled_from(ROUTES), body=BODIES)
        def probe(route: tuple[str, str], body: Any) -> None:
            method, path = route
            reply = session.request(method, base + path.format(**ids), json=fill(body, ids), timeout=10)
            assert reply.status_code < 500, (method, path, body, reply.text)

        probe()
        assert not any(status.startswith("5") for status in emu.stats()["by_status"])
