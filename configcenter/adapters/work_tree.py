"""The config repo's work tree read as data: never following a link, regular files only.

A committer controls every path in the config repo, links included: a committed
`templates/x/app.conf.j2 -> ~/.ssh/id_rsa` must not make configcenter read the
key. So the work tree is read without following links in any path component, and
only regular files are read at all (a FIFO would block a read forever, a device
could be anything). `configcenter.adapters.git_config_repo` reads through these.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import stat
import time
from pathlib import Path

from configcenter.adapters.cache_files import Data, Stamp, pickled, save_merged, stamp
from configcenter.core.source import FileTooLarge, RepoPathError


def file_kind(mode: int) -> str:
    """What an lstat mode is, in words used by error messages."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    return "special file"


def entry_kind(entry: os.DirEntry[str]) -> str:
    """What a directory entry is, from the listing itself where it says (no stat per entry)."""
    if entry.is_symlink():
        return "symbolic link"
    if entry.is_file(follow_symlinks=False):
        return "file"
    if entry.is_dir(follow_symlinks=False):
        return "directory"
    return file_kind(entry.stat(follow_symlinks=False).st_mode)


def _check_parents(root: Path, rel: str, checked: set[str] | None = None) -> bool:
    """False when a parent directory is missing; RepoPathError when one is not a directory.

    `checked` holds directories found to be directories by this batch of calls (a kept
    load's replay: 5,000 files in a few directories), which are not asked again.
    """
    base = os.fspath(root)  # plain strings: pathlib's joins cost more than the lstat
    parts = rel.split("/")
    if checked is not None and rel.rpartition("/")[0] in checked:
        return True
    for i in range(1, len(parts)):
        prefix = "/".join(parts[:i])
        if checked is not None and prefix in checked:
            continue
        try:
            mode = os.lstat(f"{base}/{prefix}").st_mode
        except FileNotFoundError:
            return False
        except NotADirectoryError:
            return False
        if not stat.S_ISDIR(mode):
            raise RepoPathError(prefix, file_kind(mode))
        if checked is not None:
            checked.add(prefix)
    return True


def repo_path_kind(root: Path, rel: str) -> str | None:
    """The kind of `rel` under `root` (None: absent), never following a link on the way."""
    if not _check_parents(root, rel):
        return None
    try:
        return file_kind(os.lstat(f"{os.fspath(root)}/{rel}").st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_repo_file(root: Path, rel: str, max_bytes: int) -> bytes | None:
    """The bytes of regular file `rel` under `root`; None when it does not exist.

    Raises RepoPathError when `rel` or a directory on its way is a link or not a regular
    file, FileTooLarge past `max_bytes` (checked before reading, and while reading).
    """
    if not _check_parents(root, rel):
        return None
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(f"{os.fspath(root)}/{rel}", flags)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW on a link
            raise RepoPathError(rel, "symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RepoPathError(rel, file_kind(info.st_mode))
        if info.st_size > max_bytes:
            raise FileTooLarge(rel, info.st_size, max_bytes)
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(rel, len(data), max_bytes)
    return data


def list_repo_dir(root: Path, rel: str) -> list[tuple[str, str]] | None:
    """(name, kind) of every entry of directory `rel` under `root`, sorted; None when absent.

    Raises RepoPathError when `rel` itself, or a directory on its way, is not a directory.
    """
    kind = repo_path_kind(root, rel)
    if kind is None:
        return None
    if kind != "directory":
        raise RepoPathError(rel, kind)
    with os.scandir(root / rel) as entries:
        found = [(e.name, entry_kind(e)) for e in entries]
    return sorted(found)


def walk_repo_dir(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Regular files under `root` (relative, sorted) and every other entry that is not a
    directory: (relative path, kind). Links are listed, never followed."""
    files: list[str] = []
    refused: list[tuple[str, str]] = []
    pending = [""]
    while pending:
        prefix = pending.pop()
        with os.scandir(root / prefix if prefix else root) as entries:
            for entry in entries:
                rel = f"{prefix}{entry.name}"
                kind = entry_kind(entry)
                if kind == "directory":
                    pending.append(rel + "/")
                elif kind == "file":
                    files.append(rel)
                else:
                    refused.append((rel, kind))
    return sorted(files), sorted(refused)


#: A file modified this recently is not remembered by its stat: a write in the same clock
#: tick would leave size and times as they were (git's "racily clean" entries).
SETTLED_NS = 2_000_000_000

StatKey = tuple[int, int, int, int, int]  # device, inode, size, mtime_ns, ctime_ns


class StatDigests:
    """The sha256 of work-tree files, remembered by what `lstat` says of them (as git's index).

    A file whose device, inode, size, modification and change times are all as they were
    when it was read has the bytes it had: every write moves the change time, which no
    user can set. Files younger than `SETTLED_NS` are read every time. Anything but a
    plain regular file within the size limit is read (and refused) as `read_repo_file`
    does. Kept in one small file beside the config repo's other caches; two processes
    saving at once both keep what they learnt (`cache_files.save_merged`).
    """

    LIMIT = 200_000  # entries; past it the file is started again

    def __init__(self, path: Path, settled_ns: int = SETTLED_NS) -> None:
        self.path = path
        self.settled_ns = settled_ns
        self._entries: dict[str, tuple[StatKey, str]] | None = None
        self._read: Stamp | None = None  # the version of the file read
        self._learnt: dict[str, tuple[StatKey, str]] = {}

    def _table(self) -> dict[str, tuple[StatKey, str]]:
        if self._entries is None:
            self._read = stamp(self.path)  # before reading: never a later version's
            self._entries = self._load()
        return self._entries

    def _load(self) -> dict[str, tuple[StatKey, str]]:
        """The entries in the file now ({} when it is missing, unreadable or too large)."""
        try:
            with open(self.path, "rb") as handle:
                data = pickle.load(handle)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError):
            return {}
        if isinstance(data, dict) and data.get("version") == 1:
            entries = data.get("entries")
            if isinstance(entries, dict) and len(entries) < self.LIMIT:
                return entries
        return {}

    def digest(
        self, root: Path, rel: str, max_bytes: int, checked: set[str] | None = None
    ) -> str | None:
        """sha256 hex of `read_repo_file(root, rel, max_bytes)`; None when it is absent.
        Raises what `read_repo_file` raises. `checked`: see `_check_parents`."""
        if not _check_parents(root, rel, checked):
            return None
        path = f"{os.fspath(root)}/{rel}"
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        key: StatKey | None = None
        if stat.S_ISREG(info.st_mode) and info.st_size <= max_bytes:
            key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            known = self._table().get(rel)
            if known is not None and known[0] == key:
                return known[1]
        data = read_repo_file(root, rel, max_bytes)
        if data is None:
            return None
        digest = hashlib.sha256(data).hexdigest()
        if key is not None and time.time_ns() - info.st_ctime_ns > self.settled_ns:
            try:
                after = os.lstat(path)
            except OSError:
                return digest
            if key == (
                after.st_dev,
                after.st_ino,
                after.st_size,
                after.st_mtime_ns,
                after.st_ctime_ns,
            ):
                self._table()[rel] = self._learnt[rel] = (key, digest)
        return digest

    def save(self) -> None:
        """Write back, atomically, when something was learnt, with what another process
        saved since this one read the file (never fails a command)."""
        if not self._learnt or self._entries is None:
            return
        try:
            self._read = save_merged(self.path, self._read, self._data, prefix=".tmp-")
        except OSError:
            return
        self._learnt = {}

    def _data(self, changed: bool) -> Data:
        """What `save` writes (`changed`: the file is another writer's since it was read)."""
        entries = self._table()
        if changed:
            fresh = self._load()
            if len(entries) + len(fresh) < self.LIMIT:
                entries.update(fresh)
            entries.update(self._learnt)  # what this process saw last
        return pickled({"version": 1, "entries": entries})
