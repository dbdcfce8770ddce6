# String paths and os.* calls on purpose: a Path object per file costs too much on 100k-file trees.
# ruff: noqa: PTH108, PTH116
"""The mount guard: is the dataset mount there, a folder, and writable? Blocking; call from a thread.

The agent never creates the mount folder itself (an unmounted dataset must not be refilled on the local
disk) and writes nothing while this says no. When the mount (re)appears, `stale_rows` checks that it still
holds what the state DB says (a sample first), so a remounted or wiped dataset is filled again.
"""

from __future__ import annotations

import contextlib
import errno as E
import os
import random
import secrets
import stat
from collections.abc import Mapping

from agent.sync.statedb import Row, make_row, row_fields


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


def mount_problem(mount: str, *, probe: bool = True) -> str | None:
    """Why the mount cannot take files now, or None. `probe=False` skips the write (a cheap periodic look)."""
    try:
        st = os.stat(mount)
    except FileNotFoundError:
        return f"mount {mount} is missing (not mounted?)"
    except OSError as exc:
        return f"mount {mount} cannot be read: {_why(exc)}"
    if not stat.S_ISDIR(st.st_mode):
        return f"mount {mount} is not a folder"
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
    keys = random.sample(list(rows), min(sample, len(rows)))
    if all(_holds(mount, rel, rows[rel]) for rel in keys):
        return []
    return [rel for rel, row in rows.items() if not _holds(mount, rel, row)]


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
