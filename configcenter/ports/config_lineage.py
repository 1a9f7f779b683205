"""The config repo's history as apply's stale/dirty guard asks about it.

apply deploys commits: it refuses a work tree whose files it reads have
uncommitted changes, and a config commit older than (or diverged from) the one a
service was last applied from. `configcenter.wiring.open_config_lineage` opens
the one adapter (`configcenter.adapters.git_lineage`, which asks Git).
"""

from __future__ import annotations

from typing import Literal, Protocol

#: How the config commit being applied relates to the one applied last.
Relation = Literal["same", "newer", "older", "diverged", "unknown"]


class ConfigLineage(Protocol):
    def dirty_paths(self) -> list[str]:
        """The files apply reads that differ from HEAD: modified, staged, deleted or
        untracked; sorted."""
        ...

    def relation(self, applied: str, current: str) -> Relation:
        """How commit `current` (being applied) relates to `applied` (the one applied last):
        `unknown` when this clone lacks either."""
        ...
