"""Plan digests kept between commands: `core.plan.PlanDigests` that can be saved.

`configcenter.wiring.open_plan_digests` opens the one adapter
(`configcenter.adapters.plan_digests`: a file per config repo and environment).
"""

from __future__ import annotations

from typing import Protocol

from configcenter.core.plan import PlanDigests


class KeptPlanDigests(PlanDigests, Protocol):
    def save(self) -> None:
        """Write back what this run added (best effort: never fails a command)."""
        ...
