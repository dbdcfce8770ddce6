"""What operations do over real sockets: the grants matrix, folders and tag paths, renames, deletes, and
consistency of state and folders under 50 concurrent snapshot and tag requests."""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from agent.api.models import Dialect
from agent.emulator import RunningEmulator

MATRIX_USERS = {
    "alice": "key-alice",  # creator: owner
    "bob": "key-bob",  # admin grantee
    "carol": "key-carol",  # write grantee
    "dave": "key-dave",  # read grantee
    "erin": "key-erin",  # no grant
}
LEVEL = {"alice": 3, "bob": 3, "carol": 2, "dave": 1, "erin": 0}
Op = Callable[[Any, dict[str, str]], Awaitable[Any]]
OPERATIONS: dict[str, tuple[int, Op]] = {
    "get dataset": (1, lambda api, ids: api.get(f"/datasets/{ids['ds']}")),
    "list snapshots": (1, lambda api, ids: api.get(f"/datasets/{ids['ds']}/snapshots")),
    "get snapshot": (1, lambda api, ids: api.get(f"/snapshots/{ids['snap']}")),
    "list grants": (1, lambda api, ids: api.get(f"/datasets/{ids['ds']}/grants")),
    "update": (2, lambda api, ids: api.patch(f"/datasets/{ids['ds']}", {"description": "changed"})),
    "create snapshot": (2, lambda api, ids: api.post(f"/datasets/{ids['ds']}/snapshots", {"tag": "new"})),
    "add tag": (
        2,
        lambda api, ids: api.post(f"/datasets/{ids['ds']}/tags", {"snapshotId": ids["snap"], "tagName": "t2"}),
    ),
    "remove tag": (2, lambda api, ids: api.delete(f"/datasets/{ids['ds']}/tags/v1")),
    "add grant": (
        3,
        lambda api, ids: api.post(f"/datasets/{ids['ds']}/grants", {"principalId": "x", "permission": "read"}),
    ),
    "remove grant": (3, lambda api, ids: api.delete(f"/datasets/{ids['ds']}/grants", {"principalId": "dave"})),
    "delete": (3, lambda api, ids: api.delete(f"/datasets/{ids['ds']}")),
}


async def fresh_dataset(owner: Any, name: str) -> dict[str, str]:
    """A dataset owned by alice with a v1-tagged snapshot, bob admin, carol write, dave read."""
    ds = (await owner.post("/datasets", {"name": name, "projectId": "p"})).body["id"]
    snap = (await owner.post(f"/datasets/{ds}/snapshots", {"tag": "v1"})).body["id"]
    for user, permission in (("bob", "admin"), ("carol", "write"), ("dave", "read")):
        reply = await owner.post(f"/datasets/{ds}/grants", {"principalId": user, "permission": permission})
        assert reply.status == 201
    return {"ds": ds, "snap": snap}


@pytest.mark.parametrize("user", list(MATRIX_USERS))
async def test_grants_matrix(emulator_factory: Any, connect: Any, errors: Any, user: str) -> None:
    """Each principal may do exactly what its role allows (read < write < admin; the creator is admin); every
    other operation is 403 and changes nothing."""
    emu = await emulator_factory(users=MATRIX_USERS)
    owner, caller = connect(emu, "alice"), connect(emu, user)
    for number, (operation, (needed, call)) in enumerate(OPERATIONS.items()):
        ids = await fresh_dataset(owner, f"m{number}")
        before = (await owner.get(f"/datasets/{ids['ds']}")).body
        reply = await call(caller, ids)
        if LEVEL[user] >= needed:
            assert reply.status in (200, 201, 204), (user, operation, reply.status, reply.body)
        else:
            message = errors.seed(reply, 403, "forbidden")
            assert user in message, (user, operation, message)
            assert (await owner.get(f"/datasets/{ids['ds']}")).body == before
    listed = await caller.get("/api/datasetrw/v2/datasets")
    visible = len(OPERATIONS) - (LEVEL[user] >= 3)  # the deleted one is gone
    assert listed.body["totalCount"] == (visible if LEVEL[user] else 0)


async def test_domino_roles_grant_the_same_rights(domino_emulator: RunningEmulator, connect: Any, errors: Any) -> None:
    """DatasetRwReader reads but cannot snapshot; DatasetRwEditor snapshots but cannot grant (403 envelopes)."""
    alice, bob, carol = (connect(domino_emulator, u) for u in ("alice", "bob", "carol"))
    ds = (await alice.post("/datasets", {"name": "roles", "projectId": "p"})).body["dataset"]["id"]
    await alice.post(f"/datasets/{ds}/grants", {"targetId": "bob", "targetRole": "DatasetRwReader"})
    await alice.post(f"/datasets/{ds}/grants", {"targetId": "carol", "targetRole": "DatasetRwEditor"})
    assert (await bob.get(f"/datasets/{ds}")).status == 200
    errors.domino(await bob.post(f"/datasets/{ds}/snapshots", {"relativeFilePaths": [""]}), 403)
    assert (await carol.post(f"/datasets/{ds}/snapshots", {"relativeFilePaths": [""]})).status == 200
    errors.domino(await carol.post(f"/datasets/{ds}/grants", {"targetId": "bob", "targetRole": "DatasetRwOwner"}), 403)


async def test_last_admin_cannot_be_removed(emulator: RunningEmulator, connect: Any, errors: Any) -> None:
    """Removing or demoting the only admin is refused with 409; with a second admin it is allowed."""
    alice = connect(emulator)
    ds = (await alice.post("/datasets", {"name": "owned"})).body["id"]
    errors.seed(await alice.delete(f"/datasets/{ds}/grants", {"principalId": "alice"}), 409, "conflict")
    demote = await alice.post(f"/datasets/{ds}/grants", {"principalId": "alice", "permission": "read"})
    errors.seed(demote, 409, "conflict")
    await alice.post(f"/datasets/{ds}/grants", {"principalId": "bob", "permission": "admin"})
    assert (await alice.delete(f"/datasets/{ds}/grants", {"principalId": "alice"})).status == 204
    errors.seed(await alice.get(f"/datasets/{ds}"), 403)


async def test_folders_and_tag_paths(emulator: RunningEmulator, connect: Any) -> None:
    """Snapshots appear as read-only `<name>@<id>` copies frozen at snapshot time; `<name>@<tag>` resolves to the
    tagged snapshot, follows it when the tag moves, and disappears when the tag is removed."""
    api, root = connect(emulator), emulator.mount_root
    ds = (await api.post("/datasets", {"name": "my-dataset"})).body["id"]
    live = root / "my-dataset"
    assert live.is_dir()
    (live / "data.parquet").write_bytes(b"first")
    first = (await api.post(f"/datasets/{ds}/snapshots", {"tag": "v1.0"})).body["id"]
    (live / "data.parquet").write_bytes(b"second")
    second = (await api.post(f"/datasets/{ds}/snapshots", {})).body["id"]

    assert (root / f"my-dataset@{first}" / "data.parquet").read_bytes() == b"first"
    assert (root / "my-dataset@v1.0" / "data.parquet").read_bytes() == b"first"
    assert (root / f"my-dataset@{second}" / "data.parquet").read_bytes() == b"second"
    assert stat.S_IMODE((root / f"my-dataset@{first}" / "data.parquet").stat().st_mode) == 0o444
    assert stat.S_IMODE((root / f"my-dataset@{first}").stat().st_mode) == 0o555

    await api.post(f"/datasets/{ds}/tags", {"snapshotId": second, "tagName": "v1.0"})
    assert os.readlink(root / "my-dataset@v1.0") == f"my-dataset@{second}"
    assert (root / "my-dataset@v1.0" / "data.parquet").read_bytes() == b"second"
    await api.delete(f"/datasets/{ds}/tags/v1.0")
    assert not os.path.lexists(root / "my-dataset@v1.0")
    assert {p.name for p in root.iterdir()} == {"my-dataset", f"my-dataset@{first}", f"my-dataset@{second}"}


async def test_rename_moves_folders_and_tag_paths(emulator: RunningEmulator, connect: Any, errors: Any) -> None:
    """PATCHing the name renames the folder, snapshot folders and tag links; a name in use is 409."""
    api, root = connect(emulator), emulator.mount_root
    ds = (await api.post("/datasets", {"name": "before"})).body["id"]
    await api.post("/datasets", {"name": "taken"})
    (root / "before" / "f.txt").write_text("f")
    snap = (await api.post(f"/datasets/{ds}/snapshots", {"tag": "v1"})).body["id"]
    errors.seed(await api.patch(f"/datasets/{ds}", {"name": "taken"}), 409, "conflict")
    renamed = await api.patch(f"/datasets/{ds}", {"name": "after"})
    assert renamed.status == 200 and renamed.body["name"] == "after"
    assert {p.name for p in root.iterdir()} == {"after", f"after@{snap}", "after@v1", "taken"}
    assert (root / "after@v1" / "f.txt").read_text() == "f"


async def test_delete_hides_and_frees_the_name(emulator: RunningEmulator, connect: Any, errors: Any) -> None:
    """A deleted dataset is gone from get and list, its folders move to .deleted/<id>/, and its name is free."""
    api, root = connect(emulator), emulator.mount_root
    ds = (await api.post("/datasets", {"name": "temp"})).body["id"]
    await api.post(f"/datasets/{ds}/snapshots", {"tag": "v1"})
    assert (await api.delete(f"/datasets/{ds}")).status == 204
    errors.seed(await api.get(f"/datasets/{ds}"), 404)
    errors.seed(await api.delete(f"/datasets/{ds}"), 404)
    assert sorted(p.name for p in root.iterdir()) == [".deleted"]
    assert (root / ".deleted" / ds / "temp").is_dir()
    again = await api.post("/datasets", {"name": "temp"})
    assert again.status == 201 and again.body["id"] != ds


async def test_duplicate_names_conflict(emulator: RunningEmulator, connect: Any, errors: Any) -> None:
    """A live name is 409 in its project and, because all folders share one mount root, in other projects."""
    api = connect(emulator)
    await api.post("/datasets", {"name": "dup", "projectId": "p1"})
    assert "already exists" in errors.seed(await api.post("/datasets", {"name": "dup", "projectId": "p1"}), 409)
    assert "project 'p1'" in errors.seed(await api.post("/datasets", {"name": "dup", "projectId": "p2"}), 409)


async def test_existing_folder_is_adopted(emulator: RunningEmulator, connect: Any) -> None:
    """A folder put in the mount root before the dataset is created becomes its content (and its size)."""
    (emulator.mount_root / "prepared").mkdir()
    (emulator.mount_root / "prepared" / "f.bin").write_bytes(b"12345")
    made = await connect(emulator).post("/datasets", {"name": "prepared"})
    assert made.status == 201 and made.body["sizeBytes"] == 5


@pytest.mark.parametrize("dialect", [Dialect.SEED, Dialect.DOMINO])
async def test_fifty_concurrent_snapshots_and_tags_stay_consistent(
    emulator_factory: Any, connect: Any, dialect: Dialect
) -> None:
    """50 concurrent snapshot and tag requests all succeed and leave the database and the folders agreeing:
    one read-only folder per snapshot, one link per tag pointing at the tag's snapshot, no temp leftovers."""
    emu = await emulator_factory(dialect=dialect)
    api, root = connect(emu), emu.mount_root
    seed = dialect == Dialect.SEED
    made = await api.post("/datasets", {"name": "busy", "projectId": "p"})
    ds = made.body["id"] if seed else made.body["dataset"]["id"]
    (root / "busy" / "f.txt").write_text("payload")
    body = {} if seed else {"relativeFilePaths": [""]}
    base = [await api.post(f"/datasets/{ds}/snapshots", body) for _ in range(2)]
    base_ids = [(r.body if seed else r.body["snapshot"])["id"] for r in base]
    statuses: list[int] = []

    async def snapshot(i: int) -> None:
        wanted = {"tag": f"s{i % 5}"} if seed else body
        statuses.append((await api.post(f"/datasets/{ds}/snapshots", wanted)).status)

    async def tag(i: int) -> None:
        wanted = {"snapshotId": base_ids[i % 2], "tagName": f"m{i % 5}"}
        statuses.append((await api.post(f"/datasets/{ds}/tags", wanted)).status)

    async with anyio.create_task_group() as group:
        for i in range(25):
            group.start_soon(snapshot, i)
            group.start_soon(tag, i)
    assert len(statuses) == 50 and set(statuses) <= {200, 201}, statuses

    got = (await api.get(f"/datasets/{ds}")).body
    dataset = got if seed else got["dataset"]
    snaps = await api.get(f"/datasets/{ds}/snapshots", params={"limit": 1000})
    listed = snaps.body["data"] if seed else snaps.body["snapshots"]
    assert len(dataset["snapshotIds"]) == len(listed) == 27
    expected_tags = {f"m{i}" for i in range(5)} | ({f"s{i}" for i in range(5)} if seed else set())
    assert set(dataset["tags"]) == expected_tags
    if seed:
        on_snapshots = {t: s["id"] for s in listed for t in s["tags"]}
        assert on_snapshots == dataset["tags"]
    entries = {p.name for p in root.iterdir()}
    assert entries == {"busy"} | {f"busy@{sid}" for sid in dataset["snapshotIds"]} | {
        f"busy@{t}" for t in dataset["tags"]
    }
    for name, sid in dataset["tags"].items():
        assert os.readlink(root / f"busy@{name}") == f"busy@{sid}"
    for sid in dataset["snapshotIds"]:
        assert (root / f"busy@{sid}" / "f.txt").read_text() == "payload"
        assert stat.S_IMODE((root / f"busy@{sid}").stat().st_mode) == 0o555
