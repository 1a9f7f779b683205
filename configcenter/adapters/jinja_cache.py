"""Jinja's compiled templates kept on disk between runs: the edge half of rendering.

The core's `Renderer` takes any `jinja2.BytecodeCache`; this one, opened by
`configcenter.wiring.open_bytecode_cache` when a template first compiles, creates its
directory and writes the files, so the core itself writes nothing. (The rendered files
kept between runs are configcenter.adapters.rendered_cache.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import jinja2
import jinja2.bccache

from configcenter.adapters.cache_files import write_atomic

_log = logging.getLogger("configcenter")


class BestEffortBytecodeCache(jinja2.FileSystemBytecodeCache):
    """Jinja's compiled templates on disk, as an optimisation only.

    A cache directory that cannot be created, read or written (read-only, full,
    owned by someone else) costs a compile, never a command: it is skipped with one
    warning. Each entry is written whole (`cache_files.write_atomic`, not Jinja's own
    temporary file, which a killed writer would leave behind for good): a reader sees the
    last complete entry, and a killed writer's temporary file is swept by a later write.
    """

    def __init__(self, directory: Path) -> None:
        self._broken = False
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._skip(directory, exc)
        super().__init__(str(directory))

    def _skip(self, directory: Path | str, exc: OSError) -> None:
        if not self._broken:
            _log.warning(
                "template cache %s cannot be used (%s); rendering without it",
                directory,
                exc.strerror or exc,
            )
        self._broken = True

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if self._broken:
            return
        try:
            super().load_bytecode(bucket)
        except (OSError, EOFError, ValueError) as exc:
            bucket.reset()
            if isinstance(exc, OSError):
                self._skip(self.directory, exc)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if self._broken:
            return
        try:
            path = Path(self._get_cache_filename(bucket))
            write_atomic(path, bucket.write_bytecode, prefix=".jinja-")
        except OSError as exc:
            self._skip(self.directory, exc)
