"""The agent under test as a process: its config file, `domino-sync once` and a running `domino-sync run`, and
what /proc says about it (resident memory, peak memory, CPU seconds)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from bench.measure import MeasureError, tail

CLK_TCK = os.sysconf("SC_CLK_TCK")


def domino_sync_command() -> list[str]:
    """The `domino-sync` script installed with this interpreter (not a version manager's shim on the PATH, such
    as pyenv's, which adds a shell and ~80 ms to every run), else the one on the PATH, else `python -m agent`."""
    beside = Path(sys.executable).with_name("domino-sync")
    if beside.is_file():
        return [str(beside)]
    script = shutil.which("domino-sync")
    return [script] if script else [sys.executable, "-m", "agent"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path,
    *,
    source: Path,
    mount: Path,
    state_dir: Path,
    url: str,
    key: str,
    dataset: dict[str, Any],
    settle: float | None = None,
    rules: Sequence[dict[str, Any]] = (),
    port: int | None = None,
) -> Path:
    """An agent config: default knobs except those a case sets; the server only when `port` is given."""
    src: dict[str, Any] = {"path": str(source)}
    if settle is not None:
        src["settle"] = f"{round(settle * 1000)}ms"
    doc: dict[str, Any] = {
        "source": src,
        "dataset": {**dataset, "mount": str(mount)},
        "domino": {"url": url, "api_key": key},
        "state_dir": str(state_dir),
        "rules": list(rules),
        "server": {"enabled": False} if port is None else {"listen": f"127.0.0.1:{port}"},
        "log": {"level": "warning", "format": "json"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def once_command(config: Path) -> list[str]:
    return [*domino_sync_command(), "once", "--config", str(config)]


# ------------------------------------------------------------------------------------------------- /proc


def status_bytes(pid: int, field: str) -> int:
    """A `kB` line of /proc/<pid>/status (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise MeasureError(f"/proc/{pid}/status has no {field}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_switches(pid: int) -> dict[int, int]:
    """Thread id -> context switches so far (voluntary + involuntary): how often each thread woke up."""
    counts: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        counts[int(task.name)] = sum(int(line.split()[1]) for line in text.splitlines() if "ctxt_switches" in line)
    return counts


# ------------------------------------------------------------------------------------------------- run


class AgentProcess:
    """`with AgentProcess(config, log, port) as agent:` a `domino-sync run`, ready (GET /readyz is 200)."""

    def __init__(self, config: Path, log: Path, port: int, *, ready_timeout: float = 120.0) -> None:
        self.config = config
        self.log = log
        self.port = port
        self.ready_timeout = ready_timeout
        self.ready_seconds = 0.0  # from start to ready
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the agent is not running")
        return self._proc.pid

    def __enter__(self) -> AgentProcess:
        command = [*domino_sync_command(), "run", "--config", str(self.config)]
        with self.log.open("ab") as out:
            out.write(f"\n$ {' '.join(command)}\n".encode())
            out.flush()
            started = time.monotonic()
            self._proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - started
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_ready(self, started: float) -> None:
        assert self._proc is not None
        while time.monotonic() - started < self.ready_timeout:
            if self._proc.poll() is not None:
                raise MeasureError(f"`domino-sync run` exited {self._proc.returncode}: {tail(self.log)}")
            if self.get("/readyz") is not None:
                return
            time.sleep(0.05)
        raise MeasureError(f"`domino-sync run` not ready after {self.ready_timeout:.0f} s: {tail(self.log)}")

    def get(self, path: str) -> Any:
        """The agent's JSON answer to GET `path`, or None when it does not answer 200."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            return None
        try:
            return json.loads(text) if text else {}
        except json.JSONDecodeError:
            return {"text": text}

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout`); the exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode
