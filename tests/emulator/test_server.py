# ruff: noqa: S113  -- the seed's examples are copied verbatim, and they call requests without a timeout
"""Starting and stopping the emulator: port 0, restarts that keep everything, the default user, EmulatorThread,
and the seed document's own `requests` examples run against it with only base_url and the key changed."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import requests
from structlog.testing import capture_logs

from agent.api.models import Dialect
from agent.emulator import EmulatorOptions, EmulatorThread, running_emulator
from agent.emulator.server import _url_host
from agent.errors import ConfigError

USERS = {"alice": "key-alice", "bob": "key-bob"}


async def test_restart_keeps_every_dataset_snapshot_tag_and_grant(tmp_path: Path, connect: Any) -> None:
    """Stopping and starting with the same data dir keeps datasets, snapshots, tags, grants and folders."""
    options = EmulatorOptions(data_dir=tmp_path / "state", users=USERS)
    async with running_emulator(options) as emu:
        api = connect(emu)
        ds = (await api.post("/datasets", {"name": "kept", "projectId": "p", "description": "d"})).body["id"]
        (emu.mount_root / "kept" / "f.txt").write_text("f")
        snap = (await api.post(f"/datasets/{ds}/snapshots", {"tag": "v1"})).body["id"]
        await api.post(f"/datasets/{ds}/grants", {"principalId": "bob", "permission": "write"})
        gone = (await api.post("/datasets", {"name": "gone"})).body["id"]
        await api.delete(f"/datasets/{gone}")
        before = (await api.get(f"/datasets/{ds}")).body
        first_port = emu.port
    async with running_emulator(options) as emu:
        api = connect(emu)
        assert emu.port != 0 and first_port != 0
        assert (await api.get(f"/datasets/{ds}")).body == before
        assert (await api.get(f"/snapshots/{snap}")).body["tags"] == ["v1"]
        grants = (await api.get(f"/datasets/{ds}/grants")).body["data"]
        assert {"principalType": "user", "principalId": "bob", "permission": "write"} in grants
        assert (await connect(emu, "bob").post(f"/datasets/{ds}/snapshots", {})).status == 201
        assert (await api.get(f"/datasets/{gone}")).status == 404
        assert (emu.mount_root / "kept@v1" / "f.txt").read_text() == "f"


async def test_default_user_key_is_generated_once(tmp_path: Path) -> None:
    """With no users, one user 'admin' gets a generated key that survives a restart of the same data dir."""
    options = EmulatorOptions(data_dir=tmp_path / "state")
    async with running_emulator(options) as emu:
        first = emu.keys
        assert list(first) == ["admin"] and emu.default_key == first["admin"] and len(emu.default_key) >= 24
        assert emu.default_key not in repr(emu)
    async with running_emulator(options) as emu:
        assert emu.keys == first
    async with running_emulator(EmulatorOptions(data_dir=tmp_path / "other")) as emu:
        assert emu.keys != first


async def test_mount_root_default_and_override(tmp_path: Path) -> None:
    """The mount root defaults to <data dir>/mnt/data and can be put anywhere."""
    async with running_emulator(EmulatorOptions(data_dir=tmp_path / "a", users=USERS)) as emu:
        assert emu.mount_root == tmp_path / "a" / "mnt" / "data" and emu.mount_root.is_dir()
    async with running_emulator(
        EmulatorOptions(data_dir=tmp_path / "b", mount_root=tmp_path / "m", users=USERS)
    ) as emu:
        assert emu.mount_root == tmp_path / "m" and emu.mount_root.is_dir()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"fail_rate": 1.5}, "fail_rate"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"port": 70000}, "port"),
        ({"dialect": "soap"}, "dialect"),
        ({"users": {"bad name": "k"}}, "users"),
        ({"users": {"a": "has space"}}, "users.a"),
        ({"users": {"a": "same", "b": "same"}}, "users.b"),
    ],
)
async def test_bad_options_are_config_errors(tmp_path: Path, overrides: dict[str, Any], key: str) -> None:
    """Each invalid option fails at start with a ConfigError naming it, and never shows a key."""
    with pytest.raises(ConfigError) as caught:
        async with running_emulator(EmulatorOptions(data_dir=tmp_path, **overrides)):
            pass
    assert caught.value.key == key and "same" not in str(caught.value) and "has space" not in str(caught.value)


async def test_port_in_use_is_a_config_error(tmp_path: Path) -> None:
    """Asking for a port another socket holds fails with a ConfigError on `port`."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="port"):
            async with running_emulator(EmulatorOptions(data_dir=tmp_path, users=USERS, port=port)):
                pass


async def test_stop_logs_the_bound_port_not_zero(tmp_path: Path) -> None:
    """Started on port 0, the emulator's emulator.stopped event names the port it was actually bound to."""
    with capture_logs() as events:
        async with running_emulator(EmulatorOptions(data_dir=tmp_path / "state", port=0)) as emu:
            bound = emu.port
    stopped = [e for e in events if e["event"] == "emulator.stopped"]
    assert bound != 0
    assert [e["port"] for e in stopped] == [bound]


def test_url_hosts() -> None:
    """Wildcard addresses become reachable loopback URLs; IPv6 literals get brackets."""
    assert _url_host("0.0.0.0") == "127.0.0.1"  # noqa: S104
    assert _url_host("::") == "[::1]"
    assert _url_host("::1") == "[::1]"
    assert _url_host("localhost") == "localhost"


def test_emulator_thread_serves_sync_callers(tmp_path: Path) -> None:
    """EmulatorThread runs the server on its own loop: plain `requests` calls work, and it stops on exit."""
    with EmulatorThread(EmulatorOptions(data_dir=tmp_path, users=USERS, dialect=Dialect.DOMINO)) as emu:
        reply = requests.get(
            f"{emu.url}/api/datasetrw/v2/datasets", headers={"X-Domino-Api-Key": "key-bob"}, timeout=10
        )
        assert reply.status_code == 200 and reply.json()["datasets"] == []
        assert emu.keys == USERS and emu.default_key == "key-alice" and emu.dialect == Dialect.DOMINO
        assert emu.stats()["requests_total"] == 1
        url = emu.url
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)


def test_seed_python_examples_run_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The seed's `requests` examples, copied with only base_url and the key changed (plus ids the reader fills
    in), run against the emulator and get the documented shapes; its mount paths read the data back."""
    with EmulatorThread(EmulatorOptions(data_dir=tmp_path)) as emu:
        # --- Authentication
        headers = {"X-Domino-Api-Key": emu.default_key}
        base_url = emu.url

        # --- Create Dataset
        response = requests.post(
            f"{base_url}/api/datasetrw/v1/datasets",
            headers=headers,
            json={
                "name": "customer-features",
                "description": "Processed customer features for modeling",
                "projectId": "project-123",
            },
        )
        dataset = response.json()
        print(f"Created dataset: {dataset['id']}")
        assert response.status_code == 201

        # --- List Datasets
        response = requests.get(f"{base_url}/api/datasetrw/v2/datasets", headers=headers, params={"limit": 50})
        datasets = response.json()
        assert set(datasets) == {"data", "offset", "limit", "totalCount"}
        assert set(datasets["data"][0]) >= {"id", "name", "description", "projectId", "createdAt", "sizeBytes"}
        assert (datasets["offset"], datasets["limit"], datasets["totalCount"]) == (0, 50, 1)

        # --- Get Dataset (the reader fills in a real id)
        dataset_id = dataset["id"]
        response = requests.get(f"{base_url}/api/datasetrw/v1/datasets/{dataset_id}", headers=headers)
        dataset = response.json()
        assert dataset["name"] == "customer-features"

        # --- Upload Data (the mount root stands for /mnt/data)
        (emu.mount_root / "customer-features" / "data.parquet").write_bytes(b"PAR1 v2 PAR1")

        # --- Create Snapshot
        response = requests.post(
            f"{base_url}/api/datasetrw/v1/datasets/{dataset_id}/snapshots", headers=headers, json={"tag": "v2.0"}
        )
        snapshot = response.json()
        print(f"Created snapshot: {snapshot['id']}")

        # --- List Snapshots
        response = requests.get(f"{base_url}/api/datasetrw/v1/datasets/{dataset_id}/snapshots", headers=headers)
        snapshots = response.json()

        for snapshot in snapshots["data"]:
            print(f"Snapshot: {snapshot['id']} - Created: {snapshot['createdAt']}")
        assert snapshots["data"][0]["tags"] == ["v2.0"]

        # --- Add Tag to Snapshot (the reader fills in a real snapshot id)
        response = requests.post(
            f"{base_url}/api/datasetrw/v1/datasets/{dataset_id}/tags",
            headers=headers,
            json={"snapshotId": snapshot["id"], "tagName": "production"},
        )
        assert response.status_code == 201 and response.json()["tagName"] == "production"

        # --- Access Specific Snapshot (pd.read_parquet stands in as a plain read)
        assert (emu.mount_root / "customer-features@v2.0" / "data.parquet").read_bytes() == b"PAR1 v2 PAR1"
        assert (emu.mount_root / "customer-features@production" / "data.parquet").exists()
        assert (emu.mount_root / f"customer-features@{snapshot['id']}" / "data.parquet").exists()

        # --- Dataset Workflow Example
        project_id = "project-123"
        response = requests.post(
            f"{base_url}/api/datasetrw/v1/datasets",
            headers=headers,
            json={"name": "feature-store", "description": "Centralized feature storage", "projectId": project_id},
        )
        dataset = response.json()
        dataset_id = dataset["id"]

        # After uploading data, create snapshot
        response = requests.post(
            f"{base_url}/api/datasetrw/v1/datasets/{dataset_id}/snapshots", headers=headers, json={"tag": "baseline"}
        )
        assert response.status_code == 201

        # Grant access to another user
        response = requests.post(
            f"{base_url}/api/datasetrw/v1/datasets/{dataset_id}/grants",
            headers=headers,
            json={"principalType": "user", "principalId": "data-scientist-user-id", "permission": "read"},
        )
        assert response.status_code == 201

        print(f"Dataset ready: {dataset_id}")

    out = capsys.readouterr().out
    assert "Created dataset: dataset-" in out and "Created snapshot: snapshot-" in out
    assert "Snapshot: snapshot-" in out and f"Dataset ready: {dataset_id}" in out


async def test_a_second_emulator_on_one_data_folder_is_refused_until_the_first_stops(tmp_path: Path) -> None:
    """Two emulators on one database would hand out the same ids: the second stops at start with a ConfigError
    on `data_dir` naming the holder; once the first has stopped, the folder is free again."""
    async with running_emulator(EmulatorOptions(data_dir=tmp_path / "emu", users=USERS)):
        with pytest.raises(ConfigError) as caught:
            async with running_emulator(EmulatorOptions(data_dir=tmp_path / "emu", users=USERS)):
                pass
        assert caught.value.key == "data_dir" and f"pid {os.getpid()}" in str(caught.value)
    async with running_emulator(EmulatorOptions(data_dir=tmp_path / "emu", users=USERS)) as emu:
        assert emu.port != 0
