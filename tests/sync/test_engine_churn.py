"""Churn, then compare: storms of creates, writes, renames and deletes while the daemon runs, then the mount
must equal the source byte for byte, with no temp file, no stale file and no empty folder left behind."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import threading
import time
from pathlib import Path

import anyio
import anyio.to_thread
from sync.sync_kit import EngineFactory, empty_folders, running, temps, tree, wait_for

from agent.sync.engine import SyncEngine

NAMES = ["plain", "with space", "ünï", "文件", "new\nline", "a.b.c"]


class Storm:
    """Random file operations on a source folder (run in a thread, like a producer process)."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.count = 0
        self.folders: list[Path] = []
        self.files: list[Path] = []

    def _look(self) -> None:
        """Refresh the view of the tree now and then (a stale entry only makes an operation fail: churn)."""
        if self.count % 25 == 0 or not self.folders:
            self.folders = [Path(folder) for folder, _, _ in os.walk(self.root)] or [self.root]
            self.files = [Path(folder) / name for folder, _, names in os.walk(self.root) for name in names]

    def _folders(self) -> list[Path]:
        return self.folders

    def _files(self) -> list[Path]:
        return self.files

    def _new_name(self) -> str:
        self.count += 1
        return f"{self.rng.choice(NAMES)}-{self.count}"

    def step(self) -> None:
        with contextlib.suppress(OSError):  # another producer (the burst, a slow writer) raced us: churn too
            self._step()

    def _step(self) -> None:
        rng = self.rng
        self.count += 1
        self._look()
        files = self._files()
        op = rng.choices(
            ["create", "modify", "rename", "delete", "mkdir", "rename_dir", "delete_dir"],
            weights=[30, 20, 12, 12, 8, 5, 3],
        )[0]
        if op in ("modify", "rename", "delete") and not files:
            op = "create"
        if op == "create":
            folder = rng.choice(self._folders())
            (folder / self._new_name()).write_bytes(os.urandom(rng.randint(0, 20_000)))
        elif op == "modify":
            path = rng.choice(files)
            with path.open("ab" if rng.random() < 0.5 else "wb") as handle:
                handle.write(os.urandom(rng.randint(1, 5_000)))
        elif op == "rename":
            path = rng.choice(files)
            path.rename(rng.choice(self._folders()) / self._new_name())
        elif op == "delete":
            rng.choice(files).unlink()
        elif op == "mkdir":
            (rng.choice(self._folders()) / self._new_name()).mkdir()
        else:
            folders = [f for f in self._folders() if f != self.root]
            if not folders:
                return
            folder = rng.choice(folders)
            if op == "rename_dir":
                target = self.root / self._new_name()
                folder.rename(target)
            else:
                shutil.rmtree(folder)


def burst(root: Path, count: int) -> None:
    for i in range(count):
        folder = root / "burst" / f"b{i % 10}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"file-{i}.dat").write_bytes(b"%d\n" % i * 20)
        except OSError:
            continue  # the storm renamed or removed the folder under us


def slow_writer(path: Path, chunks: int, pause: float) -> None:
    with path.open("wb") as handle:
        for i in range(chunks):
            handle.write(b"chunk %d\n" % i * 500)
            handle.flush()
            time.sleep(pause)


async def converged(engine: SyncEngine, src: Path, mnt: Path, within: float) -> None:
    """Wait until the engine stays idle for a while, then until the trees are equal."""
    deadline = time.monotonic() + within
    calm = 0
    while time.monotonic() < deadline:
        calm = calm + 1 if engine.idle() else 0
        if calm >= 6 and tree(mnt) == tree(src):
            return
        await anyio.sleep(0.1)
    src_tree, mnt_tree = tree(src), tree(mnt)
    missing = sorted(set(src_tree) - set(mnt_tree))[:5]
    stale = sorted(set(mnt_tree) - set(src_tree))[:5]
    differ = sorted(p for p in set(src_tree) & set(mnt_tree) if src_tree[p] != mnt_tree[p])[:5]
    raise AssertionError(
        f"not converged: missing={missing} stale={stale} differ={differ} idle={engine.idle()} "
        f"pending={list(engine.pending())[:5]} status={engine.status()}"
    )


async def test_churn_then_compare(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """Random storms, a 5,000-file burst and files written slowly over seconds all end up mirrored exactly."""
    (src / "seed").mkdir()
    storm = Storm(src, seed=20261125)
    engine = make_engine(settle=0.15, max_delete=1.0, rescan=3600)
    async with running(engine):

        def storms(steps: int, pause: float) -> None:
            for _ in range(steps):
                storm.step()
                time.sleep(pause)

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, storms, 400, 0.004)
            tg.start_soon(anyio.to_thread.run_sync, burst, src, 5000)
            for i in range(3):
                tg.start_soon(anyio.to_thread.run_sync, slow_writer, src / f"slow-{i}.log", 8, 0.3)
        await converged(engine, src, mnt, within=60)
        await anyio.to_thread.run_sync(storms, 300, 0.0)
        await converged(engine, src, mnt, within=60)
    assert temps(mnt) == []
    assert empty_folders(mnt) == []
    assert engine.status()["copies"] >= 5000
    assert engine.status()["errors"] == 0


async def test_changes_while_a_long_copy_runs(src: Path, mnt: Path, make_engine: EngineFactory) -> None:
    """Watching and small copies go on while a big file is being copied on another worker."""
    (src / "big.bin").write_bytes(os.urandom(32 << 20))
    started = threading.Event()
    release = threading.Event()

    def slow_big(rel: str) -> None:
        if rel == "big.bin":
            started.set()
            release.wait(10)

    engine = make_engine(settle=0.05, copy_hook=slow_big, copy_workers=2)
    async with running(engine):
        await anyio.to_thread.run_sync(started.wait, 5)
        (src / "small.txt").write_text("quick")
        with anyio.move_on_after(5):
            await wait_for(lambda: (mnt / "small.txt").exists(), 5)
        arrived_while_busy = (mnt / "small.txt").exists() and not (mnt / "big.bin").exists()
        release.set()
        await converged(engine, src, mnt, within=20)
    assert arrived_while_busy
