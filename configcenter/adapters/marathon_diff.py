"""Drift of one release on Marathon, and whether Marathon already runs a definition.

An app is one object: the definition we PUT. Marathon fills in defaults (inside
objects and whole fields) and adds read-only bookkeeping, so "runs this
definition" means every field we send is there with our values, and every other
field is empty or one Marathon fills in itself (the normaliser gitops-engine's
`pkg/diff` has for Kubernetes, for Marathon's app JSON). Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from configcenter.ports.platform import (
    Deployable,
    Drift,
    ObservedService,
    ServiceDiff,
    service_diff,
)

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


#: Where observe keeps the app as Marathon returns it (read-only fields left out).
DEFINITION = "definition"
#: Compared as summary fields (image, replicas, release and digest labels) already.
_SUMMARY_LABELS = ("configcenter.io/",)


def diff(
    deployable: Deployable, observed: ObservedService | None, wanted: JSON | None = None
) -> ServiceDiff:
    """Image, instances, config digest and release: the labels and fields we own (a release
    that only scales another carries that one's release id and digest); then, given the
    definition apply would PUT (`wanted`), every field of the app that differs from it."""
    release_id, digest = deployable.workload_identity
    carried = replace(deployable, release_id=release_id, config_digest=digest)
    current = observed.objects.get(DEFINITION) if observed is not None else None
    objects = (
        definition_drifts(deployable.service, current, wanted)
        if wanted is not None and isinstance(current, Mapping)
        else []
    )
    return service_diff(
        carried,
        observed,
        image=deployable.image or None,
        replicas=deployable.replicas,
        objects=objects,
    )


def definition_drifts(service: str, current: Mapping[str, Any], wanted: JSON) -> list[Drift]:
    """Fields of the running app that are not the definition's (`runs`, field by field):
    `app env.KEY`, `app labels.KEY`, `app secrets.KEY` per key, `app FIELD` otherwise.
    Instances and the image are the summary's `replicas` and `image`."""
    drifts: list[Drift] = []
    for key in sorted(set(wanted) | set(current)):
        if key in READ_ONLY or key == "instances":
            continue
        want, have = wanted.get(key), current.get(key)
        if key in ("env", "labels", "secrets"):
            want_map = want if isinstance(want, Mapping) else {}
            have_map = have if isinstance(have, Mapping) else {}
            for name in sorted(set(want_map) | set(have_map)):
                if key == "labels" and str(name).startswith(_SUMMARY_LABELS):
                    continue
                if name not in have_map or not _contains(have_map[name], want_map.get(name)):
                    drifts.append(
                        Drift(
                            service,
                            f"app {key}.{name}",
                            _json(want_map[name]) if name in want_map else None,
                            _json(have_map[name]) if name in have_map else None,
                        )
                    )
            continue
        if key == "container" and isinstance(want, Mapping) and isinstance(have, Mapping):
            docker = have.get("docker") if isinstance(have.get("docker"), Mapping) else {}
            image = docker.get("image") if isinstance(docker, Mapping) else None
            want = {**want, "docker": {**(want.get("docker") or {}), "image": image}}
        if key not in wanted:
            if key in _FILLED_BY_MARATHON or have in (None, [], {}, "", False):
                continue
            drifts.append(Drift(service, f"app {key}", None, _json(have)))
        elif not _contains(have, want):
            drifts.append(Drift(service, f"app {key}", _json(want), _json(have)))
    return drifts


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


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
