"""An in-memory Datasets API for queue tests: counts calls, fails on demand, can lose answers or block."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.api.models import Dataset, Dialect, Grant, Page, Role, Snapshot, SnapshotStatus
from agent.errors import ConflictError, NetworkError, NotFoundError
from agent.queue import TaskQueue

DATASET = "dataset-1"


class FakeApi:
    """Snapshots and tags of one dataset in memory.

    `fail[method]` is a list of exceptions raised by the next calls of that method (one per call).
    `lose_create_answers` makes create_snapshot create the snapshot and then raise NetworkError, as if the
    answer was lost. `strict_tags` makes the server answer 409 for a tag that points at another snapshot
    (instead of moving it). `block_create` (an Event) makes create_snapshot wait after creating.
    `late_creates` (seconds, one per call) makes create_snapshot give up at once with a timeout while the server
    goes on and the snapshot appears that much later, as a slow server does.
    """

    def __init__(self, dialect: Dialect = Dialect.SEED, clock: Callable[[], float] | None = None) -> None:
        self.server_dialect = dialect
        self.clock = clock or (lambda: datetime.now(UTC).timestamp())
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, Any]] = []
        self.fail: dict[str, list[Exception]] = {}
        self.snapshots: dict[str, Snapshot] = {}
        self.tags: dict[str, str] = {}
        self.lose_create_answers = 0
        self.late_creates: list[float] = []
        self._late: list[tuple[float, str | None]] = []
        self.strict_tags = False
        self.block_create: anyio.Event | None = None
        self.create_entered = anyio.Event()
        self.copying_looks = 0
        self._copying: dict[str, int] = {}
        self._next = 1

    def _enter(self, method: str, arg: Any = None) -> None:
        self.calls[method] += 1
        self.log.append((method, arg))
        pending = self.fail.get(method)
        if pending:
            raise pending.pop(0)

    def add_existing(self, created_at: float, tags: tuple[str, ...] = ()) -> Snapshot:
        """A snapshot the server already holds (made by someone, or by us before a crash)."""
        snap_id = f"snapshot-{self._next}"
        self._next += 1
        stamp = datetime.fromtimestamp(created_at, UTC).isoformat().replace("+00:00", "Z")
        self.snapshots[snap_id] = Snapshot(id=snap_id, dataset_id=DATASET, created_at=stamp)
        for tag in tags:
            self.tags[tag] = snap_id
        return self.snapshot(snap_id)

    def snapshot(self, snap_id: str) -> Snapshot:
        base = self.snapshots[snap_id]
        tags = tuple(sorted(tag for tag, target in self.tags.items() if target == snap_id))
        return Snapshot(id=base.id, dataset_id=base.dataset_id, created_at=base.created_at, tags=tags)

    def tags_of(self, snap_id: str) -> set[str]:
        return set(self.snapshot(snap_id).tags)

    # --- the Protocol ---------------------------------------------------------------------------------

    async def dialect(self) -> Dialect:
        return self.server_dialect

    async def list_snapshots(self, dataset_id: str, offset: int = 0, limit: int = 50) -> Page[Snapshot]:
        self._enter("list_snapshots", offset)
        for due, tag in [late for late in self._late if late[0] <= self.clock()]:
            self._late.remove((due, tag))
            self.add_existing(due, (tag,) if tag else ())
        items = [self.snapshot(s) for s in sorted(self.snapshots)][offset : offset + limit]
        return Page(items=tuple(items), offset=offset, limit=limit, total_count=len(self.snapshots))

    async def iter_snapshots(self, dataset_id: str, page_size: int = 50) -> AsyncIterator[Snapshot]:
        offset = 0
        while True:
            page = await self.list_snapshots(dataset_id, offset, page_size)
            for item in page.items:
                yield item
            offset += len(page.items)
            if not page.items or offset >= (page.total_count or 0):
                return

    async def create_snapshot(self, dataset_id: str, tag: str | None = None) -> Snapshot:
        self._enter("create_snapshot", tag)
        if self.late_creates:
            self._late.append((self.clock() + self.late_creates.pop(0), tag))
            raise NetworkError("POST", "/snapshots", None, "timed out")
        if tag is not None and self.strict_tags and tag in self.tags:
            raise ConflictError("POST", "/snapshots", 409, f"tag {tag} exists")
        snap = self.add_existing(self.clock(), (tag,) if tag else ())
        if self.copying_looks:
            self._copying[snap.id] = self.copying_looks
            snap = dataclasses.replace(snap, status=SnapshotStatus.COPYING)
        self.create_entered.set()
        if self.block_create is not None:
            await self.block_create.wait()
        if self.lose_create_answers:
            self.lose_create_answers -= 1
            raise NetworkError("POST", "/snapshots", None, "connection reset")
        return snap

    async def get_snapshot(self, snapshot_id: str, *, with_tags: bool = True) -> Snapshot:
        self._enter("get_snapshot", snapshot_id)
        if snapshot_id not in self.snapshots:
            raise NotFoundError("GET", "/snapshots", 404, "no such snapshot")
        left = self._copying.get(snapshot_id, 0)
        if left:
            self._copying[snapshot_id] = left - 1
            return dataclasses.replace(self.snapshot(snapshot_id), status=SnapshotStatus.COPYING)
        return self.snapshot(snapshot_id)

    async def add_tag(self, dataset_id: str, snapshot_id: str, tag: str) -> None:
        self._enter("add_tag", (snapshot_id, tag))
        if snapshot_id not in self.snapshots:
            raise NotFoundError("POST", "/tags", 404, "no such snapshot")
        if self.strict_tags and self.tags.get(tag, snapshot_id) != snapshot_id:
            raise ConflictError("POST", "/tags", 409, f"tag {tag} points at another snapshot")
        self.tags[tag] = snapshot_id

    async def remove_tag(self, dataset_id: str, tag: str) -> None:
        self._enter("remove_tag", tag)
        if tag not in self.tags:
            raise NotFoundError("DELETE", "/tags", 404, "no such tag")
        del self.tags[tag]

    # --- not used by the queue ------------------------------------------------------------------------

    async def list_datasets(self, project_id: str | None = None, offset: int = 0, limit: int = 50) -> Page[Dataset]:
        raise NotImplementedError

    def iter_datasets(self, project_id: str | None = None, page_size: int = 50) -> AsyncIterator[Dataset]:
        raise NotImplementedError

    async def create_dataset(self, name: str, project_id: str | None, description: str = "") -> Dataset:
        raise NotImplementedError

    async def get_dataset(self, dataset_id: str) -> Dataset:
        raise NotImplementedError

    async def update_dataset(self, dataset_id: str, name: str | None = None, description: str | None = None) -> Dataset:
        raise NotImplementedError

    async def delete_dataset(self, dataset_id: str) -> None:
        raise NotImplementedError

    async def list_grants(self, dataset_id: str) -> list[Grant]:
        raise NotImplementedError

    async def add_grant(self, dataset_id: str, principal_id: str, role: Role, principal_type: str = "user") -> None:
        raise NotImplementedError

    async def remove_grant(self, dataset_id: str, principal_id: str, principal_type: str = "user") -> None:
        raise NotImplementedError


class Events:
    """Collects on_event calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, fields: dict[str, Any]) -> None:
        self.seen.append((name, fields))

    def names(self) -> list[str]:
        return [name for name, _ in self.seen]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.seen if event == name]


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def make_queue(tmp_path: Path, api: FakeApi, events: Events) -> Any:
    """Build TaskQueues on one state DB with fast knobs; every queue is closed at the end."""
    made: list[TaskQueue] = []

    def make(**kw: Any) -> TaskQueue:
        options: dict[str, Any] = {
            "covered": lambda _r: True,
            "backoff_base": 0.01,
            "backoff_cap": 0.05,
            "poll_interval": 0.01,
            "inflight_grace": 0.2,
            "on_event": events,
        }
        options.update(kw)
        q = TaskQueue(tmp_path / "state.db", options.pop("api", api), DATASET, **options)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()
