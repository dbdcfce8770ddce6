"""A local Domino Datasets API server (aiohttp + SQLite) with real dataset folders, keys, grants and faults.

async with running_emulator(EmulatorOptions(data_dir=...)) as emu: ...   # emu.url, emu.default_key
with EmulatorThread(EmulatorOptions(data_dir=...)) as emu: ...           # the same, for sync callers
"""

from __future__ import annotations

from agent.emulator.options import EmulatorOptions
from agent.emulator.server import EmulatorThread, RunningEmulator, running_emulator

__all__ = ["EmulatorOptions", "EmulatorThread", "RunningEmulator", "running_emulator"]
