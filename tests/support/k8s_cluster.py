"""The Kubernetes test bed as the cluster tests read it: a world whose platform is the test's
namespace, the namespace's objects straight from the API server (`Cluster`, and the
`cluster` fixture that tests/apply_on_platforms and tests/reconcile get from their
conftest), and the few readings of the CLI's answers every such test makes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.e2e_fixtures import CliResult, World
from tests.support.k8s_fixtures import K8sNamespace, version_in_use
from tests.support.rollout_fixtures import make_rollout_world

#: The annotation naming the release a Deployment runs.
RELEASE = "configcenter.io/release"


def k8s_world(tmp_path: Path, ns: K8sNamespace, **kwargs: Any) -> World:
    return make_rollout_world(
        tmp_path / "world", namespace=ns.name, kubeconfig=ns.kubeconfig, **kwargs
    )


class Cluster:
    """What runs in the test's namespace, read straight from the API server."""

    def __init__(self, ns: K8sNamespace) -> None:
        from kubernetes import client

        self.ns = ns.name
        self.api = ns.api_client()
        self.apps = client.AppsV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

    def deployment(self, name: str) -> Any:
        return self.apps.read_namespaced_deployment(name, self.ns)

    def deployments(self) -> set[str]:
        return {d.metadata.name for d in self.apps.list_namespaced_deployment(self.ns).items}

    def replica_sets(self, service: str) -> dict[str, int]:
        """ReplicaSet name -> desired replicas, for one service's Deployment."""
        items = self.apps.list_namespaced_replica_set(self.ns, label_selector=f"app={service}")
        return {rs.metadata.name: rs.spec.replicas or 0 for rs in items.items}

    def active_rs(self, service: str) -> str:
        """The one ReplicaSet that has replicas: what the cluster runs."""
        active = [name for name, n in self.replica_sets(service).items() if n > 0]
        assert len(active) == 1, f"{service}: ReplicaSets with replicas: {active}"
        return active[0]

    def config(self, service: str) -> dict[str, str]:
        """The env ConfigMap the service's workloads use now (ENV values without secrets)."""
        name = version_in_use(self.core.api_client, self.ns, f"{service}-config")
        return dict(self.core.read_namespaced_config_map(name, self.ns).data or {})

    def snapshot(self) -> dict[str, object]:
        """Everything a change would touch: specs (generations), data, ReplicaSets."""
        out: dict[str, object] = {}
        for d in self.apps.list_namespaced_deployment(self.ns).items:
            out[f"Deployment/{d.metadata.name}"] = (d.metadata.generation, d.metadata.annotations)
        for cm in self.core.list_namespaced_config_map(self.ns).items:
            out[f"ConfigMap/{cm.metadata.name}"] = cm.data
        for s in self.core.list_namespaced_secret(self.ns).items:
            out[f"Secret/{s.metadata.name}"] = s.data
        for rs in self.apps.list_namespaced_replica_set(self.ns).items:
            out[f"ReplicaSet/{rs.metadata.name}"] = rs.spec.replicas
        return out

    def healthy(self, service: str) -> bool:
        d = self.deployment(service)
        want = d.spec.replicas
        return bool(
            d.status.observed_generation == d.metadata.generation
            and d.status.updated_replicas == want
            and d.status.ready_replicas == want
            and (d.status.replicas or 0) == want
        )


@pytest.fixture
def cluster(k8s_namespace: K8sNamespace) -> Cluster:
    return Cluster(k8s_namespace)


def services(world: World) -> dict[str, Any]:
    found = world.state("dev")["services"]
    assert isinstance(found, dict)
    return found


def service_files(world: World, service: str, rev: str = "refs/heads/main") -> dict[str, bytes]:
    return {p: d for p, d in world.files(rev).items() if p.startswith(f"dev/{service}/")}


def expect(result: CliResult, code: int) -> CliResult:
    assert result.code == code, f"exit {result.code}, expected {code}:\n{result.output}"
    return result


def plan_actions(world: World) -> dict[str, str]:
    plan = json.loads(world.ok("plan", "dev", "--json").stdout)
    return {s["service"]: s["action"] for s in plan["services"]}


def plan_of(world: World) -> dict[str, dict[str, Any]]:
    """dev's plan (`plan dev --json`), service -> its entry."""
    plan = json.loads(world.ok("plan", "dev", "--json").stdout)
    return {s["service"]: s for s in plan["services"]}
