"""`domino-sync datasets|snapshots|tags|grants`: arguments, output formats, exit codes, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

BASE = "http://api.test"
V1 = BASE + "/api/datasetrw/v1"
V2 = BASE + "/api/datasetrw/v2"
ENV = {"DOMINO_API_HOST": BASE, "DOMINO_USER_API_KEY": "key-cli-test-0001"}
COMMON = ("--dialect", "seed")

Run = Callable[..., Any]


def ds(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"ds-{i}", "name": f"data-{i}", "projectId": "p-1", "sizeBytes": i, **extra}


def sent(api: aioresponses, method: str, url: str) -> list[dict[str, Any]]:
    target = URL(url)
    return [c.kwargs for (m, u), cs in api.requests.items() if m == method and u == target for c in cs]


@pytest.mark.parametrize(
    ("group", "commands"),
    [
        ("datasets", ["list", "create", "get", "update", "delete"]),
        ("snapshots", ["list", "create", "get"]),
        ("tags", ["add", "remove"]),
        ("grants", ["list", "add", "remove"]),
    ],
)
def test_every_command_has_help(run_cli: Run, group: str, commands: list[str]) -> None:
    """Each group lists its commands and each command answers --help with exit 0."""
    listing = run_cli(group, "--help")
    assert listing.code == 0 and all(name in listing.out for name in commands)
    for name in commands:
        result = run_cli(group, name, "--help")
        assert result.code == 0 and "--url" in result.out and "--output" in result.out


def test_no_url_is_a_usage_error(run_cli: Run) -> None:
    """Without --url or DOMINO_API_HOST the command exits 2 with one line naming both."""
    result = run_cli("datasets", "list")
    assert result.code == 2 and "--url" in result.err and "DOMINO_API_HOST" in result.err
    assert "Traceback" not in result.err and result.out == ""


def test_datasets_list_pages_through_everything(api: aioresponses, run_cli: Run) -> None:
    """`datasets list --project` follows the pages and prints one JSON array."""
    url = f"{V2}/datasets?projectId=p-1&limit=50&offset="
    api.get(url + "0", payload={"data": [ds(i) for i in range(50)], "totalCount": 52})
    api.get(url + "50", payload={"data": [ds(50), ds(51)], "totalCount": 52})
    result = run_cli("datasets", "list", "--project", "p-1", *COMMON, env=ENV)
    assert result.code == 0, result.err
    listed = json.loads(result.out)
    assert len(listed) == 52 and listed[51]["id"] == "ds-51" and listed[0]["project_id"] == "p-1"


def test_datasets_list_limit_offset_and_table(api: aioresponses, run_cli: Run) -> None:
    """--offset and --limit bound the listing; --output table prints aligned columns with a header."""
    page = {"data": [ds(2), ds(3, name="a-much-longer-name")], "totalCount": 9}
    api.get(f"{V2}/datasets?offset=1&limit=2", payload=page)
    result = run_cli("datasets", "list", "--offset", "1", "--limit", "2", "-o", "table", *COMMON, env=ENV)
    assert result.code == 0, result.err
    header, first, second = result.out.splitlines()
    assert header.split() == ["ID", "NAME", "PROJECT_ID", "SIZE_BYTES", "CREATED_AT", "TAGS"]
    assert header.index("PROJECT_ID") == first.index("p-1") == second.index("p-1")


def test_datasets_create(api: aioresponses, run_cli: Run) -> None:
    """`datasets create NAME --project --description` posts them and prints the new dataset."""
    api.post(f"{V1}/datasets", status=201, payload=ds(7, name="fresh"))
    result = run_cli("datasets", "create", "fresh", "--project", "p-1", "--description", "new", *COMMON, env=ENV)
    assert result.code == 0, result.err
    assert json.loads(result.out)["id"] == "ds-7"
    assert sent(api, "POST", f"{V1}/datasets")[0]["json"] == {"name": "fresh", "description": "new", "projectId": "p-1"}


def test_datasets_create_refuses_a_bad_name(run_cli: Run) -> None:
    """An invalid dataset name is a usage error (exit 2) before any request."""
    result = run_cli("datasets", "create", "bad/name", "--project", "p-1", env=ENV)
    assert result.code == 2 and "NAME" in result.err


def test_datasets_get_by_id_and_by_name(api: aioresponses, run_cli: Run) -> None:
    """A dataset is named by its id (argument or --dataset) or by --name with --project."""
    api.get(f"{V1}/datasets/ds-2", payload=ds(2), repeat=True)
    api.get(f"{V2}/datasets?projectId=p-1&offset=0&limit=50", payload={"data": [ds(1), ds(2)], "totalCount": 2})
    assert json.loads(run_cli("datasets", "get", "ds-2", *COMMON, env=ENV).out)["name"] == "data-2"
    assert json.loads(run_cli("datasets", "get", "--dataset", "ds-2", *COMMON, env=ENV).out)["name"] == "data-2"
    by_name = run_cli("datasets", "get", "--name", "data-2", "--project", "p-1", *COMMON, env=ENV)
    assert by_name.code == 0 and json.loads(by_name.out)["id"] == "ds-2"


@pytest.mark.parametrize(
    "args",
    [
        ("datasets", "get"),
        ("datasets", "get", "ds-1", "--name", "x"),
        ("datasets", "get", "ds-1", "--dataset", "ds-2"),
        ("datasets", "update", "ds-1"),
        ("datasets", "update", "ds-1", "--new-name", "bad/name"),
        ("snapshots", "create", "ds-1", "--tag", "snapshot-1"),
        ("tags", "add", "bad tag", "--snapshot", "s-1"),
        ("tags", "add", "prod"),
        ("grants", "add", "u-1", "--dataset", "ds-1", "--role", "superuser"),
        ("datasets", "delete", "ds-1"),
        ("datasets", "list", "--output", "yaml"),
    ],
)
def test_usage_errors_exit_2(run_cli: Run, args: tuple[str, ...]) -> None:
    """Missing or conflicting dataset names, bad tags, roles, formats and an unconfirmed delete exit 2."""
    result = run_cli(*args, env=ENV)
    assert result.code == 2, result
    assert "Traceback" not in result.err and result.out == ""


def test_datasets_update_and_delete(api: aioresponses, run_cli: Run) -> None:
    """update sends only what changes; delete --yes prints what it deleted."""
    api.patch(f"{V1}/datasets/ds-1", payload=ds(1, name="renamed"))
    api.delete(f"{V1}/datasets/ds-1", status=204)
    updated = run_cli("datasets", "update", "ds-1", "--new-name", "renamed", *COMMON, env=ENV)
    assert updated.code == 0 and json.loads(updated.out)["name"] == "renamed"
    assert sent(api, "PATCH", f"{V1}/datasets/ds-1")[0]["json"] == {"name": "renamed"}
    deleted = run_cli("datasets", "delete", "ds-1", "--yes", *COMMON, env=ENV)
    assert deleted.code == 0 and json.loads(deleted.out) == {"deleted": "ds-1"}


def test_snapshots_commands(api: aioresponses, run_cli: Run) -> None:
    """snapshots list/create --tag/get print snapshots as JSON."""
    snap = {"id": "s-1", "datasetId": "ds-1", "status": "Active", "tags": ["v1"]}
    api.get(f"{V1}/datasets/ds-1/snapshots?offset=0&limit=50", payload={"data": [snap]})
    api.post(f"{V1}/datasets/ds-1/snapshots", status=201, payload={**snap, "id": "s-2", "tags": ["v2"]})
    api.get(f"{V1}/snapshots/s-1", payload=snap)
    listed = run_cli("snapshots", "list", "ds-1", *COMMON, env=ENV)
    assert listed.code == 0 and json.loads(listed.out)[0]["status"] == "active"
    created = run_cli("snapshots", "create", "ds-1", "--tag", "v2", *COMMON, env=ENV)
    assert created.code == 0 and json.loads(created.out)["tags"] == ["v2"]
    assert sent(api, "POST", f"{V1}/datasets/ds-1/snapshots")[0]["json"] == {"tag": "v2"}
    got = run_cli("snapshots", "get", "s-1", "-o", "table", *COMMON, env=ENV)
    assert got.code == 0 and "dataset_id   ds-1" in got.out.splitlines()


def test_tags_commands(api: aioresponses, run_cli: Run) -> None:
    """tags add finds the dataset from the snapshot when none is named; tags remove deletes by name."""
    api.get(f"{V1}/snapshots/s-1", payload={"id": "s-1", "datasetId": "ds-1"})
    api.post(f"{V1}/datasets/ds-1/tags", status=201, payload={"snapshotId": "s-1", "tagName": "prod"})
    api.delete(f"{V1}/datasets/ds-1/tags/prod", status=204)
    added = run_cli("tags", "add", "prod", "--snapshot", "s-1", *COMMON, env=ENV)
    assert added.code == 0, added.err
    assert json.loads(added.out) == {"dataset_id": "ds-1", "snapshot_id": "s-1", "tag": "prod"}
    removed = run_cli("tags", "remove", "prod", "--dataset", "ds-1", *COMMON, env=ENV)
    assert removed.code == 0 and json.loads(removed.out)["removed_tag"] == "prod"


def test_grants_commands(api: aioresponses, run_cli: Run) -> None:
    """grants list/add/remove speak the dialect's grant shapes."""
    grants = {"data": [{"principalType": "user", "principalId": "u-1", "permission": "admin"}]}
    api.get(f"{V1}/datasets/ds-1/grants", payload=grants)
    api.post(f"{V1}/datasets/ds-1/grants", status=201, payload={})
    api.delete(f"{V1}/datasets/ds-1/grants", status=204)
    listed = run_cli("grants", "list", "ds-1", "-o", "table", *COMMON, env=ENV)
    assert listed.code == 0 and listed.out.splitlines()[1].split()[:3] == ["u-1", "user", "admin"]
    added = run_cli("grants", "add", "u-2", "--role", "DatasetRwEditor", "--dataset", "ds-1", *COMMON, env=ENV)
    assert added.code == 0 and json.loads(added.out)["role"] == "write"
    assert sent(api, "POST", f"{V1}/datasets/ds-1/grants")[0]["json"]["permission"] == "write"
    removed = run_cli("grants", "remove", "u-1", "--dataset", "ds-1", *COMMON, env=ENV)
    assert removed.code == 0 and json.loads(removed.out)["removed_principal_id"] == "u-1"


def test_api_error_is_one_line_exit_1(api: aioresponses, run_cli: Run) -> None:
    """An API error prints one line naming method, path and the server's message, exit 1, no traceback."""
    api.get(f"{V1}/datasets/ds-9", status=404, payload={"error": {"code": "not_found", "message": "no dataset ds-9"}})
    result = run_cli("datasets", "get", "ds-9", *COMMON, env=ENV)
    assert result.code == 1 and result.out == ""
    assert result.err.strip().splitlines() == [
        "domino-sync: error: GET /api/datasetrw/v1/datasets/ds-9: HTTP 404: no dataset ds-9"
    ]


def test_explicit_api_key_wins_over_environment_credentials(api: aioresponses, run_cli: Run) -> None:
    """--api-key is used even when DOMINO_API_PROXY is set (flags beat the environment)."""
    api.get(f"{V1}/datasets/ds-1", payload=ds(1))
    env = {**ENV, "DOMINO_API_PROXY": "http://127.0.0.1:9"}
    result = run_cli("datasets", "get", "ds-1", "--api-key", "key-flag-0001", *COMMON, env=env)
    assert result.code == 0, result.err
    assert sent(api, "GET", f"{V1}/datasets/ds-1")[0]["headers"]["X-Domino-Api-Key"] == "key-flag-0001"


def test_url_flag_and_bad_url(api: aioresponses, run_cli: Run) -> None:
    """--url overrides DOMINO_API_HOST; a URL that is not http(s) is a configuration error (exit 2)."""
    api.get("http://other.test/api/datasetrw/v1/datasets/ds-1", payload=ds(1))
    assert run_cli("datasets", "get", "ds-1", "--url", "http://other.test", *COMMON, env=ENV).code == 0
    bad = run_cli("datasets", "get", "ds-1", "--url", "other.test", env=ENV)
    assert bad.code == 2 and "url" in bad.err
