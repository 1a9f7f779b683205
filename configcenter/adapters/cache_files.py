"""Files of configcenter's caches (~/.cache/configcenter): written whole and atomically,
and, for a cache of records that several processes add to at once (a command and serve
rendering the same environment), merged with what another writer put there meanwhile.

A reader never sees half a file: `write_atomic` writes a temporary file beside the target
and renames it over. A writer that read the file earlier saves through `save_merged`: it
takes `locked(path)`, looks at `stamp(path)` and, when the file is not the one it read,
reads it again and merges before it writes: the last writer no longer drops the records
the others added. The lock is an flock of the file's folder, between processes and
between threads alike (every open is its own lock holder); a reader takes no lock.

A temporary file is removed when its write fails; one left by a writer that was killed
(SIGKILL, a power cut) is removed by a later write into its folder. A writer holds an
flock of its temporary file until it is renamed, so one nobody holds is no one's: the
sweep never takes a file another process is still writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from configcenter.crashpoints import crash_point

#: What tells one version of a file from another: inode, size, modification time.
Stamp = tuple[int, int, int]
#: What a writer writes: the bytes, or a function writing them to the open file.
Data = bytes | Callable[[IO[bytes]], None]

#: A folder's temporary files are looked at once in this many seconds per process at most
#: (a reconcile writing 5,000 slots of one folder lists it once, not 5,000 times).
SWEEP_EVERY = 60.0
_swept: dict[tuple[str, str], float] = {}


def write_atomic(path: Path, data: Data, prefix: str = ".tmp-") -> Stamp:
    """Write `data` to `path` whole: a temporary file in the same folder (made 0700 if
    missing), flocked while written, renamed over `path`. The temporary file is removed
    whatever fails, and those of killed writers (same prefix) are swept. Returns the
    version written; OSError is the caller's to ignore."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    sweep(path.parent, prefix)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as handle:
            # Held until the rename, so a sweep never removes a file still being written
            # (where no flock is to be had, a sweep cannot take one either: it removes
            # nothing; one that took it first has removed the file: the rename fails).
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if isinstance(data, bytes):
                handle.write(data)
            else:
                data(handle)
            handle.flush()
            crash_point("cache_files.before_rename")  # tests: a writer killed mid-write
            info = os.fstat(fd)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return info.st_ino, info.st_size, info.st_mtime_ns


def pickled(value: Any) -> Callable[[IO[bytes]], None]:
    """`value` as `write_atomic` data: pickled (protocol 5) into the open file."""
    return lambda handle: pickle.dump(value, handle, protocol=5)


def write_pickle(path: Path, value: Any, prefix: str = ".tmp-") -> Stamp:
    """`value` pickled (protocol 5) into `path` with `write_atomic`."""
    return write_atomic(path, pickled(value), prefix)


def save_merged(
    path: Path, read: Stamp | None, data: Callable[[bool], Data], prefix: str = ".tmp-"
) -> Stamp:
    """Write a cache of records that other processes add to: under `path`'s lock,
    `data(changed)` gives what to write, where `changed` says the file is not the version
    `read` (what this writer read; None: there was none), so another writer's records are
    there to be read again and merged in first. Returns the version written (what this
    writer has read now). OSError is the caller's to ignore."""
    with locked(path):
        return write_atomic(path, data(stamp(path) != read), prefix)


def stamp(path: Path) -> Stamp | None:
    """The version of the file at `path` (None: there is none)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of the writers of `path`'s folder (an flock of the folder
    itself: no lock file to list or leave behind), waiting for it. OSError when the
    folder cannot be made or opened."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def sweep(folder: Path, prefix: str, every: float = SWEEP_EVERY) -> int:
    """Remove the temporary files (names starting with `prefix`) in `folder` that no
    writer holds: those of writers that were killed. At most once in `every` seconds per
    folder and prefix in this process. Returns how many were removed; never raises."""
    now = time.monotonic()
    key = (os.fspath(folder), prefix)
    last = _swept.get(key)
    if last is not None and now - last < every:
        return 0
    _swept[key] = now
    removed = 0
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if e.name.startswith(prefix)]
    except OSError:
        return 0
    for name in names:
        removed += _remove_if_abandoned(os.path.join(folder, name))
    return removed


def _remove_if_abandoned(path: str) -> int:
    """1 when the file at `path` was no writer's (its flock free) and is removed, else 0."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:  # gone (renamed into place meanwhile), a link, not ours to open
        return 0
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Still the file under that name (not renamed away since it was opened)?
        if os.fstat(fd).st_ino != os.lstat(path).st_ino:
            return 0
        os.unlink(path)
    except OSError:  # being written (the flock is held), or gone
        return 0
    finally:
        os.close(fd)
    return 1
