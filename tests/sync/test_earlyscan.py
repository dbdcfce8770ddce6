"""`once`'s early scan: a walk forked before the agent is assembled, used only when it is the walk the engine
would make, and stopped when the agent never gets to it."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sync.sync_kit import EngineFactory

from agent.cli import console
from agent.cli.console import freeze_heap, once_config
from agent.config import SourceConfig, load_config
from agent.sync import earlyscan, workers
from agent.sync.earlyscan import MAX_AGE, EarlyScan
from agent.sync.scan import ScanResult, Walker, source_walker
from agent.sync.statedb import StateDB, make_row


@pytest.fixture(autouse=True)
def no_prestarted_walk_left() -> Iterator[None]:
    yield
    left, earlyscan._prestarted = earlyscan._prestarted, None
    if left is not None:
        left.close()


def fill(src: Path, folders: int = 20) -> None:
    for i in range(folders):
        (src / f"d{i:02d}").mkdir()
        (src / f"d{i:02d}" / "f.csv").write_text(str(i))
        (src / f"d{i:02d}" / "x.tmp").write_text("ignored")


def test_the_early_result_is_the_walk_the_engine_would_make(src: Path, mnt: Path, state: Path) -> None:
    """Same walker and same rows: `take` hands over exactly what a walk now finds (rows from the state DB)."""
    fill(src)
    state.mkdir()
    db = StateDB(state / "state.db")
    st = (src / "d00" / "f.csv").stat()
    db.record(put=[("d00/f.csv", make_row(st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode))])
    rows = db.load()
    db.close()
    source = SourceConfig(path=src)
    early = EarlyScan.start(source, mnt, state)
    assert early is not None
    walker = source_walker(source, mnt, state)
    taken = early.take(walker, rows, time.time())
    assert isinstance(taken, ScanResult)
    fresh = walker.scan(rows)
    assert taken.changed == fresh.changed and taken.hits == fresh.hits == {"d00": 1}
    assert (taken.files, taken.bytes) == (fresh.files, fresh.bytes) == (20, sum(len(str(i)) for i in range(20)))
    assert early.take(walker, rows, time.time()) is None  # once only
    early.close()


def test_a_different_walk_or_other_rows_are_not_taken(src: Path, mnt: Path, state: Path) -> None:
    """Rows that changed since the child compared against them (intents claimed, stale rows dropped), other
    walk settings, or a walk older than MAX_AGE (the agent waited for a snapshot being taken): the engine walks
    again."""
    fill(src)
    source = SourceConfig(path=src)
    early = EarlyScan.start(source, mnt, state)
    assert early is not None
    rows = {"d00/f.csv": make_row(1, 1, 1, 0o644)}
    assert early.take(source_walker(source, mnt, state), rows, time.time()) is None
    other = EarlyScan.start(source, mnt, state)
    assert other is not None
    csv_ignored = source_walker(SourceConfig(path=src, ignore=("*.csv",)), mnt, state)
    assert other.take(csv_ignored, {}, time.time()) is None
    late = EarlyScan.start(source, mnt, state)
    assert late is not None
    pid = late._child[0] if late._child else 0
    assert late.take(source_walker(source, mnt, state), {}, late.started + MAX_AGE + 1) is None  # too old
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # and its child stopped


def test_close_stops_a_child_whose_result_is_never_taken(src: Path, mnt: Path, state: Path) -> None:
    fill(src)
    early = EarlyScan.start(SourceConfig(path=src), mnt, state)
    assert early is not None
    pid = early._child[0] if early._child else 0
    early.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped
    early.close()


def test_nothing_starts_without_a_known_mount_or_a_source_folder(src: Path, mnt: Path, state: Path) -> None:
    assert EarlyScan.start(SourceConfig(path=src), None, state) is None  # the mount comes from the dataset
    assert EarlyScan.start(SourceConfig(path=src / "missing"), mnt, state) is None


async def test_once_uses_the_early_walk_and_copies_what_it_found(
    src: Path, mnt: Path, state: Path, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine handed an early scan that holds copies from it, without walking the source itself."""
    fill(src)
    early = EarlyScan.start(SourceConfig(path=src), mnt, state)
    assert early is not None

    def no_walk(*_: object, **__: object) -> ScanResult:
        raise AssertionError("the engine walked the source itself")

    monkeypatch.setattr(Walker, "scan", no_walk)  # in this process only: the child forked before
    report = await make_engine(early_scan=early, delete="keep").sync_once()
    assert report.ok and report.copied == 20
    assert sorted(p.name for p in mnt.rglob("*.csv")) == ["f.csv"] * 20


async def test_an_early_walk_that_does_not_hold_is_replaced(
    src: Path, mnt: Path, state: Path, make_engine: EngineFactory
) -> None:
    """Here the early walk used other rows than the engine holds (a row written after it started): the engine
    walks itself, and the file the row names is not copied again."""
    fill(src)
    early = EarlyScan.start(SourceConfig(path=src), mnt, state)
    assert early is not None
    (mnt / "d00").mkdir()
    (mnt / "d00" / "f.csv").write_text("0")
    st = (src / "d00" / "f.csv").stat()
    os.utime(mnt / "d00" / "f.csv", ns=(st.st_atime_ns, st.st_mtime_ns))
    db = StateDB(state / "state.db")
    db.record(put=[("d00/f.csv", make_row(st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode))])
    db.close()
    report = await make_engine(early_scan=early).sync_once()
    assert report.ok and report.copied == 19


def write_config(path: Path, src: Path, mnt: Path, state: Path, extra_source: str = "") -> Path:
    path.write_text(
        f"source: {{path: ' {src} '{extra_source}}}\n"
        f"dataset: {{name: d, project_id: p, mount: {mnt}}}\n"
        f"domino: {{url: http://127.0.0.1:1, api_key: k}}\n"
        f"state_dir: {state}\n"
    )
    return path


def prestarted() -> EarlyScan | None:
    return earlyscan._prestarted


def test_prestart_forks_the_walk_that_start_then_takes_over(src: Path, mnt: Path, state: Path, tmp_path: Path) -> None:
    """From the console `once` forks its walk before the config is validated, reading the file as plain YAML
    (strings stripped, defaults applied): `start` with the validated config hands that same walk over."""
    fill(src)
    earlyscan.prestart(str(write_config(tmp_path / "c.yaml", src, mnt, state)))
    early = prestarted()
    assert early is not None
    config = load_config(tmp_path / "c.yaml")
    assert EarlyScan.start(config.source, config.dataset.mount, config.state_dir) is early
    assert prestarted() is None
    taken = early.take(source_walker(config.source, mnt, state), {}, time.time())
    assert taken is not None and taken.files == 20 and set(taken.changed) == {f"d{i:02d}/f.csv" for i in range(20)}


def test_a_prestarted_walk_of_another_reading_is_stopped_and_replaced(
    src: Path, mnt: Path, state: Path, tmp_path: Path
) -> None:
    """The light reading differs from the validated config (here `start` is called with other patterns): the
    prestarted child is stopped and `start` forks the walk of the config it was given."""
    fill(src)
    earlyscan.prestart(str(write_config(tmp_path / "c.yaml", src, mnt, state)))
    early = prestarted()
    assert early is not None and early._child is not None
    pid = early._child[0]
    other = EarlyScan.start(SourceConfig(path=src, ignore=("*.csv",)), mnt, state)
    assert other is not None and other is not early
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # stopped and reaped
    taken = other.take(source_walker(SourceConfig(path=src, ignore=("*.csv",)), mnt, state), {}, time.time())
    assert taken is not None and sorted(taken.changed) == [f"d{i:02d}/x.tmp" for i in range(20)]


@pytest.mark.parametrize(
    ("extra", "processes"),
    [
        ("", 4),
        (", copy_workers: 2", 2),
        (", copy_workers: '3'", 3),
        (", copy_workers: 'two'", 4),
        (", copy_workers: 0", 4),
    ],
)
def test_prestart_forks_the_copy_processes_too(
    extra: str, processes: int, src: Path, mnt: Path, state: Path, tmp_path: Path
) -> None:
    """With the walk, `source.copy_workers` copy processes (as written when valid, else the default: the
    validated config reports a wrong value), forked while the interpreter is small (copyfork.py)."""
    fill(src, folders=1)
    earlyscan.prestart(str(write_config(tmp_path / "c.yaml", src, mnt, state, extra_source=extra)))
    assert prestarted() is not None
    assert len(workers.idle_pids()) == processes


def test_a_tree_synced_before_gets_no_copy_processes_at_the_start(
    src: Path, mnt: Path, state: Path, tmp_path: Path
) -> None:
    """Rows in the state DB: a resync, which mostly finds nothing to copy (a no-op takes half a second); its few
    batches fork as they come rather than four processes at every start."""
    fill(src, folders=1)
    state.mkdir()
    db = StateDB(state / "state.db")
    db.record(put=[("d00/f.csv", make_row(1, 1, 1, 0o100644))])
    db.close()
    earlyscan.prestart(str(write_config(tmp_path / "c.yaml", src, mnt, state)))
    assert prestarted() is not None
    assert workers.idle_pids() == set()


@pytest.mark.parametrize(
    "text",
    [
        "source: {path: SRC}\ndataset: {name: d, project_id: p}\n",  # no mount named: it comes from the dataset
        "source: {path: SRC, ignore: '*.csv'}\ndataset: {name: d, project_id: p, mount: MNT}\n",  # not a list
        "source: {path: 7}\ndataset: {name: d, project_id: p, mount: MNT}\n",
        "- a list\n",
        "source: {path: SRC\n",  # not YAML
    ],
)
def test_prestart_leaves_what_it_cannot_read_simply_to_the_validated_config(
    text: str, src: Path, mnt: Path, tmp_path: Path
) -> None:
    fill(src, folders=1)
    config = tmp_path / "c.yaml"
    config.write_text(text.replace("SRC", str(src)).replace("MNT", str(mnt)))
    earlyscan.prestart(str(config))
    earlyscan.prestart(str(tmp_path / "missing.yaml"))
    assert prestarted() is None
    assert workers.idle_pids() == set()  # nor copy processes


@pytest.mark.parametrize(
    ("args", "config"),
    [
        (["once", "--config", "c.yaml"], "c.yaml"),
        (["once", "-c", "c.yaml", "--timeout", "5"], "c.yaml"),
        (["--log-level", "debug", "once", "--config=c.yaml"], "c.yaml"),
        (["--log-format=json", "once", "-cc.yaml"], "c.yaml"),
        (["once", "--dry-run", "-c", "c.yaml"], None),
        (["once", "-c", "c.yaml", "--help"], None),
        (["once"], None),
        (["run", "-c", "c.yaml"], None),
        (["--help"], None),
        (["--verbose", "once", "-c", "c.yaml"], None),  # an option this reading does not know: no guess
        ([], None),
    ],
)
def test_the_console_reads_which_config_a_walking_once_names(args: list[str], config: str | None) -> None:
    assert once_config(args) == config


def test_prestart_reads_no_pipe_and_raises_nothing(src: Path, mnt: Path, state: Path, tmp_path: Path) -> None:
    """A config given as a pipe (`--config <(envsubst < tmpl.yaml)`) is left for the CLI to read, once; a config
    the walk cannot use (an ignore pattern gitignore refuses) starts nothing and raises nothing: the validated
    config reports it in one line."""
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    earlyscan.prestart(str(fifo))  # opening it would block: no writer
    assert prestarted() is None
    fill(src, folders=1)
    earlyscan.prestart(str(write_config(tmp_path / "bang.yaml", src, mnt, state, extra_source=", ignore: ['!']")))
    assert prestarted() is None


def test_the_heap_is_frozen_only_in_the_console_script_s_own_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """`freeze_heap` (called once the agent is assembled) takes what the agent holds out of the garbage
    collector's passes, in the console script's process only: a test process calling the CLI keeps its own."""
    frozen = gc.get_freeze_count()
    freeze_heap()
    assert gc.get_freeze_count() == frozen
    monkeypatch.setattr(console, "_own_process", True)
    try:
        freeze_heap()
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
