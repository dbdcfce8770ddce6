"""Profiles with py-spy (sampling from outside the process, so the agent runs unmodified), summarised as the
functions that hold the most samples: inclusive (the function or anything it calls) and self (the function's
own code, or a C call it makes)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

RATE = 200  # samples per second


def py_spy() -> str | None:
    return shutil.which("py-spy")


def record_command(output: Path, command: Sequence[str]) -> list[str]:
    """py-spy launching `command` and sampling it (and its threads) until it exits."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    return [exe, "record", "--nonblocking", "-r", str(RATE), "-f", "raw", "-o", str(output), "--", *command]


class Attached:
    """`with Attached(pid, output):` py-spy sampling a running process until the block ends."""

    def __init__(self, pid: int, output: Path, log: Path) -> None:
        self.pid = pid
        self.output = output
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Attached:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed: pip install py-spy")
        command = [exe, "record", "--nonblocking", "-r", str(RATE), "-f", "raw", "-o", str(self.output)]
        command += ["--pid", str(self.pid)]
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@dataclass(frozen=True, slots=True)
class Summary:
    samples: int
    inclusive: list[tuple[str, int]]
    self_time: list[tuple[str, int]]


def _frame(text: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`: lines merged so a function counts once."""
    name, _, where = text.partition(" (")
    if not where:
        return name.strip()
    path = where.rstrip(")").rpartition(":")[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name.strip()} ({short})"


def summarize(lines: Iterable[str], top: int = 12) -> Summary:
    """Collapsed stacks (`a;b;c 17` per line) -> the top functions by inclusive and by self samples."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    # the entry chain (<module>, main, anyio.run, ...) holds every sample and says nothing: leave it out
    chain = {name for name, count in inclusive.items() if count >= 0.98 * total}
    ranked = [(name, count) for name, count in inclusive.most_common() if name not in chain]
    return Summary(total, ranked[:top], own.most_common(top))


def render(summary: Summary, wall_seconds: float | None, source: Path) -> str:
    """Markdown: two small tables of shares of the samples."""
    if not summary.samples:
        return f"No samples (py-spy output {source})."
    head = f"{summary.samples} samples at {RATE}/s"
    if wall_seconds:
        busy = summary.samples / RATE / wall_seconds
        head += f" over {wall_seconds:.1f} s of wall time (threads busy {busy:.0%} of it, summed over threads)"
    lines = [head + f"; raw stacks: `{source}`.", "", "| inclusive | self | function |", "|---:|---:|---|"]
    own = dict(summary.self_time)
    for name, count in summary.inclusive:
        lines.append(f"| {count / summary.samples:.0%} | {own.get(name, 0) / summary.samples:.0%} | `{name}` |")
    lines += ["", "Most self time:", ""]
    lines += [f"- {count / summary.samples:.0%} `{name}`" for name, count in summary.self_time]
    return "\n".join(lines)


def render_file(path: Path, wall_seconds: float | None) -> str:
    if not path.exists():
        return f"py-spy wrote nothing to {path}."
    return render(summarize(path.read_text(errors="replace").splitlines()), wall_seconds, path)
