"""Drift of one release on Marathon, and whether Marathon already runs a definition.

An app is one object: the definition we PUT. Marathon fills in defaults (inside
objects and whole fields) and adds read-only bookkeeping, so "runs this
definition" means every field we send is there with our values, and every other
field is empty or one Marathon fills in itself (the normaliser gitops-engine's
`pkg/diff` has for Kubernetes, for Marathon's app JSON). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from configcenter.ports.platform import Deployable, ObservedService, ServiceDiff, service_diff

JSON = dict[str, Any]

#: Fields Marathon computes; sending them back is rejected or ignored.
READ_ONLY = (
    "version",
    "versionInfo",
    "tasks",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
)


#: Fields Marathon fills in (defaults or assigned values) when a definition leaves
#: them out: their presence on a running app says nothing about what was sent.
_FILLED_BY_MARATHON = frozenset(
    {
        "id",
        "instances",
        "cpus",
        "mem",
        "disk",
        "gpus",
        "backoffSeconds",
        "backoffFactor",
        "maxLaunchDelaySeconds",
        "upgradeStrategy",
        "unreachableStrategy",
        "killSelection",
        "portDefinitions",
        "ports",
        "requirePorts",
        "networks",
        "role",
        "executor",
        "user",
        "acceptedResourceRoles",
        "taskKillGracePeriodSeconds",
        "ipAddress",
        "residency",
    }
)


def diff(deployable: Deployable, observed: ObservedService | None) -> ServiceDiff:
    """Image, instances, config digest and release: the labels and fields we own (a release
    that only scales another carries that one's release id and digest)."""
    release_id, digest = deployable.workload_identity
    carried = replace(deployable, release_id=release_id, config_digest=digest)
    return service_diff(
        carried, observed, image=deployable.image or None, replicas=deployable.replicas
    )


def runs(current: Mapping[str, Any], wanted: JSON) -> bool:
    """Whether the app Marathon returns is exactly the definition we would PUT.

    Every field we send must be there with our values (`_contains`, as Marathon
    adds defaults inside objects); `env`, `labels` and `secrets` must have no
    extra keys; and a field we do not send must be empty or one Marathon fills
    in itself, so a health check, constraint or fetch URI added by hand (or left
    by a partial update) is a difference that the next PUT removes.
    """
    if not _contains(current, wanted):
        return False
    for key in ("env", "labels", "secrets"):
        if set(current.get(key) or {}) != set(wanted.get(key) or {}):
            return False
    return all(
        key in wanted
        or key in READ_ONLY
        or key in _FILLED_BY_MARATHON
        or value in (None, [], {}, "", False)
        for key, value in current.items()
    )


def _contains(actual: Any, wanted: Any) -> bool:
    """Whether `actual` (as Marathon returns it, defaults filled in) has every field we send."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            k in actual and _contains(actual[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(_contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)
