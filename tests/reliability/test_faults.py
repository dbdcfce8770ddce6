"""The agent under faults of the API and of the mount: every action completes, nothing is lost, nothing torn,
nothing recorded as done that is not, and it resumes by itself once the fault is gone.

In-process agents (`running_agent`) against emulators over real sockets; the mount faults use a real tmpfs
(root only; skipped with the reason elsewhere) or a renamed folder.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import anyio
from e2e_support import DATASET, make_config, running_agent, wait_for, write
from reliability.conftest import Mounter, remount, sh
from reliability.crash_kit import compare, files, temps, torn_in_mount
from structlog.testing import capture_logs

from agent.api.models import Dialect
from agent.daemon import Agent

RULE = {"name": "drop", "when": {"marker": "_SUCCESS"}, "tags": ["{marker}", "latest"]}


def tags_of(emu: Any) -> dict[str, str]:
    """Tag -> snapshot folder, from the emulator's tag links (reading folders costs the server no request)."""
    return {p.name.split("@", 1)[1]: os.readlink(p) for p in emu.mount_root.glob(f"{DATASET}@*") if p.is_symlink()}


def snapshots_of(emu: Any) -> list[str]:
    return sorted(p.name for p in emu.mount_root.glob(f"{DATASET}@*") if p.is_dir() and not p.is_symlink())


def recorded(state_dir: Path) -> dict[str, int]:
    """Path -> size of every file the state DB says is in the mount (read beside the running agent)."""
    conn = sqlite3.connect(state_dir / "state.db", timeout=10)
    try:
        return {os.fsdecode(path): size for path, size in conn.execute("SELECT path, size FROM files")}
    finally:
        conn.close()


def converged(agent: Agent, src: Path, mount: Path, emu: Any, tags: set[str]) -> bool:
    return agent.readiness()[0] and compare(src, mount).clean and tags <= set(tags_of(emu))


async def test_api_faults_rate_limit_and_latency_in_the_domino_dialect(emulator_factory: Any, tmp_path: Path) -> None:
    """Domino dialect, 30% of calls failing with 500/503, a server limit answered with 429 + Retry-After and
    40 ms latency: every drop's tag is on a snapshot holding the drop, no snapshot is made twice, and the
    server never sees more than the agent's rate + burst requests in any second."""
    emu = await emulator_factory(dialect=Dialect.DOMINO, fail_rate=0.3, rate_limit=3, latency_ms=40)
    rate, burst = 5, 2  # above the server's limit: the agent meets 429s and must honour Retry-After
    cfg = make_config(
        emu,
        tmp_path,
        domino={"url": emu.url, "api_key": emu.keys["alice"], "requests_per_second": rate, "burst": burst},
        rules=[RULE],
    )

    def drop(n: int) -> None:
        for i in range(4):
            write(cfg.source.path, f"d{n}/{i}.txt", f"{n}-{i}")
        write(cfg.source.path, f"d{n}/_SUCCESS", f"drop-{n}")

    def faults_met() -> bool:
        stats = emu.stats()
        return bool(stats["injected_failures"] and stats["responses_429"])

    async with running_agent(cfg, queue_options={"backoff_base": 0.2, "backoff_cap": 2.0, "max_attempts": 30}):
        for drops in range(1, 4):  # three drops 0.3 s apart: later ones join a waiting snapshot or queue behind
            drop(drops - 1)
            await anyio.sleep(0.3)
        while True:
            want = {f"drop-{n}" for n in range(drops)}
            await wait_for(lambda: want <= set(tags_of(emu)), 100, "every drop tagged")  # noqa: B023
            if faults_met() or drops >= 12:
                break
            drop(drops)  # few calls so far met no 500/503 or no 429 by chance: one more drop
            drops += 1
    stats = emu.stats()
    assert stats["injected_failures"] > 0 and stats["responses_429"] > 0, stats
    assert stats["max_requests_in_any_1s"] <= rate + burst, stats
    assert compare(cfg.source.path, emu.mount_root / DATASET).clean
    tags = tags_of(emu)
    for n in range(drops):  # drops that fired while a snapshot was waiting may share it (coalescing)
        frozen = files(emu.mount_root / tags[f"drop-{n}"])
        assert all(frozen.get(f"d{n}/{i}.txt") == f"{n}-{i}".encode() for i in range(4)), f"drop {n} not in it"
    assert sorted(snapshots_of(emu)) == sorted({tags[t] for t in want}), "a snapshot no drop asked for"


async def test_full_disk_is_reported_then_resumes(emulator: Any, tmp_path: Path, tmpfs_at: Mounter) -> None:
    """A 2 MiB tmpfs mount and a 3.2 MiB drop: ENOSPC is logged and shown in /status, only complete files are
    in the mount and in the state DB, no snapshot is made of the partial drop; after the tmpfs grows the agent
    finishes the drop and snapshots it with no intervention."""
    mount = tmpfs_at(emulator.mount_root / DATASET, "2m")
    cfg = make_config(emulator, tmp_path, rules=[RULE])
    src = cfg.source.path
    with capture_logs() as events:
        async with running_agent(cfg) as agent:
            for i in range(8):
                write(src, f"big/f{i}.bin", os.urandom(400_000))
            write(src, "big/_SUCCESS", "full-1")

            def enospc_seen() -> bool:
                return any(e["event"] == "sync.copy_failed" and "No space left" in str(e.get("error")) for e in events)

            await wait_for(enospc_seen, 30, "a sync.copy_failed event with ENOSPC")
            await anyio.sleep(1.0)  # a few retries against the full disk
            status = agent.status()
            problem = f"{status['sync']['last_error']} {status['sync']['mount_problem']}"
            assert "No space left" in problem or "ENOSPC" in problem, status["sync"]
            assert torn_in_mount(src, mount) == []
            await wait_for(lambda: temps(mount) == [], 5, "no temp file left by the failed copies")
            held = files(mount)
            assert len([k for k in held if k.endswith(".bin")]) < 8, "the disk was not full after all"
            rows = recorded(cfg.state_dir)
            assert all(rel in held and len(held[rel]) == size for rel, size in rows.items()), (
                "the state DB records a file the mount does not hold complete"
            )
            assert "full-1" not in tags_of(emulator), "a snapshot of a partial drop"
            assert emulator.stats()["by_route"].get("POST /api/datasetrw/v1/datasets/{datasetId}/snapshots") is None

            remount(mount, "size=64m")
            await wait_for(lambda: converged(agent, src, mount, emulator, {"full-1"}), 60, "convergence after growing")
    assert compare(src, mount).clean and temps(mount) == []
    frozen = files(emulator.mount_root / f"{DATASET}@full-1")
    assert {k: v for k, v in frozen.items() if k.startswith("big/")} == files(src)


async def test_read_only_mount_is_reported_then_resumes(emulator: Any, tmp_path: Path, tmpfs_at: Mounter) -> None:
    """A mount remounted read-only: the agent reports not ready with the reason, writes and records nothing,
    loses nothing, and converges after `remount,rw`."""
    mount = tmpfs_at(emulator.mount_root / DATASET, "16m")
    cfg = make_config(emulator, tmp_path, rules=[RULE])
    src = cfg.source.path
    async with running_agent(cfg) as agent:
        write(src, "a/one.txt", "one")
        await wait_for(lambda: compare(src, mount).clean, 20, "the first file synced")
        remount(mount, "ro")
        try:
            write(src, "b/two.txt", "two")
            write(src, "b/_SUCCESS", "ro-1")
            await wait_for(lambda: not agent.readiness()[0], 20, "not ready while read-only")
            reason = agent.readiness()[1]
            assert "not writable" in reason or "read-only" in reason.lower(), reason
            await anyio.sleep(1.0)
            assert files(mount) == {"a/one.txt": b"one"}
            assert set(recorded(cfg.state_dir)) == {"a/one.txt"}
            assert "ro-1" not in tags_of(emulator)
        finally:
            remount(mount, "rw")
        await wait_for(lambda: converged(agent, src, mount, emulator, {"ro-1"}), 30, "convergence after rw")
    assert compare(src, mount).clean


async def test_vanished_mount_is_not_recreated(emulator: Any, tmp_path: Path) -> None:
    """The mount folder renamed away mid-run: not ready while it is gone, nothing is created at its path,
    nothing is deleted from the source; once it is back the agent fills it and snapshots the drop."""
    cfg = make_config(emulator, tmp_path, rules=[RULE])
    src = cfg.source.path
    mount = emulator.mount_root / DATASET
    away = emulator.mount_root / "moved-away"
    async with running_agent(cfg) as agent:
        write(src, "a/one.txt", "one")
        await wait_for(lambda: compare(src, mount).clean, 20, "the first file synced")
        mount.rename(away)
        try:
            write(src, "b/two.txt", "two")
            write(src, "b/_SUCCESS", "gone-1")
            await wait_for(lambda: not agent.readiness()[0], 20, "not ready while the mount is gone")
            assert "missing" in agent.readiness()[1], agent.readiness()
            await anyio.sleep(1.5)
            assert not os.path.lexists(mount), "the agent created something where the mount was"
            assert files(away) == {"a/one.txt": b"one"}
            assert "gone-1" not in tags_of(emulator)
        finally:
            away.rename(mount)
        await wait_for(lambda: converged(agent, src, mount, emulator, {"gone-1"}), 30, "convergence after return")
    assert files(src) == {"a/one.txt": b"one", "b/two.txt": b"two", "b/_SUCCESS": b"gone-1"}


async def test_unmounted_tmpfs_comes_back_empty(emulator: Any, tmp_path: Path, tmpfs_at: Mounter) -> None:
    """The tmpfs is unmounted and its (now empty) folder removed, then a fresh empty tmpfs is mounted: the
    agent is not ready meanwhile, then sees the mount no longer holds what the state DB says and fills it."""
    mount = tmpfs_at(emulator.mount_root / DATASET, "16m")
    cfg = make_config(emulator, tmp_path, rules=[RULE])
    src = cfg.source.path
    async with running_agent(cfg) as agent:
        for i in range(5):
            write(src, f"a/{i}.txt", f"file {i}")
        await wait_for(lambda: compare(src, mount).clean, 20, "the first files synced")
        assert sh("umount", str(mount)).returncode == 0
        mount.rmdir()
        write(src, "b/_SUCCESS", "back-1")
        await wait_for(lambda: not agent.readiness()[0], 20, "not ready while unmounted")
        assert not os.path.lexists(mount), "the agent created something where the mount was"
        tmpfs_at(mount, "16m")
        await wait_for(lambda: converged(agent, src, mount, emulator, {"back-1"}), 30, "the new mount filled")
    assert compare(src, mount).clean


async def test_unmount_leaving_an_empty_folder_is_not_filled(emulator: Any, tmp_path: Path, tmpfs_at: Mounter) -> None:
    """The tmpfs is unmounted and its empty mount point stays: the agent reports not ready and writes nothing
    into the local folder underneath."""
    mount = tmpfs_at(emulator.mount_root / DATASET, "16m")
    cfg = make_config(emulator, tmp_path)
    src = cfg.source.path
    async with running_agent(cfg) as agent:
        write(src, "a/one.txt", "one")
        await wait_for(lambda: compare(src, mount).clean, 20, "the first file synced")
        assert sh("umount", str(mount)).returncode == 0
        write(src, "b/new.txt", "new")
        await wait_for(lambda: not agent.readiness()[0], 10, "not ready once unmounted")
        assert "mount" in agent.readiness()[1], agent.readiness()
        await anyio.sleep(1.0)  # the new file has settled: it would have been copied by now
        assert files(mount) == {}, "the agent wrote into the folder under the unmounted mount"
