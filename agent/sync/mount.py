# String paths and os.* calls on purpose: a Path object per file costs too much on 100k-file trees.
# ruff: noqa: PTH108, PTH116
"""The mount guard: is the dataset mount there, a folder, still the mounted filesystem, and writable? Blocking;
call from a thread.

The agent never creates the mount folder itself (an unmounted dataset must not be refilled on the local
disk) and writes nothing while this says no. When the mount (re)appears, `stale_rows` checks that it still
holds what the state DB says (a sample first), so a remounted or wiped dataset is filled again.

An unmount often leaves the empty mount point folder behind, which is a writable folder like any other. So
when the mount is first found usable the engine remembers, in `<state_dir>/mount.json` (`MountRecord`),
whether it is a mount point (`os.path.ismount`) and its `st_dev`. From then on a mount that was a mount point
and no longer is gets the problem "no longer a mount point (unmounted?)": nothing is created or copied into
the folder underneath (the copy batches and delete passes check too, not only the periodic look) until it is
a mount point again. A mount point with another `st_dev` is a remount: accepted and recorded, and the spot
check (`stale_rows`) refills what the new filesystem lacks. A plain folder (not a mount point when first seen:
a dataset folder inside a mounted filesystem, a test's tmp dir) keeps the checks above only; it is recorded as
a mount point once it becomes one. (A mount point deliberately replaced by a plain folder at the same path:
delete `<state_dir>/mount.json`, and the next start records the folder anew.)
"""

from __future__ import annotations

import contextlib
import errno as E
import fcntl
import json
import os
import random
import secrets
import stat
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.sync.statedb import Row, make_row, row_fields

RECORD_NAME = "mount.json"


@dataclass(frozen=True, slots=True)
class MountRecord:
    """What the mount was when first found usable: its path, whether it was a mount point, its device."""

    path: str
    mount_point: bool
    dev: int
    ino: int = 0  # the folder itself: another inode is another folder put in its place (0: not recorded)
    gen: int = 0  # its inode's generation: `rm -rf mount; mkdir mount` gets the same inode back on ext4, not
    # the same generation (0: not recorded, or a filesystem that gives none, as tmpfs and NFS)


FS_IOC_GETVERSION = 0x80087601  # _IOR('v', 1, long) on 64-bit Linux
UNKNOWN_GEN = -1  # the look failed this time (EINTR, EMFILE, a FUSE server's EIO): the recorded one stands


def generation(path: str) -> int:
    """The inode generation of the folder at `path` (FS_IOC_GETVERSION), 0 where the filesystem gives none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return UNKNOWN_GEN
    try:
        return int.from_bytes(fcntl.ioctl(fd, FS_IOC_GETVERSION, bytes(8)), sys.byteorder, signed=True)
    except OSError as exc:
        return 0 if exc.errno in (E.ENOTTY, E.EINVAL, E.EOPNOTSUPP, E.ENOSYS) else UNKNOWN_GEN
    finally:
        os.close(fd)


def current_record(mount: str) -> MountRecord:
    """The mount as it is now (raises OSError when it cannot be stat'ed)."""
    st = os.stat(mount)
    return MountRecord(mount, os.path.ismount(mount), st.st_dev, st.st_ino, generation(mount))


def updated_record(recorded: MountRecord | None, current: MountRecord) -> MountRecord | None:
    """The record to keep after a usable look at the mount, or None when the recorded one stands: the first
    look (or another mount path), a plain folder that became a mount point, a remount (another device), another
    folder put in its place (`mv mount mount.old; mkdir mount`: the same device, another inode; `rm -rf mount;
    mkdir mount`: often the same inode again, another generation)."""
    if recorded is None or recorded.path != current.path:
        return current
    if current.mount_point and (not recorded.mount_point or current.dev != recorded.dev):
        return current
    if current.ino != recorded.ino:  # an old record (no inode yet) takes the inode without a check
        return current
    if current.gen == UNKNOWN_GEN:
        return None
    if current.gen != recorded.gen:  # the same inode number, reused (an old record takes it, checked once)
        return current
    return None


def unmounted(mount: str, recorded: MountRecord | None) -> bool:
    """The mount was a mount point when recorded and no longer is (the folder left by an unmount)."""
    return recorded is not None and recorded.path == mount and recorded.mount_point and not os.path.ismount(mount)


def read_record(state_dir: Path) -> MountRecord | None:
    """The remembered mount, or None (none yet, or unreadable: then the next usable look records it anew)."""
    try:
        data = json.loads((state_dir / RECORD_NAME).read_text())
        path, point, dev = str(data["path"]), bool(data["mount_point"]), int(data["dev"])
        return MountRecord(path, point, dev, int(data.get("ino", 0)), int(data.get("gen", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(state_dir: Path, record: MountRecord) -> None:
    """Replace the remembered mount atomically (raises OSError)."""
    temp = state_dir / f".{RECORD_NAME}.{secrets.token_hex(4)}.tmp"
    try:
        temp.write_text(json.dumps(asdict(record)))
        temp.replace(state_dir / RECORD_NAME)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def probe_write(folder: str) -> None:
    """Create, write and remove a tiny hidden file in `folder`; raises OSError when that fails."""
    path = f"{folder}/.domino-sync-probe-{secrets.token_hex(4)}.tmp"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b"\n")
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def mount_problem(mount: str, *, probe: bool = True, recorded: MountRecord | None = None) -> str | None:
    """Why the mount cannot take files now, or None. `probe=False` skips the write (a cheap periodic look);
    `recorded`: the remembered mount (a mount point then must be one still)."""
    try:
        st = os.stat(mount)
    except FileNotFoundError:
        return f"mount {mount} is missing (not mounted?)"
    except OSError as exc:
        return f"mount {mount} cannot be read: {_why(exc)}"
    if not stat.S_ISDIR(st.st_mode):
        return f"mount {mount} is not a folder"
    if unmounted(mount, recorded):
        return f"mount {mount} is no longer a mount point (unmounted?)"
    try:
        if probe:
            probe_write(mount)
        elif not os.access(mount, os.W_OK):
            return f"mount {mount} is not writable"
    except OSError as exc:
        return f"mount {mount} is not writable: {_why(exc)}"
    return None


def _why(exc: OSError) -> str:
    name = E.errorcode.get(exc.errno or 0, "error")
    return f"{name} ({exc.strerror})" if exc.strerror else name


def _holds(mount: str, rel: str, row: Row) -> bool:
    try:
        st = os.lstat(mount + "/" + rel)
    except OSError:
        return False
    recorded = row_fields(row)
    return stat.S_ISREG(st.st_mode) and st.st_size == recorded.size and st.st_mtime_ns == recorded.mtime_ns


def stale_rows(mount: str, rows: Mapping[str, Row], sample: int = 64) -> list[str]:
    """Rows whose file is no longer in the mount as recorded (a remounted, replaced or wiped dataset).

    Looks at a random sample first and checks every row only when the sample finds a difference, so a healthy
    mount costs a few dozen stats.
    """
    if not rows:
        return []
    if sample < len(rows):
        keys = random.sample(list(rows), sample)
        if all(_holds(mount, rel, rows[rel]) for rel in keys):
            return []
    return [rel for rel, row in rows.items() if not _holds(mount, rel, row)]


def torn_copy(mount: str, rel: str, row: Row) -> bool:
    """The mount holds at `rel` what a crash of the host leaves of the agent's copy: a regular file with the
    recorded mtime (the agent set it; the journal kept it) and another size (the data not written back)."""
    try:
        st = os.lstat(mount + "/" + rel)
    except OSError:
        return False
    recorded = row_fields(row)
    return stat.S_ISREG(st.st_mode) and st.st_mtime_ns == recorded.mtime_ns and st.st_size != recorded.size


def claimed_rows(mount: str, intents: Mapping[str, Row]) -> dict[str, Row]:
    """The intents a killed agent left whose file the mount holds as intended (a regular file of the intended
    size and mtime: renamed into place, never committed): rows for them with the mount file's stat and inode 0
    (no source file has it), so the next scan does not take them as in sync: a file still in the source is
    compared byte for byte and recorded (its facts come again, as for any adopted copy), one the source lost is
    deleted in mirror mode. An intent whose file is absent or another (the crash came before its rename) is not
    the agent's file and gets no row."""
    out: dict[str, Row] = {}
    for rel, row in intents.items():
        try:
            st = os.lstat(mount + "/" + rel)
        except OSError:
            continue
        intended = row_fields(row)
        if stat.S_ISREG(st.st_mode) and st.st_size == intended.size and st.st_mtime_ns == intended.mtime_ns:
            out[rel] = make_row(st.st_size, st.st_mtime_ns, 0, st.st_mode)
    return out
