"""Fixtures of the reliability suite: a small tmpfs mounted where a test wants it (root only, else skipped).

Helpers shared by the crash tests live in crash_kit.py (`from reliability.crash_kit import ...`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

Mounter = Callable[[Path, str], Path]


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


def remount(path: Path, options: str) -> None:
    """`mount -o remount,OPTIONS PATH`, failing the test when it does not work."""
    done = sh("mount", "-o", f"remount,{options}", str(path))
    assert done.returncode == 0, f"remount,{options} failed: {done.stderr.strip()}"


@pytest.fixture
def tmpfs_at() -> Iterator[Mounter]:
    """`tmpfs_at(folder, "2m")` mounts a tmpfs of that size on folder (created if needed); unmounted at the end.
    Skips the test with the reason when this machine does not allow mounting."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder))
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'})")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        sh("umount", "-l", str(folder))
