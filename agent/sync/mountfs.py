# String paths and os.* calls on purpose: a Path object per file costs too much on 100k-file trees.
# ruff: noqa: PTH106, PTH108, PTH112
"""What the agent does to the mount besides copying: temp names, durability barriers, deletes that prune the
folders they empty, and the start-up sweep of temp files a crash left. Blocking; call from a worker thread.

Durability: `syncfs()` flushes the whole filesystem in one call; the copier uses it as the barrier for a
batch of small files (one before the renames, one after) instead of an fsync per file and per folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
from collections.abc import Callable, Collection, Iterable, Sequence

NAME_MAX = 255
TEMP_RE = re.compile(r"^\..*\.domino-sync-[0-9a-f]{8}\.tmp$|^\.domino-sync-probe-[0-9a-f]{8}\.tmp$", re.DOTALL)


def temp_name(name: str, tag: int | None = None) -> str:
    """`.<name>.domino-sync-<8 hex>.tmp`, the name cut so the whole stays within 255 bytes.

    `tag` (32 bits) saves a random draw per file; O_EXCL catches the rare clash."""
    suffix = f".domino-sync-{secrets.randbits(32) if tag is None else tag & 0xFFFFFFFF:08x}.tmp"
    raw = os.fsencode(name)
    if len(raw) > NAME_MAX - 1 - len(suffix):
        return "." + os.fsdecode(raw[: NAME_MAX - 1 - len(suffix)]) + suffix
    return "." + name + suffix


def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    syncfs: Callable[[int], int] = fn
    return syncfs


SYNCFS = _libc_syncfs()


def syncfs(path: str) -> bool:
    """Flush the filesystem holding `path`; False when syncfs is not available (then fsync one by one)."""
    if SYNCFS is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)
    return True


def fsync_folder(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folders_durable(mount: str, folders: Collection[str], *, whole_fs: bool = True) -> None:
    """fsync each folder (or one syncfs when there are many, with `whole_fs`: not where a write-back error of
    someone else's copies must reach the flush that watches for it, flushmark.py)."""
    if not folders:
        return
    if whole_fs and len(folders) > 16 and syncfs(mount):
        return
    for folder in folders:
        try:
            fsync_folder(folder)
        except FileNotFoundError:
            continue  # emptied and removed meanwhile (by a move or delete): its parent records that


def unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def prune_empty(mount: str, folder: str, touched: set[str] | None = None) -> None:
    """Remove `folder` (relative) and the folders above it while they are empty; never the mount itself."""
    while folder:
        path = mount + "/" + folder
        try:
            os.rmdir(path)
        except OSError:
            return
        parent = folder.rpartition("/")[0]
        if touched is not None:
            touched.discard(path)
            touched.add(mount + "/" + parent if parent else mount)
        folder = parent


def delete_files(mount: str, paths: Sequence[str]) -> list[tuple[str, OSError | None]]:
    """Remove each path from the mount, then the folders this leaves empty; make it durable."""
    out: list[tuple[str, OSError | None]] = []
    folders: set[str] = set()
    touched: set[str] = set()
    for rel in paths:
        try:
            os.unlink(mount + "/" + rel)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            pass  # not there (or a folder stands there): no file of ours to remove
        except OSError as exc:
            out.append((rel, exc))
            continue
        out.append((rel, None))
        head = rel.rpartition("/")[0]
        folders.add(head)
        touched.add(mount + "/" + head if head else mount)
    for folder in sorted(folders, key=lambda f: f.count("/"), reverse=True):
        prune_empty(mount, folder, touched)
    try:
        make_folders_durable(mount, {t for t in touched if os.path.isdir(t)})
    except OSError as exc:
        return [(rel, exc if err is None else err) for rel, err in out]
    return out


def remove_temps_of(mount: str, paths: Iterable[str], tags: range) -> bool:
    """Delete the temp files a copy of `paths` with temp tags in `tags` may have left (a forked batch that gave
    no answer, copyfork.py): in each path's folder, the names `temp_name(name, tag)` gives, and no other (a
    batch copying beside it has tags of its own). False when a folder could not be listed or a temp not
    deleted."""
    by_folder: dict[str, set[str]] = {}
    for rel in paths:
        folder, _, name = rel.rpartition("/")
        by_folder.setdefault(folder, set()).add(temp_name(name, 0).removesuffix("00000000.tmp"))
    cleared = True
    for folder, prefixes in by_folder.items():
        try:
            entries = os.scandir(mount + "/" + folder if folder else mount)
        except FileNotFoundError:
            continue
        except OSError:
            cleared = False
            continue
        with entries:
            for entry in entries:
                prefix, tag = entry.name[:-12], entry.name[-12:-4]
                if prefix not in prefixes or not entry.name.endswith(".tmp") or not _in_tags(tag, tags):
                    continue
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass
                except OSError:
                    cleared = False
    return cleared


def _in_tags(text: str, tags: range) -> bool:
    """`text` is 8 hex digits naming a tag of `tags` (tags wrap at 32 bits, as temp_name writes them)."""
    if len(text) != 8 or text.strip("0123456789abcdef"):
        return False
    return (int(text, 16) - tags.start) & 0xFFFFFFFF < len(tags)


def mount_inodes(mount: str, paths: Iterable[str]) -> dict[str, int]:
    """The inode at each path in the mount, for the paths that hold something (one stat per path, one per
    folder that is not there yet: a first sync's new folders cost nothing per file)."""
    found: dict[str, int] = {}
    absent: set[str] = set()
    for rel in paths:
        folder = rel.rpartition("/")[0]
        if folder in absent:
            continue
        try:
            found[rel] = os.lstat(mount + "/" + rel).st_ino
        except FileNotFoundError:
            if folder and not os.path.isdir(mount + "/" + folder):
                absent.add(folder)
        except OSError:
            continue
    return found


def remove_temps(mount: str) -> int:
    """Delete temp and probe files a crash left anywhere in the mount; how many."""
    removed = 0
    stack = [mount]
    while stack:
        folder = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif TEMP_RE.match(entry.name):
                        os.unlink(entry.path)
                        removed += 1
                except OSError:
                    continue
    return removed
