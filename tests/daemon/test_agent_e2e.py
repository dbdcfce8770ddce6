"""The whole agent end to end: real emulator over a real socket, real folders, each trigger."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from e2e_support import DATASET, api_client, running_agent, tree, wait_for, wait_for_async, write

from agent.api.models import Dialect, Snapshot
from agent.sync import copier, transfer


async def snapshots_of(emu: Any) -> list[Snapshot]:
    async with api_client(emu) as client:
        dataset = await client.find_dataset(DATASET, None)
        return [s async for s in client.iter_snapshots(dataset.id)]


async def tags_of(emu: Any) -> dict[str, str]:
    async with api_client(emu) as client:
        dataset = await client.find_dataset(DATASET, None)
        tags: dict[str, str] = {}
        async for snap in client.iter_snapshots(dataset.id):
            for tag in snap.tags:
                tags[tag] = snap.id
        tags.update(dataset.tags)
        return tags


async def test_marker_drop_becomes_one_tagged_snapshot(emulator: Any, make_cfg: Any) -> None:
    """Files then a _SUCCESS marker give one snapshot holding every file, with the rendered tags."""
    cfg = make_cfg(
        emulator,
        rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["drop-{seq}", "latest", "{marker}"]}],
    )
    async with running_agent(cfg):
        src = cfg.source.path
        for i in range(20):
            write(src, f"batch/part-{i:03}.csv", f"row,{i}\n" * 50)
        write(src, "batch/_SUCCESS", "run-42\nmore\n")
        await wait_for_async(lambda: _has_tags(emulator, {"drop-1", "latest", "run-42"}), 30, "tagged snapshot")
    snaps = await snapshots_of(emulator)
    assert len(snaps) == 1
    frozen = tree(emulator.mount_root / f"{DATASET}@latest")
    assert frozen == tree(src)
    assert len(frozen) == 21


async def test_a_snapshot_never_holds_a_copy_in_progress(emulator: Any, make_cfg: Any, monkeypatch: Any) -> None:
    """A marker that fires while an unrelated big file is still being copied gives a snapshot without the copy's
    temp file: the snapshot waits until the copy is renamed into place, and later copies wait for it."""
    slow = threading.Event()

    def slow_stream(fi: int, fo: int, halt: Any = None, size: int | None = None) -> int:
        if size is not None and size > 1 << 20:
            slow.set()
            time.sleep(1.5)
        return transfer.stream(fi, fo, halt, size)

    monkeypatch.setattr(copier, "stream", slow_stream)
    cfg = make_cfg(emulator, rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["drop-{seq}"]}])
    async with running_agent(cfg):
        src = cfg.source.path
        write(src, "unrelated.bin", b"u" * (2 << 20))
        await wait_for_async(lambda: _is_set(slow), 20, "the big copy to start")
        write(src, "batch/part.csv", "a,b\n")
        write(src, "batch/_SUCCESS", "")
        await wait_for_async(lambda: _has_tags(emulator, {"drop-1"}), 30, "tagged snapshot")
    frozen = emulator.mount_root / f"{DATASET}@drop-1"
    names = [p.name for p in frozen.rglob("*")]
    assert not [name for name in names if "domino-sync" in name], names
    assert (frozen / "batch" / "part.csv").exists()
    assert (frozen / "unrelated.bin").stat().st_size == 2 << 20


async def _is_set(event: threading.Event) -> bool:
    return event.is_set()


async def _has_tags(emu: Any, wanted: set[str]) -> bool:
    return wanted <= set(await tags_of(emu))


async def test_files_and_bytes_triggers(emulator: Any, make_cfg: Any) -> None:
    """A files: 5 rule fires after five synced files; a bytes rule after enough bytes."""
    cfg = make_cfg(
        emulator,
        rules=[
            {"name": "five", "when": {"files": 5}, "tags": ["five-{seq}"]},
            {"name": "big", "when": {"bytes": "64KiB"}, "glob": "*.bin", "tags": ["big-{seq}"]},
        ],
    )
    async with running_agent(cfg):
        src = cfg.source.path
        for i in range(5):
            write(src, f"f{i}.txt", "x")
        await wait_for_async(lambda: _has_tags(emulator, {"five-1"}), 30, "files trigger")
        write(src, "blob.bin", b"\0" * 70_000)
        await wait_for_async(lambda: _has_tags(emulator, {"big-1"}), 30, "bytes trigger")


async def test_quiet_trigger(emulator: Any, make_cfg: Any) -> None:
    """A quiet: 500ms rule fires once the folder has been still for half a second after changes."""
    cfg = make_cfg(emulator, rules=[{"name": "calm", "when": {"quiet": "500ms"}, "tags": ["calm-{seq}"]}])
    async with running_agent(cfg):
        write(cfg.source.path, "a.txt", "a")
        write(cfg.source.path, "b.txt", "b")
        await wait_for_async(lambda: _has_tags(emulator, {"calm-1"}), 30, "quiet trigger")
        await anyio.sleep(1.0)
    assert len(await snapshots_of(emulator)) == 1


async def test_every_trigger_only_after_changes(emulator: Any, make_cfg: Any) -> None:
    """An every: 1s rule snapshots after a change, and not again while nothing changes."""
    cfg = make_cfg(emulator, rules=[{"name": "tick", "when": {"every": "1s"}, "tags": ["tick-{seq}"]}])
    async with running_agent(cfg):
        write(cfg.source.path, "a.txt", "a")
        await wait_for_async(lambda: _has_tags(emulator, {"tick-1"}), 30, "every trigger")
        await anyio.sleep(2.5)
    assert len(await snapshots_of(emulator)) == 1


async def test_cron_trigger_with_always(emulator: Any, make_cfg: Any) -> None:
    """A per-second cron rule with always: true snapshots even with no change."""
    cfg = make_cfg(
        emulator, rules=[{"name": "c", "when": {"cron": "* * * * * *", "always": True}, "tags": ["c-{seq}"]}]
    )
    async with running_agent(cfg):
        await wait_for_async(lambda: _has_tags(emulator, {"c-2"}), 30, "two cron fires")


async def test_manual_snapshot_over_http(emulator: Any, make_cfg: Any) -> None:
    """POST /snapshot on the agent's server creates a snapshot with the given tags."""
    cfg = make_cfg(emulator)
    async with running_agent(cfg) as agent:
        write(cfg.source.path, "a.txt", "a")
        url = f"http://127.0.0.1:{agent.bound_port}"
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "/snapshot", json={"tags": ["by-hand"]}) as resp:
                assert resp.status == 202
            await wait_for_async(lambda: _has_tags(emulator, {"by-hand"}), 30, "manual snapshot")
            async with http.get(url + "/status") as resp:
                status = await resp.json()
            async with http.get(url + "/metrics") as resp:
                metrics = await resp.text()
    assert status["ready"] is True
    assert status["dataset"]["name"] == DATASET
    assert "domino_sync_snapshots_total 1.0" in metrics
    assert tree(emulator.mount_root / f"{DATASET}@by-hand") == {"a.txt": b"a"}


async def test_once_syncs_fires_and_drains(emulator: Any, make_cfg: Any, tmp_path: Path) -> None:
    """`once` copies everything, fires the marker rule, waits for the snapshot and returns 0."""
    from agent.daemon import Agent

    cfg = make_cfg(emulator, rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["once"]}])
    for i in range(10):
        write(cfg.source.path, f"d/{i}.txt", str(i))
    write(cfg.source.path, "d/_SUCCESS", "")
    assembled: list[int] = []
    agent = Agent(cfg, env={}, on_assembled=lambda: assembled.append(agent.engine.status()["copies"]))
    code, summary = await agent.once(drain_timeout=60)
    assert code == 0, json.dumps(summary)
    assert summary["copied"] == 11
    assert assembled == [0]  # once, with the engine built and nothing synced yet (the console freezes the heap)
    assert await _has_tags(emulator, {"once"})
    assert tree(emulator.mount_root / DATASET) == tree(cfg.source.path)


async def test_copies_are_flushed_before_a_snapshot_or_with_each_batch(emulator: Any, make_cfg: Any) -> None:
    """`dataset.durability`: by default `once` leaves its copies to the kernel's write-back (the `unflushed` mark
    stays) until a snapshot flushes them; `batch` makes each batch durable and puts no mark down."""
    from agent.daemon import Agent

    cfg = make_cfg(emulator, rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["flushed"]}])
    mark = cfg.state_dir / "unflushed"
    write(cfg.source.path, "a.txt", "a")
    code, _ = await Agent(cfg, env={}).once(drain_timeout=60)
    assert code == 0 and mark.exists()
    write(cfg.source.path, "_SUCCESS", "")
    code, _ = await Agent(cfg, env={}).once(drain_timeout=60)
    assert code == 0 and await _has_tags(emulator, {"flushed"})
    assert not mark.exists()
    write(cfg.source.path, "b.txt", "b")
    code, summary = await Agent(make_cfg(emulator, dataset__durability="batch"), env={}).once(drain_timeout=60)
    assert code == 0 and summary["copied"] == 1 and not mark.exists()


async def test_five_thousand_files_and_a_marker_make_one_complete_snapshot(emulator: Any, make_cfg: Any) -> None:
    """A 5,000-file drop with one marker costs one snapshot call and one call per extra tag, and the snapshot
    holds all 5,000 files (a full scan after the trigger catches any event inotify dropped)."""
    cfg = make_cfg(
        emulator, rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["big-{seq}", "latest", "x"]}]
    )
    async with running_agent(cfg):
        src = cfg.source.path
        for folder in range(50):
            for i in range(100):
                write(src, f"drop/f{folder:02}/{i:03}.dat", f"{folder}-{i}")
        write(src, "drop/_SUCCESS", "")
        await wait_for_async(lambda: _has_tags(emulator, {"big-1", "latest", "x"}), 120, "tagged snapshot")
    frozen = tree(emulator.mount_root / f"{DATASET}@latest")
    assert len(frozen) == 5001
    assert frozen == tree(src)
    by_route = emulator.stats()["by_route"]
    assert by_route["POST /api/datasetrw/v1/datasets/{datasetId}/snapshots"] == 1
    assert by_route["POST /api/datasetrw/v1/datasets/{datasetId}/tags"] == 2  # the first tag rides on the create


async def test_readiness_and_last_error_follow_the_api_while_the_queue_retries(emulator: Any, make_cfg: Any) -> None:
    """A queue retry (the API failing) makes the agent not ready with the API's error as the reason and the last
    error; the next call that goes through makes it ready again and clears the error."""
    cfg = make_cfg(emulator)
    async with running_agent(cfg) as agent:
        assert agent.readiness() == (True, "ok")
        agent._on_queue_event("queue.retry", {"job_id": 1, "error": "POST /snapshots: HTTP 503: busy"})
        ready, reason = agent.readiness()
        assert not ready
        assert reason == "API: POST /snapshots: HTTP 503: busy"
        assert agent.status()["last_error"] == reason
        agent._on_queue_event("queue.tagged", {"job_id": 1, "tag": "t"})
        assert agent.readiness() == (True, "ok")
        assert agent.status()["last_error"] is None
        agent._on_queue_event("queue.retry", {"job_id": 2, "error": "HTTP 429: slow down", "status": 429})
        assert agent.readiness() == (True, "ok")  # pacing is no outage
        assert agent.status()["last_error"] == "API: HTTP 429: slow down"


async def test_copy_errors_reach_the_errors_metric(emulator: Any, make_cfg: Any) -> None:
    """A copy the mount refuses (a folder stands where the file goes) counts in the errors metric, kind sync."""
    cfg = make_cfg(emulator)
    mount = emulator.mount_root / DATASET
    (mount / "blocked").mkdir(parents=True)
    (mount / "blocked" / "x").write_text("not ours")
    async with running_agent(cfg) as agent:
        write(cfg.source.path, "blocked", "a file")

        async def counted() -> bool:
            return 'domino_sync_errors_total{kind="sync"}' in agent.metrics_text().decode()

        await wait_for_async(counted, 20, "the sync error in the metrics")
        assert agent.status()["sync"]["last_error"] is not None


async def test_first_seen_times_of_files_that_vanished_unsynced_are_forgotten(emulator: Any, make_cfg: Any) -> None:
    """A file seen but deleted before it settled (a producer's scratch file) leaves nothing behind in memory once
    the minute's housekeeping ran; markers handled over an hour ago are forgotten too."""
    cfg = make_cfg(emulator, source__settle="30s")
    async with running_agent(cfg) as agent:
        engine = agent.engine
        assert engine is not None
        scratch = cfg.source.path / "scratch.tmpdata"
        write(cfg.source.path, "scratch.tmpdata", "x")
        await wait_for(lambda: "scratch.tmpdata" in engine.pending(), 10, "seen")
        assert "scratch.tmpdata" in agent._first_seen
        scratch.unlink()
        await wait_for(lambda: "scratch.tmpdata" not in engine.pending(), 10, "gone")
        agent._markers_seen["old/_SUCCESS"] = agent.clock() - 7200
        agent._forget_old(agent.clock() + 120)
        assert "scratch.tmpdata" not in agent._first_seen
        assert "old/_SUCCESS" not in agent._markers_seen


async def test_a_rename_counts_as_a_move_not_a_copy_and_a_delete(emulator: Any, make_cfg: Any) -> None:
    """A file renamed in the source is renamed in the mount and counted in files_moved, not as synced bytes and a
    delete."""
    cfg = make_cfg(emulator)
    mount = emulator.mount_root / DATASET
    async with running_agent(cfg) as agent:
        write(cfg.source.path, "a.bin", b"a" * 100_000)
        await wait_for(lambda: (mount / "a.bin").exists(), 20, "the copy")
        (cfg.source.path / "a.bin").rename(cfg.source.path / "b.bin")
        await wait_for(lambda: (mount / "b.bin").exists() and not (mount / "a.bin").exists(), 20, "the move")
        # the rename in the mount comes before the batch's result is counted: wait for the count, then compare all
        await wait_for(lambda: b"domino_sync_files_moved_total 1.0" in agent.metrics_text(), 20, "the count")
        metrics = agent.metrics_text().decode()
    assert "domino_sync_files_synced_total 1.0" in metrics
    assert "domino_sync_bytes_synced_total 100000.0" in metrics
    assert "domino_sync_files_moved_total 1.0" in metrics
    assert "domino_sync_files_deleted_total 0.0" in metrics


@pytest.mark.parametrize("dialect", ["seed", "domino"])
async def test_copies_wait_while_domino_takes_the_snapshot_in_the_background(
    emulator_factory: Any, make_cfg: Any, dialect: str
) -> None:
    """Against a server that answers `pending` and copies later (as Domino does), a file that settles meanwhile is
    held back until the snapshot is active: the snapshot holds the drop and not the late file."""
    emu = await emulator_factory(snapshot_delay=1.0, dialect=Dialect(dialect))
    cfg = make_cfg(emu, rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["drop"]}])
    async with running_agent(cfg, queue_options={"snapshot_poll": 0.1}):
        src = cfg.source.path
        write(src, "batch/part.csv", "a,b\n")
        write(src, "batch/_SUCCESS", "")

        async def sent() -> bool:
            return (await snapshots_of(emu)) != []

        await wait_for_async(sent, 20, "the create call")
        write(src, "late.txt", "late")
        await anyio.sleep(0.5)  # long past its settle time; the snapshot is still pending
        assert not (emu.mount_root / DATASET / "late.txt").exists()
        await wait_for(lambda: (emu.mount_root / DATASET / "late.txt").exists(), 20, "the held copy")
    frozen = emu.mount_root / f"{DATASET}@drop"
    assert sorted(str(p.relative_to(frozen)) for p in frozen.rglob("*") if p.is_file()) == [
        "batch/_SUCCESS",
        "batch/part.csv",
    ]


async def test_a_lost_state_folder_neither_refires_old_markers_nor_takes_old_tags(
    emulator: Any, make_cfg: Any, tmp_path: Path
) -> None:
    """An agent started with a new state folder over a filled mount (an emptyDir lost with its pod) makes no
    snapshot for the markers already there, and its `{seq}` goes on from the dataset's tags: older snapshots keep
    theirs."""
    rules = [{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["drop-{seq}", "latest"]}]
    cfg = make_cfg(emulator, rules=rules)
    async with running_agent(cfg):
        for n in (1, 2, 3):
            write(cfg.source.path, f"b{n}/part.csv", f"{n}\n")
            write(cfg.source.path, f"b{n}/_SUCCESS", "")
            await wait_for_async(lambda n=n: _has_tags(emulator, {f"drop-{n}"}), 30, f"drop-{n}")
    before = await tags_of(emulator)
    fresh = make_cfg(emulator, rules=rules, state_dir=str(tmp_path / "fresh-state"))
    async with running_agent(fresh) as agent:
        await wait_for(lambda: agent.engine is not None and agent.engine.idle(), 20, "the adoption pass")
        await anyio.sleep(1.0)
        assert len(await snapshots_of(emulator)) == 3
        write(cfg.source.path, "b4/part.csv", "4\n")
        write(cfg.source.path, "b4/_SUCCESS", "")
        await wait_for_async(lambda: _has_tags(emulator, {"drop-4"}), 30, "drop-4")
    after = await tags_of(emulator)
    assert len(await snapshots_of(emulator)) == 4
    assert {tag: after[tag] for tag in ("drop-1", "drop-2", "drop-3")} == {
        tag: before[tag] for tag in ("drop-1", "drop-2", "drop-3")
    }
    assert after["latest"] == after["drop-4"]


async def test_a_rotating_producer_s_snapshot_no_longer_holds_the_folder_it_deleted(
    emulator: Any, make_cfg: Any
) -> None:
    """Mirror mode: a producer deletes yesterday's folder, then writes today's and its marker; today's snapshot
    waits for the delete (a snapshot is of the whole dataset), so it holds today's folder only."""
    cfg = make_cfg(
        emulator,
        source__settle="1s",
        rules=[{"name": "day", "when": {"marker": "_SUCCESS"}, "tags": ["{marker}"]}],
    )
    src = cfg.source.path
    async with running_agent(cfg):
        write(src, "day1/part.csv", "1\n")
        write(src, "day1/_SUCCESS", "d1")
        await wait_for_async(lambda: _has_tags(emulator, {"d1"}), 30, "d1")
        for day in (2, 3):
            shutil.rmtree(src / f"day{day - 1}")
            write(src, f"day{day}/part.csv", f"{day}\n")
            write(src, f"day{day}/_SUCCESS", f"d{day}")
            await wait_for_async(lambda day=day: _has_tags(emulator, {f"d{day}"}), 30, f"d{day}")
            frozen = emulator.mount_root / f"{DATASET}@d{day}"
            assert sorted(p.name for p in frozen.iterdir()) == [f"day{day}"]


async def test_a_snapshot_waits_while_the_rail_refuses_the_deletes_before_it(emulator: Any, make_cfg: Any) -> None:
    """Spark's overwrite mode: the output folder is deleted and written again with other part names, then
    `_SUCCESS`. When max_delete refuses the deletes, the new snapshot would hold both runs' parts: it waits,
    and the status says why; `once` then leaves it queued and exits 1 (no snapshot of mixed runs, ever)."""
    from agent.daemon import Agent

    rules = [{"name": "out", "when": {"marker": "_SUCCESS"}, "tags": ["{marker}"]}]
    cfg = make_cfg(emulator, source__settle="100ms", rules=rules)
    src = cfg.source.path
    async with running_agent(cfg) as agent:
        for i in range(10):
            write(src, f"out/part-{i:05}-uuidA.csv", f"a{i}\n")
        write(src, "out/_SUCCESS", "run1")
        await wait_for_async(lambda: _has_tags(emulator, {"run1"}), 30, "run1")
        shutil.rmtree(src / "out")
        for i in range(5):
            write(src, f"out/part-{i:05}-uuidB.csv", f"b{i}\n")
        write(src, "out/_SUCCESS", "run2")
        await wait_for(lambda: agent.engine is not None and agent.engine.refused_deletes(), 30, "the refused deletes")
        await wait_for(lambda: _waiting_for(agent) is not None, 30, "the run2 request")
        await anyio.sleep(1.5)  # time enough to send it, were it not held
        assert "refused (source.max_delete)" in str(_waiting_for(agent))
        assert not await _has_tags(emulator, {"run2"})
    code, summary = await Agent(cfg, env={}).once(drain_timeout=60)
    assert code == 1 and summary["refused_delete"] is True
    assert [job["waiting_for"] for job in summary["queue"]["jobs"]] == [_waiting_for_text(summary)]
    assert not await _has_tags(emulator, {"run2"})
    assert len(await snapshots_of(emulator)) == 1


def _waiting_for(agent: Any) -> str | None:
    jobs = agent.status()["queue"].get("jobs") or []
    return next((job.get("waiting_for") for job in jobs if job.get("waiting_for")), None)


def _waiting_for_text(summary: dict[str, Any]) -> str:
    why = summary["queue"]["jobs"][0]["waiting_for"]
    assert why.startswith("10 files left the source, but deleting them was refused"), why
    return str(why)


async def test_a_missing_source_makes_the_agent_not_ready_and_a_failing_file_shows_in_status(
    emulator: Any, make_cfg: Any
) -> None:
    """While the source folder is gone (an unmounted share) nothing reaches the mount: /readyz says so; and the
    error of a file that keeps failing is the status's last error too, not only the sync section's."""
    cfg = make_cfg(emulator, source__rescan="200ms")
    src = cfg.source.path
    async with running_agent(cfg) as agent:
        src.rename(src.with_name("src.away"))
        await wait_for(lambda: not agent.readiness()[0], 10, "not ready")
        assert agent.readiness()[1].startswith("source: ")
        src.with_name("src.away").rename(src)
        await wait_for(lambda: agent.readiness()[0], 10, "ready again")
        assert agent.engine is not None
        agent.engine._ledger.failures["x.csv"] = 1  # a file failing now, as the engine records it
        agent.engine._ledger.counters.last_error = "x.csv: source: permission denied"
        assert agent.status()["last_error"] == "x.csv: source: permission denied"


async def test_a_restart_while_the_server_takes_a_snapshot_keeps_new_copies_out_of_it(
    emulator_factory: Any, make_cfg: Any
) -> None:
    """An agent stopped while Domino is still taking its snapshot: the next start waits for that snapshot before
    it copies anything, so a file written meanwhile is not in it."""
    emu = await emulator_factory(snapshot_delay=2.0, dialect=Dialect.DOMINO)
    cfg = make_cfg(emu, rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["drop"]}])
    src = cfg.source.path
    async with running_agent(cfg, queue_options={"snapshot_poll": 0.1}):
        write(src, "b1/part.csv", "1\n")
        write(src, "b1/_SUCCESS", "")

        async def sent() -> bool:
            return (await snapshots_of(emu)) != []

        await wait_for_async(sent, 20, "the create call")
    write(src, "b2/part.csv", "2\n")  # written while the server is still to take the snapshot
    async with running_agent(cfg, queue_options={"snapshot_poll": 0.1}):
        await wait_for(lambda: (emu.mount_root / DATASET / "b2" / "part.csv").exists(), 20, "b2 copied after")
        await wait_for_async(lambda: _has_tags(emu, {"drop"}), 20, "the tag")
    frozen = emu.mount_root / f"{DATASET}@drop"
    assert sorted(str(p.relative_to(frozen)) for p in frozen.rglob("*") if p.is_file()) == [
        "b1/_SUCCESS",
        "b1/part.csv",
    ]


async def test_once_says_which_trigger_min_interval_holds(emulator: Any, make_cfg: Any) -> None:
    """A second drop within the rule's min_interval is held, not lost: `once` lists it under `held` with when it
    may fire, and logs rules.held."""
    from structlog.testing import capture_logs

    from agent.daemon import Agent

    cfg = make_cfg(
        emulator, rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["d-{seq}"], "min_interval": "1h"}]
    )
    write(cfg.source.path, "a/_SUCCESS", "")
    code, summary = await Agent(cfg, env={}).once(drain_timeout=60)
    assert code == 0 and summary["held"] == []
    write(cfg.source.path, "b/_SUCCESS", "")
    with capture_logs() as logs:
        code, summary = await Agent(cfg, env={}).once(drain_timeout=60)
    assert code == 0
    assert [entry["rule"] for entry in summary["held"]] == ["drop"]
    assert summary["held"][0]["fires_after"] > time.time() + 3000
    assert any(entry["event"] == "rules.held" for entry in logs)
    assert len(await snapshots_of(emulator)) == 1


async def test_a_folder_deleted_right_after_its_marker_is_still_in_that_marker_s_snapshot(
    emulator_factory: Any, make_cfg: Any
) -> None:
    """Domino takes a snapshot in the background after the create call answered: a producer that removes its
    folder right after the marker (or Spark's next overwrite) must not empty that marker's snapshot, so the
    deletes wait behind the fence as copies do."""
    emu = await emulator_factory(snapshot_delay=1.0)
    cfg = make_cfg(emu, rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["m-{marker}"]}])
    async with running_agent(cfg, queue_options={"snapshot_poll": 0.1}):
        src = cfg.source.path
        for i in range(10):
            write(src, f"keep/k{i}.csv", str(i))  # so the folder's delete stays under source.max_delete
        for i in range(3):
            write(src, f"fence1/part-{i}.bin", f"p{i}" * 100)
        write(src, "fence1/_SUCCESS", "fence1\n")

        async def sent() -> bool:
            return (await snapshots_of(emu)) != []

        await wait_for_async(sent, 20, "the create call")
        shutil.rmtree(src / "fence1")
        await wait_for_async(lambda: _has_tags(emu, {"m-fence1"}), 20, "the tag")
        await wait_for(lambda: not (emu.mount_root / DATASET / "fence1").exists(), 20, "the delete, after")
    frozen = emu.mount_root / f"{DATASET}@m-fence1"
    assert sorted(str(p.relative_to(frozen)) for p in (frozen / "fence1").rglob("*") if p.is_file()) == [
        "fence1/_SUCCESS",
        "fence1/part-0.bin",
        "fence1/part-1.bin",
        "fence1/part-2.bin",
    ]


async def test_a_mount_filled_again_fires_no_old_marker(emulator: Any, make_cfg: Any) -> None:
    """A mount folder swapped for an empty one (`mv $M $M.old; mkdir $M`) is filled again without a new
    snapshot: no old marker fires again, no tag moves."""
    cfg = make_cfg(emulator, rules=[{"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["m-{marker}", "latest"]}])
    async with running_agent(cfg) as agent:
        src, mount = cfg.source.path, emulator.mount_root / DATASET
        write(src, "b1/p.csv", "data")
        write(src, "b1/_SUCCESS", "batch-1\n")
        await wait_for_async(lambda: _has_tags(emulator, {"m-batch-1"}), 30, "the first snapshot")
        first = await tags_of(emulator)
        mount.rename(mount.with_name(DATASET + ".old"))  # another folder in its place: another inode
        mount.mkdir()
        await wait_for(lambda: tree(mount) == tree(src), 20, "the mount filled again")
        await wait_for(lambda: agent.engine is not None and agent.engine.idle(), 20, "the engine idle")
        await anyio.sleep(1.0)  # a re-fired marker would be queued by now
        assert len(await snapshots_of(emulator)) == 1 and await tags_of(emulator) == first
