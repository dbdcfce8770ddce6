"""Source trees for the cases: generated once per spec and kept in the work folder, then summarised and
compared after each copy. Contents are random bytes, so no tool gains from compression or deduplication."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CHUNK = 1 << 20
AGE = 3600.0  # generated files get an mtime an hour back: dropped long before the sync, settled


@dataclass(frozen=True, slots=True)
class TreeSpec:
    """`small_files` files of `small_size` bytes spread over `small_dirs` folders, plus `big_files` of `big_size`."""

    name: str
    small_files: int
    small_dirs: int
    small_size: int
    big_files: int = 0
    big_size: int = 0

    @property
    def files(self) -> int:
        return self.small_files + self.big_files

    @property
    def bytes(self) -> int:
        return self.small_files * self.small_size + self.big_files * self.big_size

    def label(self) -> str:
        text = f"{self.small_files:,} x {_size(self.small_size)} in {self.small_dirs:,} folders"
        if self.big_files:
            text += f" + {self.big_files} x {_size(self.big_size)}"
        return text


@dataclass(frozen=True, slots=True)
class TreeSummary:
    files: int
    bytes: int
    other: int  # entries that are neither regular files nor folders


def _size(n: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"


def ensure_tree(root: Path, spec: TreeSpec) -> Path:
    """The tree for `spec` under `root`, generated unless an earlier run left a complete one."""
    target = root / spec.name
    stamp = root / f"{spec.name}.spec.json"
    wanted = json.dumps(asdict(spec), sort_keys=True)
    if target.is_dir() and stamp.exists() and stamp.read_text() == wanted:
        return target
    stamp.unlink(missing_ok=True)
    remove(target)
    generate(target, spec)
    stamp.write_text(wanted)
    return target


def generate(target: Path, spec: TreeSpec) -> None:
    """Write the tree: folders d0000.., small files f00000.bin round-robin across them, big files at the top."""
    when = time.time() - AGE
    folders = [target / f"d{i:04d}" for i in range(max(1, spec.small_dirs))]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(spec.small_files):
        path = folders[i % len(folders)] / f"f{i:06d}.bin"
        write_file(path, os.urandom(spec.small_size), when)
    for i in range(spec.big_files):
        path = target / f"big{i:02d}.bin"
        with path.open("wb") as out:
            left = spec.big_size
            while left > 0:
                n = min(CHUNK, left)
                out.write(os.urandom(n))
                left -= n
        os.utime(path, (when, when))
    for folder in [*folders, target]:
        os.utime(folder, (when, when))


def write_file(path: Path, data: bytes, mtime: float | None = None) -> None:
    with path.open("wb") as out:
        out.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def summarize(root: Path) -> TreeSummary:
    """Regular files, their bytes, and anything else (symlinks, sockets) under `root`."""
    files = size = other = 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    files += 1
                    size += entry.stat(follow_symlinks=False).st_size
                else:
                    other += 1
    return TreeSummary(files, size, other)


def check_copy(dst: Path, spec: TreeSpec) -> str | None:
    """None when `dst` holds exactly the spec's files and bytes, else what differs."""
    if not dst.is_dir():
        return f"{dst} does not exist"
    got = summarize(dst)
    if got.files != spec.files or got.bytes != spec.bytes or got.other:
        return (
            f"{dst}: {got.files} files / {got.bytes} bytes / {got.other} others, expected {spec.files} / {spec.bytes}"
        )
    return None


def remove(path: Path) -> None:
    """Remove a tree fast (`rm -rf` beats shutil.rmtree on 100,000 files); files are removed too."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        rm = shutil.which("rm")
        if rm:
            subprocess.run([rm, "-rf", "--", str(path)], check=True)  # noqa: S603
            return
        shutil.rmtree(path)
    else:
        path.unlink()


def fresh_dir(path: Path) -> Path:
    """An empty folder at `path` (whatever was there is removed)."""
    remove(path)
    path.mkdir(parents=True)
    return path
