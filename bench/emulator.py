"""The emulator the agents talk to, in its own process (`domino-sync emulator`), so its work never shares the
harness's interpreter; and a tiny urllib client for what the harness itself asks it (stats, datasets, tags)."""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.measure import MeasureError, tail
from bench.procs import domino_sync_command

BANNER = re.compile(r"listening on (http://\S+)")
START_TIMEOUT = 30.0
USER = "bench"
PROJECT = "bench-project"


class EmulatorProcess:
    """`with EmulatorProcess(data_dir, log) as emu:` serves on a free port; emu.url, emu.key, emu.mount_root."""

    def __init__(self, data_dir: Path, log: Path, *, latency_ms: int = 0) -> None:
        self.data_dir = data_dir
        self.mount_root = data_dir / "mnt"
        self.log = log
        self.latency_ms = latency_ms
        self.key = secrets.token_urlsafe(18)
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the emulator is not running")
        return self._proc.pid

    def __enter__(self) -> EmulatorProcess:
        self.mount_root.mkdir(parents=True, exist_ok=True)
        command = [
            *domino_sync_command(),
            "--log-level",
            "warning",
            "emulator",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            "--mount-root",
            str(self.mount_root),
            "--user",
            f"{USER}:{self.key}",
            "--latency-ms",
            str(self.latency_ms),
        ]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_bytes(b"")
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = BANNER.search(self.log.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
                return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise MeasureError(f"the emulator did not start: {tail(self.log)}")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class EmulatorApi:
    """The few calls the harness makes itself (seed dialect), with urllib: no dependency on the agent's client."""

    def __init__(self, url: str, key: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._key = key
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 - http to the emulator
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("X-Domino-Api-Key", self._key)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise MeasureError(
                f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:200]}"
            ) from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise MeasureError(f"{method} {path}: {exc}") from None
        return json.loads(text) if text else None

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/__emulator__/stats", auth=False)
        return result

    def reset_stats(self) -> None:
        self._call("DELETE", "/__emulator__/stats", auth=False)

    def create_dataset(self, name: str, project_id: str = PROJECT) -> str:
        body = self._call("POST", "/api/datasetrw/v1/datasets", {"name": name, "projectId": project_id})
        dataset = body.get("dataset", body)
        return str(dataset["id"])

    def dataset_tags(self, dataset_id: str) -> dict[str, str]:
        body = self._call("GET", f"/api/datasetrw/v1/datasets/{dataset_id}")
        dataset = body.get("dataset", body)
        return dict(dataset.get("tags") or {})
