"""The agent's HTTP server, over a real socket, in front of a scripted agent view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from agent.errors import AgentError
from agent.metrics import Metrics
from agent.server import serving


class FakeAgent:
    def __init__(self) -> None:
        self.ready = False
        self.snapshots: list[list[str]] = []
        self.retried: list[int | None] = []
        self.metrics = Metrics()
        self.refuse = False

    def is_alive(self) -> bool:
        return True

    def readiness(self) -> tuple[bool, str]:
        return (True, "ok") if self.ready else (False, "first scan not finished")

    def status(self) -> dict[str, Any]:
        return {"ready": self.ready, "queue": {"depth": len(self.snapshots)}}

    def metrics_text(self) -> bytes:
        return self.metrics.render()

    def request_snapshot(self, tags: Sequence[str]) -> int:
        if self.refuse:
            raise AgentError("not ready")
        self.snapshots.append(list(tags))
        return len(self.snapshots)

    def retry_dead(self, job_id: int | None) -> int:
        self.retried.append(job_id)
        return 3 if job_id is None else int(job_id != 404)


async def test_health_ready_status_and_metrics() -> None:
    """/healthz is 200, /readyz follows readiness, /status is JSON and /metrics is Prometheus text."""
    agent = FakeAgent()
    agent.metrics.files_synced.inc(4)
    async with serving(agent, "127.0.0.1", 0) as port, aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        async with http.get("/healthz") as resp:
            assert resp.status == 200
        async with http.get("/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["reason"] == "first scan not finished"
        agent.ready = True
        async with http.get("/readyz") as resp:
            assert resp.status == 200
        async with http.get("/status") as resp:
            assert (await resp.json())["ready"] is True
        async with http.get("/metrics") as resp:
            text = await resp.text()
            assert "domino_sync_files_synced_total 4.0" in text
            assert resp.content_type == "text/plain"


async def test_snapshot_endpoint_validates_tags() -> None:
    """POST /snapshot accepts valid tags (202) and refuses bad bodies and unsafe tag names (400)."""
    agent = FakeAgent()
    async with serving(agent, "127.0.0.1", 0) as port, aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        async with http.post("/snapshot", json={"tags": ["v1", "latest"]}) as resp:
            assert resp.status == 202
            assert (await resp.json())["job"] == 1
        async with http.post("/snapshot") as resp:
            assert resp.status == 202
        for bad in ({"tags": "v1"}, {"tags": ["a/b"]}, {"tags": [""]}, [1, 2], {"tgas": ["v1"]}):
            async with http.post("/snapshot", json=bad) as resp:
                assert resp.status == 400, bad
                assert "error" in await resp.json()
        async with http.post("/snapshot", data=b"{not json") as resp:
            assert resp.status == 400
        agent.refuse = True
        async with http.post("/snapshot", json={}) as resp:
            assert resp.status == 503
    assert agent.snapshots == [["v1", "latest"], []]


async def test_dead_letter_retry_endpoint() -> None:
    """POST /dead-letters/retry requeues all dead letters or the one named by id."""
    agent = FakeAgent()
    async with serving(agent, "127.0.0.1", 0) as port, aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        async with http.post("/dead-letters/retry") as resp:
            assert (await resp.json()) == {"requeued": 3}
        async with http.post("/dead-letters/retry", json={"id": 7}) as resp:
            assert (await resp.json()) == {"requeued": 1}
        async with http.post("/dead-letters/retry", json={"id": "x"}) as resp:
            assert resp.status == 400
        async with http.post("/dead-letters/retry", json={"ids": [7]}) as resp:  # misspelt: not "requeue all"
            assert resp.status == 400
        async with http.post("/dead-letters/retry", json={"id": 404}) as resp:
            assert resp.status == 404
            assert "no dead letter with id 404" in (await resp.json())["error"]
    assert agent.retried == [None, 7, 404]


async def test_listening_on_a_busy_port_is_a_clear_error() -> None:
    """A port already taken gives an AgentError naming server.listen, not an OSError traceback."""
    agent = FakeAgent()
    async with serving(agent, "127.0.0.1", 0) as port:
        try:
            async with serving(agent, "127.0.0.1", port):
                raise AssertionError("second bind should fail")
        except AgentError as exc:
            assert "server.listen" in str(exc)
