"""Who runs the schedule: this process alone, or the replica holding the leader Lease.

With `--lease-namespace`, serve opens the Kubernetes Lease through
`configcenter.wiring.open_lease_leader` (`configcenter.adapters.k8s_lease`);
without it the one process leads.
"""

from __future__ import annotations

from configcenter.ports.leadership import Leadership

__all__ = ["Leadership", "SoleLeader"]


class SoleLeader:
    """Without a cluster the single serve process runs the schedule."""

    def is_leader(self) -> bool:
        return True

    def problem(self) -> str:
        return ""

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None
