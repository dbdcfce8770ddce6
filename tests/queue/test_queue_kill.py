"""kill -9 of a process draining the queue, at random points, against a real emulator: after a restart every
job ends with exactly one snapshot carrying all its tags."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.api.client import ClientSettings, DatasetsClient

WORKER = """
import sys
from pathlib import Path

import anyio

from agent.api.client import ClientSettings, DatasetsClient
from agent.logs import configure_logging
from agent.queue import TaskQueue
from agent.rules.engine import SnapshotRequest


async def main(url: str, key: str, dataset_id: str, db: str, tag: str) -> None:
    configure_logging("info", "json")  # to stderr; stdout carries the protocol lines
    settings = ClientSettings(url=url, api_key=key, requests_per_second=100, burst=50)
    async with DatasetsClient(settings) as client:
        queue = TaskQueue(Path(db), client, dataset_id, covered=lambda r: True, poll_interval=0.01, inflight_grace=1.0,
                          backoff_base=0.05, backoff_cap=0.2)
        if tag:
            queue.submit(SnapshotRequest(("r",), (tag, "latest", tag + "-b"), ("",), 0.0))
        print("submitted", flush=True)
        ok = await queue.drain(30)
        queue.close()
        print("drained" if ok else "dead letters", flush=True)


anyio.run(main, *sys.argv[1:])
"""


def start_worker(script: Path, emu: Any, dataset_id: str, db: Path, tag: str, log: Path) -> subprocess.Popen[str]:
    args = [sys.executable, str(script), emu.url, emu.keys["alice"], dataset_id, str(db), tag]
    with log.open("a") as err:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True)


@pytest.mark.parametrize("dialect", ["seed", "domino"])
async def test_kill_9_at_random_points_never_makes_two_snapshots(
    tmp_path: Path, emulator_factory: Any, dialect: str
) -> None:
    """Each trial submits a job, kills the worker at a random moment (often mid-call), restarts it to drain:
    every job ends with one snapshot holding its three tags, and no job makes a second snapshot."""
    emu = await emulator_factory(dialect=dialect, latency_ms=80)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    settings = ClientSettings(url=emu.url, api_key=emu.keys["alice"], requests_per_second=100, burst=50)
    async with DatasetsClient(settings) as client:
        dataset = await client.create_dataset("killed", "project-1")
    rng = random.Random(7)
    trials = 4
    db = tmp_path / "state.db"  # one state DB, as an agent restarting in place keeps it
    log = tmp_path / "worker.log"
    for trial in range(trials):
        tag = f"drop-{trial}"
        proc = start_worker(script, emu, dataset.id, db, tag, log)
        try:
            assert proc.stdout is not None
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
            assert line.strip() == "submitted", log.read_text()
            await anyio.sleep(rng.uniform(0.0, 0.5))
        finally:
            proc.kill()
            proc.communicate()
        again = start_worker(script, emu, dataset.id, db, "", log)
        out, _ = await anyio.to_thread.run_sync(again.communicate)
        assert "drained" in out, log.read_text()[-3000:]
    async with DatasetsClient(settings) as client:
        snapshots = [s async for s in client.iter_snapshots(dataset.id)]
        tags = (await client.get_dataset(dataset.id)).tags
    assert len(snapshots) == trials
    for trial in range(trials):
        assert tags[f"drop-{trial}"] == tags[f"drop-{trial}-b"]
    assert tags["latest"] == tags[f"drop-{trials - 1}"]
