"""Fixtures shared by the whole suite: emulators of the Datasets API over real sockets, with real folders.

- `emulator`: seed dialect, users alice/bob/carol with keys key-alice/key-bob/key-carol, data dir under tmp_path.
- `domino_emulator`: the same in the domino dialect.
- `emulator_factory`: `await emulator_factory(fail_rate=0.5, ...)` starts another one with EmulatorOptions
  overrides (same users and a fresh data dir unless given); every emulator stops at the end of the test.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from aiohttp import ClientResponse
from aioresponses import core as aioresponses_core

from agent.api.models import Dialect
from agent.emulator import EmulatorOptions, RunningEmulator, running_emulator
from agent.sync import workers


class _CompatResponse(ClientResponse):
    """aioresponses 0.7.9 builds responses without the `stream_writer` aiohttp 3.14 requires
    (pnuckowski/aioresponses#289); default it."""

    def __init__(self, *args: Any, stream_writer: Any = None, **kwargs: Any) -> None:
        writer: Any = stream_writer or SimpleNamespace(output_size=0)
        super().__init__(*args, stream_writer=writer, **kwargs)


if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
    aioresponses_core.ClientResponse = _CompatResponse  # type: ignore[misc]


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """A test that ran main() leaves structlog writing to its captured (soon closed) stderr: reset it."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _no_copy_processes_left() -> Iterator[None]:
    """A test that prestarted copy processes (`once`'s, sync/workers.py) ends them: a later test's batches would
    go to processes forked before its patches."""
    yield
    workers.close_all()


USERS = {"alice": "key-alice", "bob": "key-bob", "carol": "key-carol"}
EmulatorFactory = Callable[..., Awaitable[RunningEmulator]]


@pytest.fixture
async def emulator_factory(tmp_path: Path) -> AsyncIterator[EmulatorFactory]:
    numbers = itertools.count()
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> RunningEmulator:
            settings: dict[str, Any] = {"data_dir": tmp_path / f"emulator-{next(numbers)}", "users": USERS}
            settings.update(overrides)
            return await stack.enter_async_context(running_emulator(EmulatorOptions(**settings)))

        yield start


@pytest.fixture
async def emulator(emulator_factory: EmulatorFactory) -> RunningEmulator:
    return await emulator_factory()


@pytest.fixture
async def domino_emulator(emulator_factory: EmulatorFactory) -> RunningEmulator:
    return await emulator_factory(dialect=Dialect.DOMINO)
