"""Each service's plan digests kept between commands (`core.plan.PlanDigests`), on disk.

An entry's key names every input of the digests it holds, so it can never be stale;
the file is keyed by the code too (`load_store.code_salt`: the core's bytes), so a
configcenter that computes digests differently never uses another's entries. One file
per config repo and environment, written whole (temporary file, rename) only when a
plan added entries; a file that cannot be read is no entry, one that cannot be written
is skipped.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from configcenter.adapters.load_store import code_salt

LIMIT = 50_000  # entries per file; past it only the entries of the last plan are kept


Entry = tuple[str, str, bool]


class PlanDigestFile(MutableMapping[str, Entry]):
    """The digests of one environment's services, read on creation; `save` writes back."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".pickle")
        self._name = name
        self._entries: dict[str, Entry] = {}
        self._used: set[str] = set()
        self._added = False
        try:
            with self.path.open("rb") as handle:
                data = pickle.load(handle)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError):
            return
        if (
            isinstance(data, dict)
            and data.get("code") == code_salt()
            and data.get("name") == name
            and isinstance(data.get("digests"), dict)
        ):
            self._entries = data["digests"]

    def __getitem__(self, key: str) -> Entry:
        found = self._entries[key]
        self._used.add(key)
        return found

    def __setitem__(self, key: str, value: Entry) -> None:
        self._entries[key] = value
        self._used.add(key)
        self._added = True

    def __delitem__(self, key: str) -> None:
        del self._entries[key]
        self._used.discard(key)
        self._added = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def save(self) -> None:
        """Write back when entries were added (past `LIMIT`, only those this run used)."""
        if not self._added:
            return
        entries = self._entries
        if len(entries) >= LIMIT:
            entries = {k: v for k, v in entries.items() if k in self._used}
        data = {"code": code_salt(), "name": self._name, "digests": entries}
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                pickle.dump(data, handle, protocol=5)
            os.replace(tmp, self.path)
        except OSError:
            return  # a cache is an optimisation: never fail a command over it
        self._added = False
