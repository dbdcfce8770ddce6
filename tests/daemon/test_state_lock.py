"""One agent per state folder: a second one stops at start with a config error; a killed holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_support import running_agent

from agent.daemon import Agent
from agent.errors import ConfigError
from agent.statelock import LOCK_NAME, state_lock


async def test_a_second_agent_on_the_same_state_folder_is_refused(emulator: Any, make_cfg: Any) -> None:
    """While one agent runs, another with the same state_dir fails naming state_dir and the holder's pid;
    once the first has stopped the second runs."""
    cfg = make_cfg(emulator)
    async with running_agent(cfg):
        with pytest.raises(ConfigError) as caught:
            await Agent(cfg, env={}).once(drain_timeout=5)
        assert caught.value.key == "state_dir"
        assert f"pid {os.getpid()} holds it" in str(caught.value)
    code, _ = await Agent(cfg, env={}).once(drain_timeout=5)
    assert code == 0


async def test_a_second_daemon_is_refused_for_its_state_folder_not_its_port(emulator: Any, make_cfg: Any) -> None:
    """Two `run`s of one config: the second is refused for the state folder (exit 2 at the CLI), before it tries
    the port the first one holds."""
    cfg = make_cfg(emulator)
    async with running_agent(cfg) as first:
        same_port = Agent(cfg, env={}, listen_port=first.bound_port)
        with pytest.raises(ConfigError) as caught:
            await same_port.run()
        assert caught.value.key == "state_dir"


def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    """A holder killed with SIGKILL leaves no stale lock: the next agent takes it at once."""
    probe = (
        "import sys, time; from pathlib import Path; from agent.statelock import state_lock\n"
        "with state_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", probe, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"pid {holder.pid} holds it"), state_lock(tmp_path):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    deadline = time.monotonic() + 5
    with state_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
        assert time.monotonic() < deadline
