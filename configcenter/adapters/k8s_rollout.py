"""Rollout health of Deployments, StatefulSets and DaemonSets, judged from status and pods.

Pure functions over the JSON the API server returns, so the rules (the same
ones `kubectl rollout status` applies, plus failing fast on pods that cannot
start) are unit-tested without a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from configcenter.ports.platform import RolloutStatus

#: Container waiting reasons that do not fix themselves: fail the rollout at
#: once instead of waiting out the progress deadline.
FAILING_WAIT_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
    }
)
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH_LABEL = "pod-template-hash"
#: On StatefulSet and DaemonSet pods (and their ControllerRevisions): which revision
#: made the pod. A StatefulSet's pods carry the revision's name, a DaemonSet's its hash.
REVISION_HASH_LABEL = "controller-revision-hash"
#: The kinds `wait` follows, and what the rollout waits on for each.
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def pod_failure(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when a pod is stuck in a state that will not recover."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    status = pod.get("status") or {}
    for container in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason") or ""
        if reason in FAILING_WAIT_REASONS:
            detail = waiting.get("message") or reason
            return reason, (
                f"pod {meta.get('name')} container {container.get('name')}: {reason}: {detail}"
            )
    return None


def pod_not_ready(pod: Mapping[str, Any]) -> str | None:
    """Why a pod is not ready, in a few words (`pod api-1-x Pending: container app waiting:
    ContainerCreating`), from its status as the API server reports it; None when ready."""
    if pod_is_ready(pod):
        return None
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    said: list[str] = []
    for container in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        state = container.get("state") or {}
        name = container.get("name")
        if "waiting" in state:
            waiting = state["waiting"] or {}
            detail = f" ({waiting['message']})" if waiting.get("message") else ""
            said.append(f"container {name} waiting: {waiting.get('reason') or 'unknown'}{detail}")
        elif "terminated" in state:
            ended = state["terminated"] or {}
            said.append(
                f"container {name} terminated: {ended.get('reason') or 'unknown'} "
                f"(exit code {ended.get('exitCode')})"
            )
        elif not container.get("ready"):
            said.append(f"container {name} running, not ready (its readiness probe fails)")
    if not said:  # no container started: not scheduled, or not yet looked at by a kubelet
        for condition in status.get("conditions") or []:
            if condition.get("status") == "False" and condition.get("reason"):
                detail = f" ({condition['message']})" if condition.get("message") else ""
                said.append(f"{condition.get('type')} {condition['reason']}{detail}")
                break
    phase = status.get("phase") or "Pending"
    return f"pod {meta.get('name')} {phase}" + (": " + "; ".join(said) if said else "")


def generation_observed(workload: Mapping[str, Any]) -> bool:
    meta = workload.get("metadata") or {}
    status = workload.get("status") or {}
    return int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's Ready condition is True (and it is not being deleted)."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _names_other_replicaset(condition: Mapping[str, Any], current: str | None) -> bool:
    match = re.search(r'ReplicaSet "([^"]+)"', str(condition.get("message") or ""))
    return current is not None and match is not None and match.group(1) != current


def deployment_status(
    deployment: Mapping[str, Any] | None,
    name: str,
    failing_pods: Iterable[tuple[str, str]] = (),
    current_replicaset: str | None = None,
    unready_pods: Iterable[str] = (),
) -> RolloutStatus:
    """Where one Deployment's rollout stands.

    `unready_pods` says why each pod of the current ReplicaSet is not ready
    (`pod_not_ready`): a progress deadline exceeded names them, and how to look closer,
    since the controller's own message ("ReplicaSet X has timed out progressing") says
    neither what was waited for nor why.

    `current_replicaset` names the Deployment's newest ReplicaSet, when known: after a
    rollback the controller can keep, for one more sync, a ProgressDeadlineExceeded
    condition about the ReplicaSet rolled away from; that one is not this rollout's.

    `failing_pods` holds `pod_failure` results for pods of the Deployment's
    current ReplicaSet only: pods of old ReplicaSets are on their way out and
    must not fail a rollback.
    """
    if deployment is None:
        return RolloutStatus(
            "failed", "NotFound", f"Deployment {name} does not exist; apply the release first"
        )
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    replicas = spec.get("replicas")
    desired = 1 if replicas is None else int(replicas)
    total = int(status.get("replicas") or 0)
    counts = {
        "desired": desired,
        "updated": int(status.get("updatedReplicas") or 0),
        "ready": int(status.get("readyReplicas") or 0),
        "available": int(status.get("availableReplicas") or 0),
    }
    behind = _generation_behind("Deployment", name, deployment, counts)
    if behind is not None:
        return behind
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("status") == "False"
            and condition.get("reason") == "ProgressDeadlineExceeded"
            and not _names_other_replicaset(condition, current_replicaset)
        ):
            message = (
                f"Deployment {name}: {condition.get('message') or 'progress deadline exceeded'}"
            )
            deadline = spec.get("progressDeadlineSeconds")
            unready = list(unready_pods)
            if unready:
                within = f" within {deadline}s (progressDeadlineSeconds)" if deadline else ""
                namespace = (deployment.get("metadata") or {}).get("namespace")
                first = unready[0].split(" ", 2)[1]
                more = f" and {len(unready) - 3} more" if len(unready) > 3 else ""
                message += (
                    f" {len(unready)} of its new pods did not become ready{within}: "
                    f"{'; '.join(unready[:3])}{more}; "
                    f"`kubectl -n {namespace} describe pod {first}` shows its events"
                )
            return RolloutStatus("failed", "ProgressDeadlineExceeded", message, **counts)
    for reason, message in failing_pods:
        return RolloutStatus("failed", reason, f"Deployment {name}: {message}", **counts)
    updated, ready, available = counts["updated"], counts["ready"], counts["available"]
    if updated < desired:
        message = f"{updated} of {desired} new replicas updated"
    elif total > updated:
        message = f"{total - updated} old replicas pending termination"
    elif available < desired or ready < desired:
        message = f"{available} of {desired} updated replicas available, {ready} ready"
    elif total != desired:
        message = f"{total} replicas running, {desired} desired"
    else:
        return RolloutStatus(
            "healthy",
            "RolloutComplete",
            f"Deployment {name}: {desired} of {desired} replicas updated and available",
            **counts,
        )
    return RolloutStatus("progressing", "Progressing", f"Deployment {name}: {message}", **counts)


def _count(status: Mapping[str, Any], key: str) -> int:
    return int(status.get(key) or 0)


def _missing(kind: str, name: str) -> RolloutStatus:
    return RolloutStatus(
        "failed", "NotFound", f"{kind} {name} does not exist; apply the release first"
    )


def _generation_behind(
    kind: str, name: str, workload: Mapping[str, Any], counts: Mapping[str, int]
) -> RolloutStatus | None:
    """Status fields describe an older spec until the controller observes the new one."""
    if generation_observed(workload):
        return None
    return RolloutStatus(
        "progressing",
        "ObservedGenerationBehind",
        f"{kind} {name}: waiting for the controller to observe the new spec",
        **counts,
    )


def _failing(
    kind: str, name: str, failing_pods: Iterable[tuple[str, str]], counts: Mapping[str, int]
) -> RolloutStatus | None:
    for reason, message in failing_pods:
        return RolloutStatus("failed", reason, f"{kind} {name}: {message}", **counts)
    return None


def statefulset_status(
    statefulset: Mapping[str, Any] | None,
    name: str,
    failing_pods: Iterable[tuple[str, str]] = (),
) -> RolloutStatus:
    """Where one StatefulSet's rollout stands.

    RollingUpdate is done when every pod runs the update revision (only the
    ordinals at or above `partition` when one is set: the others stay on the
    old revision on purpose) and all replicas are ready and available. OnDelete
    replaces pods only when someone deletes them, so there only readiness counts.
    `failing_pods` holds `pod_failure` results for pods of the update revision.
    There is no progress deadline for StatefulSets: the caller's timeout applies.
    """
    kind = "StatefulSet"
    if statefulset is None:
        return _missing(kind, name)
    spec = statefulset.get("spec") or {}
    status = statefulset.get("status") or {}
    replicas = spec.get("replicas")
    desired = 1 if replicas is None else int(replicas)
    counts = {
        "desired": desired,
        "updated": _count(status, "updatedReplicas"),
        "ready": _count(status, "readyReplicas"),
        "available": _count(status, "availableReplicas"),
    }
    behind = _generation_behind(kind, name, statefulset, counts)
    if behind is not None:
        return behind
    failed = _failing(kind, name, failing_pods, counts)
    if failed is not None:
        return failed
    strategy = spec.get("updateStrategy") or {}
    rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
    partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
    updated, ready, available = counts["updated"], counts["ready"], counts["available"]
    total = _count(status, "replicas")
    must_update = max(0, desired - partition) if rolling else 0
    message = ""
    if rolling and updated < must_update:
        message = f"{updated} of {must_update} pods on the update revision"
    elif (
        rolling and partition == 0 and status.get("updateRevision") != status.get("currentRevision")
    ):
        message = (
            f"current revision {status.get('currentRevision')} is not yet the update "
            f"revision {status.get('updateRevision')}"
        )
    elif ready < desired or available < desired:
        message = f"{available} of {desired} replicas available, {ready} ready"
    elif total != desired:
        message = f"{total} replicas running, {desired} desired"
    if message:
        return RolloutStatus("progressing", "Progressing", f"{kind} {name}: {message}", **counts)
    note = f" ({must_update} updated at partition {partition})" if partition else ""
    if not rolling:
        note = " (OnDelete: pods take the new revision only when deleted)"
    return RolloutStatus(
        "healthy",
        "RolloutComplete",
        f"{kind} {name}: {desired} of {desired} replicas ready and available{note}",
        **counts,
    )


def daemonset_status(
    daemonset: Mapping[str, Any] | None,
    name: str,
    failing_pods: Iterable[tuple[str, str]] = (),
) -> RolloutStatus:
    """Where one DaemonSet's rollout stands: every scheduled node runs an available new pod.

    OnDelete replaces pods only when someone deletes them, so there only
    availability counts. `failing_pods` holds `pod_failure` results for pods of
    the current revision. There is no progress deadline: the caller's timeout applies.
    """
    kind = "DaemonSet"
    if daemonset is None:
        return _missing(kind, name)
    spec = daemonset.get("spec") or {}
    status = daemonset.get("status") or {}
    desired = _count(status, "desiredNumberScheduled")
    counts = {
        "desired": desired,
        "updated": _count(status, "updatedNumberScheduled"),
        "ready": _count(status, "numberReady"),
        "available": _count(status, "numberAvailable"),
    }
    behind = _generation_behind(kind, name, daemonset, counts)
    if behind is not None:
        return behind
    failed = _failing(kind, name, failing_pods, counts)
    if failed is not None:
        return failed
    rolling = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
    updated, available = counts["updated"], counts["available"]
    unavailable = _count(status, "numberUnavailable")
    message = ""
    if rolling and updated != desired:
        message = f"{updated} of {desired} scheduled pods updated"
    elif available != desired or unavailable:
        message = f"{available} of {desired} scheduled pods available, {unavailable} unavailable"
    if message:
        return RolloutStatus("progressing", "Progressing", f"{kind} {name}: {message}", **counts)
    note = "" if rolling else " (OnDelete: pods take the new revision only when deleted)"
    return RolloutStatus(
        "healthy",
        "RolloutComplete",
        f"{kind} {name}: {desired} of {desired} scheduled pods updated and available{note}",
        **counts,
    )


def combine(statuses: Iterable[RolloutStatus]) -> RolloutStatus:
    """One status for a service with several workloads: the worst one decides."""
    items = list(statuses)
    if not items:
        return RolloutStatus(
            "healthy",
            "NoDeployment",
            "nothing to roll out: no Deployment, StatefulSet or DaemonSet",
        )
    if len(items) == 1:
        return items[0]
    rank = {"failed": 0, "progressing": 1, "healthy": 2}
    worst = min(items, key=lambda s: rank[s.state])
    return RolloutStatus(
        worst.state,
        worst.reason,
        "; ".join(s.message for s in items if s.state == worst.state),
        desired=sum(s.desired for s in items),
        updated=sum(s.updated for s in items),
        ready=sum(s.ready for s in items),
        available=sum(s.available for s in items),
    )
