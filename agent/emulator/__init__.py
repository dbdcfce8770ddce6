"""A local Domino Datasets API server (aiohttp + SQLite) with real dataset folders, keys, grants and faults.

async with running_emulator(EmulatorOptions(data_dir=...)) as emu: ...   # emu.url, emu.default_key
with EmulatorThread(EmulatorOptions(data_dir=...)) as emu: ...           # the same, for sync callers

The server's modules load on first use, so the CLI starts fast when no emulator runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.emulator.options import EmulatorOptions

if TYPE_CHECKING:
    from agent.emulator.server import EmulatorThread, RunningEmulator, running_emulator

__all__ = ["EmulatorOptions", "EmulatorThread", "RunningEmulator", "running_emulator"]


def __getattr__(name: str) -> Any:
    if name in ("EmulatorThread", "RunningEmulator", "running_emulator"):
        from agent.emulator import server

        return getattr(server, name)
    raise AttributeError(f"module 'agent.emulator' has no attribute {name!r}")
