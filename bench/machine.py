"""The machine a run was measured on (cores, memory, disk, kernel, Python, tool versions) and the page cache."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_page_cache() -> bool:
    """Write dirty pages out and drop the page cache (needs root). False when the kernel refuses."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError:
        return False
    return True


def flush() -> float:
    """`sync`: seconds until every dirty page reached the disk."""
    started = time.perf_counter()
    os.sync()
    return time.perf_counter() - started


def _first_line(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def _disk(path: Path) -> str:
    """Filesystem type, device and (for a block device) rotational or not, of the mount holding `path`."""
    best: tuple[str, str, str] = ("", "unknown", "unknown")
    target = str(path.resolve())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mountpoint, fstype = fields[0], fields[1], fields[2]
        inside = target == mountpoint or target.startswith(mountpoint.rstrip("/") + "/")
        if inside and len(mountpoint) >= len(best[0]):
            best = (mountpoint, device, fstype)
    mountpoint, device, fstype = best
    kind = ""
    name = Path(device).name
    for candidate in (name, name.rstrip("0123456789"), name.rpartition("p")[0]):
        rotational = Path("/sys/block") / candidate / "queue" / "rotational"
        if candidate and rotational.exists():
            kind = ", rotational" if rotational.read_text().strip() == "1" else ", non-rotational"
            break
    free = shutil.disk_usage(path)
    return f"{fstype} on {device}{kind} ({free.free / 2**30:.0f} GiB free), mounted at {mountpoint}"


def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(  # noqa: S603
            ["git", "-C", str(root), "describe", "--always", "--dirty"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def describe(workdir: Path, cold_cache: bool) -> dict[str, str]:
    """Name -> value lines for the report's machine section."""
    from agent import __version__

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": f"{os.cpu_count()} x {_cpu_model()}",
        "memory": _memory(),
        "disk": _disk(workdir),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "domino-sync": f"{__version__} ({_git_commit()})",
        "rsync": _first_line(["rsync", "--version"]),
        "cp": _first_line(["cp", "--version"]),
        "page cache": "dropped before each first-sync command (cold)" if cold_cache else "warm (not dropped)",
    }
