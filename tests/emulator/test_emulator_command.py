"""`domino-sync emulator`: starts as a subprocess, prints one line with the URL (and the default key when no
--user was given), serves, and exits 0 on SIGTERM or SIGINT; bad flags are one line and exit 2."""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from agent.cli.main import cli

BANNER = re.compile(r"^domino-sync emulator: listening on (http://127\.0\.0\.1:\d+) \(dialect (\w+), .*$")


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start the command and return the process and its first stdout line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready:
        proc.kill()
        pytest.fail("the emulator printed nothing within 30 s")
    return proc, proc.stdout.readline().rstrip("\n")


def stop(proc: subprocess.Popen[str], signum: int) -> int:
    """Send `signum`, wait for the exit, close the pipes; return the exit code."""
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the emulator did not stop within 20 s")
    assert "Traceback" not in err, err
    return proc.returncode


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_starts_serves_and_stops_cleanly(tmp_path: Path, signum: int) -> None:
    """With --user, the start line gives the URL and no key; the server answers; SIGTERM/SIGINT exit 0."""
    proc, line = start("--data-dir", str(tmp_path), "--user", "alice:key-alice", "--dialect", "domino")
    try:
        match = BANNER.match(line)
        assert match and match.group(2) == "domino", line
        assert "key-alice" not in line and "users alice" in line
        reply = requests.get(
            f"{match.group(1)}/api/datasetrw/v2/datasets", headers={"X-Domino-Api-Key": "key-alice"}, timeout=10
        )
        assert reply.status_code == 200 and "datasets" in reply.json()
    finally:
        code = stop(proc, signum)
    assert code == 0
    assert (tmp_path / "emulator.db").exists()


def test_default_user_key_is_printed_and_works(tmp_path: Path) -> None:
    """Without --user the start line names user admin and its key, and that key authenticates."""
    proc, line = start("--data-dir", str(tmp_path), "--mount-root", str(tmp_path / "mnt"), "--rate-limit", "100")
    try:
        match = BANNER.match(line)
        key = re.search(r"user admin key (\S+)$", line)
        assert match and key, line
        url = match.group(1)
        made = requests.post(
            f"{url}/api/datasetrw/v1/datasets",
            headers={"X-Domino-Api-Key": key.group(1)},
            json={"name": "cli"},
            timeout=10,
        )
        assert made.status_code == 201
        assert (tmp_path / "mnt" / "cli").is_dir()
        assert requests.get(f"{url}/__emulator__/stats", timeout=10).json()["requests_total"] == 1
    finally:
        assert stop(proc, signal.SIGTERM) == 0


def test_fault_flags_take_effect(tmp_path: Path) -> None:
    """--fail-rate, --latency-ms and --rate-limit reach the server: at fail rate 1 and 1 rps the first call is an
    injected 5xx, the next one (inside the second) a 429, each at least 100 ms late; the stats show both."""
    proc, line = start("--data-dir", str(tmp_path), "--fail-rate", "1", "--latency-ms", "100", "--rate-limit", "1")
    try:
        match = BANNER.match(line)
        assert match, line
        url = match.group(1) + "/api/datasetrw/v2/datasets"
        started = time.monotonic()
        first = requests.get(url, timeout=10)
        second = requests.get(url, timeout=10)
        assert time.monotonic() - started >= 0.2
        assert first.status_code in (500, 503) and second.status_code == 429
        assert int(second.headers["Retry-After"]) >= 1
        stats = requests.get(match.group(1) + "/__emulator__/stats", timeout=10).json()
        assert stats["injected_failures"] == 1 and stats["responses_429"] == 1
    finally:
        assert stop(proc, signal.SIGTERM) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "abc"],
        ["--port", "70000"],
        ["--dialect", "soap"],
        ["--user", "no-colon"],
        ["--user", "a:k", "--user", "a:j"],
        ["--fail-rate", "1.5"],
        ["--latency-ms", "-3"],
        ["--rate-limit", "0"],
        ["--bogus"],
    ],
)
def test_bad_flags_are_one_line_and_exit_2(args: list[str]) -> None:
    """Each bad flag gives exactly one line on stderr and exit code 2, without starting a server."""
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["emulator", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("domino-sync: error: emulator:"), lines
    assert time.monotonic() - started < 5


def test_a_second_emulator_on_one_data_folder_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """While one `domino-sync emulator` serves a data folder, a second one on it stops at start: one line naming
    the folder and the pid that holds it, exit 2 (the first keeps serving)."""
    proc, banner = start("--data-dir", str(tmp_path), "--user", "a:k")
    try:
        url = BANNER.match(banner)
        assert url is not None, banner
        second = subprocess.run(
            [sys.executable, "-m", "agent", "emulator", "--port", "0", "--data-dir", str(tmp_path), "--user", "a:k"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "data_dir" in lines[0] and f"pid {proc.pid}" in lines[0], lines
        assert requests.get(f"{url.group(1)}/__emulator__/stats", timeout=5).ok
    finally:
        assert stop(proc, signal.SIGTERM) == 0
