"""The transport under DatasetsClient: which calls repeat and which don't, Retry-After, errors, credentials."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import anyio
import pytest
from aioresponses import aioresponses

from agent.api.client import DatasetsClient
from agent.api.models import Role
from agent.api.settings import ClientSettings
from agent.api.transport import Attempt, may_repeat
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

BASE = "http://api.test"
V1 = BASE + "/api/datasetrw/v1"
DS = {"id": "ds-1", "name": "data-1", "projectId": "p-1"}
SNAP = {"id": "s-1", "datasetId": "ds-1", "tags": []}

Calls = Callable[..., list[dict[str, Any]]]
Make = Callable[..., ClientSettings]


def refused() -> aiohttp.ClientConnectorError:
    """The connection was never made: the request was certainly not sent."""
    key = SimpleNamespace(host="api.test", port=80, ssl=True)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))  # type: ignore[arg-type]


# --- the repeat rule (pure) ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "safe", "expected"),
    [
        (Attempt(status=503), True, True),
        (Attempt(status=503), False, False),
        (Attempt(status=429), False, True),
        (Attempt(status=408), True, True),
        (Attempt(status=501), True, False),
        (Attempt(status=404), True, False),
        (Attempt(failure=TimeoutError()), True, True),
        (Attempt(failure=TimeoutError()), False, False),
        (Attempt(failure=refused(), sent=False), False, True),
        (Attempt(failure=aiohttp.ServerDisconnectedError()), False, False),
        (Attempt(failure=aiohttp.ClientSSLError(SimpleNamespace(), OSError("cert")), sent=False), True, False),  # type: ignore[arg-type]
    ],
)
def test_may_repeat(attempt: Attempt, safe: bool, expected: bool) -> None:
    """Safe calls repeat on transient failures; unsafe ones only on 429 or an unsent request; TLS never."""
    assert may_repeat(attempt, safe) is expected


# --- error mapping -------------------------------------------------------------------------------------------

SEED_ERROR = {"error": {"code": "x", "message": "the server's words"}}
DOMINO_ERRORS = {"errors": ["the server's words"], "requestId": "r"}
DOMINO_ERROR = {"error": "the server's words"}


@pytest.mark.parametrize("body", [SEED_ERROR, DOMINO_ERRORS, DOMINO_ERROR], ids=["seed", "errors", "error"])
@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequestError),
        (422, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (429, RateLimitedError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (408, NetworkError),
        (418, ProtocolError),
    ],
)
async def test_status_maps_to_error_class(
    api: aioresponses, settings: Make, status: int, kind: type[ApiError], body: dict[str, Any]
) -> None:
    """Each status becomes its errors.py class whose message names method, path and the server's message."""
    api.get(f"{V1}/datasets/ds-1", status=status, payload=body)
    async with DatasetsClient(settings(max_attempts=1)) as client:
        with pytest.raises(kind) as caught:
            await client.get_dataset("ds-1")
    error = caught.value
    assert type(error) is kind and error.status == status
    assert str(error).startswith("GET /api/datasetrw/v1/datasets/ds-1: HTTP ")
    assert "the server's words" in str(error)


async def test_empty_error_body_uses_reason(api: aioresponses, settings: Make) -> None:
    """With no body the HTTP reason phrase stands in for the server's message."""
    api.get(f"{V1}/datasets/ds-1", status=404, body="", reason="Not Found")
    async with DatasetsClient(settings()) as client:
        with pytest.raises(NotFoundError, match="HTTP 404: Not Found"):
            await client.get_dataset("ds-1")


async def test_connection_failure_is_network_error(api: aioresponses, settings: Make) -> None:
    """A refused connection becomes NetworkError (no status) after the last attempt."""
    api.get(f"{V1}/datasets/ds-1", exception=refused(), repeat=True)
    async with DatasetsClient(settings(max_attempts=2)) as client:
        with pytest.raises(NetworkError) as caught:
            await client.get_dataset("ds-1")
    assert caught.value.status is None and "Connection refused" in str(caught.value)


# --- which calls repeat --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_get_retries_transient_statuses(api: aioresponses, calls: Calls, settings: Make, status: int) -> None:
    """A GET answered 408/429/5xx is sent again and succeeds."""
    api.get(f"{V1}/datasets/ds-1", status=status, payload=SEED_ERROR)
    api.get(f"{V1}/datasets/ds-1", payload=DS)
    async with DatasetsClient(settings()) as client:
        assert (await client.get_dataset("ds-1")).id == "ds-1"
    assert len(calls("GET", "/api/datasetrw/v1/datasets/ds-1")) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 501])
async def test_permanent_statuses_are_not_retried(api: aioresponses, calls: Calls, settings: Make, status: int) -> None:
    """4xx answers (and 501) are final: one request only."""
    api.get(f"{V1}/datasets/ds-1", status=status, payload=SEED_ERROR, repeat=True)
    async with DatasetsClient(settings()) as client:
        with pytest.raises(ApiError):
            await client.get_dataset("ds-1")
    assert len(calls("GET", "/api/datasetrw/v1/datasets/ds-1")) == 1


async def test_get_retries_timeouts_and_dropped_connections(api: aioresponses, calls: Calls, settings: Make) -> None:
    """A GET that timed out or lost its connection is sent again."""
    api.get(f"{V1}/datasets/ds-1", timeout=True)
    api.get(f"{V1}/datasets/ds-1", exception=aiohttp.ServerDisconnectedError())
    api.get(f"{V1}/datasets/ds-1", payload=DS)
    async with DatasetsClient(settings()) as client:
        assert (await client.get_dataset("ds-1")).id == "ds-1"
    assert len(calls("GET", "/api/datasetrw/v1/datasets/ds-1")) == 3


async def test_gives_up_after_max_attempts(api: aioresponses, calls: Calls, settings: Make) -> None:
    """After max_attempts failures the last error is raised."""
    api.get(f"{V1}/datasets/ds-1", status=503, payload=SEED_ERROR, repeat=True)
    async with DatasetsClient(settings(max_attempts=3)) as client:
        with pytest.raises(ServerError):
            await client.get_dataset("ds-1")
    assert len(calls("GET", "/api/datasetrw/v1/datasets/ds-1")) == 3


@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("PATCH", "/datasets/ds-1", lambda c: c.update_dataset("ds-1", description="x")),
        ("DELETE", "/datasets/ds-1", lambda c: c.delete_dataset("ds-1")),
        ("POST", "/datasets/ds-1/tags", lambda c: c.add_tag("ds-1", "s-1", "prod")),
        ("DELETE", "/datasets/ds-1/tags/prod", lambda c: c.remove_tag("ds-1", "prod")),
        ("POST", "/datasets/ds-1/grants", lambda c: c.add_grant("ds-1", "u-1", Role.READ)),
        ("DELETE", "/datasets/ds-1/grants", lambda c: c.remove_grant("ds-1", "u-1")),
    ],
)
async def test_idempotent_writes_are_retried(
    api: aioresponses, calls: Calls, settings: Make, method: str, path: str, call: Any
) -> None:
    """PATCH, DELETE, POST tags and POST grants are safe to repeat: a 502 or a timeout is retried."""
    api.add(f"{V1}{path}", method, status=502, payload=SEED_ERROR)
    api.add(f"{V1}{path}", method, timeout=True)
    api.add(f"{V1}{path}", method, status=200, payload=DS)
    async with DatasetsClient(settings(dialect="seed")) as client:
        await call(client)
    assert len(calls(method, f"/api/datasetrw/v1{path}")) == 3


@pytest.mark.parametrize(
    ("path", "call"),
    [
        ("/datasets", lambda c: c.create_dataset("data-1", "p-1")),
        ("/datasets/ds-1/snapshots", lambda c: c.create_snapshot("ds-1", "t")),
    ],
)
@pytest.mark.parametrize("failure", ["500", "503", "timeout", "disconnect"])
async def test_creating_posts_are_not_repeated_blindly(
    api: aioresponses, calls: Calls, settings: Make, path: str, call: Any, failure: str
) -> None:
    """POST datasets/snapshots after a 5xx, timeout or lost answer is raised at once: a repeat could duplicate."""
    options: dict[str, dict[str, Any]] = {
        "500": {"status": 500, "payload": SEED_ERROR},
        "503": {"status": 503, "payload": SEED_ERROR},
        "timeout": {"timeout": True},
        "disconnect": {"exception": aiohttp.ServerDisconnectedError()},
    }
    kwargs = options[failure]
    api.post(f"{V1}{path}", **kwargs)
    api.post(f"{V1}{path}", status=201, payload=SNAP if "snapshots" in path else DS)
    async with DatasetsClient(settings(dialect="seed")) as client:
        with pytest.raises((ServerError, NetworkError)):
            await call(client)
    assert len(calls("POST", f"/api/datasetrw/v1{path}")) == 1


@pytest.mark.parametrize(
    ("path", "call"),
    [
        ("/datasets", lambda c: c.create_dataset("data-1", "p-1")),
        ("/datasets/ds-1/snapshots", lambda c: c.create_snapshot("ds-1", "t")),
    ],
)
@pytest.mark.parametrize("failure", ["429", "refused"])
async def test_creating_posts_repeat_when_nothing_happened(
    api: aioresponses, calls: Calls, settings: Make, path: str, call: Any, failure: str
) -> None:
    """POST datasets/snapshots is repeated after a 429 or a refused connection: the server did nothing."""
    if failure == "429":
        api.post(f"{V1}{path}", status=429, payload=SEED_ERROR, headers={"Retry-After": "0"})
    else:
        api.post(f"{V1}{path}", exception=refused())
    api.post(f"{V1}{path}", status=201, payload=SNAP if "snapshots" in path else DS)
    async with DatasetsClient(settings(dialect="seed")) as client:
        await call(client)
    assert len(calls("POST", f"/api/datasetrw/v1{path}")) == 2


# --- Retry-After and the shared pause ------------------------------------------------------------------------


async def test_retry_after_seconds_is_honoured(api: aioresponses, settings: Make) -> None:
    """Retry-After in seconds is the least the client waits before the next attempt."""
    api.get(f"{V1}/datasets/ds-1", status=429, payload=SEED_ERROR, headers={"Retry-After": "0.3"})
    api.get(f"{V1}/datasets/ds-1", payload=DS)
    async with DatasetsClient(settings(backoff_cap=5)) as client:
        started = time.monotonic()
        await client.get_dataset("ds-1")
        assert time.monotonic() - started >= 0.29


async def test_retry_after_http_date_is_honoured(api: aioresponses, settings: Make) -> None:
    """Retry-After as an HTTP-date is read against the wall clock and waited for."""
    stamp = 2_000_000_000.0
    when = formatdate(stamp, usegmt=True)
    api.get(f"{V1}/datasets/ds-1", status=503, payload=SEED_ERROR, headers={"Retry-After": when})
    api.get(f"{V1}/datasets/ds-1", payload=DS)
    async with DatasetsClient(settings(backoff_cap=5), wall_clock=lambda: stamp - 0.3) as client:
        started = time.monotonic()
        await client.get_dataset("ds-1")
        assert time.monotonic() - started >= 0.29


async def test_long_retry_after_is_raised_for_the_caller(api: aioresponses, calls: Calls, settings: Make) -> None:
    """A Retry-After beyond backoff_cap is not slept on: the RateLimitedError carries it to the caller."""
    api.get(f"{V1}/datasets/ds-1", status=429, payload=SEED_ERROR, headers={"Retry-After": "120"})
    async with DatasetsClient(settings()) as client:
        with pytest.raises(RateLimitedError) as caught:
            await client.get_dataset("ds-1")
        assert client.limiter.paused_for > 100
    assert caught.value.retry_after == 120
    assert len(calls("GET", "/api/datasetrw/v1/datasets/ds-1")) == 1


async def test_429_pauses_every_caller(api: aioresponses, settings: Make) -> None:
    """After one call gets 429 with Retry-After, a different call waits too before it is sent."""
    api.get(f"{V1}/datasets/ds-1", status=429, payload=SEED_ERROR, headers={"Retry-After": "0.3"})
    api.get(f"{V1}/datasets/ds-1", payload=DS)
    api.get(f"{V1}/datasets/ds-2", payload={**DS, "id": "ds-2"})
    async with DatasetsClient(settings(backoff_cap=5)) as client:
        first = asyncio.create_task(client.get_dataset("ds-1"))
        with anyio.fail_after(5):
            while client.limiter.paused_for == 0:  # noqa: ASYNC110 - polling a property of the code under test
                await asyncio.sleep(0.005)
        started = time.monotonic()
        await client.get_dataset("ds-2")
        waited = time.monotonic() - started
        await first
    assert waited >= 0.2


# --- credentials ---------------------------------------------------------------------------------------------


async def test_proxy_token_is_fetched_again_on_401(
    api: aioresponses, calls: Calls, settings: Make, token_proxy: Any
) -> None:
    """With DOMINO_API_PROXY the bearer token comes from <proxy>/access-token and is renewed once on a 401."""
    api.get(f"{V1}/datasets/ds-1", status=401, payload=SEED_ERROR)
    api.get(f"{V1}/datasets/ds-1", payload=DS)
    api.get(f"{V1}/datasets/ds-2", payload=DS)
    async with DatasetsClient(settings(api_proxy=token_proxy.url)) as client:
        await client.get_dataset("ds-1")
        await client.get_dataset("ds-2")
    sent = calls("GET", "/api/datasetrw/v1/datasets/ds-1") + calls("GET", "/api/datasetrw/v1/datasets/ds-2")
    assert [c["headers"]["Authorization"] for c in sent] == [
        "Bearer tok-proxy-first-0001",
        "Bearer tok-proxy-second-0002",
        "Bearer tok-proxy-second-0002",
    ]
    assert all("X-Domino-Api-Key" not in c["headers"] for c in sent)  # proxy > key
    assert token_proxy.fetches == 2


async def test_second_401_after_refresh_is_raised(
    api: aioresponses, calls: Calls, settings: Make, token_proxy: Any
) -> None:
    """A fresh token that is refused too ends in AuthenticationError, without a loop."""
    api.get(f"{V1}/datasets/ds-1", status=401, payload=SEED_ERROR, repeat=True)
    async with DatasetsClient(settings(api_proxy=token_proxy.url)) as client:
        with pytest.raises(AuthenticationError):
            await client.get_dataset("ds-1")
    assert len(calls("GET", "/api/datasetrw/v1/datasets/ds-1")) == 2 and token_proxy.fetches == 2


async def test_proxy_failure_is_an_authentication_error(api: aioresponses, settings: Make, token_proxy: Any) -> None:
    """A proxy that hands out no token fails the call with AuthenticationError naming the proxy."""
    token_proxy.status = 503
    async with DatasetsClient(settings(api_proxy=token_proxy.url)) as client:
        with pytest.raises(AuthenticationError, match=r"access-token.*proxy is unhappy"):
            await client.get_dataset("ds-1")


async def test_api_key_alone_gets_no_second_try_on_401(api: aioresponses, calls: Calls, settings: Make) -> None:
    """A static key cannot be renewed: a 401 is raised after one request."""
    api.get(f"{V1}/datasets/ds-1", status=401, payload=SEED_ERROR, repeat=True)
    async with DatasetsClient(settings()) as client:
        with pytest.raises(AuthenticationError):
            await client.get_dataset("ds-1")
    assert len(calls("GET", "/api/datasetrw/v1/datasets/ds-1")) == 1


async def test_token_file_is_reread_when_it_changes(
    api: aioresponses, calls: Calls, settings: Make, tmp_path: Path
) -> None:
    """DOMINO_TOKEN_FILE is sent as Bearer, and a rotated file is picked up by the next request."""
    token_file = tmp_path / "token"
    token_file.write_text("tok-file-one-0001\n")
    api.get(f"{V1}/datasets/ds-1", payload=DS, repeat=True)
    async with DatasetsClient(settings(token_file=token_file)) as client:
        await client.get_dataset("ds-1")
        token_file.write_text("tok-file-two-00002\n")
        await client.get_dataset("ds-1")
    assert [c["headers"]["Authorization"] for c in calls("GET", "/api/datasetrw/v1/datasets/ds-1")] == [
        "Bearer tok-file-one-0001",
        "Bearer tok-file-two-00002",
    ]


async def test_missing_token_file_is_a_config_error(settings: Make, tmp_path: Path) -> None:
    """A token file that does not exist is reported as a configuration problem naming the file."""
    async with DatasetsClient(settings(token_file=tmp_path / "absent")) as client:
        with pytest.raises(ConfigError, match="token_file"):
            await client.get_dataset("ds-1")


async def test_bad_ca_bundle_is_a_config_error(settings: Make, tmp_path: Path) -> None:
    """A CA bundle that cannot be read fails at open with a ConfigError; verification is never turned off."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate")
    with pytest.raises(ConfigError, match="ca_bundle"):
        async with DatasetsClient(settings(ca_bundle=bundle)):
            pass
