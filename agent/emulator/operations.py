"""What each Datasets API call does: permission checks, then state and folder changes made together.

Locks keep state and folders consistent under concurrency:
- `_names` (one lock) serialises creates, renames and deletes, which claim or free names and top-level folders;
- one lock per dataset serialises what changes its folders: snapshot copies, tag links, renames, deletes.
Order is always names, then dataset. SQLite access and folder work run in threads under one limiter.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from agent.api.models import Role
from agent.emulator.folders import Folders
from agent.emulator.shapes import problem
from agent.emulator.store import DatasetRecord, GrantRecord, SnapshotRecord, Store
from agent.emulator.validation import DatasetChange, DatasetQuery, GrantTarget, NewDataset, NewSnapshot, NewTag
from agent.logs import get_logger

T = TypeVar("T")
DEFAULT_PROJECT_ID = "project-default"
VERBS = {Role.READ: "read", Role.WRITE: "change", Role.ADMIN: "administer"}


def iso_utc(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`: 2024-01-15T10:00:00.000Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(6)}"


MAX_ACTIVE_SNAPSHOTS = 20  # Domino's default per dataset
ACTIVE, COPYING, FAILED, MARKED_FOR_DELETION = "active", "copying", "failed", "markForDeletion"
PENDING = "pending"


class Operations:
    """The emulator's behaviour, independent of HTTP and of the dialect."""

    def __init__(
        self,
        store: Store,
        folders: Folders,
        clock: Callable[[], datetime] | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        max_active_snapshots: int = MAX_ACTIVE_SNAPSHOTS,
        snapshot_delay: float = 0.0,
    ) -> None:
        self._store = store
        self._delay = snapshot_delay
        self._later: ThreadPoolExecutor | None = None  # one thread: delayed copies are taken in creation order
        self._max_active = max_active_snapshots
        self._folders = folders
        self._clock = clock or (lambda: datetime.now(UTC))
        self._limiter = limiter or anyio.CapacityLimiter(8)
        self._names = anyio.Lock()
        self._locks: dict[str, anyio.Lock] = {}

    async def _thread(self, func: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    def _lock(self, dataset_id: str) -> anyio.Lock:
        return self._locks.setdefault(dataset_id, anyio.Lock())

    def _now(self) -> str:
        return iso_utc(self._clock())

    def _sized(self, record: DatasetRecord) -> DatasetRecord:
        return replace(record, size_bytes=self._folders.size(record.name))

    def _fresh(self, dataset_id: str) -> DatasetRecord:
        """The dataset as stored now, with its size measured (blocking)."""
        record = self._store.dataset(dataset_id)
        if record is None:
            raise problem(404, f"no dataset with id {dataset_id!r}")
        return self._sized(record)

    async def _authorize(self, user: str, dataset_id: str, needed: Role) -> DatasetRecord:
        def lookup() -> tuple[DatasetRecord | None, Role | None]:
            return self._store.dataset(dataset_id), self._store.role(dataset_id, user)

        record, role = await self._thread(lookup)
        if record is None:
            raise problem(404, f"no dataset with id {dataset_id!r}")
        if role is None or not role.allows(needed):
            has = f"has {role.value}" if role else "has no grant"
            raise problem(
                403, f"user {user!r} may not {VERBS[needed]} dataset {dataset_id!r}: needs {needed.value}, {has}"
            )
        return record

    # datasets ------------------------------------------------------------------------------------------------

    async def list_datasets(self, user: str, query: DatasetQuery) -> tuple[list[DatasetRecord], int]:
        """The page of datasets `user` may see (at `query.minimum`), and how many there are in all."""

        def work() -> tuple[list[DatasetRecord], int]:
            roles = self._store.roles_of(user)
            visible = [
                ds
                for ds in self._store.datasets()
                if ds.id in roles
                and roles[ds.id].allows(query.minimum)
                and (query.include is None or ds.project_id in query.include)
                and ds.project_id not in query.exclude
            ]
            page = visible[query.offset : query.offset + query.limit]
            return [self._sized(ds) for ds in page], len(visible)

        return await self._thread(work)

    async def create_dataset(self, user: str, request: NewDataset) -> DatasetRecord:
        project_id = request.project_id or DEFAULT_PROJECT_ID
        grants = [GrantRecord("user", user, Role.ADMIN)]
        source = None
        if request.snapshot_id is not None:
            snap = await self._thread(self._store.snapshot, request.snapshot_id)
            if snap is None:
                raise problem(404, f"no snapshot with id {request.snapshot_id!r}")
            origin = await self._authorize(user, snap.dataset_id, Role.READ)
            source = self._folders.snapshot_path(origin.name, snap.id)
            project_id = request.project_id or origin.project_id
        else:
            grants += [g for g in request.grants if (g.principal_type, g.principal_id) != ("user", user)]
        record = DatasetRecord(
            id=new_id("dataset"),
            name=request.name,
            description=request.description,
            project_id=project_id,
            created_at=self._now(),
            creator_id=user,
        )

        def work() -> DatasetRecord:
            self._claim_name(request.name, project_id, adopt_folder=source is None)
            self._folders.create(record.name)
            if source is not None:
                self._folders.seed_from(record.name, source)
            self._store.insert_dataset(record, grants)
            return self._sized(record)

        async with self._names:
            return await self._thread(work)

    def _claim_name(self, name: str, project_id: str, adopt_folder: bool) -> None:
        """Refuse a name a live dataset holds, or (unless adopting) whose folder is taken (blocking)."""
        holder = self._store.dataset_named(name)
        if holder is not None:
            if holder.project_id == project_id:
                raise problem(409, f"a dataset named {name!r} already exists in project {project_id!r}")
            raise problem(
                409,
                f"dataset name {name!r} is used in project {holder.project_id!r}; the emulator keeps every "
                "dataset in one mount root, so names are unique across projects",
            )
        if not adopt_folder and self._folders.is_taken(name):
            raise problem(409, f"{self._folders.dataset_path(name)} already exists; move it away or pick another name")

    async def get_dataset(self, user: str, dataset_id: str) -> DatasetRecord:
        record = await self._authorize(user, dataset_id, Role.READ)
        return await self._thread(self._sized, record)

    async def update_dataset(self, user: str, dataset_id: str, change: DatasetChange) -> DatasetRecord:
        async with self._names, self._lock(dataset_id):
            record = await self._authorize(user, dataset_id, Role.WRITE)
            name = change.name if change.name is not None else record.name
            description = change.description if change.description is not None else record.description

            def work() -> DatasetRecord:
                if name != record.name:
                    self._claim_name(name, record.project_id, adopt_folder=False)
                    taken = [p for p in self._paths(record, name) if p.is_symlink() or p.exists()]
                    if taken:
                        raise problem(409, f"{taken[0]} already exists; move it away or pick another name")
                    self._folders.rename(record.name, name, record.snapshot_ids, record.tags)
                self._store.update_dataset(record.id, name, description)
                return self._fresh(record.id)

            return await self._thread(work)

    def _paths(self, record: DatasetRecord, name: str) -> list[Path]:
        return [self._folders.snapshot_path(name, sid) for sid in record.snapshot_ids] + [
            self._folders.tag_path(name, tag) for tag in record.tags
        ]

    async def delete_dataset(self, user: str, dataset_id: str) -> DatasetRecord:
        """Mark the dataset deleted and move its folders to `<mount-root>/.deleted/<id>/`."""
        async with self._names, self._lock(dataset_id):
            record = await self._authorize(user, dataset_id, Role.ADMIN)

            def work() -> DatasetRecord:
                sized = self._sized(record)
                self._store.mark_deleted(record.id, self._now())
                self._folders.retire(record.name, record.id, record.snapshot_ids, record.tags)
                return sized

            return await self._thread(work)

    # snapshots -----------------------------------------------------------------------------------------------

    async def list_snapshots(
        self, user: str, dataset_id: str, offset: int, limit: int
    ) -> tuple[list[SnapshotRecord], int]:
        await self._authorize(user, dataset_id, Role.READ)
        snaps = await self._thread(self._store.snapshots, dataset_id)
        return snaps[offset : offset + limit], len(snaps)

    async def create_snapshot(self, user: str, dataset_id: str, request: NewSnapshot) -> SnapshotRecord:
        """Copy the folder to a read-only `<name>@<snapshot-id>` and, with a tag, point `<name>@<tag>` at it.

        With `snapshot_delay`, as Domino does, the answer comes at once with the snapshot `pending` and the copy
        is taken that many seconds later in the background (what the folder holds then is what it keeps)."""
        async with self._lock(dataset_id):
            record = await self._authorize(user, dataset_id, Role.WRITE)
            snap = SnapshotRecord(
                id=new_id("snapshot"),
                dataset_id=record.id,
                created_at=self._now(),
                creator_id=user,
                tags=(request.tag,) if request.tag else (),
            )

            def check() -> str | None:
                if not self._folders.dataset_path(record.name).is_dir():
                    raise problem(409, f"dataset folder {self._folders.dataset_path(record.name)} is missing")
                if missing := self._folders.missing(record.name, request.paths):
                    raise problem(400, f"relativeFilePaths: {missing[0]!r} does not exist in dataset {record.name!r}")
                return record.tags.get(request.tag) if request.tag else None

            before = await self._thread(check)
            if self._delay > 0:
                pending = replace(snap, status=PENDING)
                await self._thread(self._store.insert_snapshot, pending, request.tag)
                due = time.monotonic() + self._delay
                if self._later is None:
                    self._later = ThreadPoolExecutor(1, thread_name_prefix="emulator-snapshots")
                self._later.submit(self._take_later, due, record, snap, request, before)
                return pending
            return await self._thread(self._take, record, snap, request, before)

    def _take_later(
        self, due: float, record: DatasetRecord, snap: SnapshotRecord, request: NewSnapshot, before: str | None
    ) -> None:
        """The snapshot thread: wait until `due`, then take the copy (a failure leaves a `failed` record)."""
        time.sleep(max(0.0, due - time.monotonic()))
        try:
            self._take(record, snap, request, before, listed=True)
        except Exception as exc:  # nobody waits on this thread: the record says failed, the log says why
            get_logger("agent.emulator").warning("emulator.snapshot_failed", snapshot_id=snap.id, error=str(exc))

    def close(self) -> None:
        """Stop taking delayed copies (those not begun stay `pending`); wait for the one in progress."""
        if self._later is not None:
            self._later.shutdown(wait=True, cancel_futures=True)

    def _take(
        self,
        record: DatasetRecord,
        snap: SnapshotRecord,
        request: NewSnapshot,
        before: str | None,
        listed: bool = False,
    ) -> SnapshotRecord:
        """Worker thread: list the snapshot as `copying` (with its tag), as Domino lists one it is still making, copy
        the folder, then `active`; a client that lost the answer can find it meanwhile. A failed copy leaves a
        `failed` record and the tag where it was."""
        if listed:  # answered `pending` earlier: its record and tag are there already
            self._store.set_status(snap.id, COPYING)
        else:
            self._store.insert_snapshot(replace(snap, status=COPYING), request.tag)
        try:
            self._folders.snapshot(record.name, snap.id, request.paths)
        except BaseException:
            self._store.set_status(snap.id, FAILED)
            if request.tag and before is not None:
                self._store.set_tag(record.id, request.tag, before)
            elif request.tag:
                self._store.remove_tag(record.id, request.tag)
            raise
        self._store.set_status(snap.id, ACTIVE)
        if request.tag:
            self._folders.point_tag(record.name, request.tag, snap.id)
        self._retire_over_limit(record.id, snap.id)
        return snap

    def _retire_over_limit(self, dataset_id: str, new_id: str) -> None:
        """Past `max_active_snapshots` active snapshots, the oldest untagged ones are marked for deletion, as
        Domino does by default (tagged ones are kept: tag what is worth keeping). Never the one just made: in
        the domino dialect every snapshot is untagged until its first tag call."""
        if not self._max_active:
            return
        active = [s for s in self._store.snapshots(dataset_id) if s.status == ACTIVE]
        untagged = [s for s in active if not s.tags and s.id != new_id]  # oldest first
        for snap in untagged[: max(0, len(active) - self._max_active)]:
            self._store.set_status(snap.id, MARKED_FOR_DELETION)

    async def get_snapshot(self, user: str, snapshot_id: str) -> SnapshotRecord:
        snap = await self._thread(self._store.snapshot, snapshot_id)
        if snap is None:
            raise problem(404, f"no snapshot with id {snapshot_id!r}")
        await self._authorize(user, snap.dataset_id, Role.READ)
        return snap

    # tags ----------------------------------------------------------------------------------------------------

    async def add_tag(self, user: str, dataset_id: str, request: NewTag) -> DatasetRecord:
        """Point the tag at the snapshot (moving it when it exists); answer the dataset as it is now."""
        async with self._lock(dataset_id):
            record = await self._authorize(user, dataset_id, Role.WRITE)

            def work() -> DatasetRecord:
                snap = self._store.snapshot(request.snapshot_id)
                if snap is None:
                    raise problem(404, f"no snapshot with id {request.snapshot_id!r}")
                if snap.dataset_id != record.id:
                    raise problem(
                        400,
                        f"snapshot {snap.id!r} belongs to another dataset, not to {record.id!r}; tag one of its own",
                    )
                self._store.set_tag(record.id, request.tag, snap.id)
                self._folders.point_tag(record.name, request.tag, snap.id)
                return self._fresh(record.id)

            return await self._thread(work)

    async def remove_tag(self, user: str, dataset_id: str, tag: str) -> DatasetRecord:
        async with self._lock(dataset_id):
            record = await self._authorize(user, dataset_id, Role.WRITE)

            def work() -> DatasetRecord:
                if not self._store.remove_tag(record.id, tag):
                    raise problem(404, f"dataset {record.id!r} has no tag {tag!r}")
                self._folders.drop_tag(record.name, tag)
                return self._fresh(record.id)

            return await self._thread(work)

    # grants --------------------------------------------------------------------------------------------------

    async def list_grants(self, user: str, dataset_id: str) -> list[GrantRecord]:
        await self._authorize(user, dataset_id, Role.READ)
        return await self._thread(self._store.grants, dataset_id)

    async def add_grant(self, user: str, dataset_id: str, grant: GrantRecord) -> list[GrantRecord]:
        """Give (or change) a principal's role; answer every grant of the dataset."""
        async with self._lock(dataset_id):
            await self._authorize(user, dataset_id, Role.ADMIN)

            def work() -> list[GrantRecord]:
                if grant.role != Role.ADMIN:
                    self._keep_an_admin(dataset_id, GrantTarget(grant.principal_type, grant.principal_id))
                self._store.put_grant(dataset_id, grant)
                return self._store.grants(dataset_id)

            return await self._thread(work)

    async def remove_grant(self, user: str, dataset_id: str, target: GrantTarget) -> list[GrantRecord]:
        async with self._lock(dataset_id):
            await self._authorize(user, dataset_id, Role.ADMIN)

            def work() -> list[GrantRecord]:
                self._keep_an_admin(dataset_id, target)
                if not self._store.remove_grant(dataset_id, target.principal_type, target.principal_id):
                    raise problem(
                        404, f"dataset {dataset_id!r} has no grant for {target.principal_type} {target.principal_id!r}"
                    )
                return self._store.grants(dataset_id)

            return await self._thread(work)

    def _keep_an_admin(self, dataset_id: str, losing: GrantTarget) -> None:
        """Refuse to take admin from the dataset's last user admin (blocking)."""
        admins = [
            (g.principal_type, g.principal_id)
            for g in self._store.grants(dataset_id)
            if g.role == Role.ADMIN and g.principal_type == "user"
        ]
        if admins == [(losing.principal_type, losing.principal_id)]:
            raise problem(
                409,
                f"{losing.principal_id!r} is the last admin of dataset {dataset_id!r}; make another user admin first",
            )
