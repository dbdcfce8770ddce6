"""Credentials for the Datasets API, read as python-domino reads them.

- `DOMINO_API_PROXY`: a local proxy hands out short-lived tokens at `GET <proxy>/access-token` (plain text);
  the token is sent as `Authorization: Bearer ...` and fetched again once when the API answers 401.
- `DOMINO_TOKEN_FILE`: a file holding a bearer token that something else rotates; it is read again whenever
  its size or modification time changes (and checked again after a 401).
- `DOMINO_USER_API_KEY`: sent as `X-Domino-Api-Key`.

When several are set, one is used, in python-domino's order: proxy > token file > key.
Every key and token is registered with the log scrubber as soon as it is known; none ever appears in a log
line, an exception message or a repr.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

import aiohttp
import anyio
from yarl import URL

from agent.api.dialects import error_message
from agent.api.settings import ClientSettings
from agent.errors import AuthenticationError, ConfigError, NetworkError
from agent.logs import get_logger, redact, register_secret

log = get_logger("agent.api.auth")

API_KEY_HEADER = "X-Domino-Api-Key"
AUTHORIZATION = "Authorization"


class Credentials(Protocol):
    """What the client asks of a credential: headers for the next request, and a refresh after a 401."""

    kind: str

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]: ...

    async def refresh(self, session: aiohttp.ClientSession, used: dict[str, str]) -> bool:
        """After a 401 on a request sent with `used`: True when a different credential is now available and
        the request is worth one more try."""
        ...


class NoCredentials:
    kind = "none"

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {}

    async def refresh(self, session: aiohttp.ClientSession, used: dict[str, str]) -> bool:
        return False

    def __repr__(self) -> str:
        return "NoCredentials()"


class ApiKeyCredentials:
    kind = "api_key"

    def __init__(self, api_key: str) -> None:
        register_secret(api_key)
        self._key = api_key

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {API_KEY_HEADER: self._key}

    async def refresh(self, session: aiohttp.ClientSession, used: dict[str, str]) -> bool:
        return False

    def __repr__(self) -> str:
        return "ApiKeyCredentials(api_key=***)"


class TokenFileCredentials:
    """A bearer token read from a file, read again when the file changes."""

    kind = "token_file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._token: str | None = None
        self._lock = asyncio.Lock()

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {AUTHORIZATION: f"Bearer {await self._current()}"}

    async def refresh(self, session: aiohttp.ClientSession, used: dict[str, str]) -> bool:
        token = await self._current()
        return used.get(AUTHORIZATION) != f"Bearer {token}"

    async def _current(self) -> str:
        async with self._lock:
            try:
                st = self.path.stat()
            except OSError as exc:
                raise ConfigError(
                    "token_file", str(self.path), f"a readable file holding a token ({_why(exc)})"
                ) from None
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if self._token is None or stamp != self._stamp:
                try:
                    text = await anyio.to_thread.run_sync(self.path.read_text, "utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise ConfigError(
                        "token_file", str(self.path), f"a readable file holding a token ({_why(exc)})"
                    ) from None
                token = text.strip()
                if not token:
                    raise ConfigError("token_file", str(self.path), "a file holding a token (it is empty)")
                register_secret(token)
                if self._token is not None and token != self._token:
                    log.info("api.token_file_reloaded", path=str(self.path))
                self._token, self._stamp = token, stamp
            return self._token

    def __repr__(self) -> str:
        return f"TokenFileCredentials(path={str(self.path)!r})"


class ProxyTokenCredentials:
    """A short-lived bearer token from `GET <proxy>/access-token`, fetched again after a 401."""

    kind = "proxy"

    def __init__(self, proxy_url: str, timeout: float) -> None:
        self.url = str(URL(proxy_url.rstrip("/") + "/access-token").with_user(None))
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._token: str | None = None
        self._lock = asyncio.Lock()

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        async with self._lock:
            if self._token is None:
                self._token = await self._fetch(session)
            return {AUTHORIZATION: f"Bearer {self._token}"}

    async def refresh(self, session: aiohttp.ClientSession, used: dict[str, str]) -> bool:
        async with self._lock:
            if self._token is not None and used.get(AUTHORIZATION) != f"Bearer {self._token}":
                return True  # another request already fetched a fresh token
            stale = self._token
            self._token = await self._fetch(session)
            log.info("api.proxy_token_refreshed", proxy=self.url)
            return self._token != stale

    async def _fetch(self, session: aiohttp.ClientSession) -> str:
        try:
            async with session.get(self.url, timeout=self._timeout) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NetworkError("GET", self.url, None, f"cannot reach the API proxy ({_why(exc)})") from None
        if status != 200:
            said = redact(error_message(text)) or "no reason given"
            raise AuthenticationError("GET", self.url, status, f"the API proxy handed out no token: {said}")
        token = text.strip()
        if not token:
            raise AuthenticationError("GET", self.url, status, "the API proxy answered with an empty token")
        register_secret(token)
        return token

    def __repr__(self) -> str:
        return f"ProxyTokenCredentials(url={self.url!r})"


def credentials_for(settings: ClientSettings) -> Credentials:
    """The one credential `settings` name, in python-domino's order: proxy > token file > key."""
    if settings.api_proxy:
        return ProxyTokenCredentials(settings.api_proxy, settings.timeout)
    if settings.token_file is not None:
        return TokenFileCredentials(settings.token_file)
    if settings.api_key:
        return ApiKeyCredentials(settings.api_key)
    return NoCredentials()


def _why(exc: BaseException) -> str:
    text = redact(str(exc)) or exc.__class__.__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text if text == exc.__class__.__name__ else f"{exc.__class__.__name__}: {text}"


__all__ = [
    "API_KEY_HEADER",
    "AUTHORIZATION",
    "ApiKeyCredentials",
    "Credentials",
    "NoCredentials",
    "ProxyTokenCredentials",
    "TokenFileCredentials",
    "credentials_for",
]
