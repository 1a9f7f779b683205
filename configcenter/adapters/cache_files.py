"""Files of configcenter's caches (~/.cache/configcenter): written whole and atomically,
and, for a cache of records that several processes add to at once (a command and serve
rendering the same environment), merged with what another writer put there meanwhile.

A reader never sees half a file: `write_atomic` writes a temporary file beside the target
and renames it over. A writer that read the file earlier takes `locked(path)`, looks at
`stamp(path)` and, when the file is not the one it read, reads it again and merges
before it writes: the last writer no longer drops the records the others added. The
lock is an flock of the file's folder, between processes and between threads alike
(every open is its own lock holder); a reader takes no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

#: What tells one version of a file from another: inode, size, modification time.
Stamp = tuple[int, int, int]


def write_atomic(
    path: Path, data: bytes | Callable[[IO[bytes]], None], prefix: str = ".tmp-"
) -> None:
    """Write `data` (bytes, or a function writing to the open file) to `path` whole: a
    temporary file in the same folder (made 0700 if missing), renamed over `path`. The
    temporary file is removed whatever fails; OSError is the caller's to ignore."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                data(handle)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_pickle(path: Path, value: Any, prefix: str = ".tmp-") -> None:
    """`value` pickled (protocol 5) into `path` with `write_atomic`."""
    write_atomic(path, lambda handle: pickle.dump(value, handle, protocol=5), prefix)


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
