"""Credentials: python-domino's precedence, the proxy token (fetched once, renewed on demand), the token file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from agent.api.auth import (
    ApiKeyCredentials,
    NoCredentials,
    ProxyTokenCredentials,
    TokenFileCredentials,
    credentials_for,
)
from agent.api.settings import ClientSettings
from agent.errors import ConfigError, NetworkError
from agent.logs import redact


def test_precedence_is_proxy_then_token_file_then_key(tmp_path: Path) -> None:
    """With several credentials set, the proxy wins, then the token file, then the key."""
    base: dict[str, Any] = {"url": "http://h.example", "api_key": "key-prec-0001"}
    assert isinstance(credentials_for(ClientSettings(**base)), ApiKeyCredentials)
    with_file = ClientSettings(**base, token_file=tmp_path / "t")
    assert isinstance(credentials_for(with_file), TokenFileCredentials)
    with_proxy = with_file.with_(api_proxy="http://127.0.0.1:1")
    assert isinstance(credentials_for(with_proxy), ProxyTokenCredentials)
    assert isinstance(credentials_for(ClientSettings(url="http://h.example")), NoCredentials)


def test_reprs_hide_the_key() -> None:
    """No credential's repr shows the secret, and the key is registered with the log scrubber."""
    cred = ApiKeyCredentials("key-repr-secret-0001")
    assert "key-repr-secret-0001" not in repr(cred)
    assert redact("x key-repr-secret-0001 y") == "x *** y"


async def test_proxy_token_fetched_once_for_concurrent_requests(token_proxy: Any) -> None:
    """Many requests starting together share one token fetch."""
    cred = ProxyTokenCredentials(token_proxy.url, timeout=5)
    seen: list[dict[str, str]] = []
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            seen.append(await cred.headers(session))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
    assert token_proxy.fetches == 1
    assert {h["Authorization"] for h in seen} == {"Bearer tok-proxy-first-0001"}
    assert redact("tok-proxy-first-0001") == "***"


async def test_refresh_after_someone_else_refreshed_does_not_fetch(token_proxy: Any) -> None:
    """A 401 on a token that was already replaced by another request reuses the new token."""
    cred = ProxyTokenCredentials(token_proxy.url, timeout=5)
    async with aiohttp.ClientSession() as session:
        old = await cred.headers(session)
        assert await cred.refresh(session, old) is True
        assert await cred.refresh(session, old) is True  # stale header again: no second fetch
        assert (await cred.headers(session))["Authorization"] == "Bearer tok-proxy-second-0002"
    assert token_proxy.fetches == 2


async def test_unreachable_proxy_is_a_network_error() -> None:
    """A proxy that cannot be reached gives NetworkError naming its access-token URL."""
    cred = ProxyTokenCredentials("http://127.0.0.1:9", timeout=2)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(NetworkError, match=r"127\.0\.0\.1:9/access-token"):
            await cred.headers(session)


async def test_token_file_refresh_reports_whether_it_changed(tmp_path: Path) -> None:
    """After a 401 the token file is worth a retry only if it now holds a different token."""
    path = tmp_path / "token"
    path.write_text("tok-file-aaaa-0001")
    cred = TokenFileCredentials(path)
    async with aiohttp.ClientSession() as session:
        used = await cred.headers(session)
        assert await cred.refresh(session, used) is False
        path.write_text("tok-file-bbbb-00002")
        assert await cred.refresh(session, used) is True
    assert "tok-file" not in repr(cred)


async def test_empty_token_file_is_a_config_error(tmp_path: Path) -> None:
    """An empty token file is reported with its path."""
    path = tmp_path / "token"
    path.write_text("  \n")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigError, match="empty"):
            await TokenFileCredentials(path).headers(session)
