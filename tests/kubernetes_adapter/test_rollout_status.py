"""Rollout health rules over Deployment, StatefulSet, DaemonSet and pod JSON (no cluster)."""

from __future__ import annotations

from typing import Any

from configcenter.adapters.k8s_rollout import (
    combine,
    daemonset_status,
    deployment_status,
    pod_failure,
    pod_is_ready,
    pod_not_ready,
    statefulset_status,
)
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
    variants: list[dict[str, Any]] = [
        {"updated": 1},
        {"ready": 1},
        {"available": 1},
        {"total": 3},
        {"generation": 3},
    ]
    for changes in variants:
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


def statefulset(
    *,
    generation: int = 2,
    observed: int = 2,
    replicas: int = 3,
    total: int = 3,
    updated: int = 3,
    ready: int = 3,
    available: int = 3,
    current: str = "db-new",
    update: str = "db-new",
    strategy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "db", "generation": generation},
        "spec": {"replicas": replicas, "updateStrategy": strategy or {"type": "RollingUpdate"}},
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "currentRevision": current,
            "updateRevision": update,
        },
    }


def test_statefulset_healthy_needs_update_revision_current_and_every_count_at_desired() -> None:
    status = statefulset_status(statefulset(), "db")
    assert (status.state, status.reason) == ("healthy", "RolloutComplete")
    assert (status.desired, status.updated, status.ready, status.available) == (3, 3, 3, 3)
    for changes in (
        {"updated": 2},
        {"ready": 2},
        {"available": 2},
        {"total": 4},
        {"current": "db-old"},
    ):
        assert statefulset_status(statefulset(**changes), "db").state == "progressing", changes
    behind = statefulset_status(statefulset(generation=3), "db")
    assert (behind.state, behind.reason) == ("progressing", "ObservedGenerationBehind")


def test_statefulset_partition_needs_only_the_ordinals_at_or_above_it_updated() -> None:
    partitioned = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    # 3 replicas, partition 2: only db-2 takes the new revision; db-0, db-1 stay old.
    done = statefulset(updated=1, current="db-old", strategy=partitioned)
    status = statefulset_status(done, "db")
    assert status.state == "healthy", status
    assert "partition 2" in status.message
    assert statefulset_status(statefulset(updated=0, strategy=partitioned), "db").state == (
        "progressing"
    )
    not_ready = statefulset(updated=1, ready=2, current="db-old", strategy=partitioned)
    assert statefulset_status(not_ready, "db").state == "progressing"


def test_statefulset_on_delete_counts_readiness_only() -> None:
    on_delete = statefulset(updated=0, current="db-old", strategy={"type": "OnDelete"})
    status = statefulset_status(on_delete, "db")
    assert status.state == "healthy", status
    assert "OnDelete" in status.message
    unready = statefulset(updated=0, ready=1, strategy={"type": "OnDelete"})
    assert statefulset_status(unready, "db").state == "progressing"


def test_statefulset_failing_pods_fail_fast_and_missing_fails() -> None:
    status = statefulset_status(
        statefulset(ready=0), "db", [("ImagePullBackOff", "pod db-2 container app: nope")]
    )
    assert (status.state, status.reason, status.message) == (
        "failed",
        "ImagePullBackOff",
        "StatefulSet db: pod db-2 container app: nope",
    )
    assert statefulset_status(None, "db").reason == "NotFound"
    stale = statefulset_status(statefulset(generation=3), "db", [("CrashLoopBackOff", "x")])
    assert stale.state == "progressing", "failures are judged only once the spec is observed"


def daemonset(
    *,
    generation: int = 4,
    observed: int = 4,
    desired: int = 3,
    updated: int = 3,
    ready: int = 3,
    available: int = 3,
    unavailable: int = 0,
    strategy: str = "RollingUpdate",
) -> dict[str, Any]:
    return {
        "metadata": {"name": "agent", "generation": generation},
        "spec": {"updateStrategy": {"type": strategy}},
        "status": {
            "observedGeneration": observed,
            "desiredNumberScheduled": desired,
            "updatedNumberScheduled": updated,
            "numberReady": ready,
            "numberAvailable": available,
            **({"numberUnavailable": unavailable} if unavailable else {}),
        },
    }


def test_daemonset_healthy_when_every_scheduled_pod_is_updated_and_available() -> None:
    status = daemonset_status(daemonset(), "agent")
    assert (status.state, status.reason) == ("healthy", "RolloutComplete")
    assert (status.desired, status.updated, status.ready, status.available) == (3, 3, 3, 3)
    variants: list[dict[str, Any]] = [
        {"updated": 2},
        {"available": 2},
        {"unavailable": 1},
        {"generation": 5},
    ]
    for changes in variants:
        assert daemonset_status(daemonset(**changes), "agent").state == "progressing", changes
    assert daemonset_status(daemonset(desired=0, updated=0, ready=0, available=0), "agent").state
    on_delete = daemonset(updated=1, strategy="OnDelete")
    assert daemonset_status(on_delete, "agent").state == "healthy"


def test_daemonset_failing_pods_fail_fast_and_missing_fails() -> None:
    status = daemonset_status(daemonset(available=2), "agent", [("CrashLoopBackOff", "pod a: x")])
    assert (status.state, status.reason, status.message) == (
        "failed",
        "CrashLoopBackOff",
        "DaemonSet agent: pod a: x",
    )
    assert daemonset_status(None, "agent").reason == "NotFound"


def test_combine_of_workload_kinds_is_healthy_only_when_all_are() -> None:
    good = statefulset_status(statefulset(), "db")
    waiting = daemonset_status(daemonset(updated=1), "agent")
    both = combine([good, waiting])
    assert (both.state, both.message) == ("progressing", waiting.message)
    done = combine([good, daemonset_status(daemonset(), "agent")])
    assert done.state == "healthy"
    assert good.message in done.message


def test_pod_is_ready_reads_the_ready_condition() -> None:
    ready = {"metadata": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert pod_is_ready(ready)
    assert not pod_is_ready({"metadata": {}, "status": {"conditions": []}})
    assert not pod_is_ready({**ready, "metadata": {"deletionTimestamp": "now"}})


def test_progress_deadline_exceeded_names_the_new_pods_that_are_not_ready() -> None:
    condition = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "api-1" has timed out progressing.',
    }
    stuck = deployment(ready=0, conditions=[condition])
    stuck["metadata"]["namespace"] = "shop-dev"
    stuck["spec"]["progressDeadlineSeconds"] = 30
    pods = [
        {
            "metadata": {"name": "api-1-a"},
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "app", "ready": False, "state": {"running": {}}}],
            },
        },
        {
            "metadata": {"name": "api-1-b"},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient cpu.",
                    }
                ],
            },
        },
    ]
    reasons = [why for pod in pods if (why := pod_not_ready(pod)) is not None]

    status = deployment_status(stuck, "api", unready_pods=reasons)

    assert status.message == (
        'Deployment api: ReplicaSet "api-1" has timed out progressing. 2 of its new pods did '
        "not become ready within 30s (progressDeadlineSeconds): pod api-1-a Running: "
        "container app running, not ready (its readiness probe fails); pod api-1-b Pending: "
        "PodScheduled Unschedulable (0/3 nodes are available: 3 Insufficient cpu.); "
        "`kubectl -n shop-dev describe pod api-1-a` shows its events"
    )
    ready = {
        "metadata": {"name": "x"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert pod_not_ready(ready) is None
