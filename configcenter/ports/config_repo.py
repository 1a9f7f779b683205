"""The config repo port: what commands need of the config repo beyond what the core reads.

The core loads through `configcenter.core.source.ConfigSource` (work tree files,
template tags, template trees); a command also tags released templates and keeps
the adapter's caches between runs. `configcenter.wiring.open_config_repo` opens
the one adapter (`configcenter.adapters.git_config_repo`).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Protocol

from configcenter.core.source import ConfigSource


class ConfigRepo(ConfigSource, Protocol):
    def create_tag(self, name: str, message: str) -> str:
        """An annotated tag at HEAD; its commit sha. Refuses to move an existing tag."""
        ...

    @property
    def consumption_cache(self) -> MutableMapping[str, tuple[str, ...]]:
        """What each template version reads, by content-addressed key, kept between runs
        (for the renderer); `save_caches` writes it back."""
        ...

    def save_caches(self) -> None:
        """Keep what was read (git objects, YAML parses, consumption) for the next run."""
        ...
