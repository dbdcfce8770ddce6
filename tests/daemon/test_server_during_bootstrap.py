"""The HTTP server is up before the bootstrap: while the API is down at start, /healthz answers and /readyz
says why the agent is not ready (so probes do not restart it), and a manual snapshot is refused cleanly."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anyio
from e2e_support import make_config, wait_for

from agent.daemon import Agent


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - a local test server
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


async def test_health_answers_while_the_bootstrap_waits_for_the_api(emulator: Any, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{_closed_port()}"
    config = make_config(emulator, tmp_path, domino={"url": down, "api_key": "key", "timeout": "1s"})
    agent = Agent(config, env={}, listen_port=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        await wait_for(lambda: agent.bound_port is not None and agent.last_error is not None, 20, "a failed bootstrap")
        base = f"http://127.0.0.1:{agent.bound_port}"
        health, _ = await anyio.to_thread.run_sync(_get, base + "/healthz")
        ready, why = await anyio.to_thread.run_sync(_get, base + "/readyz")
        status, shown = await anyio.to_thread.run_sync(_get, base + "/status")
        snap, refused = await anyio.to_thread.run_sync(_get, base + "/snapshot", b"{}")
        assert agent.engine is None and agent.dataset is None  # still bootstrapping
        tg.cancel_scope.cancel()
    assert health == 200
    assert ready == 503 and "API" in json.dumps(why)
    assert status == 200 and shown["ready"] is False and shown["sync"] is None
    assert snap == 503 and "not ready" in refused["error"]


async def test_readiness_says_why_from_the_first_failed_attempt(emulator: Any, tmp_path: Path) -> None:
    """The client tries a call several times before the bootstrap sees it fail: meanwhile /readyz already says
    the API does not answer, not just "starting"."""
    down = f"http://127.0.0.1:{_closed_port()}"
    config = make_config(emulator, tmp_path, domino={"url": down, "api_key": "key", "timeout": "1s"})
    agent = Agent(config, env={}, listen_port=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        await wait_for(lambda: agent.readiness()[1] != "starting", 20, "a reason")
        reason = agent.readiness()[1]
        first_error = agent.last_error  # the bootstrap itself has not given up yet
        tg.cancel_scope.cancel()
    assert reason.startswith("API: GET ") and "no answer (network), retrying" in reason
    assert first_error is None


async def test_a_refused_token_at_start_is_waited_for_until_it_is_fixed(emulator: Any, tmp_path: Path) -> None:
    """A 401 at start does not end `run` (on Kubernetes that would be a restart loop): the agent is not ready and
    says why, and once the token file holds a good token the bootstrap goes through."""
    token = tmp_path / "token"
    token.write_text("a-token-that-was-revoked")
    config = make_config(emulator, tmp_path, domino={"url": emulator.url, "token_file": str(token)})
    agent = Agent(config, env={}, listen_port=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        await wait_for(lambda: agent.bound_port is not None and agent.last_error is not None, 20, "a refused token")
        ready, why = await anyio.to_thread.run_sync(_get, f"http://127.0.0.1:{agent.bound_port}/readyz")
        assert ready == 503 and "401" in json.dumps(why)
        assert "a-token-that-was-revoked" not in json.dumps(why)
        token.write_text(emulator.keys["alice"])
        await wait_for(lambda: agent.dataset is not None, 20, "the bootstrap with the fixed token")
        tg.cancel_scope.cancel()


def test_the_reason_goes_back_to_starting_once_the_api_answers_again(emulator: Any, tmp_path: Path) -> None:
    """A failed attempt the client retried and then got through no longer shows as the reason."""
    agent = Agent(make_config(emulator, tmp_path), env={}, listen_port=0)
    agent._observe_api("GET", "/api/datasetrw/v2/datasets", "503", 0.01)
    assert agent.readiness()[1] == "API: GET /api/datasetrw/v2/datasets: HTTP 503, retrying"
    agent._observe_api("GET", "/api/datasetrw/v2/datasets", "ok", 0.01)
    assert agent.readiness()[1] == "starting"
