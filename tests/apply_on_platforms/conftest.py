"""The `cluster` fixture of the cluster tests (tests/support/k8s_cluster.py)."""

from tests.support.k8s_cluster import cluster

__all__ = ["cluster"]
