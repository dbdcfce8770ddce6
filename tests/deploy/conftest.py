"""Shared fixtures of the deployment tests: where the repository is, and how to find an optional tool."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository's root folder."""
    return Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tool() -> Callable[[str, str], str]:
    """A finder for an executable: its path (on PATH or next to this Python), or a skip saying how to get it."""

    def find(name: str, how: str) -> str:
        found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if not found:
            pytest.skip(f"{name} is not installed ({how})")
        return found

    return find
