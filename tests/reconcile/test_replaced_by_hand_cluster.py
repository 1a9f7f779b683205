"""A Deployment replaced by hand (`kubectl replace --force`: deleted and created again)
records kubectl's manager as having set every field the server defaulted, and
configcenter's as having set none: those defaults are not drift, a hand change in the same
replace still is, and a heal leaves it in sync (on the real control plane, with the real
kubectl)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.apply_on_platforms.test_converge_cluster import _pin
from tests.reconcile.test_heal_cluster import drifts, reconcile
from tests.support.e2e_fixtures import World
from tests.support.k8s_cluster import Cluster, expect, k8s_world
from tests.support.k8s_fixtures import K8sNamespace

pytestmark = pytest.mark.k8s

#: worker/1.1.0's Deployment names a container port without its protocol (the server
#: fills in TCP) and leaves every other defaulted field out.
WITH_PORTS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ service }}
  labels: {app: {{ service }}}
spec:
  replicas: {{ replicas }}
  selector:
    matchLabels: {app: {{ service }}}
  template:
    metadata:
      labels: {app: {{ service }}}
    spec:
      containers:
      - name: app
        image: {{ image }}
        ports:
        - {name: http, containerPort: 8080}
"""


def _release_worker_with_ports(world: World) -> None:
    world.config.write("templates/worker/deployment.yaml.j2", WITH_PORTS)
    world.config.commit("worker 1.1.0: a container port")
    world.config.tag("worker/1.1.0")
    _pin(world, "worker", "1.1.0")


def kubectl(ns: K8sNamespace, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(ns.kubeconfig), "-n", ns.name, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def replace_by_hand(ns: K8sNamespace, change: Any = None) -> None:
    """`kubectl get -o json | kubectl replace --force -f -`, with `change` applied."""
    body = json.loads(kubectl(ns, "get", "deployment", "worker", "-o", "json"))
    if change is not None:
        change(body)
    kubectl(ns, "replace", "--force", "-f", "-", stdin=json.dumps(body))


def test_a_deployment_replaced_by_hand_is_in_sync_and_a_hand_change_in_it_is_drift(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",))
    _release_worker_with_ports(world)
    expect(world.cc("apply", "dev"), 0)
    live = cluster.deployment("worker")
    assert live.spec.template.spec.containers[0].ports[0].protocol == "TCP"  # a default
    managers = {m.manager for m in live.metadata.managed_fields}
    assert managers >= {"configcenter"}

    replace_by_hand(k8s_namespace)

    managers = {
        m.manager: m.operation for m in cluster.deployment("worker").metadata.managed_fields
    }
    assert managers.get("kubectl-replace") == "Update", managers
    code, report = reconcile(world)
    assert code == 0
    assert drifts(report) == {}, "the server's defaults are not drift"
    assert {s["service"]: s["status"] for s in report["services"]} == {"worker": "in_sync"}

    def add_env(body: dict[str, Any]) -> None:
        body["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "X", "value": "1"}]

    replace_by_hand(k8s_namespace, add_env)

    code, report = reconcile(world)
    assert code == 0
    env = "Deployment/worker spec.template.spec.containers[app].env[X]"
    assert drifts(report) == {f"{env}.name": (None, "X"), f"{env}.value": (None, "1")}
    healed = world.cc("reconcile", "dev", "--heal")
    assert healed.code == 0, healed.output
    assert not cluster.deployment("worker").spec.template.spec.containers[0].env
    assert drifts(reconcile(world)[1]) == {}
    # Each object replaced is said once, by the heal (not again by the adapter).
    said = [
        line
        for line in healed.output.splitlines()
        if "Deployment/worker" in line and ("healed" in line or "replaced" in line)
    ]
    assert len(said) == 1 and "worker: replaced Deployment/worker with what" in said[0], said
