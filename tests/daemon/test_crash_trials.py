"""kill -9 of the agent at random points of drop-and-snapshot cycles: nothing lost, nothing torn, no duplicate.

The emulator runs in this process (it must survive the kills); the agent is a real `domino-sync run`
process, killed with SIGKILL at a random moment after each drop, then started again. Every third drop is
150-300 small files, so that the agent copies it in forked processes (sync/copyfork.py) and kills land there
too.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from e2e_support import DATASET, PROJECT, tree, write

from agent.emulator import EmulatorOptions, EmulatorThread

TRIALS = int(os.environ.get("DOMINO_SYNC_CRASH_TRIALS", "20"))


def _start(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)], env=env, stdout=out, stderr=out
        )


def _wait_for_tags(emu: EmulatorThread, tags: set[str], limit: float) -> set[str]:
    deadline = time.monotonic() + limit
    present: set[str] = set()
    while time.monotonic() < deadline:
        present = {p.name.split("@", 1)[1] for p in emu.mount_root.glob(f"{DATASET}@*") if p.is_symlink()}
        if tags <= present:
            return present
        time.sleep(0.2)
    return present


def run_trials(tmp_path: Path, trials: int, seed: int) -> None:
    rng = random.Random(seed)
    src, state = tmp_path / "src", tmp_path / "state"
    src.mkdir()
    with EmulatorThread(EmulatorOptions(data_dir=tmp_path / "emu", users={"alice": "key-alice"})) as emu:
        config = tmp_path / "agent.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "source": {"path": str(src), "settle": "100ms", "rescan": "2s"},
                    "dataset": {
                        "name": DATASET,
                        "project_id": PROJECT,
                        "create": True,
                        "mount": str(emu.mount_root / DATASET),
                    },
                    "domino": {"url": emu.url},
                    "state_dir": str(state),
                    "server": {"enabled": False},
                    "rules": [{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["{marker}"]}],
                }
            )
        )
        env = {**os.environ, "DOMINO_USER_API_KEY": "key-alice"}
        log = tmp_path / "agent.log"
        for trial in range(trials):
            wide = trial % 3 == 2  # wide enough for batches of FORK_AT files: copied by forked processes
            for i in range(rng.randint(150, 300) if wide else rng.randint(1, 40)):
                write(src, f"drop-{trial}/f{i}.bin", rng.randbytes(rng.randint(0, 4_000 if wide else 50_000)))
            write(src, f"drop-{trial}/_SUCCESS", f"trial-{trial}\n")
            proc = _start(config, env, log)
            time.sleep(rng.uniform(0.0, 2.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        proc = _start(config, env, log)
        try:
            wanted = {f"trial-{n}" for n in range(trials)}
            present = _wait_for_tags(emu, wanted, 120)
            assert wanted <= present, f"missing tags {sorted(wanted - present)}; log tail: {log.read_text()[-3000:]}"
            deadline = time.monotonic() + 30
            while tree(emu.mount_root / DATASET) != tree(src) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        mount = emu.mount_root / DATASET
        assert tree(mount) == tree(src), "the mount differs from the source"
        assert not [p for p in mount.rglob("*") if ".domino-sync-" in p.name], "temp files left in the mount"
        source_files = tree(src)
        for n in range(trials):
            frozen = tree(emu.mount_root / f"{DATASET}@trial-{n}")
            drop = {k: v for k, v in source_files.items() if k.startswith(f"drop-{n}/")}
            assert {k: frozen.get(k) for k in drop} == drop, f"snapshot of trial {n} lacks files of its drop"
        stats = emu.stats()
        creates = stats["by_route"].get("POST /api/datasetrw/v1/datasets/{datasetId}/snapshots", 0)
        snapshots = [p for p in emu.mount_root.glob(f"{DATASET}@snapshot-*") if not p.is_symlink()]
        tagged = {os.readlink(p) for p in emu.mount_root.glob(f"{DATASET}@*") if p.is_symlink()}
        untagged = [p.name for p in snapshots if p.name not in tagged]
        assert not untagged, f"snapshots no tag points at (a duplicate): {untagged}"
        assert len(snapshots) <= trials
        assert creates >= len(snapshots)


def test_kill_9_during_drop_and_snapshot_cycles(tmp_path: Path) -> None:
    """20 kill -9 trials: every file ends in the mount, every marker's tag exists on a snapshot holding its
    drop, and no snapshot is left untagged (which a duplicate creation would cause)."""
    run_trials(tmp_path, TRIALS, seed=20261125)


@pytest.mark.slow
def test_kill_9_hundred_trials(tmp_path: Path) -> None:
    """The opt-in long run: 100 trials with another seed."""
    run_trials(tmp_path, 100, seed=7)
