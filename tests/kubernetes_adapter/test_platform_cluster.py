"""KubernetesPlatform against the real API server and controller-manager of the test bed.

What every platform does (roll out, roll a value change, heal, dry run, delete,
refuse an unresolvable secret) is the contract suite in tests/platform; this
file keeps what is Kubernetes' own.

Pods are simulated by KWOK: ready at once, except pods labelled
`testbed.configcenter.io/never-ready: "true"` (stay ContainerCreating) and pods
whose image contains `never-ready` (stay ImagePullBackOff).
"""

from __future__ import annotations

import base64
import itertools
import logging
import re
import threading
import time
import uuid
from typing import Any

import pytest

from configcenter.adapters.k8s_manifests import (
    DIGEST_ANNOTATION,
    ENV_LABEL,
    MANAGED_BY_LABEL,
    RELEASE_ANNOTATION,
    SERVICE_LABEL,
)
from configcenter.adapters.kubernetes import KubernetesPlatform
from configcenter.ports.platform import PlatformError, RolloutStatus
from tests.kubernetes_adapter.conftest import Cluster, make_deployable, target_for

pytestmark = pytest.mark.k8s

NEVER_READY_LABEL = "testbed.configcenter.io/never-ready"


def test_new_deployment_rolls_out_healthy(platform: KubernetesPlatform, cluster: Cluster) -> None:
    release = make_deployable(values={"REGION": "eu"}, env_file="LOG_LEVEL=info\n")
    seen: list[RolloutStatus] = []
    platform.apply(release)
    status = platform.wait(release, timeout=60, progress=seen.append)

    assert status.state == "healthy", status
    assert (status.desired, status.updated, status.ready, status.available) == (2, 2, 2, 2)
    assert seen and seen[-1] == status
    assert all(a != b for a, b in itertools.pairwise(seen)), "progress only on change"
    watchers = [t for t in threading.enumerate() if t.name.startswith("configcenter-watch")]
    assert watchers == [], "wait must stop its watch threads before returning"
    deployment = cluster.deployment()
    container = deployment.spec.template.spec.containers[0]
    assert container.image == release.image
    config = cluster.in_use("api-config")
    assert config.startswith("api-config-")
    assert [s.config_map_ref.name for s in container.env_from] == [config]
    assert not deployment.spec.template.metadata.annotations, "names roll the pods"
    assert deployment.metadata.annotations[DIGEST_ANNOTATION] == release.config_digest
    assert deployment.metadata.annotations[RELEASE_ANNOTATION] == "r1"
    assert cluster.config_map().data == {"REGION": "eu", "LOG_LEVEL": "info"}
    assert cluster.config_map().immutable is True
    for kind, name in [("Deployment", "api"), ("Service", "api"), ("ConfigMap", "api-config")]:
        assert cluster.exists(kind, name)
    labels = cluster.core.read_namespaced_service("api", cluster.namespace).metadata.labels
    assert labels[MANAGED_BY_LABEL] == "configcenter"
    assert labels[ENV_LABEL] == "dev"
    assert labels[SERVICE_LABEL] == "api"


def test_apply_creates_missing_namespace(k8s_namespace: Any, cluster: Cluster) -> None:
    fresh = f"{k8s_namespace.name}-new"
    platform = KubernetesPlatform(target_for(fresh), kubeconfig=str(k8s_namespace.kubeconfig))
    release = make_deployable(replicas=1)
    try:
        platform.apply(release)
        assert platform.wait(release, timeout=60).state == "healthy"
        ns = cluster.core.read_namespace(fresh)
        assert ns.metadata.labels[MANAGED_BY_LABEL] == "configcenter"
    finally:
        cluster.core.delete_namespace(fresh, propagation_policy="Background")


def test_never_ready_pods_fail_with_progress_deadline_exceeded(
    platform: KubernetesPlatform,
) -> None:
    release = make_deployable(replicas=1, deadline=5, pod_labels={NEVER_READY_LABEL: "true"})
    seen: list[RolloutStatus] = []
    platform.apply(release)
    started = time.monotonic()
    status = platform.wait(release, timeout=120, progress=seen.append)
    elapsed = time.monotonic() - started

    assert status.state == "failed"
    assert status.reason == "ProgressDeadlineExceeded"
    assert "timed out progressing" in status.message
    # What was waited for and why, and where to look: the pod, its container's state.
    assert "1 of its new pods did not become ready within 5s (progressDeadlineSeconds)" in (
        status.message
    )
    assert re.search(
        r"pod api-\w+-\w+ Pending: container app waiting: ContainerCreating", status.message
    )
    assert re.search(
        rf"`kubectl -n {platform.namespace} describe pod api-\w+-\w+` shows its events",
        status.message,
    )
    assert status.ready == 0
    assert seen[-1] == status
    assert elapsed < 60


def test_image_that_cannot_be_pulled_fails_fast(platform: KubernetesPlatform) -> None:
    release = make_deployable(replicas=1, deadline=600, image="registry.test/never-ready/api:9")
    platform.apply(release)
    started = time.monotonic()
    status = platform.wait(release, timeout=120)
    elapsed = time.monotonic() - started

    assert status.state == "failed"
    assert status.reason == "ImagePullBackOff"
    assert "never-ready/api:9" in status.message
    assert elapsed < 30, "must not wait out the 600s progress deadline"


def test_wait_times_out_as_failed(platform: KubernetesPlatform) -> None:
    release = make_deployable(replicas=1, deadline=600, pod_labels={NEVER_READY_LABEL: "true"})
    platform.apply(release)
    started = time.monotonic()
    status = platform.wait(release, timeout=3)
    elapsed = time.monotonic() - started
    assert status.state == "failed"
    assert status.reason == "Timeout"
    assert "not healthy within 3s" in status.message
    assert 3 <= elapsed < 15


def test_secret_values_land_in_the_cluster_secret_and_nowhere_else(
    platform: KubernetesPlatform,
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    caplog.set_level(logging.DEBUG)
    env_value = f"pw-{uuid.uuid4().hex}"
    file_value = f"token-{uuid.uuid4().hex}"
    cluster_value = f"cluster-{uuid.uuid4().hex}"
    monkeypatch.setenv("CC_TEST_DB_PASSWORD", env_value)
    token_file = tmp_path / "token"
    token_file.write_text(file_value + "\n")
    from kubernetes import client

    cluster.core.create_namespaced_secret(
        cluster.namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="upstream"), string_data={"key": cluster_value}
        ),
    )
    release = make_deployable(
        env_file="LOG_LEVEL=info\nDB_PASSWORD=${secret:env:CC_TEST_DB_PASSWORD}\n",
        secrets={
            "DB_PASSWORD": "env:CC_TEST_DB_PASSWORD",
            "API_TOKEN": f"file:{token_file}",
            "UPSTREAM_KEY": f"k8s:{cluster.namespace}/upstream/key",
        },
    )
    platform.apply(release)
    assert platform.wait(release, timeout=60).state == "healthy"
    observed = platform.observe()

    data = {k: base64.b64decode(v).decode() for k, v in cluster.secret().data.items()}
    assert data == {
        "DB_PASSWORD": env_value,
        "API_TOKEN": file_value,
        "UPSTREAM_KEY": cluster_value,
    }
    assert "DB_PASSWORD" not in cluster.config_map().data
    assert observed["api"].objects["Secret/api-secrets-1"]["data"] == {
        "API_TOKEN": "***",
        "DB_PASSWORD": "***",
        "UPSTREAM_KEY": "***",
    }

    # A rejected apply whose Secret carries the values: the error names the problem only.
    broken = make_deployable(
        secrets=release.secrets,
        extra_files={
            "extra.yaml": b"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {bogus: 1}\n"
        },
    )
    with pytest.raises(PlatformError) as excinfo:
        platform.apply(broken)
    assert "extra.yaml" in str(excinfo.value) and "bogus" in str(excinfo.value)

    out, err = capsys.readouterr()
    texts = [caplog.text, out, err, str(excinfo.value), repr(excinfo.value), repr(observed)]
    for value in (env_value, file_value, cluster_value):
        encoded = base64.b64encode(value.encode()).decode()
        for text in texts:
            assert value not in text
            assert encoded not in text


def test_unresolvable_secret_is_a_clear_error_without_changes(
    platform: KubernetesPlatform, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CC_TEST_MISSING", raising=False)
    release = make_deployable(secrets={"DB_PASSWORD": "env:CC_TEST_MISSING"})
    with pytest.raises(PlatformError, match=r"DB_PASSWORD.*CC_TEST_MISSING is not set"):
        platform.apply(release)
    missing = make_deployable(secrets={"KEY": f"k8s:{cluster.namespace}/nope/key"})
    with pytest.raises(PlatformError, match=f"Secret {cluster.namespace}/nope does not exist"):
        platform.apply(missing)
    assert not cluster.exists("Deployment", "api")


def test_dry_run_changes_nothing_but_shows_server_errors(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    release = make_deployable()
    platform.apply(release, dry_run=True)
    for kind, name in [("Deployment", "api"), ("Service", "api"), ("ConfigMap", "api-config")]:
        assert not cluster.exists(kind, name), f"dry run created {kind}/{name}"

    platform.apply(release)
    assert platform.wait(release, timeout=60).state == "healthy"
    before = cluster.deployment()
    changed = make_deployable(release_id="r2", env_file="LOG_LEVEL=debug\n", replicas=3)
    platform.apply(changed, dry_run=True)
    after = cluster.deployment()
    assert after.metadata.generation == before.metadata.generation
    assert after.spec.replicas == 2
    assert cluster.config_map().data["LOG_LEVEL"] == "info"

    invalid = make_deployable(
        extra_files={
            "worker.yaml": b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: worker}\n"
            b"spec: {replicas: -1, selector: {matchLabels: {a: b}},"
            b" template: {metadata: {labels: {a: b}}, spec: {containers: [{name: w}]}}}\n"
        }
    )
    with pytest.raises(
        PlatformError, match=r"worker\.yaml: apply Deployment/worker: HTTP 422: .*spec\.replicas"
    ):
        platform.apply(invalid, dry_run=True)
    assert not cluster.exists("Deployment", "worker")


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            b"apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
            r"extra\.yaml: Widget/w: the cluster serves no Widget in example\.com/v1",
        ),
        (
            b"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\n",
            r"extra\.yaml: ClusterRole/r is cluster-scoped",
        ),
    ],
)
def test_objects_the_namespace_cannot_hold_are_refused_before_any_change(
    platform: KubernetesPlatform, cluster: Cluster, manifest: bytes, message: str
) -> None:
    with pytest.raises(PlatformError, match=message):
        platform.apply(make_deployable(extra_files={"extra.yaml": manifest}))
    assert not cluster.exists("ConfigMap", "api-config")


def test_dry_run_into_missing_namespace_creates_nothing(
    k8s_namespace: Any, cluster: Cluster
) -> None:
    fresh = f"{k8s_namespace.name}-dry"
    platform = KubernetesPlatform(target_for(fresh), kubeconfig=str(k8s_namespace.kubeconfig))
    platform.apply(make_deployable(), dry_run=True)
    names = [ns.metadata.name for ns in cluster.core.list_namespace().items]
    assert fresh not in names


def test_observe_reports_image_replicas_digest_and_clean_objects(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    api = make_deployable(service="api", release_id="r7", replicas=2)
    worker = make_deployable(service="worker", release_id="r3", replicas=1, image="reg/worker:2")
    for release in (api, worker):
        platform.apply(release)
    for release in (api, worker):
        assert platform.wait(release, timeout=60).state == "healthy"
    observed = platform.observe()

    assert set(observed) == {"api", "worker"}
    svc = observed["api"]
    assert (svc.image, svc.replicas, svc.config_digest, svc.release_id) == (
        api.image,
        2,
        api.config_digest,
        "r7",
    )
    assert observed["worker"].image == "reg/worker:2"
    assert set(svc.objects) == {
        "ConfigMap/api-config",
        f"ConfigMap/{cluster.in_use('api-config')}",
        "Deployment/api",
        "Service/api",
    }
    deployment = svc.objects["Deployment/api"]
    assert "status" not in deployment
    assert set(deployment["metadata"]) <= {"name", "namespace", "labels", "annotations"}
    assert "deployment.kubernetes.io/revision" not in deployment["metadata"]["annotations"]
    assert "dnsPolicy" not in deployment["spec"]["template"]["spec"], "defaults are noise"
    assert deployment["spec"]["replicas"] == 2
    service = svc.objects["Service/api"]
    assert "clusterIP" not in service["spec"]
    assert service["spec"]["ports"] == [{"port": 80, "targetPort": 8080}]

    # Drift made by hand shows up as a value, not as noise.
    cluster.apps.patch_namespaced_deployment_scale(
        "api", cluster.namespace, {"spec": {"replicas": 3}}
    )
    assert platform.observe()["api"].replicas == 3


def test_watch_from_an_old_resource_version_never_surfaces_as_an_error(
    platform: KubernetesPlatform,
) -> None:
    """A server that no longer has the version answers 410 and the watcher re-lists;
    one whose watch cache still covers it replays. Either way the state arrives.

    (Which of the two happens depends on the API server's watch cache, so this
    cannot force the 410 branch deterministically.)
    """
    import queue

    from configcenter.adapters.k8s_wait import _Event, _Watcher

    release = make_deployable(replicas=1)
    platform.apply(release)
    events: queue.Queue[_Event] = queue.Queue()
    watcher = _Watcher(
        platform.client,
        platform.client.resource("apps/v1", "Deployment"),
        f"{SERVICE_LABEL}=api",
        events,
        time.monotonic() + 30,
        start_version="1",
    )
    watcher.start()
    try:
        event = events.get(timeout=30)
    finally:
        watcher.stop()
        watcher.join(timeout=10)
    assert event.error is None, event.error
    assert event.type in {"LIST", "ADDED"}
    assert [item["metadata"]["name"] for item in event.items] == ["api"]
