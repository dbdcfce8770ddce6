"""The benchmark harness at tiny sizes (opt-in: `pytest -m bench tests/bench`): it runs every case end to end,
and its statistics and profile summaries say what they should."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure import percentile, rotate, spread
from bench.profiling import summarize
from bench.report import Row, markdown

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = ("First sync", "No-op resync", "Latency", "Burst", "Footprint", "API")


@pytest.mark.timeout(600)
def test_quick_run_measures_every_figure(tmp_path: Path) -> None:
    """`python -m bench --quick` measures every case against a real emulator and agent, and writes the report."""
    report, raw = tmp_path / "report.md", tmp_path / "report.json"
    command = [sys.executable, "-m", "bench", "--quick", "--rounds", "1", "--workdir", str(tmp_path / "work")]
    command += ["--markdown", str(report), "--json", str(raw)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=580, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    rows = json.loads(raw.read_text())["rows"]
    names = [row["benchmark"] for row in rows]
    for prefix in EXPECTED:
        assert any(name.startswith(prefix) for name in names), (prefix, names)
    assert all(row["domino"] not in ("error", "—") for row in rows), rows
    first_sync = next(row for row in rows if row["benchmark"].startswith("First sync ("))
    assert set(first_sync["values"]["median_seconds"]) == {"domino-sync", "rsync", "cp"}
    assert report.read_text() == done.stdout
    assert "| benchmark | domino-sync | rsync | cp | ratio | target | met? |" in done.stdout


def test_unknown_benchmark_is_a_usage_error() -> None:
    """`--only` with a name that is no benchmark stops at once with exit code 2 and the known names."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "nope"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "first-sync" in done.stderr


def test_rounds_rotate_so_each_tool_goes_first() -> None:
    """Over three rounds each of three tools runs first once."""
    tools = ["domino-sync", "rsync", "cp"]
    assert [rotate(tools, r)[0] for r in range(3)] == tools
    assert sorted(rotate(tools, 4)) == sorted(tools)


def test_percentile_is_nearest_rank() -> None:
    """p50 and p99 of 1..200 ms are the 100th and 198th values; spread is (max - min) / median."""
    values = [i / 1000 for i in range(1, 201)]
    assert percentile(values, 50) == pytest.approx(0.100)
    assert percentile(values, 99) == pytest.approx(0.198)
    assert spread([1.0, 2.0, 3.0]) == pytest.approx(1.0)


def test_profile_summary_sets_idle_waits_apart_and_ranks_the_rest() -> None:
    """Idle waits are counted apart; the busy samples are ranked by function and line, imports as one entry,
    and frames every stack passes through (thread start-up, the CLI entry) are left out."""
    lines = [
        "<module> (cli.py:1);copy (engine/copier.py:10);fsync (engine/copier.py:20) 60",
        "<module> (cli.py:1);copy (engine/copier.py:12) 5",
        "<module> (cli.py:1);scan (engine/scan.py:5) 25",
        "<module> (cli.py:1);_find_and_load (<frozen importlib._bootstrap>:1176) 10",
        "_bootstrap (threading.py:1002);WorkerThread.run (_backends/_asyncio.py:800) 100",
    ]
    summary = summarize(lines)
    assert (summary.samples, summary.idle) == (200, 100)
    assert summary.inclusive[:2] == [("copy (engine/copier.py)", 65), ("fsync (engine/copier.py)", 60)]
    assert ("(imports: importlib)", 10) in summary.inclusive
    assert not any("<module>" in name for name, _ in summary.inclusive)
    assert summary.self_time[0] == ("fsync (engine/copier.py)", 60)
    assert summary.lines[0] == ("engine/copier.py:20 fsync", 60)


def test_report_marks_missed_targets() -> None:
    """A missed target shows as a bold no, a met one as yes, and notes follow the table."""
    rows = [Row("a", domino="1 s", met=True), Row("b", domino="2 s", met=False, note="why")]
    text = markdown(rows, {"cores": "2"}, [])
    assert "| a | 1 s | — | — | — | — | yes |" in text
    assert "| b | 2 s | — | — | — | — | **no** |" in text
    assert "- **b**: why" in text
