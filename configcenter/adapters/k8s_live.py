"""Live objects reduced to what someone actually set, for drift comparison.

The API server fills in defaults (strategy, dnsPolicy, clusterIP, ...) and
controllers add status and bookkeeping; comparing those with a manifest would
report drift on every object. `managedFields` records exactly which fields each
writer set, so a live object projected onto the union of those field sets is
the manifest as applied, plus any change someone made by hand (`kubectl edit`,
`kubectl scale`), and nothing else.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any

from configcenter.adapters.k8s_manifests import APPLIED_KINDS_ANNOTATION, FIELD_MANAGER, MASK

#: Bookkeeping annotations written by tools, controllers and the adapter's own
#: prune record, never by a template.
NOISE_ANNOTATIONS = frozenset(
    {
        "deployment.kubernetes.io/revision",
        "kubectl.kubernetes.io/last-applied-configuration",
        APPLIED_KINDS_ANNOTATION,
    }
)
_SERVER_METADATA = (
    "managedFields",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "selfLink",
)
#: Workload kinds in the order a service's main one is picked from.
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def main_workload(service: str, refs: Iterable[str]) -> str | None:
    """The `Kind/name` that stands for the service in the image/replicas summary.

    The workload named like the service wins (a Deployment before a StatefulSet
    before a DaemonSet); failing that, the first by name of the first kind present.
    Desired and live are summarised by this one rule, so they name the same object.
    """
    present = set(refs)
    for kind in WORKLOAD_KINDS:
        if f"{kind}/{service}" in present:
            return f"{kind}/{service}"
    for kind in WORKLOAD_KINDS:
        mine = sorted(ref for ref in present if ref.startswith(f"{kind}/"))
        if mine:
            return mine[0]
    return None


def without_claim_defaults(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A StatefulSet without what the server adds to its `volumeClaimTemplates`.

    That list is atomic, so managedFields marks it whole and its items come back
    with `apiVersion`/`kind`, a `status`, and `volumeMode: Filesystem` filled in.
    Apply this to desired and live alike: a template that writes the default
    itself then matches too. `obj` is never changed: the answer is a new top-level
    map whose untouched parts are `obj`'s own (only the path down to the claims is
    copied), so other kinds cost one shallow copy instead of a deep one.
    """
    out = dict(obj)
    if out.get("kind") != "StatefulSet":
        return out
    spec = out.get("spec")
    if not isinstance(spec, dict):
        return out
    claims = spec.get("volumeClaimTemplates")
    if not isinstance(claims, list):
        return out
    trimmed: list[Any] = []
    for claim in claims:
        if not isinstance(claim, dict):
            trimmed.append(claim)
            continue
        claim = dict(claim)
        if claim.get("apiVersion") == "v1":
            claim.pop("apiVersion")
        if claim.get("kind") == "PersistentVolumeClaim":
            claim.pop("kind")
        claim.pop("status", None)
        meta = claim.get("metadata")
        if isinstance(meta, dict) and "creationTimestamp" in meta:
            claim["metadata"] = {k: v for k, v in meta.items() if k != "creationTimestamp"}
        claim_spec = claim.get("spec")
        if isinstance(claim_spec, dict) and claim_spec.get("volumeMode") == "Filesystem":
            claim["spec"] = {k: v for k, v in claim_spec.items() if k != "volumeMode"}
        trimmed.append(claim)
    out["spec"] = {**spec, "volumeClaimTemplates": trimmed}
    return out


def clean_live(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The live object minus status, server metadata, defaults; Secret values masked."""
    meta = obj.get("metadata") or {}
    fields = _set_fields(obj)
    if fields:
        out = _project(obj, fields)
    else:
        out = {k: _copied(v) for k, v in obj.items() if k != "status"}
    out_meta = out.setdefault("metadata", {})
    for key in _SERVER_METADATA:
        out_meta.pop(key, None)
    out_meta["name"] = meta.get("name")
    if meta.get("namespace"):
        out_meta["namespace"] = meta["namespace"]
    annotations = {
        k: v for k, v in (out_meta.get("annotations") or {}).items() if k not in NOISE_ANNOTATIONS
    }
    if annotations:
        out_meta["annotations"] = annotations
    else:
        out_meta.pop("annotations", None)
    result = without_claim_defaults(
        {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), **out}
    )
    result.pop("status", None)
    if result.get("kind") == "Secret":
        for key in ("data", "stringData"):
            if isinstance(result.get(key), dict):
                result[key] = {name: MASK for name in result[key]}
    return result


#: A field path (fieldsV1 keys) that another writer sets without changing what runs: the
#: template annotation `kubectl rollout restart` writes (a restart, not a different pod).
_RESTART_ANNOTATION = (
    "f:template",
    "f:metadata",
    "f:annotations",
    "f:kubectl.kubernetes.io/restartedAt",
)


def spec_writers(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """The writers other than configcenter that set something in `obj`'s spec (a pod
    template, a Service's ports), by their managedFields: `kubectl set env` is
    `kubectl-set`, `kubectl edit` is `kubectl-edit`. Not counted: status writes, the
    scale subresource (`kubectl scale`, an autoscaler: the replica count is compared on
    its own) and `kubectl rollout restart`'s annotation. Read from the object as listed:
    a workload nobody else wrote to needs no comparison with its release to know that.
    """
    found: list[str] = []
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("subresource") in ("status", "scale"):
            continue
        manager = str(entry.get("manager") or "")
        if manager == FIELD_MANAGER or manager in found:
            continue
        spec = (entry.get("fieldsV1") or {}).get("f:spec")
        if spec is not None and _outside(spec, _RESTART_ANNOTATION):
            found.append(manager or "(unnamed)")
    return tuple(found)


def _outside(node: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """Whether the field set `node` names any field other than `path` (and what is below it)."""
    if not path:
        return False
    children = [key for key in node if key != "."]
    if not children:
        return True  # set as a whole
    return any(key != path[0] or _outside(node[key] or {}, path[1:]) for key in children)


def keeps_label(obj: Mapping[str, Any], label: str) -> bool:
    """Whether `clean_live(obj)` has the label `label`, without projecting the object."""
    if label not in ((obj.get("metadata") or {}).get("labels") or {}):
        return False
    node = _set_fields(obj)
    for key in ("f:metadata", "f:labels", f"f:{label}"):
        if all(k == "." for k in node):
            return True  # a field set without children takes the whole value
        if key not in node:
            return False
        node = node[key] or {}
    return True


def _set_fields(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The union of the field sets (fieldsV1) of everyone who set something in `obj`."""
    fields: Mapping[str, Any] = {}
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        # Status writes are the controllers'; the scale subresource is `kubectl scale`
        # changing spec.replicas, which is exactly the drift worth seeing.
        if entry.get("subresource") == "status":
            continue
        # A heal replaces an object as configcenter (an Update, not an Apply): what the
        # server defaulted in that replace is not something anyone set.
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Update":
            continue
        fields = _union(fields, entry.get("fieldsV1") or {})
    return fields


def _union(a: Mapping[str, Any], b: Mapping[str, Any]) -> Mapping[str, Any]:
    """Two field sets as one; neither is changed, parts only one of them has are shared."""
    if not b:
        return a
    if not a:
        return b
    out = dict(a)
    for key, sub in b.items():
        mine = a.get(key)
        out[key] = _union(mine, sub or {}) if mine else (sub or {})
    return out


def _project(value: Any, fields: Mapping[str, Any]) -> Any:
    """`value` cut down to `fields` (a fieldsV1 tree); a field set without children (only
    `.` or nothing) takes the whole value, copied."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        whole = True
        for key, sub in fields.items():
            if key == ".":
                continue
            whole = False
            if key[:2] == "f:":
                name = key[2:]
                if name in value:
                    out[name] = _project(value[name], sub)
        return _copied(value) if whole else out
    if isinstance(value, list):
        matchers = [(_list_key(key), sub) for key, sub in fields.items() if key != "."]
        if not matchers:
            return _copied(value)
        items: list[Any] = []
        for index, item in enumerate(value):
            for (kind, wanted), sub in matchers:
                if _list_item_matches(kind, wanted, index, item):
                    items.append(_project(item, sub))
                    break
        return items
    return value  # a scalar (JSON from the API server): immutable


def _copied(value: Any) -> Any:
    """A copy of JSON data (what the API server returns): several times faster than
    `copy.deepcopy`, which the projection of 2,000 live objects spent most of its time in."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    return value


#: What `_list_key` answers for a key that names no item (not JSON where JSON belongs).
_NO_ITEM = ("", None)


@functools.lru_cache(maxsize=4096)
def _list_key(key: str) -> tuple[str, Any]:
    """A fieldsV1 list key (`k:{...}`, `v:...`, `i:N`) as (kind, what it names), parsed
    once per key text: the same keys (`k:{"name":"app"}`) come back in every object."""
    kind, _, raw = key.partition(":")
    if kind == "i":
        return kind, raw
    if kind not in ("k", "v"):
        return _NO_ITEM
    try:
        wanted = json.loads(raw)
    except ValueError:
        return _NO_ITEM
    if kind == "k":
        if not isinstance(wanted, dict):
            return _NO_ITEM
        return kind, tuple(wanted.items())
    return kind, wanted


def _list_item_matches(kind: str, wanted: Any, index: int, item: Any) -> bool:
    """Whether a parsed fieldsV1 list key (`_list_key`) names this item."""
    if kind == "i":
        return bool(wanted == str(index))
    if kind == "k":
        return isinstance(item, dict) and all(item.get(k) == v for k, v in wanted)
    if kind == "v":
        return bool(item == wanted)
    return False
