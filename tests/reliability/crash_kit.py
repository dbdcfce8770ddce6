"""A rig for crash tests: a real `domino-sync run` subprocess, killed and restarted, against an in-process
emulator (it must outlive the kills), with the checks the reliability suite makes after each restart.

Import as `from reliability.crash_kit import ...` (pytest's pythonpath has tests/).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from e2e_support import DATASET, PROJECT

from agent.api.models import Dialect
from agent.emulator import EmulatorOptions, EmulatorThread
from agent.sync.mountfs import TEMP_RE

KEY = "key-alice"
CREATE_ROUTE = "POST /api/datasetrw/v1/datasets/{datasetId}/snapshots"
TAGS = ["{marker}", "latest", "r{seq}"]  # three tags: in both dialects at least one tag call follows another


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every regular file under root, temp files of the agent left out."""
    out: dict[str, bytes] = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if not TEMP_RE.match(name) and path.is_file() and not path.is_symlink():
                out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def temps(root: Path) -> list[str]:
    return [f"{folder}/{name}" for folder, _, names in os.walk(root) for name in names if TEMP_RE.match(name)]


def write(root: Path, rel: str, data: bytes | str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


@dataclass
class Verdict:
    """What a check of the mount against the source found."""

    lost: list[str] = field(default_factory=list)  # in the source, not in the mount
    torn: list[str] = field(default_factory=list)  # in the mount with other bytes than the source
    stale: list[str] = field(default_factory=list)  # in the mount, gone from the source
    temps: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.torn or self.stale or self.temps)


def compare(source: Path, mount: Path) -> Verdict:
    want, have = files(source), files(mount)
    return Verdict(
        lost=sorted(set(want) - set(have)),
        torn=sorted(rel for rel in set(want) & set(have) if want[rel] != have[rel]),
        stale=sorted(set(have) - set(want)),
        temps=temps(mount),
    )


def torn_in_mount(source: Path, mount: Path) -> list[str]:
    """Files the mount shows with bytes the source never had at that path (what a crash must never leave)."""
    want = files(source)
    return sorted(rel for rel, data in files(mount).items() if rel in want and want[rel] != data)


class Rig:
    """One source folder, one emulator dataset, one agent config; start and kill `domino-sync run` at will."""

    def __init__(self, tmp: Path, emu: EmulatorThread, *, settle: str = "100ms") -> None:
        self.tmp = tmp
        self.emu = emu
        self.src = tmp / "src"
        self.src.mkdir(exist_ok=True)
        self.port = free_port()
        self.log = tmp / "agent.log"
        self.config = tmp / "agent.yaml"
        doc: dict[str, Any] = {
            "source": {"path": str(self.src), "settle": settle, "rescan": "2s"},
            "dataset": {"name": DATASET, "project_id": PROJECT, "create": True, "mount": str(self.mount)},
            "domino": {"url": emu.url, "requests_per_second": 50, "burst": 20, "timeout": "6s"},  # in-flight grace: 6 s
            "state_dir": str(tmp / "state"),
            "server": {"listen": f"127.0.0.1:{self.port}"},
            "shutdown_timeout": "5s",
            "rules": [{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": TAGS}],
        }
        self.config.write_text(yaml.safe_dump(doc))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def mount(self) -> Path:
        return self.emu.mount_root / DATASET

    # -- the process ----------------------------------------------------------------------------------------

    def start(self, failpoints: str = "") -> subprocess.Popen[bytes]:
        env = {**os.environ, "DOMINO_USER_API_KEY": KEY, "DOMINO_SYNC_FAILPOINTS": failpoints}
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n==== start {self.starts} failpoints={failpoints!r}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(self.config)],
                env=env,
                stdout=out,
                stderr=out,
            )
        return self.proc

    def wait_killed(self, timeout: float) -> int | None:
        """Wait for the process to die (a failpoint); SIGKILL it after `timeout`. Its return code, or None when
        it was still alive (and was killed here)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM and wait: the clean exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("the agent did not stop within 30 s of SIGTERM") from None
        return self.proc.returncode

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    # -- the agent's and the server's view ------------------------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=2) as answer:
                doc: dict[str, Any] = json.loads(answer.read())
                return doc
        except (OSError, ValueError):
            return None

    def tags(self) -> dict[str, str]:
        """Tag -> snapshot folder name (`e2e@<id>`), read from the emulator's tag links."""
        return {
            p.name.split("@", 1)[1]: os.readlink(p) for p in self.emu.mount_root.glob(f"{DATASET}@*") if p.is_symlink()
        }

    def snapshots(self) -> list[str]:
        """Snapshot folder names (`e2e@<id>`)."""
        return sorted(p.name for p in self.emu.mount_root.glob(f"{DATASET}@*") if p.is_dir() and not p.is_symlink())

    def creates(self) -> int:
        return int(self.emu.stats()["by_route"].get(CREATE_ROUTE, 0))

    def idle(self) -> bool:
        """The mount equals the source and the agent has nothing pending, in flight or queued."""
        if not compare(self.src, self.mount).clean:
            return False
        status = self.status()
        if status is None or not status.get("ready"):
            return False
        sync, queue = status.get("sync") or {}, status.get("queue") or {}
        return sync.get("pending") == 0 and sync.get("in_flight") == 0 and queue.get("depth") == 0

    def wait_settled(self, tags: set[str], limit: float, *, idle_grace: float = 4.0) -> None:
        """Wait until the agent is idle with every wanted tag in place. Fails early when the agent has been
        idle for `idle_grace` seconds and a tag is still missing (a lost trigger: nothing will come)."""
        deadline = time.monotonic() + limit
        idle_since: float | None = None
        while True:
            idle = self.idle()
            if idle and tags <= set(self.tags()):
                return
            now = time.monotonic()
            idle_since = (idle_since or now) if idle else None
            if idle_since is not None and now - idle_since > idle_grace:
                missing = sorted(tags - set(self.tags()))
                raise AssertionError(f"the agent is idle but tags {missing} never came\n{self.report()}")
            if now > deadline:
                raise AssertionError(f"timed out after {limit}s waiting for tags {sorted(tags)}\n{self.report()}")
            time.sleep(0.1)

    def report(self) -> str:
        verdict = compare(self.src, self.mount)
        return (
            f"verdict={verdict}\ntags={self.tags()}\nsnapshots={self.snapshots()}\nstatus={self.status()}\n"
            f"log tail:\n{self.log_tail()}"
        )

    def untagged(self) -> list[str]:
        """Snapshots no tag points at: what a duplicate creation leaves (every trigger's snapshot has a tag)."""
        pointed = set(self.tags().values())
        return [name for name in self.snapshots() if name not in pointed]

    def snapshot_holds(self, tag: str, prefix: str) -> bool:
        """The snapshot tagged `tag` holds every file of the source under `prefix`, byte for byte."""
        frozen = files(self.emu.mount_root / f"{DATASET}@{tag}")
        drop = {k: v for k, v in files(self.src).items() if k.startswith(prefix)}
        return bool(drop) and all(frozen.get(k) == v for k, v in drop.items())


def wait_until(predicate: Callable[[], bool], limit: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what()}")
        time.sleep(0.1)


@contextmanager
def emulator_thread(tmp: Path, dialect: Dialect = Dialect.SEED, **faults: Any) -> Iterator[EmulatorThread]:
    options = EmulatorOptions(data_dir=tmp / "emu", users={"alice": KEY}, dialect=dialect, **faults)
    with EmulatorThread(options) as emu:
        yield emu


@contextmanager
def rig(tmp: Path, dialect: Dialect = Dialect.SEED, **kwargs: Any) -> Iterator[Rig]:
    """An emulator thread and a Rig; the agent is killed at the end whatever happened."""
    with emulator_thread(tmp, dialect) as emu:
        r = Rig(tmp, emu, **kwargs)
        try:
            yield r
        finally:
            r.kill()
