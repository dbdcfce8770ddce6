"""Fixtures of the CLI tests: run `domino-sync` in-process and capture its exit code and output."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import pytest
import structlog
from aioresponses import aioresponses

from agent.cli.main import main

CREDENTIAL_VARS = ("DOMINO_API_HOST", "DOMINO_USER_API_KEY", "DOMINO_TOKEN_FILE", "DOMINO_API_PROXY")


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def api() -> Iterator[aioresponses]:
    """A mocked Datasets API for the commands' handling of arguments and output."""
    with aioresponses(passthrough=["http://127.0.0.1"]) as mocked:
        yield mocked


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., Result]]:
    """Run `domino-sync ARGS` in this process with exactly `env` for the DOMINO_* variables."""

    def run(*args: str, env: Mapping[str, str] | None = None) -> Result:
        for name in CREDENTIAL_VARS:
            monkeypatch.delenv(name, raising=False)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:  # pragma: no cover - main always exits
            code = 0
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    yield run
    structlog.reset_defaults()  # main() pointed structlog at this test's captured stderr, which is closing
