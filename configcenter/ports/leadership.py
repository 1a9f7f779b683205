"""The leadership port: which serve replica runs the schedule (reconcile, poll, reaping).

`configcenter.serve.leader.SoleLeader` is the single process on its own; the
Kubernetes Lease (`configcenter.adapters.k8s_lease`, opened by
`configcenter.wiring.open_lease_leader`) elects one replica of several.
"""

from __future__ import annotations

from typing import Protocol


class Leadership(Protocol):
    def is_leader(self) -> bool: ...

    def problem(self) -> str:
        """Why this replica cannot lead now (no namespace, no RBAC); "" when it can."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...
