"""Kept config loads on disk (see configcenter.core.load_trace), in the user's cache dir.

One file per key, each one whole value: written whole and atomically
(`cache_files.write_atomic`), so of two processes keeping one key at once the last
complete write wins and a reader sees one or the other, never a mix; a writer killed
mid-write leaves the file as it was (its temporary file is swept by a later write). A
file that cannot be read is a miss. The newest `KEEP` files stay; older ones are removed
as new ones come.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from functools import lru_cache
from pathlib import Path

from configcenter.adapters.cache_files import write_atomic

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
            write_atomic(self.directory / f"{key}.load", data, prefix=".tmp-")
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
