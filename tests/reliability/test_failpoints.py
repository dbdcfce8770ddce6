"""The failpoint facility: the spec it reads, a no-op when unarmed, SIGKILL at exactly the Nth hit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from agent import failpoints


@pytest.mark.parametrize(
    ("spec", "armed"),
    [
        ("", {}),
        ("copy.mid", {"copy.mid": 1}),
        ("copy.mid@3, queue.after_create", {"copy.mid": 3, "queue.after_create": 1}),
        (" a@1 ,, b@0 ", {"a": 1, "b": 1}),
    ],
)
def test_parse_reads_names_and_hits(spec: str, armed: dict[str, int]) -> None:
    """A spec is comma-separated NAME or NAME@N; blanks are skipped and N is at least 1."""
    assert failpoints.parse(spec) == armed


def test_parse_refuses_a_hit_that_is_not_a_number() -> None:
    """`NAME@x` is an error naming the variable and the item, not a silently unarmed failpoint."""
    with pytest.raises(ValueError, match=r"DOMINO_SYNC_FAILPOINTS: 'copy.mid@x'"):
        failpoints.parse("copy.mid@x")


def test_unarmed_failpoint_returns() -> None:
    """Without the variable nothing is armed and a failpoint call just returns."""
    assert failpoints.armed() == frozenset()
    failpoints.failpoint("copy.mid")


def test_process_dies_by_sigkill_at_the_nth_hit() -> None:
    """Armed as NAME@3, the process runs past two hits and dies by SIGKILL at the third, saying where."""
    script = "from agent.failpoints import failpoint\nfor i in range(5):\n    print(i, flush=True)\n    failpoint('p')"
    env = {**os.environ, failpoints.ENV: "p@3"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["0", "1", "2"]
    assert "failpoint p hit 3: SIGKILL" in done.stderr


def test_arm_in_a_forked_child() -> None:
    """`arm()` re-arms a forked child (the model test's crash), leaving the parent unarmed."""
    pid = os.fork()
    if pid == 0:
        try:
            failpoints.arm("q")
            failpoints.failpoint("q")
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert failpoints.armed() == frozenset()
