"""`check` with the embedded emulator: the mount of a dataset that exists must be there, not "will be created"."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from agent.checks import run_checks
from agent.config import Config
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


async def test_an_embedded_emulator_whose_data_folder_another_uses_is_a_config_error(tmp_path: Path) -> None:
    """Two agents with the embedded emulator on one `domino.emulator.data_dir` (its default is relative: two
    agents started in one folder share it) would hand out the same ids from one database: the second stops at
    start, the key named as the config names it."""
    from agent.daemon import Agent

    config = _config(tmp_path)
    (tmp_path / "emu").mkdir()
    with folder_lock(tmp_path / "emu", "emulator.lock", "data_dir", "held here"), pytest.raises(ConfigError) as caught:
        await Agent(config).once(drain_timeout=10)
    assert caught.value.key == "domino.emulator.data_dir"
    assert f"pid {os.getpid()}" in str(caught.value)
    code, _ = await Agent(config).once(drain_timeout=10)  # the lock went with its holder
    assert code == 0
