"""The agent under API faults and rate limits, and its clean exit on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from e2e_support import DATASET, make_config, running_agent, tree, wait_for_async, write

from agent.emulator import EmulatorOptions, EmulatorThread


async def test_every_action_completes_through_faults_and_within_the_rate(emulator_factory: Any, tmp_path: Path) -> None:
    """With 30% of calls failing and a server rate limit, every drop still gets its tags, and the server never
    sees more than rate + burst requests in any second."""
    emu = await emulator_factory(fail_rate=0.3, rate_limit=6)
    cfg = make_config(
        emu,
        tmp_path,
        domino={"url": emu.url, "api_key": emu.keys["alice"], "requests_per_second": 4, "burst": 2},
        rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["{marker}"]}],
    )
    async with running_agent(cfg, queue_options={"backoff_base": 0.2, "backoff_cap": 2.0, "max_attempts": 30}):
        for n in range(4):
            for i in range(5):
                write(cfg.source.path, f"d{n}/{i}.txt", f"{n}-{i}")
            write(cfg.source.path, f"d{n}/_SUCCESS", f"drop-{n}")

        async def all_tagged() -> bool:  # read the tag paths, not the API: the server counts every request
            tags = {p.name.split("@", 1)[1] for p in emu.mount_root.glob(f"{DATASET}@*") if p.is_symlink()}
            return {f"drop-{n}" for n in range(4)} <= tags

        await wait_for_async(all_tagged, 90, "all four drops tagged")
    stats = emu.stats()
    assert stats["max_requests_in_any_1s"] <= 4 + 2
    assert tree(emu.mount_root / DATASET) == tree(cfg.source.path)


@contextmanager
def agent_process(tmp_path: Path, doc: dict[str, Any], env: dict[str, str] | None = None) -> Iterator[Any]:
    """`domino-sync run` in its own process on the config `doc`; killed at the end if it is still running."""
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def until(predicate: Callable[[], bool], limit: float = 30.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + limit
    while not predicate() and time.monotonic() < deadline:
        time.sleep(step)


def test_sigterm_syncs_and_snapshots_the_last_drop(tmp_path: Path) -> None:
    """A drop and its marker written just before SIGTERM (not yet settled) are still copied and snapshotted
    before the agent exits 0, as a sidecar stopped right after its producer needs."""
    with EmulatorThread(EmulatorOptions(data_dir=tmp_path / "emu", users={"alice": "key-alice"})) as emu:
        cfg = make_config(emu, tmp_path, shutdown_timeout="20s")
        doc = cfg.model_dump(mode="json")
        doc["source"]["settle"] = "1s"
        doc["rules"] = [{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["last"]}]
        with agent_process(tmp_path, doc) as proc:
            write(cfg.source.path, "warmup.txt", "w")
            until(lambda: (emu.mount_root / DATASET / "warmup.txt").exists())
            for i in range(10):
                write(cfg.source.path, f"drop/part-{i}.csv", "row\n" * 100)
            write(cfg.source.path, "drop/_SUCCESS", "")
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=40)
        assert proc.returncode == 0, err[-2000:]
        assert '"drained": true' in err, err[-2000:]
        frozen = emu.mount_root / f"{DATASET}@last"
        assert tree(frozen) == tree(cfg.source.path)
        assert len(tree(frozen)) == 12


def test_a_signal_while_the_api_is_down_at_start_stops_cleanly(tmp_path: Path) -> None:
    """SIGTERM and SIGINT during the bootstrap (the API refuses connections) stop the agent with exit 0 and
    `agent.stopped`, as later; the HTTP server answered until then."""
    with EmulatorThread(EmulatorOptions(data_dir=tmp_path / "emu", users={"alice": "key-alice"})) as emu:
        cfg = make_config(emu, tmp_path)
        gone = emu.url  # the emulator stops here: nothing listens there after
    port = free_port()
    for signum in (signal.SIGTERM, signal.SIGINT):
        doc = cfg.model_dump(mode="json")
        doc["domino"]["url"] = gone
        doc["server"] = {"listen": f"127.0.0.1:{port}"}
        with agent_process(tmp_path, doc) as proc:
            until(lambda: answers(f"http://127.0.0.1:{port}/healthz"))
            assert answers(f"http://127.0.0.1:{port}/healthz")
            proc.send_signal(signum)
            _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
        assert "agent.stopped" in err and "Traceback" not in err, err[-2000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - a local test server
            return resp.status == 200
    except OSError:
        return False


def test_sigterm_drains_and_exits_0(tmp_path: Path) -> None:
    """SIGTERM to `domino-sync run` finishes work in flight and exits 0; the files are in the mount."""
    with EmulatorThread(EmulatorOptions(data_dir=tmp_path / "emu", users={"alice": "key-alice"})) as emu:
        cfg = make_config(emu, tmp_path)
        doc = cfg.model_dump(mode="json")
        doc["domino"].pop("api_key")
        doc["rules"] = [{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["t"]}]
        with agent_process(tmp_path, doc, env={**os.environ, "DOMINO_USER_API_KEY": "key-alice"}) as proc:
            for i in range(30):
                write(cfg.source.path, f"f{i}.txt", "x" * 1000)
            until(lambda: len(tree(emu.mount_root / DATASET)) >= 30, step=0.1)
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
        assert "agent.stopped" in err
        assert "Traceback" not in err
        assert len(tree(emu.mount_root / DATASET)) == 30
        assert not (cfg.state_dir / "unflushed").exists()  # flushed to disk before the exit


def test_a_second_signal_stops_the_drain_at_once(tmp_path: Path) -> None:
    """SIGTERM starts a drain that waits for a file still settling; a second SIGTERM ends it at once, exit 0, with
    what is left said in agent.stopped."""
    with EmulatorThread(EmulatorOptions(data_dir=tmp_path / "emu", users={"alice": "key-alice"})) as emu:
        cfg = make_config(emu, tmp_path, shutdown_timeout="60s")
        doc = cfg.model_dump(mode="json")
        doc["source"]["settle"] = "30s"
        with agent_process(tmp_path, doc) as proc:
            until(lambda: (emu.mount_root / DATASET).exists())
            time.sleep(0.5)
            write(cfg.source.path, "slow.txt", "still being written")
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            asked = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=20)
            took = time.monotonic() - asked
        assert proc.returncode == 0, err[-2000:]
        assert "agent.stop_now" in err
        assert '"drained": false' in err
        assert took < 10


def children_of(pid: int) -> set[int]:
    """The live processes whose parent is `pid` (a zombie already reaped by nobody counts as gone)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_once_killed_mid_copy_leaves_no_process_and_the_next_once_finishes(tmp_path: Path) -> None:
    """`once` forks its copy processes at its start and gives them batch after batch (sync/workers.py). Killed
    with SIGKILL in the middle of the copies, it takes them with it (none goes on writing into the mount), and
    the next `once` finishes the sync: every file whole, no temp file left."""
    with EmulatorThread(EmulatorOptions(data_dir=tmp_path / "emu", users={"alice": "key-alice"})) as emu:
        cfg = make_config(emu, tmp_path)
        for i in range(6000):
            write(cfg.source.path, f"d{i % 30:02d}/f{i:05d}.csv", f"row {i}\n" * 400)
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        command = [sys.executable, "-m", "agent", "once", "--config", str(path)]
        mount = emu.mount_root / DATASET
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            until(lambda: len(children_of(proc.pid)) >= 4, limit=30, step=0.005)
            workers = children_of(proc.pid)
            assert len(workers) >= 4, "the copy processes were forked at the start"
            until(lambda: sum(1 for _ in mount.rglob("*.csv")) >= 100, limit=60, step=0.01)
            proc.kill()
        finally:
            proc.wait()
        until(lambda: not any(alive(pid) for pid in workers), limit=10)
        assert not any(alive(pid) for pid in workers), "a copy process outlived its killed agent"
        copied = sum(1 for _ in mount.rglob("*.csv"))
        assert copied < 6000, "the kill came after the copies: nothing was tested"
        finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert finished.returncode == 0, finished.stderr[-2000:]
        assert tree(mount) == tree(cfg.source.path)
        assert not [p for p in mount.rglob("*") if ".domino-sync-" in p.name], "temp files left in the mount"
