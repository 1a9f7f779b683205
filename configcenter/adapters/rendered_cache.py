"""Rendered files kept on disk between runs (the core's `RenderedRecords`): the edge half
of rendering, opened by `configcenter.wiring.open_render_cache`; it creates its directory
and writes the packs, so the core itself writes nothing. Neither this module nor a render
whose files are all kept imports Jinja.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import marshal
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from configcenter.adapters.cache_files import Stamp, save_merged, stamp

_log = logging.getLogger("configcenter")


#: A pack keeps the records its last run used, and older ones up to this many times as
#: many (a branch switched back and forth renders from records either way).
KEEP_FACTOR = 2
KEEP_AT_LEAST = 1_000
#: Records put in memory by one process before it stops keeping more (a long-lived serve).
MAX_NEW = 100_000


def engine_id() -> str:
    """What renders the files besides their inputs: configcenter's own code (the size and
    modification time of each of its modules), Jinja and MarkupSafe (their version and
    installed files) and Python."""
    import configcenter

    root = Path(configcenter.__file__).parent
    h = hashlib.sha256(f"{sys.version}\0".encode())
    # Found, not imported (a render whose files are all kept never loads Jinja): the
    # package's __init__.py, where its version is written, and its size and time.
    for name in ("jinja2", "markupsafe"):
        spec = importlib.util.find_spec(name)
        library = spec.origin if spec is not None else None
        with contextlib.suppress(OSError, TypeError):
            stat = os.stat(str(library))
            h.update(f"{library}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            h.update(Path(str(library)).read_bytes())
    for folder, dirs, names in sorted(os.walk(root)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(n for n in names if n.endswith(".py")):
            try:
                stat = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            h.update(f"{folder}/{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


class RenderedFilesCache:
    """Rendered files on disk between runs (the core's `RenderedRecords`), best effort.

    Keys are the renderer's: a digest of everything a render reads, so a record is never
    stale. One pack file per group (a project's environment) under a folder named by
    `engine_id()`: another configcenter, Jinja or Python starts afresh (the old folders
    are removed when a pack is written). The files hold secret *references* only, as the
    deploy repo does. A pack that cannot be read is empty; one that cannot be written
    costs a render next time, with one warning.

    Writers of one pack (a command and serve, two commands) take its lock, and one that
    finds the pack written since it read it merges those records in before it writes:
    each writer's records are kept (`cache_files`).
    """

    def __init__(self, directory: Path, engine: str | None = None) -> None:
        self.directory = directory
        self._engine = engine
        self._packs: dict[str, dict[str, dict[str, bytes]]] = {}
        self._stamps: dict[str, Stamp | None] = {}  # the version of each pack read
        self._used: dict[str, set[str]] = {}
        self._new: dict[str, dict[str, dict[str, bytes]]] = {}
        self._count = 0
        self._warned = False

    @property
    def engine(self) -> str:
        if self._engine is None:
            self._engine = engine_id()
        return self._engine

    def _path(self, group: str) -> Path:
        name = hashlib.sha256(group.encode()).hexdigest()[:24]
        return self.directory / self.engine / f"{name}.pack"

    def _pack(self, group: str) -> dict[str, dict[str, bytes]]:
        pack = self._packs.get(group)
        if pack is None:
            pack, self._stamps[group] = self._read(self._path(group))
            self._packs[group] = pack
        return pack

    @staticmethod
    def _read(path: Path) -> tuple[dict[str, dict[str, bytes]], Stamp | None]:
        """The pack at `path` and its version ({} when there is none or it is unreadable:
        rendered anew, written whole at save)."""
        version = stamp(path)
        try:
            loaded = marshal.loads(path.read_bytes())
        except (OSError, EOFError, ValueError, TypeError):
            return {}, version
        return (loaded if isinstance(loaded, dict) else {}), version

    def get(self, group: str, key: str) -> Mapping[str, bytes] | None:
        files = self._new.get(group, {}).get(key)
        if files is None:
            files = self._pack(group).get(key)
            if not isinstance(files, dict) or not all(
                isinstance(name, str) and isinstance(data, bytes) for name, data in files.items()
            ):
                return None  # not what this cache writes: rendered anew
        self._used.setdefault(group, set()).add(key)
        return files

    def put(self, group: str, key: str, files: Mapping[str, bytes]) -> None:
        if self._count >= MAX_NEW:
            return
        self._count += 1
        self._new.setdefault(group, {})[key] = dict(files)

    def save(self) -> None:
        """Write the packs that gained records (and drop other engines' folders)."""
        for group, new in self._new.items():
            self._save_pack(group, new)
        if self._new:
            self._drop_other_engines()
        self._new = {}

    def _save_pack(self, group: str, new: dict[str, dict[str, bytes]]) -> None:
        path = self._path(group)
        kept = self._pack(group)

        def data(changed: bool) -> bytes:
            nonlocal kept
            if changed:
                # Written by another process since we read it: its records first.
                fresh, _ = self._read(path)
                kept = {**fresh, **{k: v for k, v in kept.items() if k not in fresh}}
            kept = self._kept(group, kept, new)
            return marshal.dumps(kept)

        try:
            self._stamps[group] = save_merged(path, self._stamps.get(group), data, ".pack-")
        except OSError as exc:
            if not self._warned:
                _log.warning(
                    "rendered-files cache %s cannot be written (%s); rendering again next time",
                    path.parent,
                    exc.strerror or exc,
                )
            self._warned = True
            return
        self._packs[group] = kept

    def _kept(
        self, group: str, old: dict[str, dict[str, bytes]], new: dict[str, dict[str, bytes]]
    ) -> dict[str, dict[str, bytes]]:
        """The records a pack keeps: those this run used, its new ones, then older ones up
        to KEEP_FACTOR times as many (at least KEEP_AT_LEAST)."""
        used = self._used.get(group, set())
        kept: dict[str, dict[str, bytes]] = {k: old[k] for k in used if k in old}
        kept.update(new)
        room = max(KEEP_FACTOR * len(kept), KEEP_AT_LEAST) - len(kept)
        for key, files in old.items():
            if room <= 0:
                break
            if key not in kept:
                kept[key] = files
                room -= 1
        return kept

    def _drop_other_engines(self) -> None:
        try:
            others = [p for p in self.directory.iterdir() if p.name != self.engine]
        except OSError:
            return
        for other in others:
            shutil.rmtree(other, ignore_errors=True)
