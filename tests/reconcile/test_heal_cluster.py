"""reconcile --heal makes live objects equal to the release on everything configcenter
renders, leaves other managers' labels and annotations alone, and never rewrites a
release's recorded outcome (on the real control plane)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.apply_on_platforms.test_converge_cluster import _pin, _release_worker_with_service
from tests.support.e2e_fixtures import SECRET_ENV, World
from tests.support.k8s_cluster import Cluster, expect, k8s_world, services
from tests.support.k8s_fixtures import K8sNamespace, version_in_use

pytestmark = pytest.mark.k8s


def reconcile(world: World, *args: str) -> tuple[int, dict[str, Any]]:
    result = world.cc("reconcile", "dev", "--json", *args)
    return result.code, json.loads(result.stdout)


def drifts(report: dict[str, Any]) -> dict[str, tuple[str | None, str | None]]:
    return {d["field"]: (d["desired"], d["live"]) for s in report["services"] for d in s["drifts"]}


def test_heal_removes_foreign_fields_keeps_foreign_metadata_and_the_service_uid(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",))
    _release_worker_with_service(world)
    _pin(world, "worker", "1.1.0")
    expect(world.cc("apply", "dev"), 0)
    service = cluster.core.read_namespaced_service("worker", cluster.ns)
    uid, ip = service.metadata.uid, service.spec.cluster_ip
    head, record = world.head(), services(world)["worker"]
    rs = cluster.active_rs("worker")

    # Other managers at work: `kubectl set env`, a hand-added ConfigMap key, a Service
    # port edited by hand, and labels/annotations a policy controller adds.
    cluster.apps.patch_namespaced_deployment(
        "worker",
        cluster.ns,
        {
            "metadata": {"labels": {"team": "shop"}, "annotations": {"owner": "ops"}},
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "app", "env": [{"name": "X", "value": "1"}]}]}
                }
            },
        },
        field_manager="kubectl-set",
    )
    cluster.core.patch_namespaced_config_map(
        "worker-config", cluster.ns, {"data": {"EXTRA": "1"}}, field_manager="kubectl-edit"
    )
    cluster.core.patch_namespaced_service(
        "worker",
        cluster.ns,
        [{"op": "replace", "path": "/spec/ports/0/port", "value": 8080}],
        field_manager="kubectl-edit",
    )

    code, report = reconcile(world)
    assert code == 0
    found = drifts(report)
    assert found["Deployment/worker spec.template.spec.containers[app].env[X].value"] == (
        None,
        "1",
    )
    assert found["ConfigMap/worker-config data.EXTRA"] == (None, "1")
    assert found["Service/worker spec.ports[http].port"] == ("80", "8080")
    assert not [f for f in found if "team" in f or "owner" in f], "others' metadata is not drift"

    code, healed = reconcile(world, "--heal")

    assert code == 0, healed
    assert [(r["service"], r["outcome"]) for r in healed["healed"]] == [("worker", "healthy")]
    live = cluster.deployment("worker")
    assert not live.spec.template.spec.containers[0].env
    assert (live.metadata.labels["team"], live.metadata.annotations["owner"]) == ("shop", "ops")
    assert cluster.active_rs("worker") == rs, "back on the release's own ReplicaSet"
    assert "EXTRA" not in cluster.config("worker")
    service = cluster.core.read_namespaced_service("worker", cluster.ns)
    assert [p.port for p in service.spec.ports] == [80]
    assert (service.metadata.uid, service.spec.cluster_ip) == (uid, ip)
    assert world.head() == head and services(world)["worker"] == record, "heal records nothing"
    assert drifts(reconcile(world)[1]) == {}


def test_a_failed_heal_is_a_failed_run_and_leaves_the_release_record_alone(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "api"))
    expect(world.cc("apply", "dev"), 0)
    head, record = world.head(), services(world)["api"]
    cluster.apps.patch_namespaced_deployment("api", cluster.ns, {"spec": {"replicas": 3}})
    # The Secret that holds api's values is gone, and its value cannot be resolved now: the
    # heal has to make the Secret again and cannot (while the Secret exists, a heal reuses it).
    cluster.core.delete_namespaced_secret(
        version_in_use(cluster.api, cluster.ns, "api-secrets"), cluster.ns
    )
    secret = world.env.pop(SECRET_ENV)
    try:
        code, report = reconcile(world, "--heal")
    finally:
        world.env[SECRET_ENV] = secret

    assert code != 0
    [healed] = report["healed"]
    assert (healed["service"], healed["outcome"]) == ("api", "failed")
    assert SECRET_ENV in healed["reason"]
    assert world.head() == head, "nothing is committed for a failed heal"
    assert services(world)["api"] == record
    assert record["release"]["outcome"] == "healthy"
    assert world.runs()[-1][1:] == ("reconcile", "dev", "cli", "failed")
    # The record is untouched, and the plan says the truth: api's Secret is gone, so its
    # release does not run whole and apply would roll it out again.
    plan = json.loads(world.ok("plan", "dev", "--json").stdout)
    by_service = {s["service"]: s for s in plan["services"]}
    assert {name: s["action"] for name, s in by_service.items()} == {"db": "noop", "api": "update"}
    assert by_service["api"]["reasons"] == ["platform"]
    code, _ = reconcile(world, "--heal")
    assert code == 0 and cluster.deployment("api").spec.replicas == 1
    plan = json.loads(world.ok("plan", "dev", "--json").stdout)
    assert {s["service"]: s["action"] for s in plan["services"]} == {"db": "noop", "api": "noop"}


def _running(cluster: Cluster) -> dict[str, object]:
    """What a restart or a re-creation would move: workloads, ReplicaSets (with their
    pod-template hashes) and pods, by UID."""
    out: dict[str, object] = {}
    for d in cluster.apps.list_namespaced_deployment(cluster.ns).items:
        out[f"Deployment/{d.metadata.name}"] = (d.metadata.uid, d.metadata.generation)
    for rs in cluster.apps.list_namespaced_replica_set(cluster.ns).items:
        out[f"ReplicaSet/{rs.metadata.name}"] = (
            rs.metadata.uid,
            rs.metadata.labels.get("pod-template-hash"),
            rs.spec.replicas,
        )
    for pod in cluster.core.list_namespaced_pod(cluster.ns).items:
        out[f"Pod/{pod.metadata.name}"] = pod.metadata.uid
    return out


def test_heal_deletes_a_hand_made_config_map_with_our_labels_and_nothing_that_runs(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    from kubernetes import client

    world = k8s_world(tmp_path, k8s_namespace, services=("db", "worker"))
    expect(world.cc("apply", "dev"), 0)
    head, record = world.head(), services(world)
    labels = {
        "app.kubernetes.io/managed-by": "configcenter",
        "configcenter.io/env": "dev",
        "configcenter.io/service": "worker",
    }
    cluster.core.create_namespaced_config_map(
        cluster.ns,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="worker-extra", labels=labels),
            data={"EXTRA": "1"},
        ),
        field_manager="kubectl-create",
    )
    # Not ours to delete: a ConfigMap made by hand without configcenter's labels.
    cluster.core.create_namespaced_config_map(
        cluster.ns,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="unlabelled"), data={"A": "1"}),
    )
    running = _running(cluster)

    code, report = reconcile(world)
    assert code == 0
    assert drifts(report) == {"ConfigMap/worker-extra": (None, "present")}

    code, healed = reconcile(world, "--heal")

    assert code == 0, healed
    assert [(r["service"], r["outcome"]) for r in healed["healed"]] == [("worker", "healthy")]
    names = {cm.metadata.name for cm in cluster.core.list_namespaced_config_map(cluster.ns).items}
    assert "worker-extra" not in names and "unlabelled" in names
    assert _running(cluster) == running, "nothing that runs was restarted or re-created"
    assert world.head() == head and services(world) == record, "heal records nothing"
    code, after = reconcile(world)
    assert code == 0 and after["drift"] is False, after
    assert {s["service"]: s["status"] for s in after["services"]} == {
        "db": "in_sync",
        "worker": "in_sync",
    }
