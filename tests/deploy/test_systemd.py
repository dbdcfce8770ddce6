"""deploy/systemd/domino-sync.service: clean under `systemd-analyze verify` (both ways of passing the key),
hardened as agreed, consistent with config/host-service.yaml, and the hardening does not break Python."""

from __future__ import annotations

import mmap
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import load_config

HOST = {"DOMINO_API_HOST": "https://domino.example.com"}  # the examples read the API address from there

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "domino-sync.service"
ENV_EXAMPLE = REPO / "deploy" / "systemd" / "domino-sync.env.example"
EXEC = "/usr/local/bin/domino-sync"
ExecFinder = Callable[[str, str], str]

HARDENING = {
    "ProtectSystem": "strict",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "ProtectHome": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "StateDirectory": "domino-sync",
}


def directives(text: str) -> dict[str, dict[str, list[str]]]:
    """The unit's sections, each a mapping of key to every value it is given (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return directives(UNIT.read_text(encoding="utf-8"))["Service"]


def value(service: dict[str, list[str]], key: str) -> str:
    values = service[key]
    assert len(values) == 1, f"{key} is set {len(values)} times"
    return values[0]


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min|m)?", text)
    assert match, text
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "min": 60, "m": 60, None: 1}[match.group(2)]


def staged_unit(tmp_path: Path, text: str) -> Path:
    """A copy of the unit whose ExecStart points at a stub executable that exists, as verify demands."""
    stub = tmp_path / "bin" / "domino-sync"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    assert text.count(EXEC) >= 1
    unit = tmp_path / "domino-sync.service"
    unit.write_text(text.replace(f"ExecStart={EXEC}", f"ExecStart={stub}"), encoding="utf-8")
    return unit


def verify(analyze: str, unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze, "verify", "--man=no", unit.name],
        capture_output=True, text=True, timeout=60, check=False, cwd=unit.parent,
    )  # fmt: skip


def test_unit_is_clean_under_systemd_analyze_verify(tool: ExecFinder, tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit and prints nothing: no unknown key, no bad value."""
    analyze = tool("systemd-analyze", "apt-get install systemd; .ci/run does")
    result = verify(analyze, staged_unit(tmp_path, UNIT.read_text(encoding="utf-8")))
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_credential_variant_is_clean_too(tool: ExecFinder, tmp_path: Path) -> None:
    """The documented LoadCredential= alternative, uncommented, also verifies cleanly."""
    analyze = tool("systemd-analyze", "apt-get install systemd; .ci/run does")
    text = UNIT.read_text(encoding="utf-8")
    commented = [line for line in text.splitlines() if re.match(r"^#(LoadCredential|Environment)=", line)]
    assert len(commented) == 2
    for line in commented:
        text = text.replace(line, line[1:])
    unit = staged_unit(tmp_path, text)
    service = directives(unit.read_text(encoding="utf-8"))["Service"]
    assert service["LoadCredential"] == ["domino-token:/etc/domino-sync/domino-token"]
    assert service["Environment"] == ["DOMINO_TOKEN_FILE=%d/domino-token"]
    result = verify(analyze, unit)
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_verify_would_catch_a_broken_unit(tool: ExecFinder, tmp_path: Path) -> None:
    """The verify run is real: a misspelled directive is reported."""
    analyze = tool("systemd-analyze", "apt-get install systemd; .ci/run does")
    text = UNIT.read_text(encoding="utf-8").replace("ProtectHome=yes", "ProtectHomes=yes")
    result = verify(analyze, staged_unit(tmp_path, text))
    assert "ProtectHomes" in result.stdout + result.stderr


def test_exposure_score_is_low(tool: ExecFinder, tmp_path: Path) -> None:
    """`systemd-analyze security --offline` rates the unit's exposure below 2.0 (of 10)."""
    analyze = tool("systemd-analyze", "apt-get install systemd; .ci/run does")
    unit = staged_unit(tmp_path, UNIT.read_text(encoding="utf-8"))
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", unit.name],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    assert float(match.group(1)) < 2.0


def test_service_runs_the_agent_and_restarts_on_failure(service: dict[str, list[str]]) -> None:
    """Type=exec, the agreed ExecStart, restart on failure after a pause, but not on an invalid config (exit 2)."""
    assert value(service, "Type") == "exec"
    assert value(service, "ExecStart") == f"{EXEC} run --config /etc/domino-sync/config.yaml"
    assert value(service, "Restart") == "on-failure"
    assert seconds(value(service, "RestartSec")) >= 1
    assert value(service, "RestartPreventExitStatus") == "2"


def test_stop_timeout_outlasts_the_agents_drain(service: dict[str, list[str]]) -> None:
    """TimeoutStopSec is longer than the host config's shutdown_timeout, so SIGKILL never cuts a clean drain."""
    cfg = load_config(REPO / "config" / "host-service.yaml", env=HOST)
    assert seconds(value(service, "TimeoutStopSec")) > cfg.shutdown_timeout >= 20


def test_key_comes_from_an_optional_environment_file(service: dict[str, list[str]]) -> None:
    """The key is read from /etc/domino-sync/domino-sync.env (optional: '-'), under a fixed non-root user."""
    assert value(service, "EnvironmentFile") == "-/etc/domino-sync/domino-sync.env"
    assert value(service, "User") == "domino-sync"
    assert "Environment" not in service


def test_hardening_directives_are_set(service: dict[str, list[str]]) -> None:
    """Each agreed hardening directive is present with its agreed value."""
    for key, expected in HARDENING.items():
        assert value(service, key) == expected, key
    assert "@system-service" in service["SystemCallFilter"]


def test_writable_paths_are_the_host_configs(service: dict[str, list[str]]) -> None:
    """ReadWritePaths names the host config's source and mount; its state_dir is the unit's StateDirectory."""
    cfg = load_config(REPO / "config" / "host-service.yaml", env=HOST)
    writable = {Path(path.lstrip("-")) for entry in service["ReadWritePaths"] for path in entry.split()}
    assert cfg.dataset.mount is not None
    assert {cfg.source.path, cfg.dataset.mount} <= writable
    assert cfg.state_dir == Path("/var/lib") / value(service, "StateDirectory")
    unit = directives(UNIT.read_text(encoding="utf-8"))["Unit"]
    assert unit["RequiresMountsFor"] == [str(cfg.dataset.mount)]


def test_env_example_names_host_and_key_with_placeholders() -> None:
    """The env example sets DOMINO_API_HOST and DOMINO_USER_API_KEY, the key only as a placeholder."""
    pairs = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(pairs) == {"DOMINO_API_HOST", "DOMINO_USER_API_KEY"}
    assert pairs["DOMINO_API_HOST"].startswith("https://")
    assert "REPLACE" in pairs["DOMINO_USER_API_KEY"]


# prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN): the kernel's own form of MemoryDenyWriteExecute (Linux 6.3+),
# inherited across fork and exec, so a child runs as systemd would run the agent.
UNDER_MDWE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
os.execvp(sys.argv[1], sys.argv[1:])
"""

PROBE = r"""
import mmap, sqlite3
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    raise SystemExit("write+exec memory was allowed: MDWE is not in force")
import aiohttp, anyio, click, croniter, pathspec, prometheus_client, pydantic, structlog, watchfiles
import yaml
import agent.cli.main, agent.config

assert sqlite3.connect(":memory:").execute("select 1").fetchone() == (1,)
print("ok")
"""


def under_mdwe(
    args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-c", UNDER_MDWE, *args],
        capture_output=True, text=True, timeout=90, check=False, cwd=cwd, env=env,
    )  # fmt: skip
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+), so MemoryDenyWriteExecute cannot be tried")
    return result


@pytest.mark.skipif(not hasattr(mmap, "PROT_EXEC") or sys.platform != "linux", reason="Linux only")
def test_python_and_the_agent_load_under_memory_deny_write_execute(tool: ExecFinder) -> None:
    """With write+exec memory refused, CPython imports every dependency and the agent, and the CLI answers."""
    probe = under_mdwe([sys.executable, "-c", PROBE])
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip() == "ok"
    cli = under_mdwe([tool("domino-sync", "pip install -e ."), "--help"])
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "Usage: domino-sync" in cli.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="Linux only")
def test_readme_demo_runs_once_under_memory_deny_write_execute(tool: ExecFinder, tmp_path: Path) -> None:
    """`domino-sync once` on config/local.yaml (embedded emulator, a drop with a marker) exits 0 with W^X memory."""
    pytest.importorskip("agent.daemon", reason="the daemon (agent.daemon) is not importable yet")
    shutil.copy(REPO / "config" / "local.yaml", tmp_path / "config.yaml")
    drop = tmp_path / "outbox" / "day1"
    drop.mkdir(parents=True)
    (drop / "data.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (drop / "_SUCCESS").write_text("day1\n", encoding="utf-8")
    env = {key: val for key, val in os.environ.items() if not key.startswith("DOMINO_")}
    command = [tool("domino-sync", "pip install -e ."), "once", "--config", "config.yaml"]
    result = under_mdwe(command, cwd=tmp_path, env=env)
    if result.returncode == 2 and "No such command" in result.stderr:
        pytest.skip("`domino-sync once` is not implemented yet")
    assert result.returncode == 0, result.stderr[-2000:]
