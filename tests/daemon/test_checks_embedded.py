"""`check` with the embedded emulator: the mount of a dataset that exists must be there, not "will be created"."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from e2e_support import running_agent

from agent.checks import run_checks
from agent.config import Config
from agent.dryrun import dry_run
from agent.emulator import EmulatorOptions, running_emulator
from agent.errors import ConfigError
from agent.statelock import folder_lock


def _config(tmp_path: Path) -> Config:
    return Config.model_validate(
        {
            "source": {"path": str(tmp_path / "outbox"), "create": True},
            "dataset": {"name": "demo", "project_id": "project-local", "create": True},
            "domino": {"url": "embedded", "emulator": {"data_dir": str(tmp_path / "emu")}},
            "state_dir": str(tmp_path / "state"),
        }
    )


async def test_a_missing_mount_of_an_existing_dataset_fails_the_check(tmp_path: Path) -> None:
    config = _config(tmp_path)
    before = {name: (ok, detail) for name, ok, detail in await run_checks(config)}
    assert before["dataset"][0] and "will be created" in before["dataset"][1]
    assert before["mount"][0] and "appears when the new dataset is mounted" in before["mount"][1]
    from agent.daemon import Agent

    code, _ = await Agent(config).once(drain_timeout=10)  # creates the dataset and its folder
    assert code == 0
    mounts = [p for p in (tmp_path / "emu").rglob("demo") if p.is_dir()]
    assert mounts, "the emulator made the dataset's folder"
    after = {name: (ok, detail) for name, ok, detail in await run_checks(config)}
    assert after["mount"][0], after["mount"]
    shutil.rmtree(mounts[0])
    gone = {name: (ok, detail) for name, ok, detail in await run_checks(config)}
    assert gone["dataset"][0]
    assert not gone["mount"][0] and "will be created" not in gone["mount"][1], gone["mount"]


async def test_check_and_a_dry_run_work_beside_a_running_agent_on_the_embedded_emulator(tmp_path: Path) -> None:
    """`check` and `once --dry-run` start their own embedded emulator on the running agent's data folder: the
    embedded emulators share it (the lock keeps out only a standalone `domino-sync emulator`)."""
    from agent.daemon import Agent

    config = _config(tmp_path)
    async with running_agent(config):
        results = {name: ok for name, ok, _ in await run_checks(config)}
        assert all(results.values()), results
        summary = await dry_run(Agent(config, env={}))
        assert summary["dataset"]["name"] == "demo"


async def test_an_embedded_emulator_whose_data_folder_a_standalone_emulator_serves_is_a_config_error(
    tmp_path: Path,
) -> None:
    """A standalone emulator keeps its data folder to itself: an agent whose embedded emulator would open the
    same database stops at start, the key named as the config names it; so does a standalone emulator started
    on an embedded one's folder."""
    from agent.daemon import Agent

    config = _config(tmp_path)
    (tmp_path / "emu").mkdir()
    with folder_lock(tmp_path / "emu", "emulator.lock", "data_dir", "held here"), pytest.raises(ConfigError) as caught:
        await Agent(config).once(drain_timeout=10)
    assert caught.value.key == "domino.emulator.data_dir"
    assert f"pid {os.getpid()}" in str(caught.value)
    async with running_agent(config):
        with pytest.raises(ConfigError, match="data_dir"):
            async with running_emulator(EmulatorOptions(data_dir=tmp_path / "emu")):
                pass
    code, _ = await Agent(config).once(drain_timeout=10)  # the locks went with their holders
    assert code == 0
