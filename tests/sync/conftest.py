"""Shared fixtures for the sync engine tests: folders, an engine factory, tmpfs mounts (helpers: sync_kit.py)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sync.sync_kit import EngineFactory

from agent.config import SourceConfig
from agent.sync.engine import SyncEngine


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "src"
    path.mkdir()
    return path


@pytest.fixture
def mnt(tmp_path: Path) -> Path:
    path = tmp_path / "mnt"
    path.mkdir()
    return path


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def make_engine(src: Path, mnt: Path, state: Path) -> Iterator[EngineFactory]:
    engines: list[SyncEngine] = []

    def factory(
        *, settle: float = 0.0, mount: Path | None = None, source: Path | None = None, **kwargs: Any
    ) -> SyncEngine:
        config = {
            key: kwargs.pop(key)
            for key in ("ignore", "delete", "max_delete", "rescan", "copy_workers")
            if key in kwargs
        }
        cfg = SourceConfig(path=source or src, settle=settle, **config)
        engine = SyncEngine(cfg, mount or mnt, kwargs.pop("state_dir", state), **kwargs)
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        engine.close()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount a small tmpfs (root only); skips the test when mounting is not allowed here."""
    mounted: list[Path] = []

    def mount(size: str = "4m", *, readonly: bool = False) -> Path:
        path = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
        path.mkdir()
        options = f"size={size}" + (",ro" if readonly else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
