"""Kept config loads on disk (see configcenter.core.load_trace), in the user's cache dir.

One file per key; each is written whole and atomically, and a file that cannot be
read is a miss. The newest `KEEP` files stay; older ones are removed as new ones come.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

KEEP = 12  # a few environments, all of them, and some single-service loads


class DiskLoadStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def salt(self) -> str:
        return code_salt()

    def get(self, key: str) -> bytes | None:
        try:
            return (self.directory / f"{key}.load").read_bytes()
        except OSError:
            return None

    def put(self, key: str, data: bytes) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, self.directory / f"{key}.load")
        except OSError:
            return  # a cache is an optimisation: never fail a command over it
        self._prune()

    def _prune(self) -> None:
        try:
            kept = sorted(
                self.directory.glob("*.load"), key=lambda p: p.stat().st_mtime, reverse=True
            )
            for old in kept[KEEP:]:
                old.unlink(missing_ok=True)
        except OSError:
            return


@lru_cache(maxsize=1)
def code_salt() -> str:
    """Names the code that loads: a kept load is used only by the code that made it.

    The digest of configcenter's core modules (the loader and all it calls), the version of
    Python and the `__init__.py` of PyYAML and Jinja (where their versions are written;
    read, not imported: a plan from a kept load uses neither): an upgrade or an edited
    checkout loads afresh.
    """
    import configcenter.core

    digest = hashlib.sha256(sys.version.encode())
    for library in ("yaml", "jinja2"):
        spec = importlib.util.find_spec(library)
        origin = spec.origin if spec is not None else None
        digest.update(f"\0{library}\0".encode())
        if origin:
            digest.update(Path(origin).read_bytes())
    core = Path(configcenter.core.__file__).parent
    for path in sorted(core.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:32]
