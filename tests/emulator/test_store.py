"""The emulator's SQLite store: records in, the same records out, across reopen, with deleted datasets hidden."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.api.models import Role
from agent.emulator.store import DatasetRecord, GrantRecord, SnapshotRecord, Store
from agent.errors import StateError


def dataset(n: int = 1, name: str | None = None, project: str = "p") -> DatasetRecord:
    return DatasetRecord(
        id=f"dataset-{n:012x}",
        name=name or f"ds{n}",
        description="d",
        project_id=project,
        created_at="2024-01-15T10:00:00.000Z",
        creator_id="alice",
    )


def snapshot(n: int, dataset_n: int = 1) -> SnapshotRecord:
    return SnapshotRecord(
        id=f"snapshot-{n:012x}",
        dataset_id=f"dataset-{dataset_n:012x}",
        created_at="2024-01-15T10:00:00.000Z",
        creator_id="alice",
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store(tmp_path / "emulator.db")
    yield opened
    opened.close()


def test_dataset_round_trip_with_grants(store: Store) -> None:
    """An inserted dataset reads back field for field, and its grants and roles are queryable."""
    store.insert_dataset(dataset(), [GrantRecord("user", "alice", Role.ADMIN), GrantRecord("user", "bob", Role.READ)])
    got = store.dataset(dataset().id)
    assert got == dataset()
    assert store.dataset_named("ds1") == dataset()
    assert store.grants(dataset().id) == [
        GrantRecord("user", "alice", Role.ADMIN),
        GrantRecord("user", "bob", Role.READ),
    ]
    assert store.role(dataset().id, "bob") == Role.READ
    assert store.role(dataset().id, "carol") is None
    assert store.roles_of("alice") == {dataset().id: Role.ADMIN}


def test_snapshots_in_creation_order_with_their_tags(store: Store) -> None:
    """Snapshots list oldest first; a tag set at insert and a tag set later both show on the dataset and snapshot."""
    store.insert_dataset(dataset(), [])
    store.insert_snapshot(snapshot(2), "v1")
    store.insert_snapshot(snapshot(1), None)
    store.set_tag(dataset().id, "prod", snapshot(1).id)
    snaps = store.snapshots(dataset().id)
    assert [s.id for s in snaps] == [snapshot(2).id, snapshot(1).id]
    assert [s.tags for s in snaps] == [("v1",), ("prod",)]
    got = store.dataset(dataset().id)
    assert got is not None
    assert got.snapshot_ids == (snapshot(2).id, snapshot(1).id)
    assert got.tags == {"v1": snapshot(2).id, "prod": snapshot(1).id}


def test_setting_an_existing_tag_moves_it_and_removing_reports_presence(store: Store) -> None:
    """A tag names one snapshot per dataset: setting it again moves it; removing twice reports False the second time."""
    store.insert_dataset(dataset(), [])
    store.insert_snapshot(snapshot(1), "v1")
    store.insert_snapshot(snapshot(2), "v1")
    got = store.dataset(dataset().id)
    assert got is not None and got.tags == {"v1": snapshot(2).id}
    assert store.remove_tag(dataset().id, "v1") is True
    assert store.remove_tag(dataset().id, "v1") is False


def test_deleted_datasets_disappear_and_free_their_name(store: Store) -> None:
    """A dataset marked deleted is gone from every read, its snapshots too, and its name can be used again."""
    store.insert_dataset(dataset(1, "same"), [])
    store.insert_snapshot(snapshot(1), None)
    store.mark_deleted(dataset(1).id, "2024-01-16T00:00:00.000Z")
    assert store.dataset(dataset(1).id) is None
    assert store.datasets() == []
    assert store.snapshot(snapshot(1).id) is None
    store.insert_dataset(dataset(2, "same"), [])
    assert [d.id for d in store.datasets()] == [dataset(2).id]


def test_live_names_are_unique(store: Store) -> None:
    """Two live datasets with one name violate the store's constraint (the API checks first and answers 409)."""
    store.insert_dataset(dataset(1, "same"), [])
    with pytest.raises(StateError):
        store.insert_dataset(dataset(2, "same"), [])
    assert len(store.datasets()) == 1


def test_grants_upsert_and_remove(store: Store) -> None:
    """Putting a grant again changes the role; removing an absent grant reports False."""
    store.insert_dataset(dataset(), [GrantRecord("user", "bob", Role.READ)])
    store.put_grant(dataset().id, GrantRecord("user", "bob", Role.WRITE))
    assert store.grants(dataset().id) == [GrantRecord("user", "bob", Role.WRITE)]
    assert store.remove_grant(dataset().id, "user", "bob") is True
    assert store.remove_grant(dataset().id, "user", "bob") is False


def test_state_survives_reopen(tmp_path: Path) -> None:
    """Closing and reopening the database keeps datasets, snapshots, tags, grants and meta values."""
    path = tmp_path / "emulator.db"
    first = Store(path)
    first.insert_dataset(dataset(), [GrantRecord("user", "bob", Role.WRITE)])
    first.insert_snapshot(snapshot(1), "v1")
    first.set_meta("k", "v")
    first.close()
    second = Store(path)
    try:
        got = second.dataset(dataset().id)
        assert got is not None and got.tags == {"v1": snapshot(1).id}
        assert second.grants(dataset().id) == [GrantRecord("user", "bob", Role.WRITE)]
        assert second.meta("k") == "v"
        assert second.meta("absent") is None
    finally:
        second.close()


def test_database_uses_wal(tmp_path: Path) -> None:
    """The database runs in WAL mode, so readers never block the writer."""
    path = tmp_path / "emulator.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unopenable_database_is_a_state_error(tmp_path: Path) -> None:
    """A database path inside a missing folder fails as StateError naming the path."""
    with pytest.raises(StateError, match="emulator state"):
        Store(tmp_path / "missing" / "emulator.db")
