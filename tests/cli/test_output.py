"""A command's output that cannot be written (stdout on a full disk, a closed pipe) is one error line and exit
1, not an internal error."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli.output import say
from agent.errors import OutputError
from agent.queue_store import QueueStore


def test_say_on_a_full_stdout_is_an_output_error(monkeypatch: pytest.MonkeyPatch) -> None:
    full = Path("/dev/full").open("w")  # noqa: SIM115 - closed below, where its unwritable buffer is dropped
    try:
        monkeypatch.setattr(sys, "stdout", full)
        with pytest.raises(OutputError, match=r"cannot write the output to stdout \(No space left on device\)"):
            say("a summary")
    finally:
        with contextlib.suppress(OSError):
            full.close()


def test_a_command_whose_output_cannot_be_written_says_so_in_one_line(tmp_path: Path) -> None:
    """`retry` with no agent running requeues in the state folder and prints what it did: here into /dev/full."""
    config = retry_config(tmp_path)
    with Path("/dev/full").open("w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "agent", "retry", "--config", str(config)],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "domino-sync: error: cannot write the output to stdout (No space left on device)"
    ]


def test_a_command_started_with_stdout_closed_does_its_work_and_exits_0(tmp_path: Path) -> None:
    """Its output goes nowhere, as asked: not an error."""
    config = retry_config(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "agent", "retry", "--config", str(config)],
        stderr=subprocess.PIPE, text=True, timeout=60, check=False, preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")


def retry_config(tmp_path: Path) -> Path:
    """A config whose `retry` (no agent running) requeues in a state folder that has a queue, and prints."""
    state = tmp_path / "state"
    state.mkdir()
    QueueStore(state / "state.db").close()
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"source: {{path: {tmp_path}}}\ndataset: {{name: d, project_id: p}}\nstate_dir: {state}\n"
        "server: {enabled: false}\n"
    )
    return config
