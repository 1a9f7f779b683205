"""Each service's plan digests kept between commands (`core.plan.PlanDigests`), on disk.

An entry's key names every input of the digests it holds, so it can never be stale;
the file is keyed by the code too (`load_store.code_salt`: the core's bytes), so a
configcenter that computes digests differently never uses another's entries. One file
per config repo and environment, written whole (`cache_files.write_atomic`) only when a
plan added entries; a file that cannot be read is no entry, one that cannot be written
is skipped. Two plans of one environment at once (a command and serve) both keep their
entries: a writer that finds the file written since it read it merges those entries in
(`cache_files.save_merged`).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from configcenter.adapters.cache_files import Data, pickled, save_merged, stamp
from configcenter.adapters.load_store import code_salt

LIMIT = 50_000  # entries per file; past it only the entries of the last plan are kept


Entry = tuple[str, str, bool]


class PlanDigestFile(MutableMapping[str, Entry]):
    """The digests of one environment's services, read on creation; `save` writes back."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".pickle")
        self._name = name
        self._used: set[str] = set()
        self._added: dict[str, Entry] = {}  # set by this run: ours over another writer's
        self._removed: set[str] = set()
        self._read = stamp(self.path)  # the version read (before reading it: never later)
        self._entries: dict[str, Entry] = self._load()

    def _load(self) -> dict[str, Entry]:
        """The entries in the file now ({} when it is missing, unreadable or not ours)."""
        try:
            with self.path.open("rb") as handle:
                data = pickle.load(handle)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError):
            return {}
        if (
            isinstance(data, dict)
            and data.get("code") == code_salt()
            and data.get("name") == self._name
            and isinstance(data.get("digests"), dict)
        ):
            entries: dict[str, Entry] = data["digests"]
            return entries
        return {}

    def __getitem__(self, key: str) -> Entry:
        found = self._entries[key]
        self._used.add(key)
        return found

    def __setitem__(self, key: str, value: Entry) -> None:
        self._entries[key] = value
        self._used.add(key)
        self._added[key] = value
        self._removed.discard(key)

    def __delitem__(self, key: str) -> None:
        del self._entries[key]
        self._used.discard(key)
        self._added.pop(key, None)
        self._removed.add(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def save(self) -> None:
        """Write back when entries were added or removed (past `LIMIT`, only those this run
        used), merged with those another writer saved since this one read the file."""
        if not self._added and not self._removed:
            return
        try:
            self._read = save_merged(self.path, self._read, self._data, prefix=".tmp-")
        except OSError:
            return  # a cache is an optimisation: never fail a command over it
        self._added, self._removed = {}, set()

    def _data(self, changed: bool) -> Data:
        """What `save` writes (`changed`: the file is another writer's since it was read)."""
        if changed:
            fresh = self._load()
            for key in self._removed:
                fresh.pop(key, None)
            self._entries = {**self._entries, **fresh, **self._added}
            for key in self._removed:
                self._entries.pop(key, None)
        entries = self._entries
        if len(entries) >= LIMIT:
            entries = {k: v for k, v in entries.items() if k in self._used}
        return pickled({"code": code_salt(), "name": self._name, "digests": entries})
