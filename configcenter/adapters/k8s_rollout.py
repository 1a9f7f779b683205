"""Rollout health of Deployments, judged from their live status and their pods.

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


def generation_observed(deployment: Mapping[str, Any]) -> bool:
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    return int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)


def _names_other_replicaset(condition: Mapping[str, Any], current: str | None) -> bool:
    match = re.search(r'ReplicaSet "([^"]+)"', str(condition.get("message") or ""))
    return current is not None and match is not None and match.group(1) != current


def deployment_status(
    deployment: Mapping[str, Any] | None,
    name: str,
    failing_pods: Iterable[tuple[str, str]] = (),
    current_replicaset: str | None = None,
) -> RolloutStatus:
    """Where one Deployment's rollout stands.

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
    if not generation_observed(deployment):
        return RolloutStatus(
            "progressing",
            "ObservedGenerationBehind",
            f"Deployment {name}: waiting for the controller to observe the new spec",
            **counts,
        )
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("status") == "False"
            and condition.get("reason") == "ProgressDeadlineExceeded"
            and not _names_other_replicaset(condition, current_replicaset)
        ):
            return RolloutStatus(
                "failed",
                "ProgressDeadlineExceeded",
                f"Deployment {name}: {condition.get('message') or 'progress deadline exceeded'}",
                **counts,
            )
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


def combine(statuses: Iterable[RolloutStatus]) -> RolloutStatus:
    """One status for a service with several Deployments: the worst one decides."""
    items = list(statuses)
    if not items:
        return RolloutStatus("healthy", "NoDeployment", "nothing to roll out: no Deployment")
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
