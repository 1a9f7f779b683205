"""The config repo's work tree read as data: never following a link, regular files only.

A committer controls every path in the config repo, links included: a committed
`templates/x/app.conf.j2 -> ~/.ssh/id_rsa` must not make configcenter read the
key. So the work tree is read without following links in any path component, and
only regular files are read at all (a FIFO would block a read forever, a device
could be anything). `configcenter.adapters.git_config_repo` reads through these.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

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


def _check_parents(root: Path, rel: str) -> bool:
    """False when a parent directory is missing; RepoPathError when one is not a directory."""
    base = os.fspath(root)  # plain strings: pathlib's joins cost more than the lstat
    parts = rel.split("/")
    for i in range(1, len(parts)):
        prefix = "/".join(parts[:i])
        try:
            mode = os.lstat(f"{base}/{prefix}").st_mode
        except FileNotFoundError:
            return False
        except NotADirectoryError:
            return False
        if not stat.S_ISDIR(mode):
            raise RepoPathError(prefix, file_kind(mode))
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
