"""Dataset folders under the mount root: live folders, read-only snapshot copies and tag links. Blocking.

    <root>/<name>/                 the dataset's read-write folder
    <root>/<name>@<snapshot-id>/   a snapshot: a copy built aside (hidden temp sibling), made read-only
                                   (files 0o444, folders 0o555), then renamed into place
    <root>/<name>@<tag>            a relative symlink to `<name>@<snapshot-id>`, swapped atomically when the
                                   tag moves (temp link + os.replace), removed with the tag
    <root>/.deleted/<dataset-id>/  where a deleted dataset's folders are moved, so its name can be reused

Every function here blocks; the emulator runs them in threads. OSErrors become MountError.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from agent.errors import MountError

FILE_MODE_RO = 0o444
DIR_MODE_RO = 0o555
FILE_MODE_RW = 0o644
DIR_MODE_RW = 0o755


@contextmanager
def _mount_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise MountError(f"{what}: {exc.strerror or exc} ({exc.filename or ''})") from exc


class Folders:
    """The dataset folders under one mount root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def dataset_path(self, name: str) -> Path:
        return self.root / name

    def snapshot_path(self, name: str, snapshot_id: str) -> Path:
        return self.root / f"{name}@{snapshot_id}"

    def tag_path(self, name: str, tag: str) -> Path:
        return self.root / f"{name}@{tag}"

    def ensure_root(self) -> None:
        with _mount_errors(f"cannot create mount root {self.root}"):
            self.root.mkdir(parents=True, exist_ok=True)

    def create(self, name: str) -> None:
        """Create the dataset's folder; an existing folder (content put there beforehand) is adopted."""
        path = self.dataset_path(name)
        with _mount_errors(f"cannot create dataset folder {path}"):
            path.mkdir(parents=True, exist_ok=True)

    def is_taken(self, name: str) -> bool:
        """Whether anything sits at `<root>/<name>` (a folder a new or renamed dataset would collide with)."""
        return os.path.lexists(self.dataset_path(name))

    def missing(self, name: str, paths: Iterable[str]) -> list[str]:
        """The relative paths that do not exist in the dataset's folder."""
        base = self.dataset_path(name)
        return [p for p in paths if p and not os.path.lexists(base / p)]

    def snapshot(self, name: str, snapshot_id: str, paths: tuple[str, ...] = ("",)) -> None:
        """Copy the dataset folder (or only `paths` of it; "" means all) to its read-only snapshot folder."""
        source = self.dataset_path(name)
        final = self.snapshot_path(name, snapshot_id)
        temp = self.root / f".{name}@{snapshot_id}.tmp-{secrets.token_hex(4)}"
        with _mount_errors(f"cannot snapshot {source}"):
            if not source.is_dir():
                raise MountError(f"dataset folder {source} is missing; recreate it before taking a snapshot")
            try:
                if "" in paths or "." in paths:
                    _copy_tree(source, temp)
                else:
                    temp.mkdir()
                    for rel in paths:
                        _copy_entry(source / rel, temp / rel)
                _set_modes(temp, FILE_MODE_RO, DIR_MODE_RO)
                temp.rename(final)
            except BaseException:
                _remove_tree(temp)
                raise

    def seed_from(self, name: str, source: Path) -> None:
        """Fill the (new, empty) dataset folder with a writable copy of `source` (a snapshot folder)."""
        target = self.dataset_path(name)
        with _mount_errors(f"cannot copy {source} into {target}"):
            if not source.is_dir():
                raise MountError(f"snapshot folder {source} is missing")
            temp = self.root / f".{name}.seed-{secrets.token_hex(4)}"
            try:
                _copy_tree(source, temp)
                _set_modes(temp, FILE_MODE_RW, DIR_MODE_RW)
                for entry in temp.iterdir():
                    entry.rename(target / entry.name)
            finally:
                _remove_tree(temp)

    def point_tag(self, name: str, tag: str, snapshot_id: str) -> None:
        """Make `<name>@<tag>` resolve to the snapshot folder, replacing an older link atomically."""
        link = self.tag_path(name, tag)
        temp = self.root / f".{name}@{tag}.link-{secrets.token_hex(4)}"
        with _mount_errors(f"cannot point tag link {link}"):
            temp.symlink_to(f"{name}@{snapshot_id}")
            try:
                temp.replace(link)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise

    def drop_tag(self, name: str, tag: str) -> None:
        link = self.tag_path(name, tag)
        with _mount_errors(f"cannot remove tag link {link}"):
            if link.is_symlink():
                link.unlink()

    def rename(self, old: str, new: str, snapshot_ids: Iterable[str], tags: Mapping[str, str]) -> None:
        """Move the folder, its snapshot folders and its tag links from `old` to `new` (checked free before)."""
        with _mount_errors(f"cannot rename dataset folder {old!r} to {new!r}"):
            if self.dataset_path(old).exists():
                self.dataset_path(old).rename(self.dataset_path(new))
            for snapshot_id in snapshot_ids:
                if self.snapshot_path(old, snapshot_id).exists():
                    self.snapshot_path(old, snapshot_id).rename(self.snapshot_path(new, snapshot_id))
            for tag, snapshot_id in tags.items():
                self.drop_tag(old, tag)
                self.point_tag(new, tag, snapshot_id)

    def retire(self, name: str, dataset_id: str, snapshot_ids: Iterable[str], tags: Iterable[str]) -> Path:
        """Move a deleted dataset's folders to `<root>/.deleted/<dataset-id>/` and drop its tag links."""
        grave = self.root / ".deleted" / dataset_id
        with _mount_errors(f"cannot move the folders of deleted dataset {name!r} aside"):
            grave.mkdir(parents=True, exist_ok=True)
            for tag in tags:
                self.drop_tag(name, tag)
            if self.dataset_path(name).exists():
                self.dataset_path(name).rename(grave / name)
            for snapshot_id in snapshot_ids:
                path = self.snapshot_path(name, snapshot_id)
                if path.is_dir():
                    path.chmod(DIR_MODE_RW)  # moving a folder to a new parent needs write access to it
                    path.rename(grave / path.name)
                    (grave / path.name).chmod(DIR_MODE_RO)
        return grave

    def size(self, name: str) -> int:
        """Total bytes of the regular files in the dataset folder (0 when it is missing)."""
        total = 0
        stack = [self.dataset_path(name)]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue  # vanished while we looked
        return total


def _copy_entry(source: Path, target: Path) -> None:
    """Copy one file, link or folder (its parents created as needed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        target.symlink_to(source.readlink())
    elif source.is_dir():
        _copy_tree(source, target)
    else:
        shutil.copy2(source, target)


def _copy_tree(source: Path, target: Path) -> None:
    """copytree with copy2 that keeps symlinks as links, skips special files and tolerates entries vanishing
    mid-copy (a writer's temp file renamed away), so a snapshot never fails because the folder is busy."""
    target.mkdir()
    stack = [(source, target)]
    while stack:
        src, dst = stack.pop()
        try:
            entries = list(os.scandir(src))
        except FileNotFoundError:
            continue
        for entry in entries:
            out = dst / entry.name
            try:
                if entry.is_symlink():
                    out.symlink_to(Path(entry.path).readlink())
                elif entry.is_dir():
                    out.mkdir()
                    stack.append((Path(entry.path), out))
                elif entry.is_file():
                    shutil.copy2(entry.path, out)
            except FileNotFoundError:
                continue
        with suppress(OSError):
            shutil.copystat(src, dst)


def _set_modes(top: Path, file_mode: int, dir_mode: int) -> None:
    """chmod every file and folder under `top` (links untouched), deepest first, `top` last."""
    for folder, dirs, files in os.walk(top, topdown=False):
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                path.chmod(file_mode)
        for name in dirs:
            path = Path(folder, name)
            if not path.is_symlink():
                path.chmod(dir_mode)
    top.chmod(dir_mode)


def _remove_tree(path: Path) -> None:
    """Remove a (possibly read-only) tree; best effort, used to clean up a failed copy."""
    if not os.path.lexists(path):
        return
    with suppress(OSError):
        _set_modes(path, FILE_MODE_RW, DIR_MODE_RW)
    shutil.rmtree(path, ignore_errors=True)
