"""Stage Jobs as the Kubernetes adapter builds them from a release's rendered file."""

from __future__ import annotations

import base64
import dataclasses
import time
from typing import Any

import pytest

from configcenter.adapters.k8s_jobs import stage_job_name, stage_job_objects
from configcenter.adapters.k8s_manifests import ManifestError, build_objects
from configcenter.ports.platform import Deployable

MIGRATE = b"""\
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, labels: {team: payments}}
spec:
  backoffLimit: 2
  template:
    spec:
      containers:
      - name: migrate
        command: [/app/migrate]
      - name: sidecar
        image: registry.test/tools/proxy:1
"""

DEPLOYMENT = b"""\
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: app}]
"""


def release(files: dict[str, bytes]) -> Deployable:
    return Deployable(
        env="dev",
        service="api",
        release_id="api-20261201.101500-3f4e82",
        image="registry.test/shop/api@sha256:" + "a" * 64,
        config_digest="sha256:" + "b" * 64,
        files=files,
        values={"LOG_LEVEL": "info"},
        secrets={"DB_PASSWORD": "env:X"},
        stage_files=frozenset({"migrate.yaml"}),
    )


def test_names_are_per_release_and_file_and_fit_kubernetes() -> None:
    assert stage_job_name("api-20261201.101500-3f4e82", "migrate.yaml") == (
        "api-20261201-101500-3f4e82-migrate"
    )
    long = stage_job_name("a-very-long-service-name-indeed-20261201.101500-3f4e82", "jobs/x.yaml")
    assert len(long) <= 52 and long[-11] == "-"
    assert long != stage_job_name(
        "a-very-long-service-name-indeed-20261201.101500-3f4e82", "y.yaml"
    )


def test_the_job_gets_the_release_image_env_and_secrets_of_its_own() -> None:
    item = release({"migrate.yaml": MIGRATE, "deployment.yaml": DEPLOYMENT})
    job, (config_map, secret) = stage_job_objects(
        item,
        "migrate.yaml",
        "pre-deploy",
        "shop-dev",
        {"env:X": "pw"},  # resolved values, by reference
        timeout=60,
        retention=3600,
    )
    name = "api-20261201-101500-3f4e82-migrate"
    assert job["metadata"]["name"] == name and job["metadata"]["namespace"] == "shop-dev"
    assert job["metadata"]["labels"]["team"] == "payments"
    assert job["metadata"]["labels"]["configcenter.io/job"] == "pre-deploy"
    assert "configcenter.io/service" not in job["metadata"]["labels"]  # not the workload's
    spec = job["spec"]
    assert spec["backoffLimit"] == 2  # the template's own setting stays
    assert spec["activeDeadlineSeconds"] == 60 and spec["ttlSecondsAfterFinished"] == 3600
    migrate, sidecar = spec["template"]["spec"]["containers"]
    assert migrate["image"] == item.image and sidecar["image"] == "registry.test/tools/proxy:1"
    assert migrate["envFrom"][:2] == [
        {"configMapRef": {"name": f"{name}-env"}},
        {"secretRef": {"name": f"{name}-env"}},
    ]
    assert migrate["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert config_map["data"]["LOG_LEVEL"] == "info"
    assert base64.b64decode(secret["data"]["DB_PASSWORD"]) == b"pw"


def test_a_stage_file_is_not_part_of_the_workload() -> None:
    objects = build_objects(
        release({"migrate.yaml": MIGRATE, "deployment.yaml": DEPLOYMENT}), "ns", None
    )
    assert "Job" not in {o.kind for o in objects}
    assert "Deployment" in {o.kind for o in objects}


def test_a_stage_file_must_hold_one_job() -> None:
    with pytest.raises(
        ManifestError, match=r"must hold exactly one Job .* it holds Deployment/api"
    ):
        stage_job_objects(
            release({"migrate.yaml": DEPLOYMENT}),
            "migrate.yaml",
            "pre-deploy",
            "ns",
            {},
            timeout=60,
            retention=60,
        )


@pytest.mark.k8s
def test_a_job_that_never_finishes_times_out_and_is_deleted(k8s_namespace: Any) -> None:
    """On the test bed: the never-ready label keeps the Job's pod creating its containers
    (a state that may still end well) past the timeout."""
    from kubernetes import client

    from configcenter.adapters.kubernetes import KubernetesPlatform
    from tests.kubernetes_adapter.conftest import target_for
    from tests.support.helpers import poll
    from tests.support.k8s_fixtures import NEVER_READY_LABEL

    platform = KubernetesPlatform(
        target_for(k8s_namespace.name), kubeconfig=str(k8s_namespace.kubeconfig)
    )
    labels = f"    metadata: {{labels: {{{NEVER_READY_LABEL}: 'true'}}}}\n"
    stuck = MIGRATE.replace(b"  template:\n", b"  template:\n" + labels.encode())
    assert stuck != MIGRATE
    item = dataclasses.replace(release({"migrate.yaml": stuck}), secrets={})
    lines: list[str] = []
    result = platform.run_job(
        item, "migrate.yaml", "pre-deploy", timeout=2, retention=60, log=lines.append
    )
    # Our deadline, or the Job's activeDeadlineSeconds (the same 2s) seen first.
    assert not result.succeeded and result.reason.startswith("timed out after 2s"), result.reason
    assert any("created" in line for line in lines)
    with k8s_namespace.api_client() as api:
        batch = client.BatchV1Api(api)

        def gone() -> bool:
            names = [j.metadata.name for j in batch.list_namespaced_job(k8s_namespace.name).items]
            return result.job not in names

        poll(gone, 30, "the timed-out Job to be deleted")


@pytest.mark.k8s
def test_a_job_whose_image_cannot_be_pulled_fails_at_once_saying_why(k8s_namespace: Any) -> None:
    """ImagePullBackOff never ends by itself: the Job fails with the pod's reason long before
    its timeout (not "timed out after 120s"), and is deleted so it stops retrying."""
    from kubernetes import client

    from configcenter.adapters.kubernetes import KubernetesPlatform
    from tests.kubernetes_adapter.conftest import target_for
    from tests.support.helpers import poll
    from tests.support.k8s_fixtures import NEVER_READY_IMAGE_MARK

    platform = KubernetesPlatform(
        target_for(k8s_namespace.name), kubeconfig=str(k8s_namespace.kubeconfig)
    )
    image = f"registry.test/{NEVER_READY_IMAGE_MARK}/m:1"
    stuck = MIGRATE.replace(b"command: [/app/migrate]", f"image: {image}".encode())
    item = dataclasses.replace(release({"migrate.yaml": stuck}), secrets={})
    started = time.monotonic()

    result = platform.run_job(
        item, "migrate.yaml", "pre-deploy", timeout=120, retention=60, log=lambda _: None
    )

    assert time.monotonic() - started < 60
    assert not result.succeeded
    assert result.reason.startswith("ImagePullBackOff: pod "), result.reason
    assert "container migrate" in result.reason and image in result.reason
    with k8s_namespace.api_client() as api:
        batch = client.BatchV1Api(api)

        def gone() -> bool:
            names = [j.metadata.name for j in batch.list_namespaced_job(k8s_namespace.name).items]
            return result.job not in names

        poll(gone, 30, "the stuck Job to be deleted")
