"""Fixtures of the agent's end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_support import make_config

from agent.config import Config


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., Config]:
    def build(emu: Any, **overrides: Any) -> Config:
        return make_config(emu, tmp_path, **overrides)

    return build
