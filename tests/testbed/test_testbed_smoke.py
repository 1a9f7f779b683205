"""Smoke tests of the Kubernetes test bed through the official client.

They pin down the behaviour other tests rely on: the real controller-manager
rolls Deployments out, reports ``ProgressDeadlineExceeded`` for a template
whose pods never become ready (the bed's never-ready convention), recovers on
rollback, Jobs complete, and Jobs whose image is marked fails-job fail.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.support.helpers import poll
from tests.support.k8s_fixtures import (
    FAILS_JOB_IMAGE_MARK,
    FAILS_JOB_LOG_ANNOTATION,
    NEVER_READY_IMAGE_MARK,
    NEVER_READY_LABEL,
    K8sNamespace,
)

pytestmark = pytest.mark.k8s

GOOD_IMAGE = "127.0.0.1:5000/shop/api:1.0.0"
BAD_IMAGE = f"127.0.0.1:5000/shop/api:{NEVER_READY_IMAGE_MARK}"
TIMEOUT = 30.0  # generous for 2 cores; each step normally takes 1-7 s


def _deployment(name: str, image: str, replicas: int = 2) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            progress_deadline_seconds=5,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name=name, image=image)]),
            ),
        ),
    )


def _conditions(deployment: client.V1Deployment) -> dict[str, Any]:
    return {c.type: c for c in deployment.status.conditions or []}


def _rolled_out(apps: client.AppsV1Api, namespace: str, name: str) -> client.V1Deployment | None:
    """The Deployment once its current template is fully rolled out and Available."""
    d = apps.read_namespaced_deployment_status(name, namespace)
    conditions = _conditions(d)
    available = conditions.get("Available")
    progressing = conditions.get("Progressing")
    done = (
        d.status.observed_generation == d.metadata.generation
        and d.status.updated_replicas == d.spec.replicas
        and d.status.available_replicas == d.spec.replicas
        and (d.status.replicas or 0) == d.spec.replicas
        and available is not None
        and available.status == "True"
        and progressing is not None
        and progressing.reason == "NewReplicaSetAvailable"
    )
    return d if done else None


def _set_image(apps: client.AppsV1Api, namespace: str, name: str, image: str) -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": name, "image": image}]}}}}
    apps.patch_namespaced_deployment(name, namespace, patch)


def test_deployment_deadline_exceeded_then_rollback(k8s_namespace: K8sNamespace) -> None:
    ns = k8s_namespace.name
    with k8s_namespace.api_client() as api:
        apps = client.AppsV1Api(api)
        core = client.CoreV1Api(api)
        apps.create_namespaced_deployment(ns, _deployment("web", GOOD_IMAGE))
        poll(lambda: _rolled_out(apps, ns, "web"), TIMEOUT, "web to become Available")

        _set_image(apps, ns, "web", BAD_IMAGE)

        def deadline_exceeded() -> Any:
            d = apps.read_namespaced_deployment_status("web", ns)
            progressing = _conditions(d).get("Progressing")
            if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
                return progressing
            return None

        progressing = poll(deadline_exceeded, TIMEOUT, "ProgressDeadlineExceeded")
        assert progressing.status == "False"
        stuck = [
            p
            for p in core.list_namespaced_pod(ns, label_selector="app=web").items
            if p.spec.containers[0].image == BAD_IMAGE
        ]
        assert stuck, "the new ReplicaSet should have created a pod"
        for pod in stuck:
            assert pod.status.phase == "Pending"
            waiting = pod.status.container_statuses[0].state.waiting
            assert waiting.reason == "ImagePullBackOff"
        # maxUnavailable rounds down to 0 for 2 replicas: the old pods keep serving.
        d = apps.read_namespaced_deployment_status("web", ns)
        assert _conditions(d)["Available"].status == "True"

        _set_image(apps, ns, "web", GOOD_IMAGE)
        d = poll(lambda: _rolled_out(apps, ns, "web"), TIMEOUT, "rollback to finish")
        assert d.spec.template.spec.containers[0].image == GOOD_IMAGE


def test_job_pods_complete(k8s_namespace: K8sNamespace) -> None:
    ns = k8s_namespace.name
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="build"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[
                        client.V1Container(
                            name="kaniko",
                            image="127.0.0.1:5000/kaniko-project/executor:v1.23.2",
                            args=["--destination=127.0.0.1:5000/shop/api:1.0.1"],
                        )
                    ],
                )
            ),
        ),
    )
    with k8s_namespace.api_client() as api:
        batch = client.BatchV1Api(api)
        core = client.CoreV1Api(api)
        batch.create_namespaced_job(ns, job)

        def complete() -> client.V1Job | None:
            j = batch.read_namespaced_job_status("build", ns)
            conditions = {c.type: c.status for c in j.status.conditions or []}
            return j if conditions.get("Complete") == "True" else None

        finished = poll(complete, TIMEOUT, "the Job to complete")
        assert finished.status.succeeded == 1
        assert not finished.status.failed
        (pod,) = core.list_namespaced_pod(ns, label_selector="job-name=build").items
        assert pod.status.phase == "Succeeded"
        assert pod.status.container_statuses[0].state.terminated.exit_code == 0


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({}, f"test bed: image 127.0.0.1:5000/shop/migrate:{FAILS_JOB_IMAGE_MARK} is marked"),
        ({FAILS_JOB_LOG_ANNOTATION: "ERROR: relation users exists"}, "ERROR: relation users"),
    ],
    ids=["default-message", "annotated-log"],
)
def test_jobs_marked_fails_job_fail(
    k8s_namespace: K8sNamespace, annotations: dict[str, str], message: str
) -> None:
    ns = k8s_namespace.name

    def job(name: str, image: str) -> client.V1Job:
        return client.V1Job(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1JobSpec(
                backoff_limit=0,
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(annotations=annotations),
                    spec=client.V1PodSpec(
                        restart_policy="Never",
                        containers=[client.V1Container(name="migrate", image=image)],
                    ),
                ),
            ),
        )

    with k8s_namespace.api_client() as api:
        batch = client.BatchV1Api(api)
        core = client.CoreV1Api(api)
        batch.create_namespaced_job(ns, job("good", "127.0.0.1:5000/shop/migrate:1.0"))
        batch.create_namespaced_job(
            ns, job("bad", f"127.0.0.1:5000/shop/migrate:{FAILS_JOB_IMAGE_MARK}")
        )

        def condition(name: str, kind: str) -> bool:
            j = batch.read_namespaced_job_status(name, ns)
            return {c.type: c.status for c in j.status.conditions or []}.get(kind) == "True"

        poll(lambda: condition("bad", "Failed"), TIMEOUT, "the marked Job to fail")
        poll(lambda: condition("good", "Complete"), TIMEOUT, "the plain Job to complete")
        assert not condition("bad", "Complete") and not condition("good", "Failed")
        (pod,) = core.list_namespaced_pod(ns, label_selector="job-name=bad").items
        assert pod.status.phase == "Failed"
        terminated = pod.status.container_statuses[0].state.terminated
        assert (terminated.exit_code, terminated.reason) == (1, "Error")
        assert terminated.message.startswith(message)


@pytest.mark.parametrize(
    ("labels", "image", "reason"),
    [
        ({NEVER_READY_LABEL: "true"}, GOOD_IMAGE, "ContainerCreating"),
        ({}, f"127.0.0.1:5000/{NEVER_READY_IMAGE_MARK}/api:1.0.0", "ImagePullBackOff"),
    ],
    ids=["label", "image-path"],
)
def test_marked_pods_stay_pending(
    k8s_namespace: K8sNamespace, labels: dict[str, str], image: str, reason: str
) -> None:
    ns = k8s_namespace.name

    def pod(name: str, labels: dict[str, str], image: str) -> client.V1Pod:
        return client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image=image)]),
        )

    with k8s_namespace.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(ns, pod("plain", {}, GOOD_IMAGE))
        core.create_namespaced_pod(ns, pod("marked", labels, image))

        def ready(name: str) -> str | None:
            status = core.read_namespaced_pod_status(name, ns).status
            conditions = {c.type: c.status for c in status.conditions or []}
            return conditions.get("Ready")

        assert poll(lambda: ready("plain") == "True", TIMEOUT, "plain pod Ready")

        def settled() -> client.V1PodStatus | None:
            # kwok gives every pod it has handled an IP; marked pods get one too,
            # but no Running phase and no readiness.
            status = core.read_namespaced_pod_status("marked", ns).status
            return status if status.pod_ip else None

        status = poll(settled, TIMEOUT, "marked pod handled by kwok")
        assert status.phase == "Pending"
        assert ready("marked") == "False"
        assert status.container_statuses[0].state.waiting.reason == reason
