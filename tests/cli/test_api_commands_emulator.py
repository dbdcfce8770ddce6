"""The API commands against the real emulator over a socket, in both dialects, and the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.api.models import Dialect
from agent.emulator import EmulatorOptions, EmulatorThread

USERS = {"alice": "key-alice", "bob": "key-bob", "carol": "key-carol"}
Run = Callable[..., Any]


@pytest.fixture(params=["seed", "domino"])
def emu(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An emulator on its own thread (the CLI runs its own event loop), in each dialect."""
    options = EmulatorOptions(data_dir=tmp_path / "emulator", users=USERS, dialect=Dialect(request.param))
    with EmulatorThread(options) as thread:
        yield thread.emulator


def test_every_command_against_the_emulator(emu: Any, run_cli: Run) -> None:
    """datasets, snapshots, tags and grants commands do their job end to end, naming datasets by id or name."""
    env = {"DOMINO_API_HOST": emu.url, "DOMINO_USER_API_KEY": "key-alice"}

    def ok(*args: str) -> Any:
        result = run_cli(*args, env=env)
        assert result.code == 0, result.err
        return json.loads(result.out)

    created = ok("datasets", "create", "cli-data", "--project", "project-1", "--description", "by cli")
    ds = created["id"]
    assert [d["id"] for d in ok("datasets", "list", "--project", "project-1")] == [ds]
    assert ok("datasets", "get", "--name", "cli-data", "--project", "project-1")["id"] == ds
    assert ok("datasets", "update", ds, "--description", "changed")["description"] == "changed"

    first = ok("snapshots", "create", "--name", "cli-data", "--project", "project-1", "--tag", "v1")
    assert first["tags"] == ["v1"]
    both = ok("snapshots", "create", ds, "--tag", "a", "--tag", "b")  # every tag, not the last one only
    assert both["tags"] == ["a", "b"] and ok("snapshots", "get", both["id"])["tags"] == ["a", "b"]
    ok("tags", "remove", "a", "--dataset", ds)
    ok("tags", "remove", "b", "--dataset", ds)
    second = ok("snapshots", "create", ds)
    assert ok("tags", "add", "latest", "--snapshot", second["id"]) == {
        "dataset_id": ds,
        "snapshot_id": second["id"],
        "tag": "latest",
    }
    assert ok("snapshots", "get", second["id"])["tags"] == ["latest"]
    ok("tags", "remove", "v1", "--dataset", ds)
    listed = {s["id"]: s["tags"] for s in ok("snapshots", "list", ds)}
    assert listed == {first["id"]: [], both["id"]: [], second["id"]: ["latest"]}

    ok("grants", "add", "bob", "--role", "write", "--dataset", ds)
    assert {g["principal_id"]: g["role"] for g in ok("grants", "list", ds)} == {"alice": "admin", "bob": "write"}
    ok("grants", "remove", "bob", "--dataset", ds)
    assert [g["principal_id"] for g in ok("grants", "list", ds)] == ["alice"]

    table = run_cli("snapshots", "list", ds, "--output", "table", env=env)
    assert table.code == 0 and table.out.splitlines()[0].split()[:3] == ["ID", "DATASET_ID", "STATUS"]

    assert ok("datasets", "delete", ds, "--yes") == {"deleted": ds}
    gone = run_cli("datasets", "get", ds, env=env)
    assert gone.code == 1 and gone.out == ""
    assert len(gone.err.strip().splitlines()) == 1 and "HTTP 404" in gone.err


def test_refusals_are_one_line(emu: Any, run_cli: Run) -> None:
    """An unknown key and a missing grant each give one stderr line and exit 1, without the key."""
    env = {"DOMINO_API_HOST": emu.url, "DOMINO_USER_API_KEY": "key-alice"}
    ds = json.loads(run_cli("datasets", "create", "private", "--project", "p", env=env).out)["id"]
    stranger = run_cli("datasets", "get", ds, "--api-key", "key-stranger-0001", env=env)
    assert stranger.code == 1 and "HTTP 401" in stranger.err and "key-stranger-0001" not in stranger.err
    bob = run_cli("snapshots", "create", ds, env={**env, "DOMINO_USER_API_KEY": "key-bob"})
    assert bob.code == 1 and "HTTP 403" in bob.err and len(bob.err.strip().splitlines()) == 1


def test_console_script_in_a_subprocess(tmp_path: Path) -> None:
    """The installed `domino-sync` entry point lists datasets as JSON, and a usage error exits 2."""
    script = Path(sys.executable).parent / "domino-sync"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "agent"]
    with EmulatorThread(EmulatorOptions(data_dir=tmp_path / "emulator", users=USERS)) as thread:
        env = {**os.environ, "DOMINO_API_HOST": thread.emulator.url, "DOMINO_USER_API_KEY": "key-alice"}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=60, check=False)

        made = run("datasets", "create", "sub", "--project", "p")
        assert made.returncode == 0, made.stderr
        listed = run("datasets", "list")
        assert listed.returncode == 0 and [d["name"] for d in json.loads(listed.stdout)] == ["sub"]
        env.pop("DOMINO_API_HOST")
        usage = run("datasets", "list")
    assert usage.returncode == 2 and "DOMINO_API_HOST" in usage.stderr and "Traceback" not in usage.stderr
