"""Sync decisions: what to copy, move and delete, the max-delete rail, and a model of the whole decision."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sync.plan import FolderIndex, delete_allowed, match_moves, needs_confirm, parents, plan_sync
from agent.sync.settle import FileStat
from agent.sync.statedb import make_row


def fs(size: int, mtime: int, ino: int, mode: int = 0o100644) -> FileStat:
    return FileStat(size, mtime, mtime, ino, mode)


@pytest.mark.parametrize(
    ("deletes", "files", "share", "allowed"),
    [
        (0, 0, 0.5, True),
        (5, 10, 0.5, True),
        (6, 10, 0.5, False),
        (1, 1, 0.5, False),
        (1, 2, 0.5, True),
        (10, 10, 1.0, True),
        (1, 100, 0.0, False),
    ],
)
def test_delete_rail(deletes: int, files: int, share: float, allowed: bool) -> None:
    """A pass may delete up to `max_delete` of the mount's files, never more."""
    assert delete_allowed(deletes, files, share) is allowed


def test_moves_pair_unique_inode_size_mtime() -> None:
    """A new path is a move when exactly one vanished row has its inode, size and mtime."""
    gone = {
        "old/a": make_row(10, 5, 100, 0o644),
        "old/b": make_row(20, 6, 101, 0o644),
        "dup1": make_row(1, 1, 7, 0o644),
        "dup2": make_row(1, 1, 7, 0o644),
    }
    adds = {"new/a": fs(10, 5, 100), "new/b": fs(20, 7, 101), "new/dup": fs(1, 1, 7)}
    assert match_moves(adds, gone) == {"new/a": "old/a"}


def test_confirm_only_when_just_the_inode_moved() -> None:
    """Bytes are compared only when size, mtime and mode match but the inode differs."""
    assert needs_confirm(make_row(10, 5, 1, 0o644), fs(10, 5, 2))
    assert not needs_confirm(make_row(10, 5, 1, 0o644), fs(10, 6, 2))
    assert not needs_confirm(None, fs(10, 5, 2))


def test_plan_refuses_a_wipe_but_still_copies() -> None:
    """A pass deleting most of the mount is refused whole while copies go ahead."""
    rows = {f"f{i}": make_row(1, i, i, 0o644) for i in range(10)}
    plan = plan_sync({"new": fs(1, 99, 99)}, [f"f{i}" for i in range(8)], rows, delete="mirror", max_delete=0.5)
    assert plan.copy == ("new",)
    assert plan.refused_delete
    assert len(plan.delete) == 8


def test_keep_mode_never_deletes_or_moves() -> None:
    """`keep` plans no delete and copies a renamed file instead of moving the old copy."""
    rows = {"old": make_row(1, 5, 42, 0o644)}
    plan = plan_sync({"new": fs(1, 5, 42)}, ["old"], rows, delete="keep", max_delete=0.5)
    assert plan.copy == ("new",)
    assert plan.delete == () and plan.move == ()
    assert not plan.refused_delete


def test_renamed_folder_is_a_move_not_a_delete() -> None:
    """Renaming a folder that holds the whole dataset moves files and trips no rail."""
    rows = {f"a/{i}": make_row(1, i, 100 + i, 0o644) for i in range(5)}
    changed = {f"b/{i}": fs(1, i, 100 + i) for i in range(5)}
    plan = plan_sync(changed, list(rows), rows, delete="mirror", max_delete=0.5)
    assert plan.move == tuple((f"a/{i}", f"b/{i}") for i in range(5))
    assert plan.copy == () and plan.delete == () and not plan.refused_delete


def test_unsettled_files_are_listed_apart() -> None:
    """Files not yet complete are neither copied nor forgotten: they are listed as unsettled."""
    plan = plan_sync({"a": fs(1, 1, 1), "b": fs(1, 2, 2)}, [], {}, delete="mirror", max_delete=0.5, settled=["a"])
    assert plan.copy == ("a",)
    assert plan.unsettled == ("b",)


def test_folder_index_finds_files_under_a_folder() -> None:
    """The folder index knows which folders hold tracked files and lists them."""
    index = FolderIndex(["a/b/c", "a/d", "e"])
    assert parents("a/b/c") == ["a/b", "a"]
    assert "a/b" in index and "e" not in index
    assert index.under("a", ["a/b/c", "a/d", "e", "ab"]) == ["a/b/c", "a/d"]
    index.remove("a/b/c")
    assert "a/b" not in index and "a" in index


# -- model test ------------------------------------------------------------------------------------------------

names = st.sampled_from([f"d{i // 3}/f{i}" for i in range(12)])
stats = st.builds(fs, st.integers(0, 3), st.integers(0, 3), st.integers(1, 6), st.sampled_from([0o100644, 0o100600]))


@settings(max_examples=300, deadline=None)
@given(
    source=st.dictionaries(names, stats),
    mount=st.dictionaries(names, stats),
    delete=st.sampled_from(["mirror", "keep"]),
    share=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_plan_matches_a_simple_model(
    source: dict[str, FileStat], mount: dict[str, FileStat], delete: str, share: float
) -> None:
    """Applying a plan to the mount model gives the source (mirror, rail permitting) or a superset (keep)."""
    rows = {p: make_row(s.size, s.mtime_ns, s.ino, s.mode) for p, s in mount.items()}
    changed = {p: s for p, s in source.items() if rows.get(p) != make_row(s.size, s.mtime_ns, s.ino, s.mode)}
    missing = [p for p in rows if p not in source]
    plan = plan_sync(changed, missing, rows, delete=delete, max_delete=share)

    result = dict(mount)
    for old, new in plan.move:
        assert old in missing and new not in rows
        assert mount[old].key == source[new].key
        result[new] = result.pop(old)
    for path in plan.copy:
        result[path] = source[path]
    if not plan.refused_delete:
        for path in plan.delete:
            del result[path]

    expected_deletes = [p for p in missing if p not in {old for old, _ in plan.move}] if delete == "mirror" else []
    assert sorted(plan.delete) == sorted(expected_deletes)
    assert plan.refused_delete == (len(expected_deletes) > share * len(rows))
    for path, stat in source.items():
        assert result[path].key == stat.key
    if delete == "keep" or plan.refused_delete:
        assert set(result) >= set(source)
    else:
        assert set(result) == set(source)
