"""Every endpoint over real sockets in both dialects: seed shapes as documented, domino answers validated against
the reference OpenAPI document; keys, routing errors and listing filters."""

from __future__ import annotations

import re
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.emulator import RunningEmulator
from agent.emulator.operations import Operations

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DATASET_ID = re.compile(r"^dataset-[0-9a-f]{12}$")
SNAPSHOT_ID = re.compile(r"^snapshot-[0-9a-f]{12}$")


async def test_seed_dialect_serves_every_endpoint(emulator: RunningEmulator, connect: Any, errors: Any) -> None:
    """A full walk through the seed's endpoints answers the seed's statuses and shapes."""
    api = connect(emulator)
    made = await api.post("/datasets", {"name": "training-data", "description": "d", "projectId": "project-1"})
    assert made.status == 201
    ds = made.body
    assert DATASET_ID.match(ds["id"]) and ISO_UTC.match(ds["createdAt"])
    assert {k: ds[k] for k in ("name", "description", "projectId", "sizeBytes")} == {
        "name": "training-data",
        "description": "d",
        "projectId": "project-1",
        "sizeBytes": 0,
    }
    (emulator.mount_root / "training-data" / "data.csv").write_text("a,b\n1,2\n")

    got = await api.get(f"/datasets/{ds['id']}")
    assert got.status == 200 and got.body["sizeBytes"] == 8 and got.body["snapshotIds"] == []
    for path in ("/api/datasetrw/v2/datasets", "/api/datasetrw/v1/datasets"):
        listed = await api.get(path, params={"limit": 50})
        assert listed.status == 200
        assert listed.body == {"data": [got.body], "offset": 0, "limit": 50, "totalCount": 1}

    patched = await api.patch(f"/datasets/{ds['id']}", {"description": "new"})
    assert patched.status == 200 and patched.body["description"] == "new" and patched.body["name"] == "training-data"

    plain = await api.post(f"/datasets/{ds['id']}/snapshots", {})
    tagged = await api.post(f"/datasets/{ds['id']}/snapshots", {"tag": "v1.0"})
    assert plain.status == tagged.status == 201
    assert SNAPSHOT_ID.match(plain.body["id"]) and ISO_UTC.match(plain.body["createdAt"])
    assert plain.body == {
        "id": plain.body["id"],
        "datasetId": ds["id"],
        "createdAt": plain.body["createdAt"],
        "status": "active",
        "tags": [],
        "creatorId": "alice",
    }
    assert tagged.body["tags"] == ["v1.0"]

    snaps = await api.get(f"/datasets/{ds['id']}/snapshots")
    assert snaps.status == 200
    assert [s["id"] for s in snaps.body["data"]] == [plain.body["id"], tagged.body["id"]]
    assert (snaps.body["offset"], snaps.body["limit"], snaps.body["totalCount"]) == (0, 50, 2)
    one = await api.get(f"/snapshots/{tagged.body['id']}")
    assert one.status == 200 and one.body == tagged.body

    tag = await api.post(f"/datasets/{ds['id']}/tags", {"snapshotId": plain.body["id"], "tagName": "production"})
    assert tag.status == 201
    assert tag.body == {"datasetId": ds["id"], "snapshotId": plain.body["id"], "tagName": "production"}
    after = await api.get(f"/datasets/{ds['id']}")
    assert after.body["tags"] == {"production": plain.body["id"], "v1.0": tagged.body["id"]}
    removed = await api.delete(f"/datasets/{ds['id']}/tags/production")
    assert removed.status == 204 and removed.body is None

    grant = {"principalType": "user", "principalId": "bob", "permission": "read"}
    added = await api.post(f"/datasets/{ds['id']}/grants", grant)
    assert added.status == 201 and added.body == grant
    grants = await api.get(f"/datasets/{ds['id']}/grants")
    assert grants.status == 200
    assert grants.body == {"data": [{"principalType": "user", "principalId": "alice", "permission": "admin"}, grant]}
    revoked = await api.delete(f"/datasets/{ds['id']}/grants", {"principalType": "user", "principalId": "bob"})
    assert revoked.status == 204

    deleted = await api.delete(f"/datasets/{ds['id']}")
    assert deleted.status == 204
    errors.seed(await api.get(f"/datasets/{ds['id']}"), 404, "not_found")
    errors.seed(await api.get(f"/snapshots/{tagged.body['id']}"), 404, "not_found")
    assert (await api.get("/api/datasetrw/v2/datasets")).body["totalCount"] == 0


async def test_domino_dialect_answers_match_the_reference(
    domino_emulator: RunningEmulator, connect: Any, openapi: Any, errors: Any
) -> None:
    """A full walk through every endpoint in the domino dialect: each answer validates against its operation."""
    api = connect(domino_emulator)
    made = await api.post("/datasets", {"name": "features", "projectId": "project-1", "description": "d"})
    assert made.status == 200
    openapi.check("POST", "/datasets", made)
    ds = made.body["dataset"]
    assert made.headers["X-Request-Id"] == made.body["metadata"]["requestId"]
    (domino_emulator.mount_root / "features" / "x.txt").write_text("x")
    (domino_emulator.mount_root / "features" / "keep").mkdir()
    (domino_emulator.mount_root / "features" / "keep" / "y.txt").write_text("y")

    got = await api.get(f"/datasets/{ds['id']}")
    openapi.check("GET", "/datasets/{datasetId}", got)
    v1 = await api.get("/api/datasetrw/v1/datasets", params={"projectId": "project-1", "offset": 0, "limit": 10})
    openapi.check("GET", "/datasets", v1)
    assert [d["id"] for d in v1.body["datasets"]] == [ds["id"]]
    assert v1.body["metadata"]["pagination"] == {"offset": 0, "limit": 10, "totalCount": 1}
    v2 = await api.get("/api/datasetrw/v2/datasets", params={"includeProjectInfo": "true"})
    openapi.check("GET", "/api/datasetrw/v2/datasets", v2)
    assert v2.body["datasets"][0]["dataset"]["id"] == ds["id"]
    assert v2.body["datasets"][0]["projectInfo"]["projectId"] == "project-1"

    patched = await api.patch(f"/datasets/{ds['id']}", {"description": "new"})
    openapi.check("PATCH", "/datasets/{datasetId}", patched)

    snap = await api.post(f"/datasets/{ds['id']}/snapshots", {"relativeFilePaths": [""]})
    assert snap.status == 200
    openapi.check("POST", "/datasets/{datasetId}/snapshots", snap)
    part = await api.post(f"/datasets/{ds['id']}/snapshots", {"relativeFilePaths": ["keep"]})
    openapi.check("POST", "/datasets/{datasetId}/snapshots", part)
    part_dir = domino_emulator.mount_root / f"features@{part.body['snapshot']['id']}"
    assert sorted(p.name for p in part_dir.iterdir()) == ["keep"]
    snaps = await api.get(f"/datasets/{ds['id']}/snapshots", params={"limit": 1, "offset": 1})
    openapi.check("GET", "/datasets/{datasetId}/snapshots", snaps)
    assert [s["id"] for s in snaps.body["snapshots"]] == [part.body["snapshot"]["id"]]
    assert snaps.body["metadata"]["pagination"]["totalCount"] == 2
    one = await api.get(f"/snapshots/{snap.body['snapshot']['id']}")
    openapi.check("GET", "/snapshots/{snapshotId}", one)

    tagged = await api.post(f"/datasets/{ds['id']}/tags", {"snapshotId": snap.body["snapshot"]["id"], "tagName": "v1"})
    assert tagged.status == 200
    openapi.check("POST", "/datasets/{datasetId}/tags", tagged)
    assert tagged.body["dataset"]["tags"] == {"v1": snap.body["snapshot"]["id"]}
    untagged = await api.delete(f"/datasets/{ds['id']}/tags/v1")
    openapi.check("DELETE", "/datasets/{datasetId}/tags/{tagName}", untagged)
    assert untagged.body["dataset"]["tags"] == {}

    added = await api.post(f"/datasets/{ds['id']}/grants", {"targetId": "bob", "targetRole": "DatasetRwEditor"})
    openapi.check("POST", "/datasets/{datasetId}/grants", added)
    assert {"targetId": "bob", "targetRole": "DatasetRwEditor"} in added.body["grants"]
    grants = await api.get(f"/datasets/{ds['id']}/grants")
    openapi.check("GET", "/datasets/{datasetId}/grants", grants)
    assert grants.body["grantDetails"] == [
        {"targetId": "alice", "targetName": "alice", "targetRole": "DatasetRwOwner", "isOrganization": False},
        {"targetId": "bob", "targetName": "bob", "targetRole": "DatasetRwEditor", "isOrganization": False},
    ]
    removed = await api.delete(f"/datasets/{ds['id']}/grants", {"targetId": "bob", "targetRole": "DatasetRwEditor"})
    openapi.check("DELETE", "/datasets/{datasetId}/grants", removed)
    assert [g["targetId"] for g in removed.body["grants"]] == ["alice"]

    deleted = await api.delete(f"/datasets/{ds['id']}")
    openapi.check("DELETE", "/datasets/{datasetId}", deleted)
    gone = await api.get(f"/datasets/{ds['id']}")
    openapi.check("GET", "/datasets/{datasetId}", gone)
    errors.domino(gone, 404)


async def test_domino_create_from_snapshot_and_with_grants(
    domino_emulator: RunningEmulator, connect: Any, openapi: Any
) -> None:
    """Domino's create accepts initial grants, or a snapshotId whose content seeds the new dataset's folder."""
    api = connect(domino_emulator)
    made = await api.post(
        "/datasets", {"name": "src", "projectId": "p", "grants": [{"targetId": "bob", "targetRole": "DatasetRwReader"}]}
    )
    ds = made.body["dataset"]
    bob = await connect(domino_emulator, "bob").get(f"/datasets/{ds['id']}")
    assert bob.status == 200
    (domino_emulator.mount_root / "src" / "f.txt").write_text("content")
    snap = await api.post(f"/datasets/{ds['id']}/snapshots", {"relativeFilePaths": [""]})
    copy = await api.post("/datasets", {"name": "copy", "snapshotId": snap.body["snapshot"]["id"]})
    openapi.check("POST", "/datasets", copy)
    assert copy.body["dataset"]["projectId"] == "p"
    assert (domino_emulator.mount_root / "copy" / "f.txt").read_text() == "content"


async def test_keys_in_either_header(emulator: RunningEmulator, connect: Any, errors: Any) -> None:
    """X-Domino-Api-Key and Authorization: Bearer both authenticate; none or an unknown key is 401."""
    anonymous = connect(emulator, None)
    errors.seed(await anonymous.get("/api/datasetrw/v2/datasets"), 401, "unauthorized")
    bearer = await anonymous.get("/api/datasetrw/v2/datasets", headers={"Authorization": "Bearer key-bob"})
    assert bearer.status == 200
    wrong = await anonymous.get("/api/datasetrw/v2/datasets", headers={"X-Domino-Api-Key": "key-nobody"})
    message = errors.seed(wrong, 401, "unauthorized")
    assert "key-nobody" not in message
    basic = await anonymous.get("/api/datasetrw/v2/datasets", headers={"Authorization": "Basic a2V5LWJvYjo="})
    errors.seed(basic, 401)


async def test_domino_auth_errors_are_failure_envelopes(
    domino_emulator: RunningEmulator, connect: Any, openapi: Any, errors: Any
) -> None:
    """In the domino dialect 401 and 403 answer FailureEnvelopeV1 with the request id."""
    missing = await connect(domino_emulator, None).get("/datasets")
    openapi.check("GET", "/datasets", missing)
    errors.domino(missing, 401)
    made = await connect(domino_emulator).post("/datasets", {"name": "private", "projectId": "p"})
    denied = await connect(domino_emulator, "carol").get(f"/datasets/{made.body['dataset']['id']}")
    openapi.check("GET", "/datasets/{datasetId}", denied)
    assert errors.domino(denied, 403).startswith("user 'carol' may not read")
    assert denied.body["requestId"] == denied.headers["X-Request-Id"]


async def test_unknown_routes_and_methods_answer_in_dialect(
    emulator: RunningEmulator, domino_emulator: RunningEmulator, connect: Any, errors: Any
) -> None:
    """An unknown path is 404 and a wrong method 405 (with Allow), in each dialect's error shape."""
    errors.seed(await connect(emulator).get("/api/datasetrw/v9/nothing"), 404, "not_found")
    wrong = await connect(emulator).call("PUT", "/datasets")
    errors.seed(wrong, 405, "method_not_allowed")
    assert "POST" in wrong.headers["Allow"]
    errors.domino(await connect(domino_emulator).get("/api/datasetrw/v9/nothing"), 404)
    errors.domino(await connect(domino_emulator).call("PUT", "/datasets"), 405)


async def test_listing_filters_and_pages(domino_emulator: RunningEmulator, connect: Any) -> None:
    """Listings filter by project (v1 projectId; v2 include/exclude lists and minimumPermission) and page."""
    alice, bob = connect(domino_emulator), connect(domino_emulator, "bob")
    ids = {}
    for name, project in [("a1", "pa"), ("a2", "pa"), ("b1", "pb"), ("c1", "pc")]:
        ids[name] = (await alice.post("/datasets", {"name": name, "projectId": project})).body["dataset"]["id"]
    await alice.post(f"/datasets/{ids['a1']}/grants", {"targetId": "bob", "targetRole": "DatasetRwReader"})
    await alice.post(f"/datasets/{ids['b1']}/grants", {"targetId": "bob", "targetRole": "DatasetRwEditor"})

    async def names(client: Any, path: str, **params: Any) -> list[str]:
        reply = await client.get(path, params=params)
        assert reply.status == 200, reply.body
        items = reply.body["datasets"]
        return [(item.get("dataset") or item)["name"] for item in items]

    assert await names(alice, "/datasets", projectId="pa") == ["a1", "a2"]
    assert await names(alice, "/api/datasetrw/v2/datasets", projectIdsToInclude="pa,pc") == ["a1", "a2", "c1"]
    assert await names(alice, "/api/datasetrw/v2/datasets", projectIdsToExclude="pa") == ["b1", "c1"]
    assert await names(alice, "/api/datasetrw/v2/datasets", offset=1, limit=2) == ["a2", "b1"]
    assert await names(bob, "/api/datasetrw/v2/datasets") == ["a1", "b1"]
    assert await names(bob, "/api/datasetrw/v2/datasets", minimumPermission="UpdateDatasetRwV2") == ["b1"]
    multi = await bob.get(
        "/api/datasetrw/v2/datasets", params=[("projectIdsToInclude", "pa"), ("projectIdsToInclude", "pb")]
    )
    assert multi.body["metadata"]["totalCount"] == 2


async def test_stats_route_needs_no_key(emulator: RunningEmulator, connect: Any) -> None:
    """GET /__emulator__/stats answers without a key and equals emu.stats()."""
    await connect(emulator).get("/datasets")
    reply = await connect(emulator, None).get("/__emulator__/stats")
    assert reply.status == 200 and reply.body == emulator.stats()
    assert reply.body["by_route"] == {"GET /api/datasetrw/v1/datasets": 1}


async def test_unexpected_errors_are_logged_500s_in_dialect(
    emulator: RunningEmulator, connect: Any, errors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception in an operation is answered 500 in the dialect's shape with no traceback or
    detail, and logged once as emulator.unexpected; no log event carries a key."""

    async def boom(*_: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Operations, "get_dataset", boom)
    with capture_logs() as logs:
        reply = await connect(emulator).get("/datasets/dataset-000000000000")
        assert (await connect(emulator).get("/datasets")).status == 200
    message = errors.seed(reply, 500, "internal_error")
    assert "boom" not in message and "Traceback" not in message and reply.headers["X-Request-Id"] in message
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["emulator.unexpected"]
    assert not any(key in repr(event) for event in logs for key in emulator.keys.values())
