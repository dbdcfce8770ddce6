"""Burst runs trust a recent bootstrap (`state_dir/dataset.json`): an unchanged tree costs no API call."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from e2e_support import DATASET, api_client, running_agent, tree, write

from agent.bootstrap import KNOWN_FOR, bootstrap_key, load_known, save_known
from agent.config import DatasetConfig
from agent.daemon import Agent


def requests(emu: Any) -> int:
    return int(emu.stats()["requests_total"])


async def test_a_second_once_over_an_unchanged_tree_asks_the_api_nothing(emulator: Any, make_cfg: Any) -> None:
    """The first `once` bootstraps and records the dataset; the second, with nothing to snapshot, makes no
    request at all; a third with a new file and a marker rule snapshots the recorded dataset."""
    cfg = make_cfg(emulator, rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["t-{seq}"]}])
    write(cfg.source.path, "a.txt", "a")
    code, _ = await Agent(cfg, env={}).once(drain_timeout=30)
    assert code == 0
    known = json.loads((cfg.state_dir / "dataset.json").read_text())
    before = requests(emulator)
    code, summary = await Agent(cfg, env={}).once(drain_timeout=30)
    assert code == 0 and summary["copied"] == 0
    assert requests(emulator) == before
    write(cfg.source.path, "b/_SUCCESS", "")
    code, summary = await Agent(cfg, env={}).once(drain_timeout=30)
    assert code == 0 and summary["copied"] == 1
    assert tree(emulator.mount_root / f"{DATASET}@t-1") == tree(cfg.source.path)
    assert requests(emulator) > before
    assert json.loads((cfg.state_dir / "dataset.json").read_text())["id"] == known["id"]


async def test_a_changed_dataset_section_or_an_old_record_bootstraps_again(emulator: Any, make_cfg: Any) -> None:
    """A new description (a different dataset section) is applied at the next `once`; a record older than an
    hour is not trusted; daemon mode never trusts it."""
    cfg = make_cfg(emulator)
    assert (await Agent(cfg, env={}).once(drain_timeout=30))[0] == 0
    changed = make_cfg(emulator, dataset__description="now described")
    before = requests(emulator)
    assert (await Agent(changed, env={}).once(drain_timeout=30))[0] == 0
    assert requests(emulator) > before
    async with api_client(emulator) as client:
        assert (await client.find_dataset(DATASET, None)).description == "now described"
    before = requests(emulator)
    later = time.time() + KNOWN_FOR + 1
    assert (await Agent(changed, env={}, clock=lambda: later).once(drain_timeout=30))[0] == 0
    assert requests(emulator) > before
    before = requests(emulator)
    async with running_agent(changed):
        pass
    assert requests(emulator) > before


def test_the_record_is_only_trusted_for_its_key_and_its_age(tmp_path: Path) -> None:
    """load_known answers None for another key, an old or future record, or a damaged file."""
    from agent.api.models import Dataset

    path = tmp_path / "dataset.json"
    cfg = DatasetConfig(name="d", project_id="p", create=True)
    key = bootstrap_key("http://api", cfg)
    assert key != bootstrap_key("http://other", cfg)
    save_known(path, key, Dataset(id="ds-1", name="d", project_id="p"), 1000.0)
    assert load_known(path, key, 1000.0 + KNOWN_FOR - 1) == Dataset(id="ds-1", name="d", project_id="p")
    assert load_known(path, "other", 1001.0) is None
    assert load_known(path, key, 1000.0 + KNOWN_FOR + 1) is None
    assert load_known(path, key, 999.0) is None
    path.write_text("{not json")
    assert load_known(path, key, 1001.0) is None
