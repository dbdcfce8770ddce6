"""Fixtures shared by the whole suite: emulators of the Datasets API over real sockets, with real folders.

- `emulator`: seed dialect, users alice/bob/carol with keys key-alice/key-bob/key-carol, data dir under tmp_path.
- `domino_emulator`: the same in the domino dialect.
- `emulator_factory`: `await emulator_factory(fail_rate=0.5, ...)` starts another one with EmulatorOptions
  overrides (same users and a fresh data dir unless given); every emulator stops at the end of the test.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from agent.api.models import Dialect
from agent.emulator import EmulatorOptions, RunningEmulator, running_emulator

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
