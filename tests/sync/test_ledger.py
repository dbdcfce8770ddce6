"""The engine's bookkeeping without I/O: settling into jobs, moves, delete passes, results and facts."""

from __future__ import annotations

from agent.facts import Fact, FileChanged, FileDeleted, FileSynced
from agent.sync.copier import CopyResult, Outcome
from agent.sync.ledger import MARKER_WAIT, Ledger
from agent.sync.settle import NS, FileStat
from agent.sync.statedb import Row, make_row


def fs(size: int, t: float, ino: int = 1) -> FileStat:
    return FileStat(size, int(t * NS), int(t * NS), ino, 0o100644)


def row(f: FileStat) -> Row:
    return make_row(f.size, f.mtime_ns, f.ino, 0o644)


def ledger(rows: dict[str, Row] | None = None, settle: float = 1.0, mirror: bool = True) -> tuple[Ledger, list[Fact]]:
    facts: list[Fact] = []
    return Ledger(dict(rows or {}), settle, mirror, facts.append), facts


def test_settled_file_becomes_a_job_and_its_sync_a_fact() -> None:
    """An old file is queued at once; its copy result records the row, clears pending and emits FileSynced."""
    book, facts = ledger()
    f = fs(10, 100.0)
    book.observe("a", f, 200.0)
    assert list(book.ready) == ["a"]
    assert facts == [FileChanged("a", 200.0)]
    jobs = book.take_batch(4, 256, 1 << 20)
    assert [j.path for j in jobs] == ["a"] and book.inflight == {"a"}
    book.apply(jobs, [CopyResult("a", Outcome.COPIED, stat=f, bytes=10)], 201.0)
    assert book.rows["a"] == row(f)
    assert book.pending() == {} and not book.inflight
    assert facts[-1] == FileSynced("a", 10, 201.0, None)
    assert book.counters.copies == 1 and book.counters.bytes == 10


def test_fresh_file_waits_and_is_due_later() -> None:
    """A file still being written is pending, not queued, and comes due after `settle`."""
    book, _ = ledger(settle=1.0)
    book.observe("a", fs(1, 100.0), 100.0)
    assert not book.ready and book.pending() == {"a": 100.0}
    assert book.due(100.5) == []
    assert book.due(101.0) == ["a"]
    book.observe("a", fs(1, 100.0), 101.0)
    assert list(book.ready) == ["a"]


def test_a_file_queued_at_once_is_not_handed_out_again() -> None:
    """A settled file goes straight to the ready queue and leaves nothing for `due()` to pop (a first sync's
    100,000 files each cost a heap pop before); one still settling is scheduled, and a job that never ran
    (the engine stopped) comes due again."""
    book, _ = ledger(settle=1.0)
    for i in range(100):
        book.observe(f"old{i}", fs(1, 100.0, ino=i + 10), 200.0)
    book.observe("young", fs(1, 200.0, ino=5), 200.0)
    assert len(book.ready) == 100
    assert len(book.settler._heap) == 1  # the heap entries are the point
    assert book.due(201.0) == ["young"]
    jobs = book.take_batch(1, 10, 1 << 20)
    book.release(jobs)
    assert sorted(book.due(201.0)) == sorted(j.path for j in jobs)


def test_a_marker_is_taken_after_the_rest_of_its_folder() -> None:
    """`_SUCCESS` waits while a file of its folder (or below) is queued or being copied (a big one while big
    workers are busy too); a marker beside it or files of other folders do not hold it."""
    facts: list[Fact] = []
    book = Ledger({}, 1.0, True, facts.append, markers=frozenset({"_SUCCESS", "_DONE"}))
    for i, rel in enumerate(["out/p=1/a", "out/b", "out/_SUCCESS", "out/_DONE", "other/c", "other/_SUCCESS"]):
        book.observe(rel, fs(10, 100.0, ino=i + 10), 200.0)
    first = book.take_batch(1, 2, 1 << 20)
    assert [j.path for j in first] == ["out/p=1/a", "out/b"]
    second = book.take_batch(1, 10, 1 << 20)
    assert [j.path for j in second] == ["other/c"]  # the markers wait for their folders' copies
    book.apply(first, [CopyResult(j.path, Outcome.COPIED, stat=j.expect, bytes=10) for j in first], 201.0)
    assert [j.path for j in book.take_batch(1, 10, 1 << 20)] == ["out/_SUCCESS", "out/_DONE"]
    book.apply(second, [CopyResult("other/c", Outcome.COPIED, stat=second[0].expect, bytes=10)], 201.0)
    assert [j.path for j in book.take_batch(1, 10, 1 << 20)] == ["other/_SUCCESS"]

    book, _ = ledger()
    book.markers = frozenset({"_SUCCESS"})
    book.observe("d/big", fs(5 << 20, 100.0, ino=1), 200.0)
    book.observe("d/_SUCCESS", fs(1, 100.0, ino=2), 200.0)
    big = book.take_batch(1, 10, 1 << 30, big_ok=False)  # no small file to take instead: the big one goes
    assert [j.path for j in big] == ["d/big"]
    assert book.take_batch(1, 10, 1 << 30) == []  # the marker waits for it
    book.apply(big, [CopyResult("d/big", Outcome.COPIED, stat=big[0].expect, bytes=5 << 20)], 201.0)
    marker = book.take_batch(1, 10, 1 << 30)
    assert [j.path for j in marker] == ["d/_SUCCESS"]
    book.apply(marker, [CopyResult("d/_SUCCESS", Outcome.COPIED, stat=marker[0].expect, bytes=1)], 202.0)
    assert book.under == {} and book.counted == set()  # every copy counted is uncounted when it is done


def test_a_marker_waits_at_most_marker_wait_for_its_folder() -> None:
    """A root `_SUCCESS` under a producer that never stops writing would wait for ever: it goes once it has
    waited MARKER_WAIT since it was first seen, files still running or not."""
    book = Ledger({}, 1.0, True, lambda _fact: None, markers=frozenset({"_SUCCESS"}))
    book.observe("a", fs(1, 100.0, ino=1), 200.0)
    book.observe("_SUCCESS", fs(1, 100.0, ino=2), 200.0)
    assert [j.path for j in book.take_batch(1, 1, 1 << 20, now=200.0)] == ["a"]
    assert book.take_batch(1, 10, 1 << 20, now=200.0 + MARKER_WAIT - 1) == []
    assert [j.path for j in book.take_batch(1, 10, 1 << 20, now=200.0 + MARKER_WAIT)] == ["_SUCCESS"]


def test_a_marker_waits_for_a_file_of_its_folder_whose_copy_is_retried() -> None:
    """A file whose copy failed (a full disk) and is retried still holds its folder's `_SUCCESS`, until it is
    copied or MARKER_WAIT runs out; one given up (`once`) does not."""
    book = Ledger({}, 1.0, True, lambda _fact: None, markers=frozenset({"_SUCCESS"}))
    book.observe("d/big", fs(1, 100.0, ino=1), 200.0)
    book.observe("d/_SUCCESS", fs(1, 100.0, ino=2), 200.0)
    book.due(201.0)
    [job] = book.take_batch(1, 10, 1 << 20, now=201.0)
    assert job.path == "d/big"
    failed = CopyResult("d/big", Outcome.FAILED, error="mount: No space left on device", mount_side=True)
    [failure] = book.apply([job], [failed], 201.0)
    assert failure.retry_at is not None
    assert book.take_batch(1, 10, 1 << 20, now=202.0) == []  # the marker waits for the retry
    book.give_up("d/big")
    assert [j.path for j in book.take_batch(1, 10, 1 << 20, now=202.0)] == ["d/_SUCCESS"]


def test_a_failed_copy_whose_source_left_does_not_hold_the_marker() -> None:
    """A file gone from the source (or failing on the source's side) will not come: no marker waits for it."""
    book = Ledger({}, 1.0, True, lambda _fact: None, markers=frozenset({"_SUCCESS"}))
    book.observe("d/gone", fs(1, 100.0, ino=1), 200.0)
    book.observe("d/_SUCCESS", fs(1, 100.0, ino=2), 200.0)
    book.due(201.0)
    [job] = book.take_batch(1, 10, 1 << 20, now=201.0)
    book.observe("d/gone", None, 201.0)  # deleted while it was copied
    failed = CopyResult("d/gone", Outcome.FAILED, error="mount: No space left on device", mount_side=True)
    book.apply([job], [failed], 201.0)
    assert [j.path for j in book.take_batch(1, 10, 1 << 20, now=202.0)] == ["d/_SUCCESS"]


def test_unchanged_file_is_not_tracked() -> None:
    """A file equal to its row needs nothing and emits nothing."""
    f = fs(5, 100.0)
    book, facts = ledger({"a": row(f)})
    book.observe("a", f, 200.0)
    assert not book.ready and not book.settler and facts == []


def test_renamed_file_becomes_a_move() -> None:
    """A new path with the inode, size and mtime of a vanished row is moved, not copied, and not deleted."""
    f = fs(5, 100.0, ino=9)
    book, facts = ledger({"old": row(f)})
    book.observe("old", None, 200.0)
    book.observe("new", f, 200.0)
    [job] = book.take_batch(4, 256, 1 << 20)
    assert job.move_from == "old"
    assert book.deletable(300.0) == []
    book.apply([job], [CopyResult("new", Outcome.MOVED, stat=f, moved_from="old")], 201.0)
    assert set(book.rows) == {"new"} and not book.absent
    assert FileDeleted("old", 201.0, moved_to="new") in facts
    assert FileSynced("new", 5, 201.0, None, moved_from="old") in facts


def test_plain_copy_and_delete_facts_carry_no_move() -> None:
    """A file copied in and a file deleted for good emit facts whose move fields stay None."""
    f, g = fs(5, 100.0, ino=9), fs(7, 100.0, ino=10)
    book, facts = ledger({"gone": row(f)})
    book.observe("gone", None, 200.0)
    book.observe("new", g, 200.0)
    [job] = book.take_batch(4, 256, 1 << 20)
    assert job.move_from is None
    book.apply([job], [CopyResult("new", Outcome.COPIED, stat=g, bytes=7)], 201.0)
    book.start_deletes(["gone"])
    book.apply_deletes([("gone", None)], 202.0)
    assert FileSynced("new", 7, 201.0, None) in facts and FileDeleted("gone", 202.0) in facts
    assert all(getattr(fact, "moved_from", None) is None and getattr(fact, "moved_to", None) is None for fact in facts)


def test_deletes_wait_for_a_quiet_storm() -> None:
    """Absent files are deleted in one pass only after no new absence was seen for `settle`."""
    rows = {f"f{i}": make_row(1, i, i, 0o644) for i in range(4)}
    book, facts = ledger(rows, settle=1.0)
    book.observe("f0", None, 100.0)
    book.observe("f1", None, 100.8)
    assert book.deletable(101.5) == []
    assert sorted(book.deletable(101.8)) == ["f0", "f1"]
    book.apply_deletes([("f0", None), ("f1", None)], 102.0)
    assert set(book.rows) == {"f2", "f3"}
    assert [f for f in facts if isinstance(f, FileDeleted)] == [FileDeleted("f0", 102.0), FileDeleted("f1", 102.0)]


def test_keep_mode_tracks_no_deletes() -> None:
    """In keep mode an absent file is not a delete candidate and its row stays."""
    book, _ = ledger({"a": make_row(1, 1, 1, 0o644)}, mirror=False)
    book.observe("a", None, 100.0)
    assert not book.absent and book.deletable(1000.0) == [] and "a" in book.rows


def test_change_during_copy_reschedules() -> None:
    """A copy that reports the source changed leaves the file pending with the new signature, due later."""
    book, _ = ledger(settle=0.5)
    first = fs(1, 90.0)
    book.observe("a", first, 100.0)
    jobs = book.take_batch(1, 10, 1 << 20)
    newer = fs(2, 100.2)
    book.apply(jobs, [CopyResult("a", Outcome.CHANGED, stat=newer)], 100.3)
    watch = book.settler.get("a")
    assert watch is not None and watch.sig == newer
    assert "a" not in book.rows and not book.ready
    assert book.due(100.8) == ["a"]


def test_failures_back_off_and_count() -> None:
    """A failed copy counts an error, keeps the file pending and schedules a retry after a backoff."""
    book, _ = ledger()
    book.observe("a", fs(1, 10.0), 100.0)
    jobs = book.take_batch(1, 10, 1 << 20)
    [failure] = book.apply(
        jobs, [CopyResult("a", Outcome.FAILED, error="mount: No space", errno=28, mount_side=True)], 100.0
    )
    assert failure.attempt == 1 and failure.mount_side and failure.retry_at is not None
    assert failure.retry_at > 100.0
    assert book.counters.errors == 1 and "No space" in (book.counters.last_error or "")
    assert "a" not in book.rows and "a" in book.pending()
    assert book.due(failure.retry_at) == ["a"]


def test_batches_spread_small_files_and_isolate_big_ones() -> None:
    """Small files are spread over the workers in batches; a big file travels alone."""
    book, _ = ledger()
    for i in range(10):
        book.observe(f"s{i}", fs(100, 10.0, ino=i), 100.0)
    book.observe("big", fs(5 << 20, 10.0, ino=99), 100.0)
    first = book.take_batch(4, 256, 1 << 30)
    assert len(first) == 3 and all(j.expect.size == 100 for j in first)
    sizes = []
    while book.ready:
        sizes.append([j.path for j in book.take_batch(4, 256, 1 << 30)])
    assert ["big"] in sizes


def test_vanished_pending_file_is_forgotten() -> None:
    """A file that appears and vanishes before it is synced leaves nothing pending and nothing to delete."""
    book, _ = ledger(settle=5.0)
    book.observe("tmp", fs(1, 100.0), 100.0)
    book.observe("tmp", None, 100.5)
    assert book.pending() == {} and not book.absent and not book.settler


def test_small_files_pass_big_ones_when_big_workers_are_busy() -> None:
    """With `big_ok` False a worker takes the small files behind a big one; with no small file left it takes
    the big one anyway (a drop of only big files still uses every worker)."""
    book, _ = ledger()
    book.observe("a-big", fs(8 << 20, 100.0), 200.0)
    book.observe("b-small", fs(10, 100.0), 200.0)
    book.observe("c-small", fs(10, 100.0), 200.0)
    assert [j.path for j in book.take_batch(1, 10, 1 << 20, big_ok=False)] == ["b-small", "c-small"]
    assert [j.path for j in book.take_batch(1, 10, 1 << 20, big_ok=False)] == ["a-big"]
    book2, _ = ledger()
    book2.observe("a-big", fs(8 << 20, 100.0), 200.0)
    book2.observe("b-small", fs(10, 100.0), 200.0)
    assert [j.path for j in book2.take_batch(1, 10, 1 << 20)] == ["a-big"]


def test_pending_deletes_name_what_left_the_source_until_it_leaves_the_mount() -> None:
    """A synced file gone from the source is a pending delete (with when it was first missed) until refused or
    deleted; in keep mode nothing is."""
    a, b = fs(1, 1.0, ino=1), fs(2, 1.0, ino=2)
    led, _ = ledger({"a": row(a), "b": row(b)})
    assert led.pending_deletes() == {}
    led.observe("a", None, 10.0)
    led.observe("b", None, 11.0)
    assert led.pending_deletes() == {"a": 10.0, "b": 11.0}
    led.refuse(["b"])
    assert led.pending_deletes() == {"a": 10.0}
    led.start_deletes(["a"])
    led.apply_deletes([("a", None)], 12.0)
    assert led.pending_deletes() == {}
    keep, _ = ledger({"a": row(a)}, mirror=False)
    keep.observe("a", None, 10.0)
    assert keep.pending_deletes() == {}


def test_a_found_file_is_adopted_but_a_claimed_one_is_the_agent_s_own() -> None:
    """A file the mount already held that the agent has no row for is synced as `adopted` (no new data for the
    rules); one whose row was claimed from a killed agent's intent (inode 0) is its own work: not adopted."""
    f = fs(10, 100.0, ino=5)
    found, facts = ledger()
    found.observe("a", f, 200.0)
    jobs = found.take_batch(4, 256, 1 << 20)
    found.apply(jobs, [CopyResult("a", Outcome.ADOPTED, stat=f)], 201.0)
    assert facts[-1] == FileSynced("a", 10, 201.0, None, adopted=True)
    claimed, facts = ledger({"a": make_row(10, f.mtime_ns, 0, f.mode)})
    claimed.observe("a", f, 200.0)
    jobs = claimed.take_batch(4, 256, 1 << 20)
    claimed.apply(jobs, [CopyResult("a", Outcome.ADOPTED, stat=f)], 201.0)
    assert facts[-1] == FileSynced("a", 10, 201.0, None, adopted=False)
