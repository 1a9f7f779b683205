"""Config files reaching the pods, and pruning what left the templates, on the real API server."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from configcenter.adapters.k8s_manifests import (
    CONFIG_MAP_MAX_BYTES,
    ENV_LABEL,
    FILES_VOLUME,
    MANAGED_BY_LABEL,
    SERVICE_LABEL,
    ManifestError,
)
from configcenter.adapters.kubernetes import KubernetesPlatform
from configcenter.ports.platform import Deployable
from tests.kubernetes_adapter.conftest import Cluster, make_deployable
from tests.support.helpers import poll

pytestmark = pytest.mark.k8s

ADMIN_SERVICE = b"""\
apiVersion: v1
kind: Service
metadata:
  name: api-admin
spec:
  selector: {app: api}
  ports:
  - port: 9000
"""
SERVICE_ACCOUNT = b"apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: api-runner}\n"


def pod_mounts(pod_spec: Any) -> dict[str, list[tuple[str, str, bool]]]:
    """Container name -> (volume, mountPath, readOnly) of each mount."""
    return {
        c.name: [(m.name, m.mount_path, bool(m.read_only)) for m in c.volume_mounts or []]
        for c in pod_spec.containers
    }


def files_volume(pod_spec: Any) -> Any:
    return next(v for v in pod_spec.volumes or [] if v.name == FILES_VOLUME)


def test_config_file_reaches_the_pods_and_a_change_to_it_alone_rolls_them(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    first = make_deployable(release_id="r1", extra_files={"conf/app.conf": b"workers = 2\n"})
    platform.apply(first)
    assert platform.wait(first, timeout=60).state == "healthy"

    assert cluster.config_map("api-files").data == {"conf_app.conf": "workers = 2\n"}
    template = cluster.deployment().spec.template.spec
    source = files_volume(template).projected.sources[0].config_map
    assert source.name == cluster.in_use("api-files") != "api-files"
    assert [(i.key, i.path) for i in source.items] == [("conf_app.conf", "conf/app.conf")]
    assert pod_mounts(template) == {"app": [(FILES_VOLUME, "/etc/configcenter/api", True)]}
    first_hash = cluster.current_hash()
    pods = poll(lambda: cluster.pods(first_hash), 30, "pods of the first ReplicaSet")
    for pod in pods:
        assert files_volume(pod.spec).projected.sources[0].config_map.name == source.name
        assert pod_mounts(pod.spec)["app"] == [(FILES_VOLUME, "/etc/configcenter/api", True)]

    second = make_deployable(release_id="r2", extra_files={"conf/app.conf": b"workers = 4\n"})
    assert second.files["app.env"] == first.files["app.env"] and second.values == first.values
    assert second.config_digest != first.config_digest, "the digest covers config files"
    platform.apply(second)
    assert platform.wait(second, timeout=60).state == "healthy"

    assert cluster.config_map("api-files").data == {"conf_app.conf": "workers = 4\n"}
    second_hash = cluster.current_hash()
    assert second_hash != first_hash, "a change to a config file alone must roll the pods"
    assert set(cluster.replica_sets()) == {first_hash, second_hash}


def test_annotation_moves_the_mount_and_dropping_all_files_removes_mount_and_config_map(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    release = make_deployable(extra_files={"nginx.conf": b"events {}\n"})
    manifest = release.files["deployment.yaml"].replace(
        b"  labels: {app: api}\n",
        b"  labels: {app: api}\n  annotations: {configcenter.io/files-mount-path: /etc/nginx}\n",
        1,
    )
    release = replace(release, files={**release.files, "deployment.yaml": manifest})
    platform.apply(release)
    assert pod_mounts(cluster.deployment().spec.template.spec) == {
        "app": [(FILES_VOLUME, "/etc/nginx", True)]
    }

    files_version = cluster.in_use("api-files")
    plain = make_deployable(release_id="r2")
    platform.apply(plain)
    assert platform.wait(plain, timeout=60).state == "healthy"
    assert cluster.exists("ConfigMap", files_version), "nothing is removed before it is verified"
    assert platform.prune(plain) == [], "config versions are kept for rollbacks, not pruned"
    template = cluster.deployment().spec.template.spec
    assert not template.volumes and pod_mounts(template) == {"app": []}
    assert cluster.referenced_names("api", "files") == set()
    assert cluster.exists("ConfigMap", files_version), "kept for a rollback to the first release"


def test_the_one_mib_limit_is_the_api_servers(platform: KubernetesPlatform) -> None:
    """Exactly 1 MiB of files is accepted by the server; one byte more is refused by us first."""
    half = CONFIG_MAP_MAX_BYTES // 2
    fits = make_deployable(extra_files={"a.txt": b"a" * half, "b.txt": b"b" * half})
    platform.apply(fits, dry_run=True)
    over = make_deployable(extra_files={"a.txt": b"a" * half, "b.txt": b"b" * (half + 1)})
    with pytest.raises(ManifestError, match=r"api: config files total 1048577 bytes"):
        platform.apply(over, dry_run=True)


def with_admin(release: Deployable) -> Deployable:
    return replace(
        release,
        files={**release.files, "admin.yaml": ADMIN_SERVICE, "sa.yaml": SERVICE_ACCOUNT},
    )


def test_objects_dropped_from_the_templates_are_pruned_once_verified_and_only_those(
    platform: KubernetesPlatform,
    cluster: Cluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from kubernetes import client

    caplog.set_level(logging.INFO, logger="configcenter.adapters.kubernetes")
    api = with_admin(make_deployable(service="api", release_id="r1", replicas=1))
    worker = with_admin(make_deployable(service="worker", release_id="w1", replicas=1))
    worker = replace(
        worker,
        files={
            **worker.files,
            "admin.yaml": ADMIN_SERVICE.replace(b"api-admin", b"worker-admin"),
            "sa.yaml": SERVICE_ACCOUNT.replace(b"api-runner", b"worker-runner"),
        },
    )
    for release in (api, worker):
        platform.apply(release)
    for release in (api, worker):
        assert platform.wait(release, timeout=60).state == "healthy"
    # Carries configcenter's labels for api, but configcenter never applied it.
    labels = {MANAGED_BY_LABEL: "configcenter", ENV_LABEL: "dev", SERVICE_LABEL: "api"}
    cluster.core.create_namespaced_config_map(
        cluster.namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="api-hand-made", labels=labels), data={"a": "b"}
        ),
    )
    api_hash = cluster.current_hash()
    worker_before = {
        (o.kind, o.metadata.name): o.metadata.resource_version for o in worker_objects(cluster)
    }
    assert len(worker_before) == 6

    dropped = make_deployable(service="api", release_id="r2", replicas=1)
    platform.apply(dropped, dry_run=True)
    assert cluster.exists("Service", "api-admin"), "a dry run prunes nothing"
    assert cluster.exists("ServiceAccount", "api-runner"), "a dry run prunes nothing"
    would = [r.getMessage() for r in caplog.records if "would prune" in r.getMessage()]
    assert [m.split(" in namespace")[0] for m in would] == [
        "dry run: would prune Service/api-admin",
        "dry run: would prune ServiceAccount/api-runner",
    ]
    platform.apply(dropped)
    assert platform.wait(dropped, timeout=60).state == "healthy"
    assert cluster.exists("Service", "api-admin"), "apply alone prunes nothing"
    pruned = platform.prune(dropped)

    assert pruned == ["Service/api-admin", "ServiceAccount/api-runner"]
    assert not cluster.exists("Service", "api-admin")
    assert not cluster.exists("ServiceAccount", "api-runner")
    for kind, name in [
        ("Deployment", "api"),
        ("Service", "api"),
        ("ConfigMap", "api-config"),
        ("ConfigMap", cluster.in_use("api-config")),
        ("ConfigMap", "api-hand-made"),
    ]:
        assert cluster.exists(kind, name), f"{kind}/{name} must stay"
    assert cluster.current_hash() == api_hash, "pruning touched nothing the release renders"
    assert api_hash in cluster.replica_sets(), "ReplicaSets are the controller's, never pruned"
    worker_after = {
        (o.kind, o.metadata.name): o.metadata.resource_version for o in worker_objects(cluster)
    }
    assert worker_after == worker_before, "another service's objects are untouched"
    assert set(platform.observe()["api"].objects) == {
        "ConfigMap/api-config",
        f"ConfigMap/{cluster.in_use('api-config')}",
        "ConfigMap/api-hand-made",
        "Deployment/api",
        "Service/api",
    }

    # Applying and pruning the same release again finds nothing more to prune.
    caplog.clear()
    platform.apply(dropped)
    assert platform.prune(dropped) == []
    assert not [r for r in caplog.records if "prune" in r.getMessage()]


def test_a_failed_apply_prunes_nothing(platform: KubernetesPlatform, cluster: Cluster) -> None:
    first = with_admin(make_deployable(replicas=1))
    platform.apply(first)
    broken = make_deployable(
        release_id="r2",
        replicas=1,
        extra_files={
            "extra.yaml": b"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {bogus: 1}\n"
        },
    )
    with pytest.raises(Exception, match="bogus"):
        platform.apply(broken)
    assert cluster.exists("Service", "api-admin"), "prune runs only after a successful apply"
    assert cluster.exists("ServiceAccount", "api-runner")


def worker_objects(cluster: Cluster) -> list[Any]:
    selector = f"{SERVICE_LABEL}=worker"
    found: list[Any] = []
    listers: list[tuple[str, Any]] = [
        ("Deployment", cluster.apps.list_namespaced_deployment),
        ("Service", cluster.core.list_namespaced_service),
        ("ConfigMap", cluster.core.list_namespaced_config_map),
        ("Secret", cluster.core.list_namespaced_secret),
        ("ServiceAccount", cluster.core.list_namespaced_service_account),
    ]
    for kind, lister in listers:
        for item in lister(cluster.namespace, label_selector=selector).items:
            item.kind = kind
            found.append(item)
    return found
