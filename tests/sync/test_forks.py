"""Work in forked processes (forks.py): a child holds nothing of its parent, leaves stop signals to it and dies
with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.sync import forks


def test_a_child_holds_nothing_of_the_parent_and_leaves_stop_signals_to_it(tmp_path: Path) -> None:
    """A child keeps no descriptor but its pipe (a child outliving a killed agent must not hold its state lock or
    its listening socket) and ignores SIGINT and SIGTERM sent to the whole group (the parent decides)."""
    held = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)  # inheritable here, like the agent's descriptors
    os.set_inheritable(held, True)

    def look() -> tuple[bool, object, object]:
        try:
            os.fstat(held)
            still_open = True
        except OSError:
            still_open = False
        return still_open, signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    child = forks.spawn(look)
    assert child is not None
    (answer,) = forks.collect([child])
    os.close(held)
    assert answer == (False, signal.SIG_IGN, signal.SIG_IGN)


def test_a_child_dies_with_its_parent(tmp_path: Path) -> None:
    """Work forked by a process that is then killed stops too (PR_SET_PDEATHSIG), instead of working on."""
    marker = tmp_path / "grandchild.pid"
    script = f"""
import os, sys, time
from agent.sync import forks
def work():
    open({str(marker)!r}, "w").write(str(os.getpid()))
    time.sleep(60)
forks.spawn(work)
time.sleep(60)
"""
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(marker.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("the child outlived its killed parent")
