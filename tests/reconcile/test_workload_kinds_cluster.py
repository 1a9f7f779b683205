"""Drift of StatefulSets and DaemonSets after a real apply: server defaults are not drift.

The API server stores a StatefulSet's `volumeClaimTemplates` whole (an atomic
list, so managedFields cannot tell our fields from its defaults) and fills in
`updateStrategy`, `podManagementPolicy`, `revisionHistoryLimit` and the
DaemonSet's rollout knobs; none of that may read as drift.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from configcenter.usecases.apply import ApplyOptions, apply_env
from configcenter.usecases.reconcile import reconcile
from tests.support.serve_fixtures import ShopWorld, make_shop_world

pytestmark = pytest.mark.k8s

WORKLOADS = """\
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ service }}
  labels: {app: {{ service }}}
spec:
  replicas: {{ replicas }}
  serviceName: {{ service }}
  updateStrategy: {type: RollingUpdate}
  selector:
    matchLabels: {app: {{ service }}}
  template:
    metadata:
      labels: {app: {{ service }}}
    spec:
      containers:
      - name: app
        image: {{ image }}
        resources:
          requests: {cpu: 0.25}
        volumeMounts:
        - {name: data, mountPath: /data}
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 0.5Gi}
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ service }}-agent
spec:
  revisionHistoryLimit: 5
  selector:
    matchLabels: {app: {{ service }}-agent}
  template:
    metadata:
      labels: {app: {{ service }}-agent}
    spec:
      nodeSelector: {type: kwok}
      tolerations:
      - {key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}
      containers:
      - name: agent
        image: registry.test/shop/agent:1.0
---
apiVersion: v1
kind: Service
metadata:
  name: {{ service }}
spec:
  clusterIP: None
  selector: {app: {{ service }}}
  ports:
  - port: 80
"""

AGENT_IMAGE = "registry.test/shop/agent:1.0"
EVIL = "registry.test/evil:6"


@pytest.fixture
def volumes(k8s_namespace: Any) -> Iterator[None]:
    """PersistentVolumes pre-bound to the claims `api-0` and `api-1` will make.

    The bed has no storage provisioner; without a volume to bind, a pod with a
    claim is never scheduled and the StatefulSet never becomes ready.
    """
    from kubernetes import client

    names = [f"{k8s_namespace.name}-data-api-{i}" for i in range(3)]
    with k8s_namespace.api_client() as api:
        core = client.CoreV1Api(api)
        for index, name in enumerate(names):
            core.create_persistent_volume(
                {
                    "metadata": {"name": name},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "hostPath": {"path": f"/tmp/{name}"},
                        "claimRef": {
                            "namespace": k8s_namespace.name,
                            "name": f"data-api-{index}",
                        },
                    },
                }
            )
        try:
            yield
        finally:
            for name in names:
                core.delete_persistent_volume(name)


@pytest.fixture
def deployed(tmp_path: Path, k8s_namespace: Any, volumes: None, private_xdg: Path) -> ShopWorld:
    """dev runs template 1.1.0 of api: a StatefulSet with a claim template, and a DaemonSet."""
    world = make_shop_world(
        tmp_path / "w", namespace=k8s_namespace.name, kubeconfig=k8s_namespace.kubeconfig
    )
    world.config.write("templates/api/deployment.yaml.j2", WORKLOADS)
    world.config.commit("api 1.1.0: a StatefulSet and an agent DaemonSet")
    world.config.tag("api/1.1.0")
    world.config.write(
        "environments/dev/api.yaml",
        "template: 1.1.0\nimage: {ref: registry.test/shop/api:1.0}\nreplicas: 2\n",
    )
    world.config.commit("dev: api 1.1.0")
    world.push_config()
    result = apply_env(world.workspace(), "dev", ApplyOptions(build=False))
    assert [(r.service, r.outcome) for r in result.results] == [("api", "healthy")], [
        r.reason for r in result.results
    ]
    return world


def apps(ns: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(ns.api_client())


def test_statefulset_and_daemonset_show_no_drift_right_after_apply(
    deployed: ShopWorld, k8s_namespace: Any
) -> None:
    live = apps(k8s_namespace).read_namespaced_stateful_set("api", k8s_namespace.name)
    # The server did fill in what the template left out: none of it is drift.
    [claim] = live.spec.volume_claim_templates
    assert claim.spec.volume_mode == "Filesystem"
    assert live.spec.pod_management_policy == "OrderedReady"
    assert live.spec.update_strategy.type == "RollingUpdate"
    assert live.spec.revision_history_limit == 10

    report = reconcile(deployed.workspace(), "dev")
    assert report.drifts == [], report.to_json()
    [api] = report.services
    assert (api.status, api.desired_image, api.live_image) == (
        "in_sync",
        "registry.test/shop/api:1.0",
        "registry.test/shop/api:1.0",
    )
    assert (api.desired_replicas, api.live_replicas) == (2, 2)


def test_hand_changes_to_statefulset_and_daemonset_are_drift_and_heal_fixes_them(
    deployed: ShopWorld, k8s_namespace: Any
) -> None:
    ns = k8s_namespace.name
    api = apps(k8s_namespace)
    api.patch_namespaced_stateful_set(
        "api",
        ns,
        {
            "spec": {
                "replicas": 3,
                "template": {"spec": {"containers": [{"name": "app", "image": EVIL}]}},
            }
        },
    )
    api.patch_namespaced_daemon_set(
        "api-agent",
        ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": EVIL}]}}}},
    )
    report = reconcile(deployed.workspace(), "dev")
    found = {(d.field, d.desired, d.live) for d in report.drifts}
    assert found == {
        ("image", "registry.test/shop/api:1.0", EVIL),
        ("replicas", "2", "3"),
        ("DaemonSet/api-agent spec.template.spec.containers[agent].image", AGENT_IMAGE, EVIL),
    }, report.to_json()
    assert report.services[0].status == "drifted"

    healed = reconcile(deployed.workspace(), "dev", heal=True)
    assert [(r.service, r.outcome) for r in healed.healed] == [("api", "healthy")], [
        r.reason for r in healed.healed
    ]
    statefulset = api.read_namespaced_stateful_set("api", ns)
    assert statefulset.spec.replicas == 2
    assert statefulset.spec.template.spec.containers[0].image == "registry.test/shop/api:1.0"
    daemonset = api.read_namespaced_daemon_set("api-agent", ns)
    assert daemonset.spec.template.spec.containers[0].image == AGENT_IMAGE
    assert reconcile(deployed.workspace(), "dev").drifts == []


def test_a_setting_we_made_is_compared_even_where_the_server_has_a_default(
    deployed: ShopWorld, k8s_namespace: Any
) -> None:
    """revisionHistoryLimit is drift once someone sets it: by hand, or in the template."""
    api = apps(k8s_namespace)
    api.patch_namespaced_stateful_set(
        "api", k8s_namespace.name, {"spec": {"revisionHistoryLimit": 3}}
    )
    api.patch_namespaced_daemon_set(
        "api-agent", k8s_namespace.name, {"spec": {"revisionHistoryLimit": 7}}
    )
    report = reconcile(deployed.workspace(), "dev")
    assert [(d.field, d.desired, d.live) for d in report.drifts] == [
        ("DaemonSet/api-agent spec.revisionHistoryLimit", "5", "7"),
        ("StatefulSet/api spec.revisionHistoryLimit", None, "3"),
    ], report.to_json()


AGENT_ONLY = """\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ service }}
spec:
  selector:
    matchLabels: {app: {{ service }}}
  template:
    metadata:
      labels: {app: {{ service }}}
    spec:
      nodeSelector: {type: kwok}
      tolerations:
      - {key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}
      containers:
      - name: agent
        image: {{ image }}
"""


def test_a_service_run_by_a_daemonset_reports_its_image_and_no_replicas(
    tmp_path: Path, k8s_namespace: Any, private_xdg: Path
) -> None:
    world = make_shop_world(
        tmp_path / "w", namespace=k8s_namespace.name, kubeconfig=k8s_namespace.kubeconfig
    )
    world.config.write("templates/api/deployment.yaml.j2", AGENT_ONLY)
    world.config.commit("api 1.2.0: a node agent")
    world.config.tag("api/1.2.0")
    world.config.write(
        "environments/dev/api.yaml", "template: 1.2.0\nimage: {ref: registry.test/shop/api:1.0}\n"
    )
    world.config.commit("dev: api 1.2.0")
    world.push_config()
    result = apply_env(world.workspace(), "dev", ApplyOptions(build=False))
    assert [(r.service, r.outcome) for r in result.results] == [("api", "healthy")]

    report = reconcile(world.workspace(), "dev")
    assert report.drifts == [], report.to_json()
    [api] = report.services
    assert (api.desired_image, api.live_image) == ("registry.test/shop/api:1.0",) * 2
    assert (api.desired_replicas, api.live_replicas) == (None, None)

    apps(k8s_namespace).patch_namespaced_daemon_set(
        "api",
        k8s_namespace.name,
        {"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": EVIL}]}}}},
    )
    drifted = reconcile(world.workspace(), "dev")
    assert [(d.field, d.desired, d.live) for d in drifted.drifts] == [
        ("image", "registry.test/shop/api:1.0", EVIL)
    ], drifted.to_json()
