"""`wait` on StatefulSets and DaemonSets, alone and next to a Deployment, on the real bed.

KWOK makes pods ready at once, except pods whose image contains `never-ready`
(ImagePullBackOff) or that carry `testbed.configcenter.io/never-ready: "true"`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from configcenter.adapters.k8s_manifests import DIGEST_ANNOTATION, SERVICE_LABEL
from configcenter.adapters.kubernetes import KubernetesPlatform
from configcenter.ports.platform import RolloutStatus
from tests.kubernetes_adapter.conftest import DEPLOYMENT, Cluster, make_deployable

pytestmark = pytest.mark.k8s

NEVER_READY_LABEL = "testbed.configcenter.io/never-ready"

STATEFULSET = """\
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  serviceName: {name}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {pod_labels}
    spec:
      containers:
      - name: app
        {image_line}
"""

DAEMONSET = """\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
spec:
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      nodeSelector: {{type: kwok}}
      tolerations:
      - {{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}}
      containers:
      - name: agent
"""


def statefulset(
    name: str = "db",
    *,
    replicas: int = 2,
    image: str | None = None,
    pod_labels: dict[str, str] | None = None,
) -> str:
    return STATEFULSET.format(
        name=name,
        replicas=replicas,
        pod_labels=json.dumps({"app": name, **(pod_labels or {})}),
        image_line=f"image: {image}" if image else "imagePullPolicy: IfNotPresent",
    )


def fake_nodes(cluster: Cluster) -> list[str]:
    nodes: list[Any] = cluster.core.list_node(label_selector="type=kwok").items
    return [n.metadata.name for n in nodes]


def live_pods(cluster: Cluster, app: str) -> list[Any]:
    """The app's pods that are not on their way out."""
    items: list[Any] = cluster.core.list_namespaced_pod(
        cluster.namespace, label_selector=f"{SERVICE_LABEL}=api,app={app}"
    ).items
    return [p for p in items if p.metadata.deletion_timestamp is None]


def read_statefulset(cluster: Cluster, name: str = "db") -> Any:
    return cluster.apps.read_namespaced_stateful_set(name, cluster.namespace)


def read_daemonset(cluster: Cluster, name: str = "agent") -> Any:
    return cluster.apps.read_namespaced_daemon_set(name, cluster.namespace)


def test_statefulset_release_becomes_healthy_with_config_wired_in(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    release = make_deployable(manifest=statefulset(replicas=2), replicas=2)
    seen: list[RolloutStatus] = []
    platform.apply(release)
    status = platform.wait(release, timeout=60, progress=seen.append)

    assert (status.state, status.reason) == ("healthy", "RolloutComplete"), status
    assert (status.desired, status.updated, status.ready, status.available) == (2, 2, 2, 2)
    assert status.message.startswith("StatefulSet db:")
    live = read_statefulset(cluster)
    assert live.status.update_revision == live.status.current_revision
    template = live.spec.template
    assert not template.metadata.annotations, "versioned names roll the pods, not annotations"
    assert live.metadata.annotations[DIGEST_ANNOTATION] == release.config_digest
    [container] = template.spec.containers
    assert container.image == release.image
    assert [s.config_map_ref.name for s in container.env_from] == [cluster.in_use("api-config")]


def test_statefulset_with_an_image_that_cannot_be_pulled_fails_fast(
    platform: KubernetesPlatform,
) -> None:
    release = make_deployable(
        manifest=statefulset(replicas=1), image="registry.test/never-ready/db:1", replicas=1
    )
    platform.apply(release)
    started = time.monotonic()
    status = platform.wait(release, timeout=120)
    elapsed = time.monotonic() - started

    assert (status.state, status.reason) == ("failed", "ImagePullBackOff"), status
    assert "StatefulSet db: pod db-0" in status.message
    assert "never-ready/db:1" in status.message
    assert elapsed < 30, "must fail on the pod, not wait out the 120s timeout"


def test_statefulset_that_never_gets_ready_times_out_and_says_why(
    platform: KubernetesPlatform,
) -> None:
    release = make_deployable(
        manifest=statefulset(replicas=1, pod_labels={NEVER_READY_LABEL: "true"}), replicas=1
    )
    platform.apply(release)
    status = platform.wait(release, timeout=3)
    assert (status.state, status.reason) == ("failed", "Timeout"), status
    assert "StatefulSets have no progress deadline" in status.message
    assert "not healthy within 3s" in status.message


def test_reapplying_the_previous_release_brings_the_old_statefulset_revision_back(
    platform: KubernetesPlatform, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """OrderedReady waits for the stuck pod of the bad revision forever; wait deletes it."""
    good = make_deployable(release_id="r1", manifest=statefulset(replicas=2), replicas=2)
    platform.apply(good)
    assert platform.wait(good, timeout=60).state == "healthy"
    good_revision = read_statefulset(cluster).status.update_revision

    bad = make_deployable(
        release_id="r2",
        manifest=statefulset(replicas=2),
        image="registry.test/never-ready/db:2",
        replicas=2,
    )
    platform.apply(bad)
    failed = platform.wait(bad, timeout=60)
    assert (failed.state, failed.reason) == ("failed", "ImagePullBackOff"), failed
    platform.apply(good)
    with caplog.at_level(logging.WARNING, logger="configcenter.adapters.kubernetes"):
        status = platform.wait(good, timeout=60)

    assert status.state == "healthy", status
    assert any("deleted pod db-1 of StatefulSet db" in r.getMessage() for r in caplog.records), (
        caplog.text
    )
    live = read_statefulset(cluster)
    assert live.status.update_revision == good_revision
    assert live.status.current_revision == good_revision
    pods = live_pods(cluster, "db")
    assert sorted(p.metadata.name for p in pods) == ["db-0", "db-1"]
    assert {p.metadata.labels["controller-revision-hash"] for p in pods} == {good_revision}
    assert {p.spec.containers[0].image for p in pods} == {good.image}


def test_daemonset_on_the_fake_nodes_becomes_healthy(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    nodes = fake_nodes(cluster)
    assert nodes, "the bed has fake nodes"
    release = make_deployable(manifest=DAEMONSET.format(name="agent"))
    platform.apply(release)
    status = platform.wait(release, timeout=60)

    assert (status.state, status.reason) == ("healthy", "RolloutComplete"), status
    assert status.desired == status.updated == status.available == len(nodes)
    live = read_daemonset(cluster)
    assert live.metadata.annotations[DIGEST_ANNOTATION] == release.config_digest
    assert live.spec.template.spec.containers[0].image == release.image
    first_config = cluster.in_use("api-config")  # the service is api; its DaemonSet is agent

    changed = make_deployable(
        release_id="r2", manifest=DAEMONSET.format(name="agent"), values={"REGION": "us"}
    )
    platform.apply(changed)
    rolled = platform.wait(changed, timeout=60)
    assert rolled.state == "healthy", rolled
    current = live_pods(cluster, "agent")
    second_config = cluster.in_use("api-config")
    assert second_config != first_config
    assert {p.spec.containers[0].env_from[0].config_map_ref.name for p in current} == {
        second_config
    }, "the DaemonSet's pods were replaced by ones that read the new config"


def test_daemonset_with_an_image_that_cannot_be_pulled_fails_fast(
    platform: KubernetesPlatform,
) -> None:
    release = make_deployable(
        manifest=DAEMONSET.format(name="agent"), image="registry.test/never-ready/agent:1"
    )
    platform.apply(release)
    started = time.monotonic()
    status = platform.wait(release, timeout=120)
    assert (status.state, status.reason) == ("failed", "ImagePullBackOff"), status
    assert status.message.startswith("DaemonSet agent: pod agent-")
    assert time.monotonic() - started < 30


def both(*, db_labels: dict[str, str] | None = None, release_id: str = "r1") -> Any:
    manifest = (
        DEPLOYMENT.format(
            service="api",
            replicas=1,
            deadline=600,
            pod_labels=json.dumps({"app": "api"}),
            image_line="imagePullPolicy: IfNotPresent",
        )
        + "---\n"
        + statefulset(replicas=1, pod_labels=db_labels)
    )
    return make_deployable(release_id=release_id, manifest=manifest, replicas=1)


def test_deployment_and_statefulset_release_is_healthy_only_when_both_are(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    stuck = both(db_labels={NEVER_READY_LABEL: "true"})
    platform.apply(stuck)
    status = platform.wait(stuck, timeout=4)
    assert (status.state, status.reason) == ("failed", "Timeout"), status
    assert "StatefulSet db:" in status.message
    deployment = cluster.deployment()
    assert deployment.status.available_replicas == 1, "the Deployment alone was healthy"

    fine = both(release_id="r2")
    platform.apply(fine)
    seen: list[RolloutStatus] = []
    healthy = platform.wait(fine, timeout=60, progress=seen.append)
    assert (healthy.state, healthy.reason) == ("healthy", "RolloutComplete"), healthy
    assert "Deployment api:" in healthy.message and "StatefulSet db:" in healthy.message
    assert (healthy.desired, healthy.available) == (2, 2)
    assert all(s.state != "healthy" for s in seen[:-1])


def test_reapplying_the_previous_release_brings_the_old_daemonset_revision_back(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    manifest = DAEMONSET.format(name="agent")
    good = make_deployable(release_id="r1", manifest=manifest)
    platform.apply(good)
    assert platform.wait(good, timeout=60).state == "healthy"
    bad = make_deployable(
        release_id="r2", manifest=manifest, image="registry.test/never-ready/agent:2"
    )
    platform.apply(bad)
    failed = platform.wait(bad, timeout=60)
    assert (failed.state, failed.reason) == ("failed", "ImagePullBackOff"), failed

    platform.apply(good)
    status = platform.wait(good, timeout=60)

    assert status.state == "healthy", status
    pods = live_pods(cluster, "agent")
    assert len(pods) == len(fake_nodes(cluster))
    assert {p.spec.containers[0].image for p in pods} == {good.image}
