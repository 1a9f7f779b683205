"""What runs on Kubernetes for an env: one list call per kind, summarised per service.

Live objects are projected onto the fields someone set (`k8s_live.clean_live`)
so that `diff` (`k8s_diff`) compares like with like; a service is summarised by
its main workload (image, replicas, release and config digest annotations).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from configcenter.adapters.k8s_client import KubeClient
from configcenter.adapters.k8s_desired_cache import DesiredObjectsCache
from configcenter.adapters.k8s_live import (
    clean_live,
    keeps_label,
    main_workload,
    spec_writers,
    without_claim_defaults,
)
from configcenter.adapters.k8s_manifests import (
    APPLIED_KINDS_ANNOTATION,
    DIGEST_ANNOTATION,
    RELEASE_ANNOTATION,
    RELEASE_OBJECTS_ANNOTATION,
    SERVICE_LABEL,
    VERSIONED_LABEL,
    VERSIONED_ROLES,
    build_objects,
    config_map_name,
    env_selector,
    pod_templates,
    service_selector,
)
from configcenter.ports.platform import Deployable, ObservedService

log = logging.getLogger("configcenter.adapters.kubernetes")  # one logger name for the adapter

#: The kinds `observe` lists: what drift detection compares.
OBSERVED_KINDS = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
)

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def observe(client: KubeClient, env: str) -> dict[str, ObservedService]:
    """What configcenter manages in the namespace now: one list call per kind."""
    selector = env_selector(env)
    by_service: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    live: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for api_version, kind in OBSERVED_KINDS:
        listing = client.call(
            f"list {kind}s",
            client.get_json,
            client.resource(api_version, kind),
            namespace=client.namespace,
            label_selector=selector,
        )
        for item in listing.get("items") or []:
            item = {"apiVersion": api_version, "kind": kind, **item}
            labels = item["metadata"].get("labels") or {}
            service = labels.get(SERVICE_LABEL)
            if not service:
                continue
            ref = f"{kind}/{item['metadata']['name']}"
            by_service.setdefault(service, []).append((ref, item))
            live.setdefault(service, {}).setdefault(kind, []).append(item)
    observed = {}
    for service, items in sorted(by_service.items()):
        # Config and secret versions kept for rollbacks are not what runs: only the ones
        # the service's workloads refer to are (the others are not even projected).
        used = _referenced_versions(live.get(service, {}))
        objects = {
            ref: clean_live(item)
            for ref, item in items
            if ref in used or not keeps_label(item, VERSIONED_LABEL)
        }
        found = _observed(service, live.get(service, {}), objects, used)
        writers = {w: None for _, item in items for w in spec_writers(item)}
        observed[service] = replace(
            found, present=frozenset(ref for ref, _ in items), changed_by=tuple(writers)
        )
    return observed


def desired_objects(
    deployable: Deployable, namespace: str, cache: DesiredObjectsCache | None = None
) -> dict[str, Mapping[str, Any]]:
    """The objects `apply` would send, keyed like `observe()` keys them (object drift);
    kept in `cache` by everything they are built from, when one is given."""
    if cache is None:
        return build_desired(deployable, namespace)
    return cache.get(deployable, namespace, lambda: build_desired(deployable, namespace))


def build_desired(deployable: Deployable, namespace: str) -> dict[str, Mapping[str, Any]]:
    """`desired_objects` built afresh: Secrets masked, only the kinds `observe` lists."""
    kinds = {kind for _, kind in OBSERVED_KINDS}
    built = build_objects(deployable, namespace, None)
    return {obj.ref: without_claim_defaults(obj.body) for obj in built if obj.kind in kinds}


def delete(client: KubeClient, env: str, service: str) -> None:
    """Delete every object of the service in the namespace, of any kind, by label."""
    selector = service_selector(env, service)
    deleted = []
    for resource in _deletable_resources(client):
        client.call(
            f"delete {resource.kind}s of {service}",
            resource.delete,
            namespace=client.namespace,
            label_selector=selector,
            propagation_policy="Background",
        )
        deleted.append(resource.kind)
    log.info("deleted %s's objects in namespace %s", service, client.namespace)


def _deletable_resources(client: KubeClient) -> list[Any]:
    from kubernetes.dynamic.resource import ResourceList, Subresource

    found = []
    for resource in client.dynamic().resources.search():
        if isinstance(resource, ResourceList | Subresource) or not resource.namespaced:
            continue
        if not resource.preferred or "deletecollection" not in (resource.verbs or []):
            continue
        if "/" in (resource.name or ""):
            continue
        found.append(resource)
    # Workloads first: their pods stop before the config they read goes away.
    workloads = {"Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job"}
    found.sort(key=lambda r: (r.kind not in workloads, r.group or "", r.kind))
    return found


def _observed(
    service: str,
    live: Mapping[str, list[dict[str, Any]]],
    objects: Mapping[str, Any],
    used: set[str],
) -> ObservedService:
    """Summarise a service by its main workload (see `main_workload`); `used` are the
    versions its workloads refer to."""
    present = {
        f"{kind}/{item['metadata']['name']}": item for kind, items in live.items() for item in items
    }
    ref = main_workload(service, present)
    main = present[ref] if ref is not None else None
    image = replicas = digest = release = None
    if main is not None:
        annotations = main["metadata"].get("annotations") or {}
        release = annotations.get(RELEASE_ANNOTATION)
        digest = annotations.get(DIGEST_ANNOTATION)
        if main.get("kind") != "DaemonSet":
            replicas = (main.get("spec") or {}).get("replicas")
        for template in pod_templates(main):
            containers = (template.get("spec") or {}).get("containers") or []
            if containers:
                image = containers[0].get("image")
            digest = ((template.get("metadata") or {}).get("annotations") or {}).get(
                DIGEST_ANNOTATION, digest
            )
    else:
        for kind in ("ConfigMap", "Secret", "Service"):
            for item in live.get(kind, []):
                annotations = item["metadata"].get("annotations") or {}
                release = release or annotations.get(RELEASE_ANNOTATION)
                digest = digest or annotations.get(DIGEST_ANNOTATION)
    return ObservedService(
        service=service,
        image=image,
        replicas=None if replicas is None else int(replicas),
        config_digest=digest,
        release_id=release,
        objects=dict(sorted(objects.items())),
        missing=_missing(service, live, set(present), used),
    )


def _missing(
    service: str, live: Mapping[str, list[dict[str, Any]]], present: set[str], used: set[str]
) -> tuple[str, ...]:
    """Objects the running release needs that are gone: those its record lists (applied
    with it) and the versions its workloads' pods refer to (`used`)."""
    # Only configcenter's own versions: a pod may also read a Secret someone else made.
    prefixes = tuple(f"{name(service)}-" for name in VERSIONED_ROLES.values())
    wanted = {ref for ref in used if ref.split("/", 1)[1].startswith(prefixes)}
    for item in live.get("ConfigMap", []):
        if item["metadata"]["name"] != config_map_name(service):
            continue
        annotations = item["metadata"].get("annotations") or {}
        listed = annotations.get(RELEASE_OBJECTS_ANNOTATION)
        if listed is not None:
            wanted.update(ref for ref in str(listed).split(",") if ref)
            continue
        # A record from before objects were listed names kinds only: a workload kind
        # applied but no workload left at all is still a release that does not run.
        kinds = str(annotations.get(APPLIED_KINDS_ANNOTATION) or "")
        workloads = [k for k in WORKLOAD_KINDS if f"/{k}" in kinds]
        if workloads and not any(live.get(k) for k in WORKLOAD_KINDS):
            wanted.add(f"{workloads[0]}/{service}")  # named by the service: a guess, for the log
    return tuple(sorted(wanted - present))


def _referenced_versions(live: Mapping[str, list[dict[str, Any]]]) -> set[str]:
    """`Kind/name` of every ConfigMap and Secret the workloads' pod templates refer to."""
    refs: set[str] = set()
    for kind in ("Deployment", "StatefulSet", "DaemonSet"):
        for workload in live.get(kind, []):
            for template in pod_templates(workload):
                pod = template.get("spec") or {}
                for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
                    for source in container.get("envFrom") or []:
                        if "configMapRef" in source:
                            refs.add(f"ConfigMap/{source['configMapRef'].get('name')}")
                        if "secretRef" in source:
                            refs.add(f"Secret/{source['secretRef'].get('name')}")
                for volume in pod.get("volumes") or []:
                    for source in (volume.get("projected") or {}).get("sources") or []:
                        if "configMap" in source:
                            refs.add(f"ConfigMap/{source['configMap'].get('name')}")
                        if "secret" in source:
                            refs.add(f"Secret/{source['secret'].get('name')}")
    return refs
