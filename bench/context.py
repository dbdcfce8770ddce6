"""What a benchmark run is given: sizes (full or --quick), rounds, the work folder, the shared emulator."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.emulator import EmulatorApi, EmulatorProcess

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class Sizes:
    """Every size a case uses. FULL holds the issue's figures; QUICK scales them down for a smoke run."""

    first_small_files: int
    first_small_dirs: int
    first_small_size: int
    first_big_files: int
    first_big_size: int
    noop_files: int
    noop_dirs: int
    noop_size: int
    latency_drops: int
    settle: float  # seconds: the `source.settle` of the agents in the latency and burst cases
    burst_files: int
    idle_seconds: float
    api_latency_ms: int
    api_rate_seconds: float  # how long the rate-bound API case should run at the configured rate
    api_latency_calls: int


FULL = Sizes(
    first_small_files=20_000,
    first_small_dirs=200,
    first_small_size=4 * KIB,
    first_big_files=10,
    first_big_size=64 * MIB,
    noop_files=100_000,
    noop_dirs=1_000,
    noop_size=1 * KIB,
    latency_drops=200,
    settle=0.1,
    burst_files=10_000,
    idle_seconds=60.0,
    api_latency_ms=20,
    api_rate_seconds=10.0,
    api_latency_calls=800,
)

QUICK = Sizes(
    first_small_files=200,
    first_small_dirs=10,
    first_small_size=4 * KIB,
    first_big_files=2,
    first_big_size=1 * MIB,
    noop_files=1_000,
    noop_dirs=10,
    noop_size=1 * KIB,
    latency_drops=20,
    settle=0.1,
    burst_files=200,
    idle_seconds=5.0,
    api_latency_ms=20,
    api_rate_seconds=2.0,
    api_latency_calls=100,
)


@dataclass(slots=True)
class Context:
    """One harness run. Cases read it and may leave shared set-ups in `shared` (the warm 100,000-file tree)."""

    workdir: Path
    sizes: Sizes
    rounds: int
    quick: bool
    drop_caches: bool  # True when `echo 3 > /proc/sys/vm/drop_caches` works and was not turned off
    profile: bool
    emulator: EmulatorProcess
    api: EmulatorApi
    started: float = field(default_factory=time.monotonic)
    shared: dict[str, Any] = field(default_factory=dict)
    profiles: list[tuple[str, str]] = field(default_factory=list)  # (title, markdown summary)

    def path(self, *parts: str) -> Path:
        """A path under the work folder (parents created)."""
        target = self.workdir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    @property
    def trees(self) -> Path:
        """Where generated source trees are kept between runs."""
        folder = self.workdir / "trees"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def say(self, message: str) -> None:
        """Progress on stderr, so stdout carries only the report."""
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)
