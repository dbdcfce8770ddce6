"""The touches for people: progress bar on a TTY, status table, dry run, --version, JSON logs off a TTY."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import yaml
from e2e_support import DATASET, make_config, running_agent, write

from agent import __version__
from agent.dryrun import dry_run
from agent.emulator import EmulatorOptions, EmulatorThread


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config_file(emu: Any, tmp_path: Path, **overrides: Any) -> Path:
    doc = make_config(emu, tmp_path, **overrides).model_dump(mode="json")
    doc["domino"].pop("api_key")
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _run_on_pty(args: list[str], env: dict[str, str], limit: float = 60) -> tuple[int, str]:
    """Run a command with stdout and stderr on a pseudo-terminal; return its exit code and what it drew."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    code = proc.wait(timeout=10)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """`once` on a TTY draws a progress bar that ends 'in sync' with the number of files copied."""
    with EmulatorThread(EmulatorOptions(data_dir=tmp_path / "emu", users={"alice": "key-alice"})) as emu:
        config = _config_file(emu, tmp_path)
        for i in range(40):
            write(tmp_path / "src", f"d/{i}.txt", "x" * 100)
        env = {**os.environ, "DOMINO_USER_API_KEY": "key-alice", "COLUMNS": "100", "TERM": "xterm"}
        code, screen = _run_on_pty([sys.executable, "-m", "agent", "once", "--config", str(config)], env)
    assert code == 0, screen[-2000:]
    bar = [line for line in screen.splitlines() if "in sync" in line]
    assert len(bar) == 1, screen[-2000:]
    final = bar[0].split("\r")[-1]  # the last redraw of the line
    assert "[" + "#" * 28 + "]  40/40" in final, final
    assert "MiB" in final


def test_no_progress_bar_and_json_logs_off_a_terminal(tmp_path: Path) -> None:
    """Off a TTY there is no bar, and log lines on stderr are JSON objects."""
    with EmulatorThread(EmulatorOptions(data_dir=tmp_path / "emu", users={"alice": "key-alice"})) as emu:
        config = _config_file(emu, tmp_path)
        write(tmp_path / "src", "a.txt", "a")
        env = {**os.environ, "DOMINO_USER_API_KEY": "key-alice"}
        proc = subprocess.run(
            [sys.executable, "-m", "agent", "--log-level", "info", "once", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "in sync" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines
    events = [json.loads(line) for line in lines]
    assert any(e["event"] == "agent.started" for e in events)
    assert json.loads(proc.stdout)["copied"] == 1


def test_version_flag() -> None:
    """--version prints the package version."""
    proc = subprocess.run([sys.executable, "-m", "agent", "--version"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert __version__ in proc.stdout


async def test_status_table_and_json(emulator: Any, tmp_path: Path) -> None:
    """`status` shows the running agent as aligned plain text when piped, and `status --json` its JSON."""
    port = _free_port()
    config = _config_file(emulator, tmp_path, server={"listen": f"127.0.0.1:{port}"})
    cfg = make_config(emulator, tmp_path, server={"listen": f"127.0.0.1:{port}"})
    async with running_agent(cfg, listen_port=port) as agent:
        write(cfg.source.path, "a.txt", "a")
        env = {**os.environ, "DOMINO_USER_API_KEY": "key-alice"}
        table = await anyio.run_process([sys.executable, "-m", "agent", "status", "--config", str(config)], env=env)
        as_json = await anyio.run_process(
            [sys.executable, "-m", "agent", "status", "--json", "--config", str(config)], env=env
        )
        assert agent.dataset is not None
    text = table.stdout.decode()
    assert "\x1b[" not in text  # piped: plain text
    lines = text.splitlines()
    assert lines[0] == "domino-sync"
    for name in ("ready", "dataset", "pending files", "queue depth", "last snapshot"):
        assert any(line.startswith(name.ljust(len("pending files")) + "  ") for line in lines), text
    assert DATASET in text
    assert json.loads(as_json.stdout)["dataset"]["name"] == DATASET


def test_status_without_a_running_agent_is_one_line(tmp_path: Path) -> None:
    """`status` with no agent listening says so in one line, exit 1."""
    path = tmp_path / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "source": {"path": str(tmp_path)},
                "dataset": {"name": "d"},
                "server": {"listen": f"127.0.0.1:{_free_port()}"},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "status", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "no agent answers" in proc.stderr


async def test_dry_run_changes_nothing(emulator: Any, tmp_path: Path) -> None:
    """The dry run lists copies and the snapshot a marker would make, and creates no dataset, mount or state."""
    from agent.daemon import Agent

    cfg = make_config(
        emulator, tmp_path, rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["{marker}"]}]
    )
    write(cfg.source.path, "d/a.csv", "1")
    write(cfg.source.path, "d/_SUCCESS", "batch-7\n")
    await anyio.sleep(0.3)  # past source.settle (150ms)
    summary = await dry_run(Agent(cfg, env={}))
    assert sorted(summary["copy"]) == ["d/_SUCCESS", "d/a.csv"]
    assert summary["dataset"]["would_create"] is True
    assert summary["snapshots"] == [{"rules": ["drop"], "tags": ["batch-7"], "scopes": ["d"]}]
    assert not (emulator.mount_root / DATASET).exists()
    assert not cfg.state_dir.exists()


async def test_dry_run_after_a_real_run_reads_the_saved_rules_state(emulator: Any, tmp_path: Path) -> None:
    """After a real `once` has saved the rules state (with its handled markers), a dry run continues from it:
    the next marker would get the next `{seq}`."""
    from agent.daemon import Agent

    cfg = make_config(
        emulator, tmp_path, rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["run-{seq}"]}]
    )
    write(cfg.source.path, "d1/a.csv", "1")
    write(cfg.source.path, "d1/_SUCCESS", "")
    await anyio.sleep(0.3)
    code, _ = await Agent(cfg, env={}).once(drain_timeout=30)
    assert code == 0
    write(cfg.source.path, "d2/_SUCCESS", "")
    await anyio.sleep(0.3)
    summary = await dry_run(Agent(cfg, env={}))
    assert summary["copy"] == ["d2/_SUCCESS"]
    assert summary["snapshots"] == [{"rules": ["drop"], "tags": ["run-2"], "scopes": ["d2"]}]
