"""kill -9 at each stage of a drop's way into a tagged snapshot, then a restart: nothing lost, nothing torn,
exactly one snapshot for the trigger.

Each case runs a real `domino-sync run` with one failpoint armed (agent/failpoints.py) against an emulator in
this process, lets it die at that point, checks that the mount shows no file with wrong bytes, restarts it
without the failpoint and waits until it has converged. The opt-in run (`-m slow`) mixes stages and random
SIGKILL timing over 100 drops.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from reliability.crash_kit import Rig, compare, files, rig, temps, torn_in_mount, wait_until, write

from agent.api.models import Dialect

SEED, DOMINO = Dialect.SEED, Dialect.DOMINO
BIG = 12 << 20  # above the copier's 8 MiB chunk: copy.mid fires with part of the file in the temp file


@dataclass(frozen=True)
class Stage:
    failpoint: str
    marker_after_kill: bool = False  # the producer writes the marker while the agent is down
    big: bool = False
    leaves_temp: bool = False


STAGES = {
    "copy.mid": Stage("copy.mid", marker_after_kill=True, big=True, leaves_temp=True),
    "copy.before_rename": Stage("copy.before_rename", leaves_temp=True),
    "copy.after_rename": Stage("copy.after_rename"),
    "queue.before_submit": Stage("queue.before_submit"),
    "queue.before_create": Stage("queue.before_create"),
    "queue.after_create": Stage("queue.after_create"),
    "queue.between_tags": Stage("queue.between_tags"),
}
CASES = [
    *(pytest.param(name, SEED, id=f"{name}-seed") for name in STAGES),
    # the snapshot queue recovers differently per dialect (by tag in seed, by creation time in domino)
    *(
        pytest.param(name, DOMINO, id=f"{name}-domino")
        for name in STAGES
        if name.startswith("queue.") and name != "queue.before_submit"
    ),
]


def drop(r: Rig, n: int, rng: random.Random, *, big: bool = False, count: int = 12) -> None:
    for i in range(count):
        write(r.src, f"drop-{n}/part-{i:03}.bin", rng.randbytes(rng.randint(0, 40_000)))
    if big:
        for i in range(2):
            write(r.src, f"drop-{n}/big-{i}.bin", rng.randbytes(BIG + rng.randint(1, 1 << 20)))


@pytest.mark.parametrize(("name", "dialect"), CASES)
def test_kill_at_stage_then_restart(tmp_path: Path, name: str, dialect: Dialect) -> None:
    """Killed at the stage, the mount holds no torn file; after a restart it equals the source with no temp
    file, the marker's tags are on a snapshot holding the drop, and the trigger made exactly one snapshot."""
    stage = STAGES[name]
    rng = random.Random(name)
    with rig(tmp_path, dialect) as r:
        drop(r, 0, rng, big=stage.big)
        if not stage.marker_after_kill:
            write(r.src, "drop-0/_SUCCESS", "trial-0\n")
        r.start(stage.failpoint)
        code = r.wait_killed(60)
        assert code == -9, f"the agent did not die at {stage.failpoint} (exit {code})\n{r.log_tail()}"
        assert f"failpoint {stage.failpoint} hit" in r.log_tail(20_000)
        assert torn_in_mount(r.src, r.mount) == [], "a file in the mount has bytes the source never had"
        left = temps(r.mount)
        if stage.leaves_temp:  # the crash left the state the restart must clean up
            assert left, "no temp file at the kill: the failpoint is not where its name says"
        if stage.big:
            assert any(Path(t).stat().st_size < BIG for t in left if "big-" in t), "no partly written temp file"
        if stage.marker_after_kill:
            write(r.src, "drop-0/_SUCCESS", "trial-0\n")
        r.start()
        r.wait_settled({"trial-0", "latest", "r1"}, 60)
        assert r.stop() == 0, r.log_tail()
        verdict = compare(r.src, r.mount)
        assert verdict.clean, verdict
        assert r.snapshot_holds("trial-0", "drop-0/"), "the tagged snapshot lacks files of its drop"
        tags = r.tags()
        assert tags["trial-0"] == tags["latest"] == tags["r1"]
        assert r.snapshots() == [tags["trial-0"]], f"one trigger, several snapshots: {r.snapshots()}"
        assert r.creates() == 1, f"{r.creates()} snapshot creations for one trigger"


STAGE_NAMES = list(STAGES)


def run_random_trials(tmp_path: Path, trials: int, seed: int) -> dict[str, Any]:
    """Each trial: a drop (sometimes with big files), then the agent started with a random failpoint (random
    hit) or none, killed at the failpoint or by SIGKILL at a random moment. After every kill the mount may
    lack files but must not hold a torn one. At the end one clean run converges; the counts are returned."""
    rng = random.Random(seed)
    tally: dict[str, Any] = {"trials": trials, "torn_seen": 0, "failpoint_kills": 0, "timer_kills": 0, "clean_exits": 0}
    with rig(tmp_path, SEED if seed % 2 else DOMINO) as r:
        for n in range(trials):
            wide = rng.random() < 0.25  # 150-300 files: batches big enough to be copied by forked processes
            drop(
                r,
                n,
                rng,
                big=not wide and rng.random() < 0.1,
                count=rng.randint(150, 300) if wide else rng.randint(1, 30),
            )
            write(r.src, f"drop-{n}/_SUCCESS", f"trial-{n}\n")
            if rng.random() < (0.3 if wide else 0.7):  # armed failpoints keep copies in the agent: mostly timer kills
                point = f"{rng.choice(STAGE_NAMES)}@{rng.randint(1, 3)}"
                r.start(point)
                code = r.wait_killed(rng.uniform(1.5, 6.0))
            else:
                r.start()
                time.sleep(rng.uniform(0.0, 2.5))
                code = None
                r.kill()
            if code == -9:
                tally["failpoint_kills"] += 1
            elif code is None:
                tally["timer_kills"] += 1
            else:
                tally["clean_exits"] += 1
            torn = torn_in_mount(r.src, r.mount)
            tally["torn_seen"] += len(torn)
            assert not torn, f"trial {n}: torn files in the mount: {torn[:5]}"
        r.start()
        wanted = {f"trial-{n}" for n in range(trials)}
        with contextlib.suppress(AssertionError):  # a trigger that never comes is counted below
            r.wait_settled(wanted, 300)
        assert r.stop() == 0, r.log_tail()
        verdict = compare(r.src, r.mount)
        untagged = r.untagged()
        present = r.tags()
        lost = sorted(wanted - set(present), key=lambda t: int(t.split("-")[1]))
        holes = [
            n for n in range(trials) if f"trial-{n}" in present and not r.snapshot_holds(f"trial-{n}", f"drop-{n}/")
        ]
        fired = Counter(re.findall(r"failpoint (\S+) hit", r.log.read_text(errors="replace")))
        tally.update(
            files=len(files(r.src)),
            lost_files=len(verdict.lost),
            torn_files=len(verdict.torn),
            stale_files=len(verdict.stale),
            temp_files=len(verdict.temps),
            snapshots=len(r.snapshots()),
            snapshot_creates=r.creates(),
            duplicate_snapshots=len(untagged),
            lost_triggers=len(lost),
            snapshots_lacking_their_drop=len(holes),
            kills_by_failpoint=dict(sorted(fired.items())),
        )
        print(f"random crash trials (seed {seed}): {tally}")  # the figures the README quotes
        assert verdict.clean, (verdict, tally)
        assert not untagged, f"snapshots no tag points at (duplicates): {untagged}; {tally}"
        assert not lost, f"triggers that never became a snapshot: {lost}; {tally}"
        assert not holes, f"trials whose snapshot lacks files of their drop: {holes[:10]}; {tally}"
        assert r.creates() == len(r.snapshots()), f"a snapshot creation the agent did not account for; {tally}"
    return tally


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("seed", [1, 2])
def test_hundred_random_crash_trials(tmp_path: Path, seed: int) -> None:
    """100 drops, each ended by kill -9 at a random stage or moment: nothing lost, nothing torn, no duplicate
    snapshot (seed 1: seed dialect, seed 2: domino dialect)."""
    trials = int(os.environ.get("DOMINO_SYNC_RELIABILITY_TRIALS", "100"))
    run_random_trials(tmp_path, trials, seed)


def test_unknown_failpoint_never_fires(tmp_path: Path) -> None:
    """An unknown failpoint name never fires: the agent with it armed runs and stops cleanly."""
    with rig(tmp_path) as r:
        write(r.src, "a.txt", "a")
        r.start("no.such.point")
        wait_until(lambda: compare(r.src, r.mount).clean, 30, r.report)
        assert r.stop() == 0, r.log_tail()


@pytest.mark.parametrize(
    "dialect", [pytest.param(SEED, id="seed"), pytest.param(DOMINO, id="domino", marks=pytest.mark.slow)]
)
def test_kill_while_the_server_is_still_creating_the_snapshot(tmp_path: Path, dialect: Dialect) -> None:
    """Killed while the server still works on its create call (the dataset already holds 20,000 files, which
    the emulator copies for seconds), the restarted agent does not create a second snapshot: the create its
    DB says was sent may still complete, so it must not conclude from one early look that nothing was made."""
    with rig(tmp_path, dialect) as r:
        r.mount.mkdir(parents=True)  # the dataset's earlier content, not the agent's: it never touches it
        for i in range(20_000):
            write(r.mount, f"earlier/{i // 500}/{i}.txt", "x")
        write(r.src, "drop-0/part.txt", "new data")
        write(r.src, "drop-0/_SUCCESS", "trial-0\n")
        r.start()
        wait_until(lambda: r.creates() >= 1, 60, r.report)
        r.kill()  # the create call is in the server; its answer will never be read
        assert r.snapshots() == [], "the server finished the snapshot before the kill: the test proves nothing"
        r.start()

        def done() -> bool:
            status = r.status() or {}
            return {"trial-0", "latest", "r1"} <= set(r.tags()) and (status.get("queue") or {}).get("depth") == 0

        wait_until(done, 90, r.report)
        assert r.stop() == 0, r.log_tail()
        assert r.untagged() == [], f"a second snapshot for one trigger: {r.snapshots()}"
        assert len(r.snapshots()) == 1
