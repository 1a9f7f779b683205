"""The config repo port: what commands need of the config repo beyond what the core reads.

The core loads through `configcenter.core.source.ConfigSource` (work tree files,
template tags, template trees); a command also tags released templates and keeps
the adapter's caches between runs. `configcenter.wiring.open_config_repo` opens
the one adapter (`configcenter.adapters.git_config_repo`).
"""

from __future__ import annotations

from typing import Protocol

from configcenter.core.source import ConfigSource


class ConfigRepo(ConfigSource, Protocol):
    def create_tag(self, name: str, message: str) -> str:
        """An annotated tag at HEAD; its commit sha. Refuses to move an existing tag."""
        ...

    def save_caches(self) -> None:
        """Keep what was read (git objects, YAML parses) for the next run."""
        ...
