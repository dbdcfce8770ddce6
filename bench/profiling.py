"""Profiles of the agent, taken from outside so it runs unmodified:

- py-spy samples every thread's Python stack, idle ones included (`--idle`), so the shares are of wall time
  summed over threads. Threads parked on a queue or in the event loop's `select` are counted apart as idle
  waits; the rest is split by function (inclusive, and self: the function's own code or a C call it makes,
  such as a syscall) and by source line.
- strace (`-c -w -f`) counts the syscalls of every thread and the wall time spent in each: where py-spy says
  "in os.open", strace says how many opens and how long each took.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.context import Context

RATE = 100  # samples per second
TOP = 12
# Leaf frames where a thread waits for work rather than doing any: an anyio worker thread parked on its
# queue, the event loop in select(), threading waits.
IDLE_LEAVES = ("EpollSelector.select", "Condition.wait", "WorkerThread.run", "Event.wait", "Queue.get", "sleep")
# Frames every stack passes through (thread start-up, click, the CLI entry, the asyncio and anyio runners):
# they say nothing about where the time goes, so the inclusive table leaves them out.
PLUMBING = (
    "threading.py",
    "click/",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "_backends/",
    "_core/",
    "cli/main.py",
    "cli/agent_commands.py",
    "<module>",
)
IMPORTS = "(imports: importlib)"


def py_spy() -> str | None:
    return shutil.which("py-spy")


def strace() -> str | None:
    return shutil.which("strace")


def _spy(output: Path) -> list[str]:
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    return [exe, "record", "--idle", "--nonblocking", "-r", str(RATE), "-f", "raw", "-o", str(output)]


def _trace(output: Path) -> list[str]:
    exe = strace()
    if exe is None:
        raise RuntimeError("strace is not installed")
    return [exe, "-f", "-c", "-w", "-o", str(output)]


def spy_command(output: Path, command: Sequence[str]) -> list[str]:
    """py-spy launching `command` and sampling it until it exits."""
    return [*_spy(output), "--", *command]


def strace_command(output: Path, command: Sequence[str]) -> list[str]:
    """strace launching `command` and counting its syscalls until it exits."""
    return [*_trace(output), "--", *command]


class Attached:
    """`with Attached(pid, output, log):` py-spy (or strace, with `tool="strace"`) on a running process
    until the block ends."""

    def __init__(self, pid: int, output: Path, log: Path, tool: str = "py-spy") -> None:
        self.command = [*(_trace(output) if tool == "strace" else _spy(output)), "-p", str(pid)]
        self.output = output
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Attached:
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # both write their output on Ctrl-C
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------------- py-spy


@dataclass(frozen=True, slots=True)
class Summary:
    samples: int  # all samples, idle waits included
    idle: int  # samples whose leaf is an idle wait
    inclusive: list[tuple[str, int]]  # busy samples only
    self_time: list[tuple[str, int]]
    lines: list[tuple[str, int]]


def _parse(frame: str) -> tuple[str, str, str]:
    """`func (path/to/module.py:123)` -> ("func", "to/module.py", "123")."""
    name, _, where = frame.partition(" (")
    path, _, line = where.rstrip(")").rpartition(":")
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return name.strip(), short, line


def _function(frame: str) -> str:
    """`func (package/module.py)`; every frame of the import machinery is one pseudo-function."""
    name, path, _ = _parse(frame)
    if "importlib" in path:
        return IMPORTS
    return f"{name} ({path})" if path else name


def _is_idle(leaf: str) -> bool:
    name = _parse(leaf)[0]
    return any(name == idle or name.endswith("." + idle) for idle in IDLE_LEAVES)


def _is_plumbing(frame: str) -> bool:
    return "importlib" not in frame and any(mark in frame for mark in PLUMBING)


def summarize(lines: Iterable[str], top: int = TOP) -> Summary:
    """Collapsed stacks (`a;b;c 17` per line) -> idle share and the top functions and lines of the rest."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    hot: Counter[str] = Counter()
    total = idle = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        if _is_idle(frames[-1]):
            idle += count
            continue
        for name in dict.fromkeys(_function(f) for f in frames if not _is_plumbing(f)):  # once per stack
            inclusive[name] += count
        own[_function(frames[-1])] += count
        name, path, number = _parse(frames[-1])
        hot[f"{path}:{number} {name}"] += count
    return Summary(total, idle, inclusive.most_common(top), own.most_common(top), hot.most_common(top))


def render(summary: Summary, wall_seconds: float | None, source: Path) -> str:
    """Markdown: shares of the busy samples by function (inclusive and self) and by line."""
    if not summary.samples:
        return f"No samples (py-spy output {source})."
    busy = summary.samples - summary.idle
    head = f"py-spy, {summary.samples} samples at {RATE}/s of every thread"
    if wall_seconds:
        head += f" over {wall_seconds:.1f} s"
    head += (
        f"; {summary.idle / summary.samples:.0%} were idle waits (worker threads parked, the loop in select), "
        f"the shares below are of the other {busy} (raw stacks: `{source}`)."
    )
    if not busy:
        return head
    lines = [head, "", "| inclusive | self | function |", "|---:|---:|---|"]
    own = dict(summary.self_time)
    for name, count in summary.inclusive:
        lines.append(f"| {count / busy:.0%} | {own.get(name, 0) / busy:.0%} | `{name}` |")
    lines += ["", "Hottest lines (self):", ""]
    lines += [f"- {count / busy:.0%} `{where}`" for where, count in summary.lines]
    return "\n".join(lines)


def render_file(path: Path, wall_seconds: float | None) -> str:
    if not path.exists():
        return f"py-spy wrote nothing to {path}."
    return render(summarize(path.read_text(errors="replace").splitlines()), wall_seconds, path)


# ------------------------------------------------------------------------------------------------- strace


def render_strace(path: Path, seconds: float | None, rows: int = 10) -> str:
    """The top of strace's `-c -w` table (wall time in each syscall, summed over threads) as a code block."""
    if not path.exists():
        return f"strace wrote nothing to {path}."
    table = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    body = [line for line in table if not line.startswith(("strace:", "---", "%", "100.00"))]
    total = next((line for line in table if line.startswith("100.00")), "")
    span = f" over {seconds:.1f} s" if seconds else ""
    head = f"strace -c -w -f{span} (syscall wall time summed over threads; strace slows the agent down):"
    shown = [next((line for line in table if line.startswith("%")), ""), *body[:rows], total]
    return head + "\n\n```\n" + "\n".join(line for line in shown if line) + "\n```"


# ------------------------------------------------------------------------------------------------- runs


def profile_once(
    ctx: Context, title: str, command: Sequence[str], log: Path, prepare: Callable[[], object], name: str
) -> None:
    """Run `command` once more under py-spy and (when installed) once under strace, each after `prepare()`,
    and add the summaries to the report. Neither run counts in the table."""
    from bench.measure import timed_command

    ctx.say(f"{name}: profiling one more domino-sync run")
    prepare()
    spied = ctx.path("profiles", f"{name}.pyspy.txt")
    result = timed_command(spy_command(spied, command), log)
    parts = [render_file(spied, result.seconds)]
    if strace() is not None:
        prepare()
        traced = ctx.path("profiles", f"{name}.strace.txt")
        result = timed_command(strace_command(traced, command), log)
        parts.append(render_strace(traced, result.seconds))
    ctx.profiles.append((title, "\n\n".join(parts)))
