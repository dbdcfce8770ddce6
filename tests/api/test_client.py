"""DatasetsClient against a mocked API: every endpoint in both dialects, paging, iterators, dialect detection."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from aioresponses import aioresponses

from agent.api.client import DatasetsClient, paged
from agent.api.models import Dialect, Grant, Page, Role, SnapshotStatus
from agent.api.protocol import DatasetsApi
from agent.api.settings import ClientSettings
from agent.errors import ConflictError, NotFoundError, ProtocolError

BASE = "http://api.test"
V1 = BASE + "/api/datasetrw/v1"
V2 = BASE + "/api/datasetrw/v2"
META = {"requestId": "r-1", "notices": []}

Calls = Callable[..., list[dict[str, Any]]]
Make = Callable[..., ClientSettings]


def seed_ds(i: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"ds-{i}",
        "name": f"data-{i}",
        "description": "d",
        "projectId": "p-1",
        "createdAt": "2024-01-15T10:00:00Z",
        "sizeBytes": 10 * i,
        **extra,
    }


def domino_ds(i: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"ds-{i}",
        "name": f"data-{i}",
        "description": "d",
        "projectId": "p-1",
        "createdAt": "2024-01-15T10:00:00Z",
        "snapshotIds": ["s-1"],
        "tags": {"latest": "s-1"},
        **extra,
    }


def env(obj: dict[str, Any], key: str = "dataset") -> dict[str, Any]:
    return {key: obj, "metadata": META}


def snap(i: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": f"s-{i}", "datasetId": "ds-1", "createdAt": "2024-01-15T10:00:00Z", **extra}


def test_client_satisfies_the_protocol(settings: Make) -> None:
    """DatasetsClient is a DatasetsApi (mypy checks the signatures; this checks the assignment at runtime)."""
    client: DatasetsApi = DatasetsClient(settings())
    assert callable(client.iter_datasets) and "key-" not in repr(client)


# --- datasets ------------------------------------------------------------------------------------------------


async def test_list_datasets_seed(api: aioresponses, calls: Calls, settings: Make) -> None:
    """Seed: GET v2 datasets with projectId/offset/limit; the page carries totalCount; the key is sent."""
    api.get(f"{V2}/datasets?projectId=p-1&offset=0&limit=2", payload={"data": [seed_ds(1)], "totalCount": 1})
    async with DatasetsClient(settings(dialect="seed")) as client:
        page = await client.list_datasets("p-1", 0, 2)
    assert [d.name for d in page.items] == ["data-1"] and page.total_count == 1
    (sent,) = calls("GET", "/api/datasetrw/v2/datasets", projectId="p-1", offset=0, limit=2)
    assert sent["headers"]["X-Domino-Api-Key"] == "key-unit-test-0001"


async def test_list_datasets_domino_filters_with_projectIdsToInclude(api: aioresponses, settings: Make) -> None:
    """Domino: the project filter is projectIdsToInclude and items wrap dataset + projectInfo."""
    body = {
        "datasets": [{"dataset": domino_ds(1), "projectInfo": {"projectId": "p-1"}}],
        "metadata": {**META, "pagination": {"offset": 0, "limit": 50, "totalCount": 1}},
    }
    api.get(f"{V2}/datasets?projectIdsToInclude=p-1&offset=0&limit=50", payload=body)
    async with DatasetsClient(settings(dialect="domino")) as client:
        page = await client.list_datasets("p-1")
    assert page.items[0].tags == {"latest": "s-1"} and page.total_count == 1


@pytest.mark.parametrize("dialect", ["seed", "domino"])
async def test_iter_datasets_pages_through_everything(api: aioresponses, settings: Make, dialect: str) -> None:
    """The async iterator asks page after page until totalCount is reached."""
    for offset in (0, 2, 4):
        items = [i for i in (offset + 1, offset + 2) if i <= 5]
        if dialect == "seed":
            body: dict[str, Any] = {"data": [seed_ds(i) for i in items], "offset": offset, "limit": 2, "totalCount": 5}
        else:
            page = {"offset": offset, "limit": 2, "totalCount": 5}
            body = {"datasets": [{"dataset": domino_ds(i)} for i in items], "metadata": {**META, "pagination": page}}
        api.get(f"{V2}/datasets?offset={offset}&limit=2", payload=body)
    async with DatasetsClient(settings(dialect=dialect)) as client:
        names = [d.name async for d in client.iter_datasets(page_size=2)]
    assert names == [f"data-{i}" for i in range(1, 6)]


async def test_iter_stops_on_short_page_without_total(api: aioresponses, settings: Make) -> None:
    """Without totalCount a page shorter than asked is the last one."""
    api.get(f"{V2}/datasets?offset=0&limit=2", payload={"data": [seed_ds(1), seed_ds(2)]})
    api.get(f"{V2}/datasets?offset=2&limit=2", payload={"data": [seed_ds(3)]})
    async with DatasetsClient(settings()) as client:
        found = [d.id async for d in client.iter_datasets(page_size=2)]
    assert found == ["ds-1", "ds-2", "ds-3"]


@pytest.mark.parametrize("dialect", ["seed", "domino"])
async def test_create_dataset(api: aioresponses, calls: Calls, settings: Make, dialect: str) -> None:
    """POST v1 datasets with name/description/projectId; seed answers 201 flat, domino 200 in an envelope."""
    if dialect == "seed":
        api.post(f"{V1}/datasets", status=201, payload=seed_ds(7))
    else:
        api.post(f"{V1}/datasets", status=200, payload=env(domino_ds(7)))
    async with DatasetsClient(settings(dialect=dialect)) as client:
        ds = await client.create_dataset("data-7", "p-1", "seven")
    assert ds.id == "ds-7" and ds.project_id == "p-1"
    (sent,) = calls("POST", "/api/datasetrw/v1/datasets")
    assert sent["json"] == {"name": "data-7", "description": "seven", "projectId": "p-1"}


@pytest.mark.parametrize("dialect", ["seed", "domino"])
async def test_get_update_delete_dataset(api: aioresponses, calls: Calls, settings: Make, dialect: str) -> None:
    """GET, PATCH (200 with the dataset) and DELETE (204 seed, 200 envelope domino) of one dataset."""
    wrap = (lambda o: o) if dialect == "seed" else env
    make = seed_ds if dialect == "seed" else domino_ds
    api.get(f"{V1}/datasets/ds-1", payload=wrap(make(1)))
    api.patch(f"{V1}/datasets/ds-1", payload=wrap(make(1, name="renamed")))
    if dialect == "seed":
        api.delete(f"{V1}/datasets/ds-1", status=204)
    else:
        api.delete(f"{V1}/datasets/ds-1", payload=wrap(make(1)))
    async with DatasetsClient(settings(dialect=dialect)) as client:
        assert (await client.get_dataset("ds-1")).name == "data-1"
        assert (await client.update_dataset("ds-1", name="renamed")).name == "renamed"
        await client.delete_dataset("ds-1")
    assert len(calls("DELETE", "/api/datasetrw/v1/datasets/ds-1")) == 1
    assert calls("PATCH", "/api/datasetrw/v1/datasets/ds-1")[0]["json"] == {"name": "renamed"}


async def test_update_with_nothing_to_change_only_reads(api: aioresponses, calls: Calls, settings: Make) -> None:
    """update_dataset with no changes sends no PATCH and returns the dataset as it is."""
    api.get(f"{V1}/datasets/ds-1", payload=seed_ds(1))
    async with DatasetsClient(settings()) as client:
        assert (await client.update_dataset("ds-1")).id == "ds-1"
    assert calls("PATCH", "/api/datasetrw/v1/datasets/ds-1") == []


async def test_ids_are_quoted_into_paths(api: aioresponses, settings: Make) -> None:
    """An id with a slash or space stays one path segment."""
    api.get(f"{V1}/datasets/a%2Fb%20c", payload=seed_ds(1))
    async with DatasetsClient(settings()) as client:
        assert (await client.get_dataset("a/b c")).id == "ds-1"


async def test_find_dataset(api: aioresponses, settings: Make) -> None:
    """find_dataset matches the name within the project, and raises NotFound or Conflict otherwise."""
    api.get(
        f"{V2}/datasets?projectId=p-1&offset=0&limit=50",
        payload={"data": [seed_ds(1), seed_ds(2)], "totalCount": 2},
        repeat=True,
    )
    api.get(
        f"{V2}/datasets?offset=0&limit=50",
        payload={"data": [seed_ds(1), seed_ds(1, id="ds-x", projectId="p-2")], "totalCount": 2},
    )
    async with DatasetsClient(settings(dialect="seed")) as client:
        assert (await client.find_dataset("data-2", "p-1")).id == "ds-2"
        with pytest.raises(NotFoundError, match="no dataset named 'nope' in project 'p-1'"):
            await client.find_dataset("nope", "p-1")
        with pytest.raises(ConflictError, match="2 datasets named 'data-1'"):
            await client.find_dataset("data-1")


# --- snapshots -----------------------------------------------------------------------------------------------


async def test_list_snapshots_seed_tolerates_missing_paging(api: aioresponses, settings: Make) -> None:
    """The seed's snapshot list may carry only `data`; iterating stops after the short page."""
    api.get(f"{V1}/datasets/ds-1/snapshots?offset=0&limit=50", payload={"data": [snap(1, tags=["v1"]), snap(2)]})
    async with DatasetsClient(settings(dialect="seed")) as client:
        found = [s async for s in client.iter_snapshots("ds-1")]
    assert [s.id for s in found] == ["s-1", "s-2"] and found[0].tags == ("v1",)


async def test_list_snapshots_domino_fills_tags_from_dataset(api: aioresponses, settings: Make) -> None:
    """Domino snapshots carry no tags: the dataset's tag map fills them in (one more call)."""
    page = {"offset": 0, "limit": 50, "totalCount": 2}
    api.get(
        f"{V1}/datasets/ds-1/snapshots?offset=0&limit=50",
        payload={"snapshots": [snap(1, status="Active"), snap(2, status="pending")], "metadata": {**META, **page}},
    )
    api.get(f"{V1}/datasets/ds-1", payload=env(domino_ds(1, tags={"latest": "s-2", "v1": "s-1"})))
    async with DatasetsClient(settings(dialect="domino")) as client:
        result = await client.list_snapshots("ds-1")
    assert [(s.id, s.tags, s.status) for s in result.items] == [
        ("s-1", ("v1",), SnapshotStatus.ACTIVE),
        ("s-2", ("latest",), SnapshotStatus.PENDING),
    ]


async def test_create_snapshot_seed_sends_tag_in_one_call(api: aioresponses, calls: Calls, settings: Make) -> None:
    """Seed: POST snapshots {"tag": ...} answered 201; no tag gives an empty body."""
    api.post(f"{V1}/datasets/ds-1/snapshots", status=201, payload=snap(3, tags=["v2"], status="active"))
    api.post(f"{V1}/datasets/ds-1/snapshots", status=201, payload=snap(4))
    async with DatasetsClient(settings(dialect="seed")) as client:
        tagged = await client.create_snapshot("ds-1", tag="v2")
        plain = await client.create_snapshot("ds-1")
    assert tagged.tags == ("v2",) and plain.id == "s-4"
    assert [c["json"] for c in calls("POST", "/api/datasetrw/v1/datasets/ds-1/snapshots")] == [{"tag": "v2"}, {}]
    assert calls("POST", "/api/datasetrw/v1/datasets/ds-1/tags") == []


async def test_create_snapshot_domino_then_tags(api: aioresponses, calls: Calls, settings: Make) -> None:
    """Domino: POST snapshots {"relativeFilePaths": [""]}, then POST tags; the result carries the tag."""
    api.post(f"{V1}/datasets/ds-1/snapshots", payload=env(snap(3, status="Pending"), "snapshot"))
    api.post(f"{V1}/datasets/ds-1/tags", payload=env(domino_ds(1, tags={"latest": "s-3", "old": "s-1"})))
    async with DatasetsClient(settings(dialect="domino")) as client:
        created = await client.create_snapshot("ds-1", tag="latest")
    assert created.id == "s-3" and created.tags == ("latest",) and created.status is SnapshotStatus.PENDING
    assert calls("POST", "/api/datasetrw/v1/datasets/ds-1/snapshots")[0]["json"] == {"relativeFilePaths": [""]}
    assert calls("POST", "/api/datasetrw/v1/datasets/ds-1/tags")[0]["json"] == {
        "snapshotId": "s-3",
        "tagName": "latest",
    }


@pytest.mark.parametrize("dialect", ["seed", "domino"])
async def test_get_snapshot(api: aioresponses, settings: Make, dialect: str) -> None:
    """GET v1 snapshots/{id}, flat (seed) or enveloped with tags from the dataset (domino)."""
    if dialect == "seed":
        api.get(f"{V1}/snapshots/s-1", payload=snap(1, tags=["latest"], status="active"))
    else:
        api.get(f"{V1}/snapshots/s-1", payload=env(snap(1, status="ACTIVE"), "snapshot"))
        api.get(f"{V1}/datasets/ds-1", payload=env(domino_ds(1)))
    async with DatasetsClient(settings(dialect=dialect)) as client:
        got = await client.get_snapshot("s-1")
    assert (got.id, got.dataset_id, got.tags, got.status) == ("s-1", "ds-1", ("latest",), SnapshotStatus.ACTIVE)


# --- tags and grants -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["seed", "domino"])
async def test_add_and_remove_tag(api: aioresponses, calls: Calls, settings: Make, dialect: str) -> None:
    """POST tags {snapshotId, tagName} (201 seed, 200 domino) and DELETE tags/{name}."""
    if dialect == "seed":
        api.post(f"{V1}/datasets/ds-1/tags", status=201, payload={"snapshotId": "s-1", "tagName": "prod"})
        api.delete(f"{V1}/datasets/ds-1/tags/prod", status=204)
    else:
        api.post(f"{V1}/datasets/ds-1/tags", payload=env(domino_ds(1)))
        api.delete(f"{V1}/datasets/ds-1/tags/prod", payload=env(domino_ds(1)))
    async with DatasetsClient(settings(dialect=dialect)) as client:
        await client.add_tag("ds-1", "s-1", "prod")
        await client.remove_tag("ds-1", "prod")
    tagged = calls("POST", "/api/datasetrw/v1/datasets/ds-1/tags")
    assert tagged[0]["json"] == {"snapshotId": "s-1", "tagName": "prod"}
    assert len(calls("DELETE", "/api/datasetrw/v1/datasets/ds-1/tags/prod")) == 1


async def test_grants_seed(api: aioresponses, calls: Calls, settings: Make) -> None:
    """Seed grants: GET {data}, POST and DELETE with principalType/principalId(/permission)."""
    grants = {"data": [{"principalType": "user", "principalId": "u-1", "permission": "read"}]}
    api.get(f"{V1}/datasets/ds-1/grants", payload=grants)
    api.post(f"{V1}/datasets/ds-1/grants", status=201, payload={})
    api.delete(f"{V1}/datasets/ds-1/grants", status=204)
    async with DatasetsClient(settings(dialect="seed")) as client:
        assert await client.list_grants("ds-1") == [Grant("u-1", Role.READ)]
        await client.add_grant("ds-1", "u-2", Role.WRITE)
        await client.remove_grant("ds-1", "u-1")
    path = "/api/datasetrw/v1/datasets/ds-1/grants"
    assert calls("POST", path)[0]["json"] == {"principalType": "user", "principalId": "u-2", "permission": "write"}
    assert calls("DELETE", path)[0]["json"] == {"principalType": "user", "principalId": "u-1"}


async def test_grants_domino(api: aioresponses, calls: Calls, settings: Make) -> None:
    """Domino grants: grantDetails, POST {targetId, targetRole}; DELETE looks the role up first."""
    details = {
        "grantDetails": [
            {"targetId": "u-1", "targetName": "alice", "targetRole": "DatasetRwOwner", "isOrganization": False}
        ],
        "metadata": META,
    }
    api.get(f"{V1}/datasets/ds-1/grants", payload=details, repeat=True)
    api.post(f"{V1}/datasets/ds-1/grants", payload={"grants": [], "metadata": META})
    api.delete(f"{V1}/datasets/ds-1/grants", payload={"grants": [], "metadata": META})
    async with DatasetsClient(settings(dialect="domino")) as client:
        (grant,) = await client.list_grants("ds-1")
        await client.add_grant("ds-1", "u-2", Role.READ)
        await client.remove_grant("ds-1", "u-1")
    assert grant.principal_name == "alice" and grant.role is Role.ADMIN
    path = "/api/datasetrw/v1/datasets/ds-1/grants"
    assert calls("POST", path)[0]["json"] == {"targetId": "u-2", "targetRole": "DatasetRwReader"}
    assert calls("DELETE", path)[0]["json"] == {"targetId": "u-1", "targetRole": "DatasetRwOwner"}


# --- dialect detection ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [(env(domino_ds(1)), Dialect.DOMINO), (seed_ds(1), Dialect.SEED)],
)
async def test_dialect_detected_from_first_answer(
    api: aioresponses, calls: Calls, settings: Make, answer: dict[str, Any], expected: Dialect
) -> None:
    """In auto mode the first answer's shape sets the dialect, and dialect() then asks nothing more."""
    api.get(f"{V1}/datasets/ds-1", payload=answer)
    async with DatasetsClient(settings()) as client:
        assert client.known_dialect is None
        await client.get_dataset("ds-1")
        assert await client.dialect() is expected
    assert calls("GET", "/api/datasetrw/v2/datasets", offset=0, limit=1) == []


async def test_dialect_asks_once_when_unknown(api: aioresponses, calls: Calls, settings: Make) -> None:
    """dialect() makes one cheap GET v2 datasets?limit=1 and caches the answer."""
    api.get(f"{V2}/datasets?offset=0&limit=1", payload={"datasets": [], "metadata": {**META, "totalCount": 0}})
    async with DatasetsClient(settings()) as client:
        assert await client.dialect() is Dialect.DOMINO
        assert await client.dialect() is Dialect.DOMINO
    assert len(calls("GET", "/api/datasetrw/v2/datasets", offset=0, limit=1)) == 1


async def test_auto_snapshot_creation_learns_dialect_first(api: aioresponses, calls: Calls, settings: Make) -> None:
    """Creating a snapshot in auto mode learns the dialect before choosing the body."""
    api.get(f"{V2}/datasets?offset=0&limit=1", payload={"data": [], "totalCount": 0})
    api.post(f"{V1}/datasets/ds-1/snapshots", status=201, payload=snap(1, tags=["t"]))
    async with DatasetsClient(settings()) as client:
        await client.create_snapshot("ds-1", "t")
    assert calls("POST", "/api/datasetrw/v1/datasets/ds-1/snapshots")[0]["json"] == {"tag": "t"}


async def test_undetectable_dialect_is_a_protocol_error(api: aioresponses, settings: Make) -> None:
    """An answer of no known shape to the probe is a ProtocolError that says to configure the dialect."""
    api.get(f"{V2}/datasets?offset=0&limit=1", payload={"something": "else"})
    async with DatasetsClient(settings()) as client:
        with pytest.raises(ProtocolError, match="dialect"):
            await client.dialect()


async def test_configured_dialect_is_not_overridden(api: aioresponses, settings: Make) -> None:
    """A configured dialect stays, whatever the answers look like."""
    api.get(f"{V1}/datasets/ds-1", payload=env(domino_ds(1)))
    async with DatasetsClient(settings(dialect="seed")) as client:
        await client.get_dataset("ds-1")
        assert await client.dialect() is Dialect.SEED


# --- answers the client cannot read --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "match"),
    [("<html>oops</html>", "not JSON"), ('{"name": "no id"}', "unexpected answer"), ("[1, 2]", "unexpected")],
)
async def test_unreadable_answers_are_protocol_errors(api: aioresponses, settings: Make, body: str, match: str) -> None:
    """A 200 whose body is not JSON or lacks required fields raises ProtocolError naming the call."""
    api.get(f"{V1}/datasets/ds-1", body=body)
    async with DatasetsClient(settings()) as client:
        with pytest.raises(ProtocolError, match=match) as caught:
            await client.get_dataset("ds-1")
    assert "GET /api/datasetrw/v1/datasets/ds-1" in str(caught.value)


async def test_observer_sees_every_attempt(api: aioresponses, settings: Make) -> None:
    """The observer gets method, route template, outcome and seconds for each HTTP attempt."""
    seen: list[tuple[str, str, str, float]] = []
    api.get(re.compile(r".*/datasets/ds-1$"), status=503, body="busy")
    api.get(re.compile(r".*/datasets/ds-1$"), payload=seed_ds(1))
    async with DatasetsClient(settings(), observer=lambda *args: seen.append(args)) as client:
        await client.get_dataset("ds-1")
    assert [(m, r, o) for m, r, o, _ in seen] == [
        ("GET", "/api/datasetrw/v1/datasets/{datasetId}", "503"),
        ("GET", "/api/datasetrw/v1/datasets/{datasetId}", "ok"),
    ]
    assert all(s >= 0 for *_, s in seen)


async def test_broken_observer_does_not_break_calls(api: aioresponses, settings: Make) -> None:
    """An observer that raises is logged and ignored."""

    def broken(*_: Any) -> None:
        raise RuntimeError("metrics down")

    api.get(f"{V1}/datasets/ds-1", payload=seed_ds(1))
    async with DatasetsClient(settings(), observer=broken) as client:
        assert (await client.get_dataset("ds-1")).id == "ds-1"


async def test_calls_need_an_open_client(settings: Make) -> None:
    """Calling before `async with` is a programming error, said plainly."""
    with pytest.raises(RuntimeError, match="async with"):
        await DatasetsClient(settings()).get_dataset("ds-1")


def _pages_of(items: list[int], *, total: bool = True, ignore_limit: bool = False) -> tuple[Any, list[tuple[int, int]]]:
    asked: list[tuple[int, int]] = []

    async def fetch(offset: int, limit: int) -> Page[int]:
        asked.append((offset, limit))
        chunk = items[offset:] if ignore_limit else items[offset : offset + limit]
        return Page(tuple(chunk), offset, limit, len(items) if total else None)

    return fetch, asked


@pytest.mark.parametrize("total", [True, False])
async def test_paged_walks_every_page_from_the_offset(total: bool) -> None:
    """`paged` yields every item from the offset on, a page at a time, with or without totalCount."""
    fetch, asked = _pages_of(list(range(7)), total=total)
    got = [item async for item in paged(fetch, offset=1, page_size=2)]
    assert got == [1, 2, 3, 4, 5, 6]
    assert asked[:3] == [(1, 2), (3, 2), (5, 2)]


async def test_paged_stops_at_the_limit_and_asks_only_for_what_is_left() -> None:
    """With a limit, the last request asks for only the items still wanted and no more are yielded."""
    fetch, asked = _pages_of(list(range(10)))
    got = [item async for item in paged(fetch, page_size=4, limit=5)]
    assert got == [0, 1, 2, 3, 4]
    assert asked == [(0, 4), (4, 1)]


async def test_paged_keeps_to_the_limit_when_the_server_ignores_it() -> None:
    """A server that answers more than asked still yields at most `limit` items."""
    fetch, _ = _pages_of(list(range(10)), ignore_limit=True)
    got = [item async for item in paged(fetch, page_size=3, limit=4)]
    assert got == [0, 1, 2, 3]
