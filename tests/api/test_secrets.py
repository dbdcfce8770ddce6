"""No API key or proxy token ever appears in a log line, an exception message or the CLI's output.

The calls succeed, fail, retry and renew the token; the server even echoes the secrets back in error bodies.
Logs are checked twice: raw event dicts (`capture_logs`, before the scrubber) and rendered JSON lines.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import pytest
import structlog
from aioresponses import aioresponses
from structlog.testing import capture_logs

from agent.api.client import DatasetsClient
from agent.api.models import Role
from agent.api.settings import ClientSettings
from agent.cli.main import main
from agent.errors import AgentError
from agent.logs import configure_logging

KEY = "key-SECRET-7f3a9c21"
TOKENS = ["tok-SECRET-first-91b2e4", "tok-SECRET-second-5d7c08"]
SECRETS = (KEY, *TOKENS)
BASE = "http://api.test"
V1 = BASE + "/api/datasetrw/v1"
V2 = BASE + "/api/datasetrw/v2"
DS = {"id": "ds-1", "name": "data-1", "projectId": "p-1"}


class _TokenHandler(BaseHTTPRequestHandler):
    fetches = 0

    def do_GET(self) -> None:
        token = TOKENS[min(type(self).fetches, len(TOKENS) - 1)]
        type(self).fetches += 1
        body = token.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads only our own output."""


@pytest.fixture
def proxy() -> Iterator[str]:
    """A token proxy in a thread, so that both async tests and the synchronous CLI can reach it."""
    _TokenHandler.fetches = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def mock_everything(api: aioresponses) -> None:
    """Answers that succeed, retry, refuse and echo the secrets back in their error bodies."""
    echo = {"error": {"code": "x", "message": f"bad credentials {KEY} / {TOKENS[0]} / {TOKENS[1]}"}}
    api.get(f"{V1}/datasets/ds-1", status=401, payload=echo)  # renews the proxy token, then succeeds
    api.get(f"{V1}/datasets/ds-1", payload=DS, repeat=True)
    api.get(f"{V1}/datasets/ds-2", status=503, payload=echo)
    api.get(f"{V1}/datasets/ds-2", payload={**DS, "id": "ds-2"})
    api.get(f"{V1}/datasets/ds-3", status=403, payload=echo, repeat=True)
    api.get(f"{V1}/datasets/ds-4", status=200, body=f"not json {KEY} {TOKENS[1]}", repeat=True)
    api.get(f"{V1}/datasets/ds-5", exception=aiohttp.ClientOSError(f"reset by {KEY}"), repeat=True)
    api.post(f"{V1}/datasets/ds-1/grants", status=400, payload=echo, repeat=True)
    api.get(f"{V2}/datasets?offset=0&limit=1", payload={"data": []}, repeat=True)


async def drive(settings: ClientSettings) -> list[str]:
    """Every call mock_everything answers; returns the text of each exception raised."""
    errors: list[str] = []
    async with DatasetsClient(settings) as client:
        for dataset_id in ("ds-1", "ds-2", "ds-3", "ds-4", "ds-5"):
            try:
                await client.get_dataset(dataset_id)
            except AgentError as exc:
                errors.append(f"{exc!s} {exc!r} {exc.args}")
        try:
            await client.add_grant("ds-1", "u-1", Role.READ)
        except AgentError as exc:
            errors.append(f"{exc!s} {exc!r} {exc.args}")
        errors.append(repr(client))
    errors.append(repr(settings))
    return errors


def assert_clean(texts: list[str], secrets: tuple[str, ...] = SECRETS) -> None:
    leaks = [text for text in texts if any(secret in text for secret in secrets)]
    assert leaks == []


@pytest.mark.parametrize("credential", ["api_key", "proxy"])
async def test_no_secret_in_logs_or_errors(api: aioresponses, proxy: str, credential: str) -> None:
    """Key and proxy tokens stay out of raw log events, rendered log lines and exception messages."""
    mock_everything(api)
    extra: dict[str, Any] = {"api_proxy": proxy} if credential == "proxy" else {}
    secrets = SECRETS if credential == "proxy" else (KEY,)  # with a key alone the tokens are not ours to know
    settings = ClientSettings(
        url=BASE, api_key=KEY, max_attempts=2, backoff_base=0.001, backoff_cap=0.01, timeout=5, **extra
    )
    with capture_logs() as events:
        errors = await drive(settings)
    assert len(errors) >= 6 and any("bad credentials" in e for e in errors)  # the echoes arrived, redacted
    assert_clean(errors, secrets)
    assert events and any(e["event"] == "api.retry" for e in events)
    assert_clean([repr(event) for event in events], secrets)

    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    try:
        assert_clean(await drive(settings), secrets)
    finally:
        structlog.reset_defaults()
    lines = stream.getvalue().splitlines()
    assert any(json.loads(line)["event"] == "api.request" for line in lines)
    assert_clean(lines, secrets)
    if credential == "proxy":
        assert _TokenHandler.fetches >= 2  # the 401 made the client fetch a second token


def test_no_secret_in_cli_output(
    api: aioresponses, proxy: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI with a key and a proxy token, succeeding and failing, with debug logs, prints neither."""
    mock_everything(api)
    monkeypatch.setenv("DOMINO_API_HOST", BASE)
    monkeypatch.setenv("DOMINO_USER_API_KEY", KEY)
    monkeypatch.setenv("DOMINO_API_PROXY", proxy)
    runs = [
        ["--log-level", "debug", "datasets", "get", "ds-1", "--dialect", "seed"],
        ["--log-level", "debug", "datasets", "get", "ds-3", "--dialect", "seed"],
        ["--log-level", "debug", "datasets", "get", "ds-4", "--dialect", "seed"],
        ["datasets", "get", "ds-5", "--dialect", "seed", "--timeout", "1", "--max-attempts", "2"],
        ["grants", "add", "u-1", "--dataset", "ds-1", "--role", "read", "--dialect", "seed"],
        ["datasets", "get", "ds-3", "--api-key", KEY, "--dialect", "seed"],
        ["datasets", "get", "--help"],
    ]
    outputs: list[str] = []
    codes: list[int | str | None] = []
    try:
        for argv in runs:
            with pytest.raises(SystemExit) as exit_:
                main(argv)
            codes.append(exit_.value.code)
            captured = capsys.readouterr()
            outputs += [captured.out, captured.err]
    finally:
        structlog.reset_defaults()
    assert codes == [0, 1, 1, 1, 1, 1, 0]
    assert "bad credentials ***" in "".join(outputs)
    assert_clean(outputs)
