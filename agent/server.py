"""The agent's HTTP server: health, readiness, Prometheus metrics, status, and manual snapshots.

GET  /healthz              200 while the process runs
GET  /readyz               200 once the first full scan finished and the mount and the API answered, else 503
GET  /metrics              Prometheus text exposition
GET  /status               JSON: last scan, pending files, queue, dead letters, last snapshot, last error
POST /snapshot             {"tags": [...]} (optional): ask for a snapshot now; 202 with the job id
POST /dead-letters/retry   {"id": N} (optional): requeue one or every dead letter; 200 with the count (404 for an
                           id that is no dead letter)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

from aiohttp import web

from agent.api.names import tag_problem
from agent.errors import AgentError
from agent.logs import get_logger

log = get_logger("agent.server")


class AgentView(Protocol):
    """What the HTTP server needs from the running agent."""

    def is_alive(self) -> bool: ...

    def readiness(self) -> tuple[bool, str]: ...

    def status(self) -> dict[str, Any]: ...

    def metrics_text(self) -> bytes: ...

    def request_snapshot(self, tags: Sequence[str]) -> int: ...

    def retry_dead(self, job_id: int | None) -> int: ...


def build_app(agent: AgentView) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(_: web.Request) -> web.Response:
        if agent.is_alive():
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "stopping"}, status=503)

    @routes.get("/readyz")
    async def readyz(_: web.Request) -> web.Response:
        ready, reason = agent.readiness()
        return web.json_response({"ready": ready, "reason": reason}, status=200 if ready else 503)

    @routes.get("/metrics")
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=agent.metrics_text(), content_type="text/plain", charset="utf-8")

    @routes.get("/status")
    async def status(_: web.Request) -> web.Response:
        return web.json_response(agent.status(), dumps=_dumps)

    @routes.post("/snapshot")
    async def snapshot(request: web.Request) -> web.Response:
        body = await _json_body(request)
        if unknown := sorted(set(body) - {"tags", "tag"}):
            return _error(400, f"unknown field {unknown[0]!r}: the body takes tags (a list) or tag")
        tags = body.get("tags", [])
        if isinstance(body.get("tag"), str):
            tags = [*tags, body["tag"]] if isinstance(tags, list) else tags
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return _error(400, "tags must be a list of strings")
        for tag in tags:
            problem = tag_problem(tag)
            if problem:
                return _error(400, f"{tag!r}: {problem}")
        try:
            job = agent.request_snapshot(tags)
        except AgentError as exc:
            return _error(503, str(exc))
        return web.json_response({"accepted": True, "job": job, "tags": tags}, status=202)

    @routes.post("/dead-letters/retry")
    async def retry(request: web.Request) -> web.Response:
        body = await _json_body(request)
        if unknown := sorted(set(body) - {"id"}):
            return _error(400, f"unknown field {unknown[0]!r}: the body takes id (optional)")
        job_id = body.get("id")
        if job_id is not None and (not isinstance(job_id, int) or isinstance(job_id, bool)):
            return _error(400, "id must be an integer")
        count = agent.retry_dead(job_id)
        if job_id is not None and count == 0:
            return _error(404, f"no dead letter with id {job_id} (`domino-sync status` lists them)")
        return web.json_response({"requeued": count})

    app = web.Application(middlewares=[_errors_middleware])
    app.add_routes(routes)
    return app


class _BadBody(Exception):
    pass


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _BadBody("body must be JSON") from None
    if not isinstance(body, dict):
        raise _BadBody("body must be a JSON object")
    return body


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except _BadBody as exc:
        return _error(400, str(exc))
    return response


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


@asynccontextmanager
async def serving(agent: AgentView, host: str, port: int) -> AsyncIterator[int]:
    """Serve the agent's endpoints on host:port for the duration of the block; yields the bound port."""
    runner = web.AppRunner(build_app(agent), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise AgentError(f"server.listen: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = port
    for address in runner.addresses:  # the real port when asked for port 0
        bound = int(address[1])
        break
    log.info("server.listening", host=host, port=bound)
    try:
        yield bound
    finally:
        await runner.cleanup()
