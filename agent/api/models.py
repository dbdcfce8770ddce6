"""Typed value objects of the Datasets API, identical whichever dialect the server speaks.

The dialect modules turn wire JSON into these and these into wire JSON; nothing else in the agent looks at
wire shapes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class Dialect(enum.StrEnum):
    """Which shapes the server speaks: the seed's flat objects, or Domino Public API 6.2's envelopes."""

    SEED = "seed"
    DOMINO = "domino"


class Role(enum.StrEnum):
    """A grant's level. Seed dialect spells them read/write/admin, domino DatasetRwReader/Editor/Owner."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    @property
    def domino_name(self) -> str:
        return _DOMINO_ROLES[self]

    @classmethod
    def parse(cls, text: str) -> Role:
        """Accept either dialect's spelling, case-insensitively."""
        low = text.strip().lower()
        for role, name in _DOMINO_ROLES.items():
            if low in (role.value, name.lower()):
                return role
        aliases = {"reader": cls.READ, "editor": cls.WRITE, "owner": cls.ADMIN}
        if low in aliases:
            return aliases[low]
        raise ValueError(f"unknown role {text!r}: expected read, write or admin")

    def allows(self, needed: Role) -> bool:
        order = [Role.READ, Role.WRITE, Role.ADMIN]
        return order.index(self) >= order.index(needed)


_DOMINO_ROLES = {
    Role.READ: "DatasetRwReader",
    Role.WRITE: "DatasetRwEditor",
    Role.ADMIN: "DatasetRwOwner",
}


class SnapshotStatus(enum.StrEnum):
    ACTIVE = "active"
    PENDING = "pending"
    COPYING = "copying"
    FAILED = "failed"
    MARK_FOR_DELETION = "markForDeletion"
    DELETION_IN_PROGRESS = "deletionInProgress"
    DELETED = "deleted"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, text: str | None) -> SnapshotStatus:
        """Compare case-insensitively: PascalCase statuses have been seen on real servers."""
        if not text:
            return cls.ACTIVE
        low = text.lower()
        for status in cls:
            if status.value.lower() == low:
                return status
        return cls.UNKNOWN


@dataclass(frozen=True, slots=True)
class Dataset:
    id: str
    name: str
    description: str = ""
    project_id: str | None = None
    created_at: str | None = None
    size_bytes: int | None = None
    snapshot_ids: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)  # tag name -> snapshot id


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: str
    dataset_id: str
    created_at: str | None = None
    status: SnapshotStatus = SnapshotStatus.ACTIVE
    tags: tuple[str, ...] = ()
    creator_id: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    principal_id: str
    role: Role
    principal_type: str = "user"
    principal_name: str | None = None
    is_organization: bool = False


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    offset: int
    limit: int
    total_count: int | None
