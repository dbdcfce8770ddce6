"""`check`, `snapshot` and `retry` against a real emulator and a running agent."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import anyio
import yaml
from e2e_support import DATASET, make_config, running_agent, wait_for, write

from agent.api.models import Role


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_config(emu: Any, tmp_path: Path, **overrides: Any) -> Path:
    doc = make_config(emu, tmp_path, **overrides).model_dump(mode="json")
    doc["domino"].pop("api_key")
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def _cli(*args: str, key: str = "key-alice") -> Any:
    env = {**os.environ, "DOMINO_USER_API_KEY": key}
    return await anyio.run_process([sys.executable, "-m", "agent", *args], env=env, check=False)


async def test_check_reports_each_part(emulator: Any, tmp_path: Path) -> None:
    """`check` exits 0 when all is reachable, names the unreachable part with exit 1, and exits 2 on a bad config."""
    path = _write_config(emulator, tmp_path)
    ok = await _cli("check", "--config", str(path))
    text = ok.stdout.decode()
    assert ok.returncode == 0, text + ok.stderr.decode()
    for part in ("config", "source", "api", "dataset", "mount", "state_dir"):
        assert f"ok   {part}" in text
    assert "will be created" in text
    bad_key = await _cli("check", "--config", str(path), key="key-nobody")
    assert bad_key.returncode == 1
    assert "FAIL api" in bad_key.stdout.decode()
    assert "key-nobody" not in bad_key.stdout.decode() + bad_key.stderr.decode()
    no_dataset = _write_config(emulator, tmp_path, dataset={"name": "absent", "project_id": "p", "mount": "/nowhere"})
    missing = await _cli("check", "--config", str(no_dataset))
    assert missing.returncode == 1
    assert "FAIL dataset" in missing.stdout.decode()
    (tmp_path / "bad.yaml").write_text("source: {path: x}\ndataset: {name: d}\nextra: 1\n")
    invalid = await _cli("check", "--config", str(tmp_path / "bad.yaml"))
    assert invalid.returncode == 2
    assert "extra" in invalid.stderr.decode()


async def test_snapshot_command_and_dead_letter_retry(emulator: Any, tmp_path: Path) -> None:
    """`snapshot --tag` asks the running agent for a snapshot; a job refused by the server becomes a dead letter
    that `status` shows and `retry` requeues once the cause is fixed."""
    port = _free_port()
    path = _write_config(emulator, tmp_path, server={"listen": f"127.0.0.1:{port}"})
    cfg = make_config(emulator, tmp_path, server={"listen": f"127.0.0.1:{port}"})
    async with running_agent(cfg, listen_port=port) as agent:
        write(cfg.source.path, "a.txt", "a")
        asked = await _cli("snapshot", "--config", str(path), "--tag", "by-cli")
        assert asked.returncode == 0, asked.stderr.decode()
        assert json.loads(asked.stdout)["tags"] == ["by-cli"]
        await wait_for(lambda: (emulator.mount_root / f"{DATASET}@by-cli").exists(), 30, "tag by-cli")
        assert (emulator.mount_root / f"{DATASET}@by-cli" / "a.txt").read_text() == "a"

        # take write access away from the agent's user: bob owns a copy of the grant, alice drops to read
        assert agent.client is not None and agent.dataset is not None
        await agent.client.add_grant(agent.dataset.id, "bob", Role.ADMIN)
        from agent.api.client import ClientSettings, DatasetsClient

        async with DatasetsClient(ClientSettings(url=emulator.url, api_key="key-bob")) as bob:
            await bob.add_grant(agent.dataset.id, "alice", Role.READ)
            refused = await _cli("snapshot", "--config", str(path), "--tag", "refused")
            assert refused.returncode == 0
            await wait_for(lambda: bool(agent.status()["queue"]["dead_letters"]), 30, "a dead letter")
            shown = await _cli("status", "--config", str(path))
            assert "dead letters" in shown.stdout.decode()
            assert "403" in shown.stdout.decode()
            await bob.add_grant(agent.dataset.id, "alice", Role.ADMIN)
        assert agent.status()["last_error"].startswith("dead letter")
        unknown = await _cli("retry", "--config", str(path), "--id", "4242")
        assert unknown.returncode == 1
        assert "no dead letter with id 4242" in unknown.stderr.decode()
        retried = await _cli("retry", "--config", str(path))
        assert json.loads(retried.stdout) == {"requeued": 1}
        await wait_for(lambda: (emulator.mount_root / f"{DATASET}@refused").exists(), 30, "tag after retry")
        assert agent.status()["queue"]["dead_letters"] == []
        await wait_for(lambda: agent.status()["last_error"] is None, 10, "the healed error to clear")
        metrics = agent.metrics_text().decode()
        assert "domino_sync_tags_total 2.0" in metrics  # by-cli and refused: each the create call's own tag


async def test_retry_without_a_running_agent_requeues_in_the_state_folder(emulator: Any, tmp_path: Path) -> None:
    """In a `once` loop no agent runs: `retry` requeues the dead letter in state_dir and the next `once` sends it."""
    path = _write_config(emulator, tmp_path, server={"enabled": False})
    write(tmp_path / "src", "a.txt", "a")
    cfg = make_config(emulator, tmp_path)
    refused = await _cli("once", "--config", str(path), key="key-nobody")  # the bootstrap fails: nothing queued
    assert refused.returncode == 1
    first = await _cli("once", "--config", str(path))
    assert first.returncode == 0, first.stderr.decode()
    from agent.api.client import ClientSettings, DatasetsClient

    async with DatasetsClient(ClientSettings(url=emulator.url, api_key="key-alice")) as alice:
        dataset = await alice.find_dataset(DATASET, None)
        await alice.add_grant(dataset.id, "bob", Role.ADMIN)
    async with DatasetsClient(ClientSettings(url=emulator.url, api_key="key-bob")) as bob:
        await bob.add_grant(dataset.id, "alice", Role.READ)
        write(tmp_path / "src", "d/_SUCCESS", "")
        doc = yaml.safe_load(path.read_text())
        doc["rules"] = [{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["later"]}]
        path.write_text(yaml.safe_dump(doc))
        parked = await _cli("once", "--config", str(path))
        assert parked.returncode == 1 and "dead_letters" in parked.stdout.decode(), parked.stderr.decode()
        await bob.add_grant(dataset.id, "alice", Role.ADMIN)
    unknown = await _cli("retry", "--config", str(path), "--id", "4242")
    assert unknown.returncode == 1 and "no dead letter with id 4242" in unknown.stderr.decode()
    retried = await _cli("retry", "--config", str(path))
    assert retried.returncode == 0, retried.stderr.decode()
    assert json.loads(retried.stdout)["requeued"] == 1
    sent = await _cli("once", "--config", str(path))
    assert sent.returncode == 0, sent.stdout.decode()
    assert (emulator.mount_root / f"{DATASET}@later" / "d" / "_SUCCESS").exists()
    assert cfg.state_dir.exists()


async def test_status_says_when_the_config_turns_the_server_off(emulator: Any, tmp_path: Path) -> None:
    """`status` with server.enabled false explains that it needs the HTTP server, instead of 'no agent answers'."""
    path = _write_config(emulator, tmp_path, server={"enabled": False})
    shown = await _cli("status", "--config", str(path))
    assert shown.returncode == 1
    assert "server.enabled: false" in shown.stderr.decode()


async def test_a_busy_port_is_one_line_naming_server_listen(emulator: Any, tmp_path: Path) -> None:
    """`run` on a port already taken stops with one line naming server.listen, exit 1, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = _write_config(emulator, tmp_path, server={"listen": f"127.0.0.1:{port}"})
        with anyio.fail_after(60):
            ran = await _cli("run", "--config", str(path))
    err = ran.stderr.decode()
    assert ran.returncode == 1, err
    assert "error: server.listen: cannot listen" in err and "internal error" not in err and "Traceback" not in err


async def test_a_password_in_the_api_url_never_shows(emulator: Any, tmp_path: Path) -> None:
    """`check` and the logs show a URL's password as ***."""
    url = emulator.url.replace("http://", "http://bob:Secr3tPassw0rd@")
    path = _write_config(emulator, tmp_path, domino={"url": url, "api_key": "key-alice"})
    shown = await _cli("--log-level", "debug", "check", "--config", str(path))
    text = shown.stdout.decode() + shown.stderr.decode()
    assert "Secr3tPassw0rd" not in text
    assert "bob:***@" in text


async def test_check_accepts_a_missing_source_the_agent_will_create(emulator: Any, tmp_path: Path) -> None:
    """With source.create a missing source is fine for `check` (the agent makes it at start); without, it fails."""
    missing = tmp_path / "not-yet" / "outbox"
    path = _write_config(emulator, tmp_path, source={"path": str(missing), "create": True})
    shown = await _cli("check", "--config", str(path))
    assert shown.returncode == 0, shown.stdout.decode() + shown.stderr.decode()
    assert "ok   source" in shown.stdout.decode() and "will be created" in shown.stdout.decode()
    path = _write_config(emulator, tmp_path, source={"path": str(missing)})
    failed = await _cli("check", "--config", str(path))
    assert failed.returncode == 1 and "FAIL source" in failed.stdout.decode()


def test_status_snapshot_and_retry_reach_an_agent_listening_on_ipv6(tmp_path: Path) -> None:
    """`server.listen: "[::1]:PORT"` is reached as http://[::1]:PORT (an unbracketed IPv6 host is no URL), and
    a wildcard listen address is reached on the loopback."""
    from agent.cli.agent_commands import _agent_url
    from agent.config import parse_config

    def url(listen: str) -> str:
        doc = {"source": {"path": str(tmp_path)}, "dataset": {"name": "d"}, "server": {"listen": listen}}
        return _agent_url(parse_config(doc, env={}))

    assert url("[::1]:9464") == "http://[::1]:9464"
    assert url("0.0.0.0:9464") == "http://127.0.0.1:9464"
    assert url("[::]:9464") == "http://127.0.0.1:9464"
    assert url("localhost:9") == "http://localhost:9"
