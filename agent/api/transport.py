"""HTTP for the Datasets API client: one aiohttp session, credentials, the shared limiter, retries, typed errors.

`Transport.call` sends one logical call and returns the decoded JSON body. Which failures it repeats is
decided by the pure `may_repeat` (the reasoning is in `agent.api.client`'s docstring); the delay comes from
`agent.backoff.backoff_delay`, so the policy lives in one place. Library exceptions become `agent.errors`
types here, at the border, and every server message is redacted before it lands in an exception.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from agent import __version__
from agent.api import dialects
from agent.api.auth import Credentials, credentials_for
from agent.api.limiter import RequestLimiter
from agent.api.settings import ClientSettings
from agent.backoff import backoff_delay, parse_retry_after
from agent.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    ServerError,
)
from agent.logs import get_logger, redact

log = get_logger("agent.api.transport")

Observer = Callable[[str, str, str, float], None]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one HTTP attempt came to: an answer (status, body) or a failure (and whether the request left)."""

    status: int = 0
    text: str = ""
    reason: str = ""
    retry_after: str | None = None  # the raw header
    failure: BaseException | None = None
    sent: bool = True

    @property
    def ok(self) -> bool:
        return self.failure is None and 200 <= self.status < 300

    @property
    def outcome(self) -> str:
        """For metrics: "ok", the status code, or "network"."""
        if self.failure is not None:
            return "network"
        return "ok" if self.ok else str(self.status)


def may_repeat(attempt: Attempt, safe: bool) -> bool:
    """Whether a failed attempt may be sent again. `safe` calls repeat on connection errors, timeouts and
    408/429/5xx-gateway statuses; the others only when the server certainly did nothing (429, or a connection
    that was never made). TLS failures never repeat: they will not heal by themselves."""
    if attempt.failure is not None:
        if isinstance(attempt.failure, aiohttp.ClientSSLError):
            return False
        return safe or not attempt.sent
    return attempt.status in RETRY_STATUSES and (safe or attempt.status == 429)


def error_for(method: str, path: str, status: int, message: str, retry_after: float | None) -> ApiError:
    """The errors.py class for an HTTP error status."""
    if status in (400, 422):
        return BadRequestError(method, path, status, message)
    if status == 401:
        return AuthenticationError(method, path, status, message)
    if status == 403:
        return PermissionDeniedError(method, path, status, message)
    if status == 404:
        return NotFoundError(method, path, status, message)
    if status == 409:
        return ConflictError(method, path, status, message)
    if status == 429:
        return RateLimitedError(method, path, status, message, retry_after)
    if status >= 500:
        return ServerError(method, path, status, message, retry_after)
    if status == 408:
        return NetworkError(method, path, status, message)
    return ProtocolError(method, path, status, f"unexpected answer: {message}")


class Transport:
    """Open with `await open()`, close with `await close()`; `call` from any task in between."""

    def __init__(
        self, settings: ClientSettings, observer: Observer | None = None, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.base = str(URL(settings.url))
        self.credentials: Credentials = credentials_for(settings)
        self.limiter = RequestLimiter(settings.requests_per_second, settings.burst, settings.max_concurrency)
        self._observer = observer
        self._wall_clock = wall_clock
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self._session is not None:
            raise RuntimeError("DatasetsClient is already open")
        connector = aiohttp.TCPConnector(ssl=ssl_context(self.settings), limit=self.settings.max_concurrency + 2)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            headers={"User-Agent": f"domino-sync/{__version__}", "Accept": "application/json"},
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await asyncio.shield(session.close())

    async def call(
        self,
        method: str,
        route: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        safe: bool = True,
    ) -> Any:
        """Send one logical call, retrying as `may_repeat` allows, and return its decoded JSON body (None for an
        empty answer). `route` is the path template (for metrics), `path` the filled-in path."""
        session = self._session
        if session is None:
            raise RuntimeError("use `async with DatasetsClient(...)` before calling the API")
        url = URL(self.base + path, encoded=True)
        attempt_no = 0
        renewed = False
        while True:
            attempt_no += 1
            auth = await self.credentials.headers(session)
            attempt = await self._send(session, method, route, url, auth, params, json_body)
            if attempt.ok:
                return _decode(method, path, attempt)
            if attempt.status == 401 and not renewed:
                renewed = True  # the server did nothing with the refused request: one more try, uncounted
                if await self.credentials.refresh(session, auth):
                    attempt_no -= 1
                    continue
            retry_after = parse_retry_after(attempt.retry_after, self._wall_clock())
            error = self._error(method, path, attempt, retry_after)
            delay = backoff_delay(
                attempt_no, base=self.settings.backoff_base, cap=self.settings.backoff_cap, retry_after=retry_after
            )
            if attempt.status == 429:
                self.limiter.pause(delay)
            if not may_repeat(attempt, safe) or attempt_no >= self.settings.max_attempts:
                raise error
            if retry_after is not None and retry_after > self.settings.backoff_cap:
                raise error  # a long wait is the caller's to schedule, not a held connection slot
            log.info(
                "api.retry",
                method=method,
                route=route,
                outcome=attempt.outcome,
                attempt=attempt_no,
                delay=round(delay, 3),
            )
            await asyncio.sleep(delay)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        route: str,
        url: URL,
        auth: dict[str, str],
        params: Mapping[str, str] | None,
        json_body: Any,
    ) -> Attempt:
        """One HTTP attempt through the limiter; reports it to the observer."""
        loop = asyncio.get_running_loop()
        async with self.limiter.slot():
            started = loop.time()
            try:
                async with session.request(method, url, params=params, json=json_body, headers=auth) as resp:
                    raw = await resp.read()
                    attempt = Attempt(
                        status=resp.status,
                        text=raw.decode("utf-8", errors="replace"),
                        reason=resp.reason or "",
                        retry_after=resp.headers.get("Retry-After"),
                    )
            except aiohttp.ClientConnectorError as exc:
                attempt = Attempt(failure=exc, sent=False)
            except (aiohttp.ClientError, TimeoutError) as exc:
                attempt = Attempt(failure=exc)
            seconds = loop.time() - started
        self._observe(method, route, attempt.outcome, seconds)
        log.debug("api.request", method=method, route=route, outcome=attempt.outcome, ms=round(seconds * 1000, 1))
        return attempt

    def _error(self, method: str, path: str, attempt: Attempt, retry_after: float | None) -> ApiError:
        if attempt.failure is not None:
            failure = attempt.failure
            if isinstance(failure, TimeoutError) and not str(failure):
                detail = f"no answer within {self.settings.timeout:g}s"
            else:
                said = redact(str(failure))
                detail = f"{failure.__class__.__name__}: {said}" if said else failure.__class__.__name__
            return NetworkError(method, path, None, detail)
        message = redact(dialects.error_message(attempt.text)) or attempt.reason or "no reason given"
        return error_for(method, path, attempt.status, message, retry_after)

    def _observe(self, method: str, route: str, outcome: str, seconds: float) -> None:
        if self._observer is None:
            return
        try:
            self._observer(method, route, outcome, seconds)
        except Exception as exc:  # a broken metrics hook must not break API calls
            log.warning("api.observer_failed", error=exc)


def _decode(method: str, path: str, attempt: Attempt) -> Any:
    if attempt.status == 204 or not attempt.text.strip():
        return None
    try:
        return json.loads(attempt.text)
    except ValueError:
        shown = redact(" ".join(attempt.text.split()))[:80]
        raise ProtocolError(method, path, attempt.status, f"the answer is not JSON: {shown!r}") from None


def ssl_context(settings: ClientSettings) -> ssl.SSLContext | bool:
    """Verification is always on; a CA bundle adds trusted roots (a private CA)."""
    if settings.ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(settings.ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        expected = f"a readable PEM file of CA certificates ({exc})"
        raise ConfigError("ca_bundle", str(settings.ca_bundle), expected) from None
