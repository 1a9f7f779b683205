"""Rollout health rules over Deployment and pod JSON (no cluster needed)."""

from __future__ import annotations

from typing import Any

from configcenter.adapters.k8s_rollout import combine, deployment_status, pod_failure
from configcenter.ports.platform import RolloutStatus


def deployment(
    *,
    generation: int = 2,
    observed: int = 2,
    replicas: int = 2,
    total: int = 2,
    updated: int = 2,
    ready: int = 2,
    available: int = 2,
    conditions: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "api", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "conditions": conditions or [],
        },
    }


def test_healthy_needs_every_count_at_desired_and_no_old_replicas() -> None:
    assert deployment_status(deployment(), "api").state == "healthy"
    for changes in (
        {"updated": 1},
        {"ready": 1},
        {"available": 1},
        {"total": 3},
        {"generation": 3},
    ):
        assert deployment_status(deployment(**changes), "api").state == "progressing", changes


def test_unobserved_generation_hides_stale_failure() -> None:
    stale = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
    status = deployment_status(deployment(generation=3, observed=2, conditions=stale), "api")
    assert (status.state, status.reason) == ("progressing", "ObservedGenerationBehind")


def test_progress_deadline_exceeded_fails_with_the_controllers_message() -> None:
    condition = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "api-1" has timed out progressing.',
    }
    status = deployment_status(deployment(ready=0, conditions=[condition]), "api")
    assert status == RolloutStatus(
        "failed",
        "ProgressDeadlineExceeded",
        'Deployment api: ReplicaSet "api-1" has timed out progressing.',
        desired=2,
        updated=2,
        ready=0,
        available=2,
    )


def test_failing_pods_fail_fast_and_missing_deployment_fails() -> None:
    status = deployment_status(deployment(ready=0), "api", [("CrashLoopBackOff", "pod p: boom")])
    assert (status.state, status.reason, status.message) == (
        "failed",
        "CrashLoopBackOff",
        "Deployment api: pod p: boom",
    )
    assert deployment_status(None, "api").reason == "NotFound"


def test_zero_replicas_is_healthy() -> None:
    scaled = deployment(replicas=0, total=0, updated=0, ready=0, available=0)
    assert deployment_status(scaled, "api").state == "healthy"


def pod(reason: str, *, deleting: bool = False, init: bool = False) -> dict[str, Any]:
    statuses = [{"name": "app", "state": {"waiting": {"reason": reason, "message": "m"}}}]
    return {
        "metadata": {"name": "p1", **({"deletionTimestamp": "now"} if deleting else {})},
        "status": {"initContainerStatuses" if init else "containerStatuses": statuses},
    }


def test_pod_failure_reasons() -> None:
    for reason in ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName"):
        assert pod_failure(pod(reason)) == (reason, f"pod p1 container app: {reason}: m")
    assert pod_failure(pod("ErrImagePull", init=True)) is not None
    assert pod_failure(pod("ContainerCreating")) is None
    assert pod_failure(pod("CrashLoopBackOff", deleting=True)) is None
    assert pod_failure({"metadata": {"name": "p"}}) is None


def test_combine_lets_the_worst_decide_and_sums_counts() -> None:
    healthy = RolloutStatus("healthy", "RolloutComplete", "a ok", 1, 1, 1, 1)
    failed = RolloutStatus("failed", "ImagePullBackOff", "b bad", 2, 1, 0, 0)
    both = combine([healthy, failed])
    assert (both.state, both.reason, both.message) == ("failed", "ImagePullBackOff", "b bad")
    assert (both.desired, both.updated, both.ready, both.available) == (3, 2, 1, 1)
    assert combine([]).reason == "NoDeployment"
