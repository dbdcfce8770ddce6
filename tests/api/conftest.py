"""Shared fixtures of the API client tests: a mocked API (aioresponses), fast settings, a real token proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aioresponses import aioresponses
from yarl import URL

from agent.api.settings import ClientSettings

BASE = "http://api.test"
KEY = "key-unit-test-0001"

FAST: dict[str, Any] = {
    "url": BASE,
    "api_key": KEY,
    "requests_per_second": 1000.0,
    "burst": 1000,
    "max_concurrency": 8,
    "timeout": 5.0,
    "max_attempts": 4,
    "backoff_base": 0.001,
    "backoff_cap": 0.05,
}


@pytest.fixture
def api() -> Iterator[aioresponses]:
    """The mocked API; requests to 127.0.0.1 (the token proxy) pass through to real servers."""
    with aioresponses(passthrough=["http://127.0.0.1"]) as mocked:
        yield mocked


@pytest.fixture
def settings() -> Callable[..., ClientSettings]:
    """Build fast test settings (tiny backoff, no rate limit to speak of), with overrides."""

    def make(**overrides: Any) -> ClientSettings:
        return ClientSettings(**{**FAST, **overrides})

    return make


@pytest.fixture
def calls(api: aioresponses) -> Callable[..., list[dict[str, Any]]]:
    """The keyword arguments (json, headers, params) of every request sent to METHOD PATH?QUERY."""

    def find(method: str, path: str, **query: Any) -> list[dict[str, Any]]:
        url = URL(BASE + path)
        if query:
            url = url.with_query(sorted((k, str(v)) for k, v in query.items()))
        found: list[dict[str, Any]] = []
        for (sent_method, sent_url), requests in api.requests.items():
            if sent_method == method and sent_url == url:
                found.extend(request.kwargs for request in requests)
        return found

    return find


@dataclass
class TokenProxy:
    """A real local API proxy: `GET /access-token` hands out the next token of `tokens` as plain text."""

    url: str
    tokens: list[str]
    fetches: int = 0
    status: int = 200
    seen: list[str] = field(default_factory=list)


@pytest.fixture
async def token_proxy() -> AsyncIterator[TokenProxy]:
    state = TokenProxy(url="", tokens=["tok-proxy-first-0001", "tok-proxy-second-0002", "tok-proxy-third-0003"])

    async def access_token(request: web.Request) -> web.Response:
        state.fetches += 1
        if state.status != 200:
            return web.Response(status=state.status, text="proxy is unhappy")
        token = state.tokens[min(state.fetches - 1, len(state.tokens) - 1)]
        state.seen.append(token)
        return web.Response(text=token + "\n", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/access-token", access_token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()
