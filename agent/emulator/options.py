"""What an emulator is started with: folders, dialect, users and the faults it injects. A frozen value."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.api.models import Dialect
from agent.errors import ConfigError

USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")  # fullmatch
KEY_RE = re.compile(r"[\x21-\x7e]{1,512}")  # printable ASCII without spaces: safe in a header


@dataclass(frozen=True, slots=True)
class EmulatorOptions:
    data_dir: Path
    mount_root: Path | None = None  # default data_dir / "mnt" / "data"
    dialect: Dialect = Dialect.SEED
    users: Mapping[str, str] = field(default_factory=dict, repr=False)  # name -> key; empty: a default "admin"
    fail_rate: float = 0.0  # share of API requests answered 500 or 503 at random
    latency_ms: int = 0
    rate_limit: float | None = None  # requests per second (sliding window) before 429 + Retry-After
    max_active_snapshots: int = 20  # past it the oldest untagged snapshot is marked for deletion; 0: no limit
    snapshot_delay: float = 0.0  # > 0: a create answers `pending` at once and the copy is taken that much later
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    exclusive: bool = True  # its data folder to itself; False: shared with other such emulators (see server.py)

    @property
    def resolved_mount_root(self) -> Path:
        return self.mount_root if self.mount_root is not None else self.data_dir / "mnt" / "data"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "emulator.db"

    def validate(self) -> None:
        """Raise ConfigError for the first value the emulator cannot start with."""
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ConfigError("fail_rate", self.fail_rate, "a share between 0 and 1")
        if self.max_active_snapshots < 0:
            raise ConfigError("max_active_snapshots", self.max_active_snapshots, "a count, 0 (no limit) or more")
        if not self.snapshot_delay >= 0:
            raise ConfigError("snapshot_delay", self.snapshot_delay, "seconds, 0 or more")
        if self.latency_ms < 0:
            raise ConfigError("latency_ms", self.latency_ms, "milliseconds, 0 or more")
        if self.rate_limit is not None and not self.rate_limit > 0:
            raise ConfigError("rate_limit", self.rate_limit, "requests per second, more than 0")
        if not 0 <= self.port <= 65535:
            raise ConfigError("port", self.port, "a TCP port between 0 and 65535")
        if self.dialect not in tuple(Dialect):
            raise ConfigError("dialect", self.dialect, "seed or domino")
        seen: dict[str, str] = {}
        for name, key in self.users.items():
            if not USER_RE.fullmatch(name):
                raise ConfigError("users", name, "user names of letters, digits, '.', '_', '@', '-' (at most 100)")
            if not KEY_RE.fullmatch(key):
                raise ConfigError(f"users.{name}", "***", "a key of printable characters without spaces")
            if key in seen:
                raise ConfigError(f"users.{name}", "***", f"a key not already given to user {seen[key]!r}")
            seen[key] = name
