"""Drift of one release on Kubernetes: desired objects against live ones, field by field.

The live side arrives already projected onto the fields someone set
(`k8s_live.clean_live`, done by `observe`), so defaults and status never show
up. What is left is normalised the way the API server would store the desired
side (the normaliser gitops-engine's `pkg/diff` has): quantities compared as
amounts (`cpu: 0.5` is `500m`, `1024Mi` is `1Gi`), labels and annotations
other managers added ignored, the release and digest annotations left to the
summary, server metadata dropped.

A writer that replaced an object whole (`kubectl replace`, `kubectl create`: an
Update) is recorded as having set every field the server defaulted in it
(`ports[].protocol: TCP`, `imagePullPolicy`, `strategy`, ...). A field only the
live side has is therefore drift only when it differs from what the server makes
of the desired object: `server_defaults` (the platform's dry-run replace of it,
asked only for an object with such a field) gives that, as a server-side dry run
gives Argo CD and fluxcd their predicted live object. Pure: unit-tested without a
cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from typing import Any

from configcenter.adapters.k8s_live import main_workload
from configcenter.ports.platform import (
    Deployable,
    Drift,
    ObservedService,
    ServiceDiff,
    service_diff,
)

#: Annotations that carry the release and digest: reported once per service, not per object.
_SUMMARY_ANNOTATIONS = ("configcenter.io/release", "configcenter.io/config-digest")
#: Flattened paths (under `spec`) whose values are Kubernetes quantities, which the API
#: server stores in canonical form (`cpu: 0.5` comes back as `500m`, `1024Mi` as
#: `1Gi`): container and pod `resources`, PVC and volumeClaimTemplate storage
#: requests, and emptyDir `sizeLimit`.
_QUANTITY_PATH = re.compile(
    r"spec\.(?:.*\.)?(?:resources\.(?:requests|limits)\.[^.\[\]]+|emptyDir\.sizeLimit)"
)

#: Label and annotation paths (of an object or its pod template).
_FOREIGN_METADATA = re.compile(r"(?:^|\.)metadata\.(?:labels|annotations)\.")

#: `Kind/name` -> the desired object as the API server would store it (defaults filled
#: in), or None when the server cannot say.
ServerDefaults = Callable[[str], Mapping[str, Any] | None]


def diff(
    deployable: Deployable,
    desired: Mapping[str, Mapping[str, Any]],
    observed: ObservedService | None,
    server_defaults: ServerDefaults | None = None,
) -> ServiceDiff:
    """The release's drift: `desired` are the objects apply would send, keyed like
    `observed.objects` (`Kind/name`)."""
    image, replicas = desired_summary(desired, deployable)
    objects = (
        ()
        if observed is None
        else object_drifts(
            deployable.service, desired, observed.objects, observed.present, server_defaults
        )
    )
    return service_diff(deployable, observed, image=image, replicas=replicas, objects=objects)


def desired_summary(
    objects: Mapping[str, Mapping[str, Any]], desired: Deployable
) -> tuple[str | None, int | None]:
    """Image and replicas of the main workload as applied (templates may set both).

    A DaemonSet has no replica count: its replicas are None on both sides.
    """
    key = main_workload(desired.service, objects)
    if key is None:
        return None, None
    body = objects[key]
    spec = body.get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    image = containers[0].get("image") if containers else desired.image
    if key.startswith("DaemonSet/"):
        return (str(image) if image else desired.image), None
    replicas = spec.get("replicas")
    return (
        str(image) if image else desired.image,
        int(replicas) if replicas is not None else desired.replicas,
    )


def object_drifts(
    service: str,
    desired: Mapping[str, Mapping[str, Any]],
    live: Mapping[str, Mapping[str, Any]],
    present: Collection[str] = (),
    server_defaults: ServerDefaults | None = None,
) -> list[Drift]:
    """`present`: objects that exist but are not in `live` (immutable versions no workload
    refers to now): there, so not missing; named by their content, so not changed."""
    drifts: list[Drift] = []
    for ref in sorted(desired):
        if ref not in live:
            if ref not in present:
                drifts.append(Drift(service, ref, "present", None, "missing"))
            continue
        want_body, have_body = _strip(desired[ref]), _strip(live[ref])
        if want_body == have_body:
            continue  # equal as a whole: equal path by path (the usual case when in sync)
        want, have = _flatten(want_body), _flatten(have_body)
        defaulted: dict[str, Any] | None = None
        for path in sorted(set(want) | set(have)):
            if path.startswith(("apiVersion", "kind")):
                continue
            a, b = want.get(path), have.get(path)
            if path not in want and _FOREIGN_METADATA.search(path):
                continue  # a label/annotation another manager added: theirs, not drift
            if a == b or _same_quantity(path, a, b):
                continue
            if path not in want and server_defaults is not None:
                if defaulted is None:
                    stored = server_defaults(ref)
                    defaulted = _flatten(_strip(stored)) if stored is not None else {}
                if path in defaulted and defaulted[path] == b:
                    continue  # what the server fills in for the desired object: a default
            drifts.append(Drift(service, f"{ref} {path}", _show(a), _show(b), "changed"))
    for ref in sorted(set(live) - set(desired)):
        drifts.append(Drift(service, ref, None, "present", "orphan"))
    return drifts


def _same_quantity(path: str, desired: Any, live: Any) -> bool:
    """Whether two values at a quantity path are the same amount, however written.

    Anything else (and a value that is not a quantity at all) is compared exactly.
    """
    if not _QUANTITY_PATH.fullmatch(path):
        return False
    a, b = _quantity(desired), _quantity(live)
    return a is not None and a == b


def _quantity(value: Any) -> Decimal | None:
    """The exact amount of a Kubernetes quantity (`500m`, `1Gi`, `0.5`, `2`); None if not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    from kubernetes.utils.quantity import parse_quantity

    try:
        # str() first: Decimal(0.1) is 0.1000000000000000055..., but YAML's 0.1 means 100m.
        return Decimal(parse_quantity(str(value)))
    except (ValueError, ArithmeticError):
        return None


def _strip(body: Mapping[str, Any]) -> dict[str, Any]:
    """Without server metadata and the release/digest annotations summarised elsewhere."""
    out = {k: v for k, v in body.items() if k not in ("status",)}
    meta = dict(out.get("metadata") or {})
    for key in ("namespace", "managedFields", "resourceVersion", "uid", "creationTimestamp"):
        meta.pop(key, None)
    out["metadata"] = meta
    return out


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf paths: maps by key, lists of named maps by name, other lists by index."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        if not value and prefix:
            return out  # an empty map sets nothing
        for key, item in value.items():
            if key in _SUMMARY_ANNOTATIONS and prefix.endswith("annotations"):
                continue
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
        named = all("name" in i for i in value)
        for index, item in enumerate(value):
            label = item["name"] if named else index
            out.update(_flatten(item, f"{prefix}[{label}]"))
        return out
    out[prefix] = value
    return out


def _show(value: Any) -> str | None:
    return None if value is None else str(value)
