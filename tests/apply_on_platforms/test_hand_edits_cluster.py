"""A workload edited by hand is not "nothing to do" (on the real control plane).

`kubectl set image` or `kubectl scale` leaves the release annotation alone, so
the platform still says it runs the current release. The plan must still see
that the image or the replica count is not the release's, say so, and the next
`apply` must make the platform run what the deploy repo says again: the
release's own ReplicaSet scaled back up, no new release, no commit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.apply_on_platforms.test_kubernetes import Cluster, expect, k8s_world, services
from tests.support.e2e_fixtures import World
from tests.support.helpers import poll
from tests.support.k8s_fixtures import K8sNamespace
from tests.support.rollout_fixtures import set_service

pytestmark = pytest.mark.k8s

RELEASE = "configcenter.io/release"


@pytest.fixture
def cluster(k8s_namespace: K8sNamespace) -> Cluster:
    return Cluster(k8s_namespace)


def plan_of(world: World) -> dict[str, dict[str, Any]]:
    plan = json.loads(world.ok("plan", "dev", "--json").stdout)
    return {s["service"]: s for s in plan["services"]}


def only_rs(cluster: Cluster, service: str) -> str | None:
    """The one ReplicaSet of the service that has replicas, None while several have."""
    active = [name for name, n in cluster.replica_sets(service).items() if n > 0]
    return active[0] if len(active) == 1 else None


def image_of(cluster: Cluster, service: str) -> str:
    return str(cluster.deployment(service).spec.template.spec.containers[0].image)


def test_an_image_or_replicas_changed_by_hand_is_a_plan_step_and_apply_restores_them(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "worker"))
    world.ok("apply", "dev")
    released = {name: record["release"]["id"] for name, record in services(world).items()}
    worker_rs, db_rs = cluster.active_rs("worker"), cluster.active_rs("db")
    worker_image = image_of(cluster, "worker")
    # kubectl set image deploy/worker app=...:hacked; kubectl scale deploy/db --replicas=3
    hacked = {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x:hacked"}]}}}
    }
    cluster.apps.patch_namespaced_deployment("worker", cluster.ns, hacked)
    cluster.apps.patch_namespaced_deployment_scale("db", cluster.ns, {"spec": {"replicas": 3}})
    poll(lambda: only_rs(cluster, "worker") not in (None, worker_rs), 30, "the hacked rollout")

    plan = plan_of(world)
    for name in ("db", "worker"):
        assert (plan[name]["action"], plan[name]["reasons"]) == ("update", ["platform"]), name
        assert plan[name]["platform"]["step"] == "rollout"
    assert "x:hacked" in plan["worker"]["platform"]["why"]
    assert "replicas 3" in plan["db"]["platform"]["why"]
    text = world.ok("plan", "dev").stdout
    assert "Nothing to do" not in text and "x:hacked" in text
    head = world.head()

    expect(world.cc("apply", "dev"), 0)

    assert image_of(cluster, "worker") == worker_image
    assert cluster.deployment("db").spec.replicas == 1
    # The release's own pod template again: its ReplicaSet is scaled back up.
    poll(lambda: only_rs(cluster, "worker") == worker_rs, 30, "worker's own ReplicaSet")
    assert cluster.active_rs("db") == db_rs
    assert {n: r["release"]["id"] for n, r in services(world).items()} == released
    assert world.head() == head  # nothing to commit: the deploy repo was right
    assert {s["action"] for s in plan_of(world).values()} == {"noop"}
    report = json.loads(world.ok("reconcile", "dev", "--json").stdout)
    assert [d for s in report["services"] for d in s["drifts"]] == []


def test_a_blocked_service_whose_workload_is_gone_gets_its_good_release_back(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """Blocked means "do not retry the failed release", not "leave the platform without the
    release the deploy repo holds": a Deployment deleted (or a namespace lost) is restored."""
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",), progress_deadline=5)
    world.ok("apply", "dev")
    good = services(world)["worker"]["release"]["id"]
    good_rs = cluster.active_rs("worker")
    set_service(world, "worker", LOG_LEVEL="debug", NEVER_READY="true")
    expect(world.cc("apply", "dev"), 3)  # rolled back to the good release
    assert plan_of(world)["worker"]["action"] == "blocked"
    cluster.apps.delete_namespaced_deployment("worker", cluster.ns)
    poll(lambda: "worker" not in cluster.deployments(), 30, "the Deployment gone")

    plan = plan_of(world)["worker"]
    assert (plan["action"], plan["reasons"]) == ("update", ["platform"])
    assert plan["platform"]["release"] == good and "roll it out again" in plan["platform"]["why"]

    expect(world.cc("apply", "dev"), 0)

    assert cluster.deployment("worker").metadata.annotations[RELEASE] == good
    poll(lambda: only_rs(cluster, "worker") == good_rs, 30, "the good release's ReplicaSet")
    assert services(world)["worker"]["release"]["id"] == good
    assert plan_of(world)["worker"]["action"] == "blocked"  # the failed release still is


def test_reconcile_of_a_deleted_deployment_names_only_what_is_gone(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """The ConfigMap and Secret versions the release reads are still there (kubectl get
    shows them): only the Deployment is missing, and only it is reported as such."""
    world = k8s_world(tmp_path, k8s_namespace, services=("db",))
    world.ok("apply", "dev")
    kept = {f"ConfigMap/{cm}" for cm in _versions(cluster, "ConfigMap", "db-config-")}
    kept |= {f"Secret/{s}" for s in _versions(cluster, "Secret", "db-secrets-")}
    assert kept  # the release has both
    cluster.apps.delete_namespaced_deployment("db", cluster.ns)
    poll(lambda: "db" not in cluster.deployments(), 30, "the Deployment gone")

    report = json.loads(world.ok("reconcile", "dev", "--json").stdout)

    (db,) = report["services"]
    missing = {d["field"] for d in db["drifts"] if d["desired"] == "present"}
    assert missing == {"Deployment/db"}, db["drifts"]
    assert not kept & {d["field"] for d in db["drifts"]}
    for ref in kept:  # as kubectl sees them
        kind, name = ref.split("/")
        read = cluster.core.read_namespaced_config_map if kind == "ConfigMap" else None
        assert (read or cluster.core.read_namespaced_secret)(name, cluster.ns).metadata.uid


def _versions(cluster: Cluster, kind: str, prefix: str) -> list[str]:
    listed = (
        cluster.core.list_namespaced_config_map(cluster.ns)
        if kind == "ConfigMap"
        else cluster.core.list_namespaced_secret(cluster.ns)
    )
    return [o.metadata.name for o in listed.items if o.metadata.name.startswith(prefix)]


def test_a_template_whose_first_container_is_a_sidecar_is_no_hand_edit(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """The workload's first image is not the release's image here, by the template's own
    choice: the platform's diff of the release says so, and nothing is rolled out again."""
    from tests.support.rollout_fixtures import DEPLOYMENT_J2

    world = k8s_world(tmp_path, k8s_namespace, services=("worker",))
    sidecar = DEPLOYMENT_J2.replace(
        "      containers:\n",
        "      containers:\n      - name: proxy\n        image: registry.test/shop/proxy:2.0\n",
    )
    assert sidecar != DEPLOYMENT_J2
    world.config.release("worker", "1.1.0", {"deployment.yaml.j2": sidecar})
    rel = "environments/dev/worker.yaml"
    world.config.write(rel, world.config.read(rel).replace("template: 1.0.0", "template: 1.1.0"))
    world.config.commit("dev: worker 1.1.0, a sidecar first")
    world.ok("apply", "dev")
    assert image_of(cluster, "worker") == "registry.test/shop/proxy:2.0"
    head, before = world.head(), cluster.snapshot()

    assert plan_of(world)["worker"]["action"] == "noop"
    again = world.ok("apply", "dev")

    assert "nothing to do" in again.output.lower()
    assert world.head() == head and cluster.snapshot() == before
