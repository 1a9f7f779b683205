"""The Kubernetes platform: server-side apply and prune, watch-based rollout wait, observe, delete.

Talks to the API server through the official `kubernetes` client (imported
only when a `KubernetesPlatform` first needs it). Objects are built by
`k8s_manifests` (pure), rollout health is judged by `k8s_rollout` (pure), and
live objects are trimmed for drift comparison by `k8s_live`. Secret values are
resolved here, at apply time, registered with a `Redactor`, and never logged.

Pruning: once a release was verified healthy (`prune`, called by the use case
after `wait`), objects of the same env and service that it no longer renders are
deleted, so the namespace matches the deploy repo. Only objects carrying
configcenter's labels for that env and service, that configcenter itself applied
(its field manager did an Apply) and that no controller owns are candidates, and
only of the kinds it ever applied for the service (recorded on the `<service>-config` ConfigMap).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from configcenter.adapters import k8s_diff
from configcenter.adapters.k8s_live import clean_live, main_workload, without_claim_defaults
from configcenter.adapters.k8s_manifests import (
    APPLIED_KINDS_ANNOTATION,
    DIGEST_ANNOTATION,
    ENV_LABEL,
    FIELD_MANAGER,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    RELEASE_ANNOTATION,
    SERVICE_LABEL,
    ManifestError,
    SourcedObject,
    apply_rank,
    build_objects,
    check_namespace,
    config_map_name,
    env_selector,
    is_versioned,
    parse_manifests,
    pod_templates,
    release_refs,
    secret_objects,
    service_selector,
    versions_to_collect,
)
from configcenter.adapters.k8s_rollout import (
    REVISION_ANNOTATION,
    REVISION_HASH_LABEL,
    TEMPLATE_HASH_LABEL,
    WORKLOAD_KINDS,
    combine,
    daemonset_status,
    deployment_status,
    generation_observed,
    pod_failure,
    pod_is_ready,
    statefulset_status,
)
from configcenter.adapters.secrets import SecretError, resolve_secret, secret_scheme
from configcenter.core.redact import Redactor
from configcenter.ports.platform import (
    Deployable,
    ObservedService,
    PlatformError,
    PlatformTarget,
    ProgressCallback,
    RolloutStatus,
    ServiceDiff,
    StageJobResult,
    UndeliveredFiles,
)

log = logging.getLogger(__name__)

#: The kinds `observe` lists: what drift detection compares.
OBSERVED_KINDS = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
)
#: Connect and read timeouts (seconds) of the reads a plan makes.
PLAN_REQUEST_TIMEOUT = (5, 15)
#: Longest single watch request; the watch is resumed from its resourceVersion after.
WATCH_CHUNK_SECONDS = 240


class KubernetesPlatform:
    """One namespace of one cluster, as named by a `PlatformTarget`.

    `redactor` lets the caller share one Redactor across adapters so every log
    line and record it writes masks the secrets this adapter resolved.
    """

    def __init__(
        self,
        target: PlatformTarget,
        kubeconfig: str | None = None,
        *,
        redactor: Redactor | None = None,
    ) -> None:
        if target.kind != "kubernetes":
            raise PlatformError(
                f"platform {target.name!r} is of kind {target.kind!r}, not 'kubernetes'; "
                "pick the adapter that matches platforms.<name>.kind"
            )
        self.target = target
        self.namespace = check_namespace(target.settings.get("namespace", ""), target.name)
        self.context = target.settings.get("context") or None
        self.kubeconfig = kubeconfig
        self.redactor = redactor if redactor is not None else Redactor()
        self._dynamic: Any = None
        self._lock = threading.Lock()
        self._hash_cache: dict[tuple[str, str], str | None] = {}
        #: The env's Secrets, listed once for a plan's `secrets_match` calls (one list call
        #: for every service); any apply through this instance drops it.
        self._env_secrets: dict[str, dict[str, Any]] | None = None
        #: Why that list failed, so the plan's other services say so without asking again.
        self._env_secrets_error: str | None = None

    # -- apply -------------------------------------------------------------------------

    def apply(self, deployable: Deployable, *, dry_run: bool = False) -> None:
        """Server-side apply of the release's objects (field manager `configcenter`), then prune.

        A dry run applies with the server's dry run and prunes nothing: it logs
        what it would prune.
        """
        self._check_env(deployable)
        self._env_secrets = None
        self._env_secrets_error = None
        namespace_exists = self._ensure_namespace(dry_run)
        # A generation's Secrets are immutable: when they exist, they hold the values that
        # generation was made with (a rollback gets back exactly those), so nothing is
        # resolved. Only a generation new to the platform resolves its references now.
        missing = self._missing_secrets(deployable) if namespace_exists else None
        values = self._resolve_secrets(deployable) if missing or missing is None else None
        objects = build_objects(deployable, self.namespace, values)
        if missing is not None:
            objects = [
                o
                for o in objects
                if o.kind != "Secret" or o.name in missing or not is_versioned(o.body)
            ]
        resources = [(obj, self._resource_for(obj)) for obj in objects]
        if dry_run and not namespace_exists:
            log.warning(
                "dry run: namespace %s does not exist yet, so the server cannot check %s's "
                "objects in it; they were checked for shape only",
                self.namespace,
                deployable.service,
            )
            return
        # Recorded before anything is applied, so a crash halfway still leaves
        # every kind that may now exist in the record the next apply prunes from.
        kinds = self._recorded_kinds(deployable.service) | {
            (str(obj.body["apiVersion"]), obj.kind) for obj in objects
        }
        _record_kinds(objects, config_map_name(deployable.service), kinds)
        for obj, resource in resources:
            if is_versioned(obj.body):
                self._create_version(obj, resource, deployable, dry_run=dry_run)
                continue
            self._call(
                f"{obj.source}: apply {obj.ref}",
                resource.server_side_apply,
                body=obj.body,
                name=obj.name,
                namespace=self.namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                dry_run="All" if dry_run else None,
                query_params=[("fieldValidation", "Strict")],
            )
            log.info(
                "%s %s in namespace %s (release %s)",
                "dry run: would apply" if dry_run else "applied",
                obj.ref,
                self.namespace,
                deployable.release_id,
            )
        if dry_run:
            self._prune(deployable, objects, kinds, dry_run=True)

    def prune(self, deployable: Deployable) -> list[str]:
        """Delete what earlier releases of the service left and this one no longer renders.

        Call once the release was verified healthy: a release that fails is rolled
        back to objects it must find still there (a Service keeps its UID and IP).
        """
        self._check_env(deployable)
        objects = build_objects(deployable, self.namespace, None)
        kinds = self._recorded_kinds(deployable.service) | {
            (str(obj.body["apiVersion"]), obj.kind) for obj in objects
        }
        pruned = self._prune(deployable, objects, kinds)
        self._collect_versions(deployable, objects)
        return pruned

    def _missing_secrets(self, deployable: Deployable) -> set[str]:
        """Names of the release's Secrets not on the platform yet."""
        names = {obj.name for obj in secret_objects(deployable, None)}
        live = {
            str(item["metadata"]["name"])
            for item in self._service_items("Secret", deployable, "look for its Secrets")
        }
        return names - live

    def _service_items(self, kind: str, deployable: Deployable, why: str) -> list[dict[str, Any]]:
        listing = self._call(
            f"list {kind}s of {deployable.service} to {why}",
            self._get_json,
            self._resource("v1", kind),
            namespace=self.namespace,
            label_selector=service_selector(deployable.env, deployable.service),
        )
        return list(listing.get("items") or [])

    def _create_version(
        self, obj: SourcedObject, resource: Any, deployable: Deployable, *, dry_run: bool
    ) -> None:
        """Create an immutable config or secret version unless it exists (then it is kept)."""
        try:
            resource.create(
                body=obj.body, namespace=self.namespace, dry_run="All" if dry_run else None
            )
        except Exception as exc:
            if getattr(exc, "status", None) == 409:
                return  # same name, same content (or the generation's own values): keep it
            raise self._api_error(f"{obj.source}: create {obj.ref}", exc) from None
        log.info(
            "%s %s in namespace %s (release %s)",
            "dry run: would create" if dry_run else "created",
            obj.ref,
            self.namespace,
            deployable.release_id,
        )

    def _collect_versions(self, deployable: Deployable, objects: Iterable[SourcedObject]) -> None:
        """Delete config and secret versions older than the newest few of each role."""
        in_use = {(obj.kind, obj.name) for obj in objects}
        items = [
            dict(item, kind=kind)  # list items carry no kind of their own
            for kind in ("ConfigMap", "Secret")
            for item in self._service_items(kind, deployable, "collect old versions")
        ]
        for item in versions_to_collect(items, in_use):
            kind = str(item["kind"])
            ref = f"{kind}/{item['metadata']['name']}"
            if self._delete_object(self._resource("v1", kind), item, f"collect {ref}"):
                log.info("collected %s in namespace %s (an old version)", ref, self.namespace)

    def secrets_match(self, deployable: Deployable, generations: list[int]) -> int | str | None:
        """Compare freshly resolved secret values with each generation's live Secrets."""
        self._check_env(deployable)
        probe = secret_objects(deployable, None)
        if not probe:
            return generations[0] if generations else None
        try:
            values = self._resolve_secrets(deployable)
            if self._env_secrets_error is not None:
                return self._env_secrets_error
            if self._env_secrets is None:
                try:
                    listing = self._call(
                        "list Secrets to compare secret values",
                        self._get_json,
                        self._resource("v1", "Secret"),
                        namespace=self.namespace,
                        label_selector=env_selector(deployable.env),
                        # A plan must not hang on an unreachable cluster: it says it cannot
                        # tell.
                        _request_timeout=PLAN_REQUEST_TIMEOUT,
                    )
                except PlatformError as exc:
                    self._env_secrets_error = str(exc)
                    raise
                self._env_secrets = {
                    str(item["metadata"]["name"]): item for item in listing.get("items") or []
                }
            live = {
                name: item.get("data") or {}
                for name, item in self._env_secrets.items()
                if (item["metadata"].get("labels") or {}).get(SERVICE_LABEL) == deployable.service
            }
        except PlatformError as exc:
            return str(exc)
        seen = False
        for generation in generations:
            candidate = replace(deployable, secrets_generation=generation)
            wanted = secret_objects(candidate, values)
            if any(o.name not in live for o in wanted):
                continue
            seen = True
            if all(live[o.name] == o.body["data"] for o in wanted):
                return generation
        return None if seen else "its Secrets are not on the platform yet"

    def _prune(
        self,
        deployable: Deployable,
        objects: Iterable[SourcedObject],
        kinds: Iterable[tuple[str, str]],
        *,
        dry_run: bool = False,
    ) -> list[str]:
        """Delete the service's objects that `objects` (the applied release) no longer has.

        Call only after `objects` were applied. Returns the pruned (or, in a dry
        run, prunable) objects as `Kind/name`, workloads first.
        """
        wanted = {(_group(str(o.body["apiVersion"])), o.kind, o.name) for o in objects}
        selector = service_selector(deployable.env, deployable.service)
        found: list[tuple[Any, dict[str, Any]]] = []
        seen: set[str] = set()
        for api_version, kind in sorted({*kinds, *OBSERVED_KINDS}):
            try:
                resource = self._resource(api_version, kind)
            except ManifestError:
                continue  # no longer served (its CRD is gone), so nothing of it exists
            if not resource.namespaced:
                continue
            listing = self._call(
                f"list {kind}s of {deployable.service} to prune",
                self._get_json,
                resource,
                namespace=self.namespace,
                label_selector=selector,
            )
            for item in listing.get("items") or []:
                uid = str(item["metadata"].get("uid"))
                key = (_group(api_version), kind, str(item["metadata"]["name"]))
                if uid in seen or key in wanted:
                    continue
                if _prunable(item, kind, deployable.env, deployable.service):
                    seen.add(uid)
                    found.append((resource, item))
        found.sort(key=lambda pair: (-apply_rank(pair[0].kind), pair[0].kind))
        pruned: list[str] = []
        for resource, item in found:
            ref = f"{resource.kind}/{item['metadata']['name']}"
            # Warnings, not info: deleting is worth seeing without turning logging up.
            if dry_run:
                log.warning(
                    "dry run: would prune %s in namespace %s (%s's templates no longer render it)",
                    ref,
                    self.namespace,
                    deployable.service,
                )
                pruned.append(ref)
                continue
            if self._delete_object(resource, item, f"prune {ref} of {deployable.service}"):
                log.warning(
                    "pruned %s in namespace %s (%s's templates no longer render it)",
                    ref,
                    self.namespace,
                    deployable.service,
                )
                pruned.append(ref)
        return pruned

    def _delete_object(self, resource: Any, item: Mapping[str, Any], what: str) -> bool:
        """Delete exactly this object (by uid); False when it is gone or was replaced."""
        meta = item["metadata"]
        try:
            resource.delete(
                name=meta["name"],
                namespace=self.namespace,
                body={"preconditions": {"uid": meta.get("uid")}},
                propagation_policy="Background",
            )
        except Exception as exc:
            # 404: already gone; 409: a different object of that name now stands there.
            if getattr(exc, "status", None) in (404, 409):
                return False
            raise self._api_error(what, exc) from None
        return True

    def _recorded_kinds(self, service: str) -> set[tuple[str, str]]:
        """The kinds earlier applies recorded for the service (none before the first)."""
        name = config_map_name(service)
        try:
            config_map = self._get_json(
                self._resource("v1", "ConfigMap"), name=name, namespace=self.namespace
            )
        except PlatformError:
            raise
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return set()
            raise self._api_error(f"read ConfigMap {name}", exc) from None
        annotations = (config_map.get("metadata") or {}).get("annotations") or {}
        return _parse_kinds(str(annotations.get(APPLIED_KINDS_ANNOTATION) or ""))

    def _check_env(self, deployable: Deployable) -> None:
        if deployable.env != self.target.env:
            raise PlatformError(
                f"{deployable.service}: release is for env {deployable.env!r} but platform "
                f"{self.target.name!r} was set up for env {self.target.env!r}; "
                "build the platform from that environment's target"
            )

    def _resolve_secrets(self, deployable: Deployable) -> dict[str, str]:
        """Read every secret the release delivers now, by reference, registering each value
        (and its base64) for masking."""
        values: dict[str, str] = {}
        keys = {ref: key for key, ref in deployable.secrets.items()}
        for ref in sorted(release_refs(deployable)):
            try:
                if secret_scheme(ref) == "k8s":
                    value = self._read_cluster_secret(ref)
                else:
                    value = resolve_secret(ref)
            except SecretError as exc:
                where = f"value {keys[ref]}" if ref in keys else f"secret {ref}"
                raise PlatformError(
                    f"{deployable.service}: {where}: {self.redactor.redact(str(exc))}"
                ) from None
            self.redactor.register(value)
            self.redactor.register(base64.b64encode(value.encode("utf-8")).decode("ascii"))
            values[ref] = value
        return values

    def _read_cluster_secret(self, ref: str) -> str:
        parts = ref.partition(":")[2].split("/")
        if len(parts) != 3 or not all(parts):
            raise SecretError(ref, "expected k8s:namespace/name/key", "name all three parts")
        namespace, name, key = parts
        resource = self._resource("v1", "Secret")
        try:
            secret = self._get_json(resource, name=name, namespace=namespace)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 404:
                raise SecretError(
                    ref,
                    f"Secret {namespace}/{name} does not exist",
                    "create it or fix the reference",
                ) from None
            if status == 403:
                raise SecretError(
                    ref,
                    f"not allowed to read Secret {namespace}/{name}",
                    "grant this context `get` on secrets in that namespace",
                ) from None
            raise
        data = secret.get("data") or {}
        if key not in data:
            known = ", ".join(sorted(data)) or "none"
            raise SecretError(
                ref, f"Secret {namespace}/{name} has no key {key!r} (keys: {known})", "fix the key"
            )
        try:
            return base64.b64decode(data[key], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise SecretError(
                ref, f"key {key!r} of Secret {namespace}/{name} is not UTF-8 text"
            ) from None

    def _ensure_namespace(self, dry_run: bool) -> bool:
        """Create the target namespace if missing; True when it exists (now)."""
        resource = self._resource("v1", "Namespace")
        try:
            self._get_json(resource, name=self.namespace)
            return True
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 403:
                # Namespaced credentials may not read namespaces; applying will tell.
                return True
            if status != 404:
                raise self._api_error(f"read namespace {self.namespace}", exc) from None
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": self.namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
            },
        }
        try:
            resource.create(body=body, dry_run="All" if dry_run else None)
        except Exception as exc:
            if getattr(exc, "status", None) == 409:
                return True
            raise self._api_error(f"create namespace {self.namespace}", exc) from None
        if not dry_run:
            log.info("created namespace %s", self.namespace)
        return not dry_run

    # -- wait --------------------------------------------------------------------------

    def wait(
        self, deployable: Deployable, *, timeout: float, progress: ProgressCallback | None = None
    ) -> RolloutStatus:
        """Watch the service's Deployments, StatefulSets, DaemonSets and pods until all are
        healthy, one failed, or the timeout passed.

        StatefulSets and DaemonSets have no progress deadline, so for them only
        `timeout` ends a rollout that does not finish. A StatefulSet with the
        default OrderedReady policy never replaces an unready pod of an older
        revision by itself (Kubernetes' "forced rollback"), so such pods are
        deleted here and the controller recreates them on the update revision.
        """
        self._check_env(deployable)
        workloads = sorted(
            (o.kind, o.name) for o in parse_manifests(deployable.files) if o.kind in WORKLOAD_KINDS
        )
        if not workloads:
            status = combine([])
            if progress is not None:
                progress(status)
            return status
        kinds = sorted({kind for kind, _ in workloads})
        deadline = time.monotonic() + timeout
        events: queue.Queue[_Event] = queue.Queue()
        selector = service_selector(deployable.env, deployable.service)
        watchers = [
            _Watcher(self, self._resource("apps/v1", kind), selector, events, deadline)
            for kind in kinds
        ]
        watchers.append(_Watcher(self, self._resource("v1", "Pod"), selector, events, deadline))
        state = _RolloutState({kind: {} for kind in [*kinds, "Pod"]})
        last: RolloutStatus | None = None
        no_deadline = [kind for kind in kinds if kind != "Deployment"]
        for watcher in watchers:
            watcher.start()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    status = _timed_out(last, timeout, no_deadline)
                    if progress is not None:
                        progress(status)
                    return status
                try:
                    event = events.get(timeout=remaining)
                except queue.Empty:
                    continue
                if event.error is not None:
                    raise self._api_error(f"watch {event.kind}s", event.error) from None
                state.fold(event)
                if not state.synced:
                    continue
                status = self._evaluate(workloads, state)
                if status != last:
                    last = status
                    log.info("%s: %s %s", deployable.service, status.state, status.message)
                    if progress is not None:
                        progress(status)
                if status.state != "progressing":
                    return status
                self._unblock_statefulsets(workloads, state)
        finally:
            for watcher in watchers:
                watcher.stop()
            for watcher in watchers:
                watcher.join(timeout=10)

    def _evaluate(
        self, workloads: Iterable[tuple[str, str]], state: _RolloutState
    ) -> RolloutStatus:
        statuses = []
        for kind, name in workloads:
            workload = state.objects[kind].get(name)
            if kind == "Deployment":
                statuses.append(self._deployment_status(name, workload, state))
                continue
            failing: list[tuple[str, str]] = []
            if workload is not None and generation_observed(workload):
                stuck = [
                    (pod, failure)
                    for pod in _owned_pods(workload, state)
                    if (failure := pod_failure(pod)) is not None
                ]
                if stuck:
                    current = self._current_revision(kind, workload)
                    failing = [
                        failure
                        for pod, failure in stuck
                        if current is not None and _pod_revision(pod) == current
                    ]
            if kind == "StatefulSet":
                statuses.append(statefulset_status(workload, name, failing))
            else:
                statuses.append(daemonset_status(workload, name, failing))
        return combine(statuses)

    def _deployment_status(
        self, name: str, deployment: dict[str, Any] | None, state: _RolloutState
    ) -> RolloutStatus:
        failing: list[tuple[str, str]] = []
        current_rs: str | None = None
        if deployment is not None and generation_observed(deployment):
            if _has_deadline_condition(deployment):
                current_hash = self._current_template_hash(deployment)
                current_rs = f"{name}-{current_hash}" if current_hash else None
            stuck = [
                (pod, failure)
                for pod in state.objects["Pod"].values()
                if (failure := pod_failure(pod)) is not None
            ]
            if stuck:
                current = self._current_template_hash(deployment)
                failing = [
                    failure
                    for pod, failure in stuck
                    if current is not None
                    and (pod["metadata"].get("labels") or {}).get(TEMPLATE_HASH_LABEL) == current
                ]
        return deployment_status(deployment, name, failing, current_rs)

    def _current_template_hash(self, deployment: Mapping[str, Any]) -> str | None:
        """The pod-template-hash of the Deployment's newest ReplicaSet (by revision)."""
        meta = deployment["metadata"]
        revision = (meta.get("annotations") or {}).get(REVISION_ANNOTATION)
        if not revision:
            return None
        key = (str(meta.get("uid")), str(revision))
        if key in self._hash_cache:
            return self._hash_cache[key]
        listing = self._call(
            f"list ReplicaSets of Deployment {meta['name']}",
            self._get_json,
            self._resource("apps/v1", "ReplicaSet"),
            namespace=self.namespace,
        )
        found: str | None = None
        for rs in listing.get("items") or []:
            rs_meta = rs["metadata"]
            owners = {o.get("uid") for o in rs_meta.get("ownerReferences") or []}
            rs_revision = (rs_meta.get("annotations") or {}).get(REVISION_ANNOTATION)
            if meta.get("uid") in owners and rs_revision == revision:
                found = (rs_meta.get("labels") or {}).get(TEMPLATE_HASH_LABEL)
        if found is not None:
            self._hash_cache[key] = found
        return found

    def _current_revision(self, kind: str, workload: Mapping[str, Any]) -> str | None:
        """The `controller-revision-hash` that pods of the workload's newest revision carry."""
        if kind == "StatefulSet":
            revision = (workload.get("status") or {}).get("updateRevision")
            return None if revision is None else str(revision)
        return self._daemonset_hash(workload)

    def _daemonset_hash(self, daemonset: Mapping[str, Any]) -> str | None:
        """The hash of the DaemonSet's newest ControllerRevision (its status does not say)."""
        meta = daemonset["metadata"]
        observed = (daemonset.get("status") or {}).get("observedGeneration")
        key = (str(meta.get("uid")), f"generation {observed}")
        if key in self._hash_cache:
            return self._hash_cache[key]
        listing = self._call(
            f"list ControllerRevisions of DaemonSet {meta['name']}",
            self._get_json,
            self._resource("apps/v1", "ControllerRevision"),
            namespace=self.namespace,
        )
        newest: tuple[int, str | None] | None = None
        for revision in listing.get("items") or []:
            rev_meta = revision["metadata"]
            owners = {o.get("uid") for o in rev_meta.get("ownerReferences") or []}
            if meta.get("uid") not in owners:
                continue
            number = int(revision.get("revision") or 0)
            if newest is None or number > newest[0]:
                newest = (number, (rev_meta.get("labels") or {}).get(REVISION_HASH_LABEL))
        found = None if newest is None else newest[1]
        if found is not None:
            self._hash_cache[key] = found
        return found

    def _unblock_statefulsets(
        self, workloads: Iterable[tuple[str, str]], state: _RolloutState
    ) -> None:
        """Delete unready pods of an older revision that an OrderedReady StatefulSet waits on.

        The controller waits for every pod to be Running and Ready before it
        replaces any, so a pod stuck on a bad revision blocks a rollback (or a
        fix) forever. Only pods at or above the partition, which the controller
        would replace next anyway, are deleted, each once (by uid).
        """
        for kind, name in workloads:
            workload = state.objects[kind].get(name) if kind == "StatefulSet" else None
            if workload is None or not generation_observed(workload):
                continue
            spec = workload.get("spec") or {}
            strategy = spec.get("updateStrategy") or {}
            if spec.get("podManagementPolicy", "OrderedReady") != "OrderedReady" or (
                strategy.get("type", "RollingUpdate") != "RollingUpdate"
            ):
                continue
            update = (workload.get("status") or {}).get("updateRevision")
            partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
            for pod in _owned_pods(workload, state):
                meta = pod["metadata"]
                uid = str(meta.get("uid"))
                if (
                    update is None
                    or uid in state.deleted
                    or _pod_revision(pod) in (None, update)
                    or pod_is_ready(pod)
                    or _ordinal(str(meta["name"])) < partition
                ):
                    continue
                state.deleted.add(uid)
                if self._delete_object(
                    self._resource("v1", "Pod"), pod, f"delete stuck pod {meta['name']}"
                ):
                    log.warning(
                        "deleted pod %s of StatefulSet %s: it is not ready on revision %s, and "
                        "the controller waits for it before rolling to %s",
                        meta["name"],
                        name,
                        _pod_revision(pod),
                        update,
                    )

    # -- heal --------------------------------------------------------------------------

    def replace_drifted(self, deployable: Deployable, refs: Iterable[str]) -> list[str]:
        """Make the objects `refs` (`Kind/name`) equal to the release again, by replacing them.

        Server-side apply only sets the fields configcenter owns: an env var added by
        `kubectl set env`, a ConfigMap key added by hand or a Service port edited to
        a new key stay next to ours. A replace (PUT) of what the release renders
        removes them. Labels and annotations other managers added to an object (or
        its pod template) are kept, and so are the addresses the API server
        allocated (a Service's cluster IPs). Objects that do not exist are left to
        `apply`. Returns the refs replaced.
        """
        self._check_env(deployable)
        wanted = set(refs)
        values = self._resolve_secrets(deployable)
        replaced: list[str] = []
        for obj in build_objects(deployable, self.namespace, values):
            if obj.ref not in wanted:
                continue
            resource = self._resource_for(obj)
            try:
                live = self._get_json(resource, name=obj.name, namespace=self.namespace)
            except Exception as exc:
                if getattr(exc, "status", None) == 404:
                    continue
                raise self._api_error(f"read {obj.ref} to heal it", exc) from None
            body = _replacement(obj.body, live)
            self._call(
                f"{obj.source}: replace {obj.ref} to heal it",
                resource.replace,
                body=body,
                name=obj.name,
                namespace=self.namespace,
                field_manager=FIELD_MANAGER,
            )
            log.warning(
                "healed %s in namespace %s: replaced with release %s",
                obj.ref,
                self.namespace,
                deployable.release_id,
            )
            replaced.append(obj.ref)
        return replaced

    # -- observe / delete --------------------------------------------------------------

    def observe(self) -> Mapping[str, ObservedService]:
        """What configcenter manages in the namespace now: one list call per kind."""
        selector = env_selector(self.target.env)
        by_service: dict[str, dict[str, dict[str, Any]]] = {}
        live: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for api_version, kind in OBSERVED_KINDS:
            listing = self._call(
                f"list {kind}s",
                self._get_json,
                self._resource(api_version, kind),
                namespace=self.namespace,
                label_selector=selector,
            )
            for item in listing.get("items") or []:
                item = {"apiVersion": api_version, "kind": kind, **item}
                labels = item["metadata"].get("labels") or {}
                service = labels.get(SERVICE_LABEL)
                if not service:
                    continue
                ref = f"{kind}/{item['metadata']['name']}"
                by_service.setdefault(service, {})[ref] = clean_live(item)
                live.setdefault(service, {}).setdefault(kind, []).append(item)
        for service, objects in by_service.items():
            # Config and secret versions kept for rollbacks are not what runs: only the ones
            # the service's workloads refer to are.
            used = _referenced_versions(live.get(service, {}))
            for ref in [r for r, body in objects.items() if is_versioned(body)]:
                if ref not in used:
                    del objects[ref]
        return {
            service: _observed(service, live.get(service, {}), objects)
            for service, objects in sorted(by_service.items())
        }

    def desired_objects(self, deployable: Deployable) -> dict[str, Mapping[str, Any]]:
        """The objects `apply` would send, keyed like `observe()` keys them (object drift)."""
        kinds = {kind for _, kind in OBSERVED_KINDS}
        built = build_objects(deployable, self.namespace, None)
        return {obj.ref: without_claim_defaults(obj.body) for obj in built if obj.kind in kinds}

    def diff(self, deployable: Deployable, observed: ObservedService | None) -> ServiceDiff:
        """The release's drift, object by object and field by field (see `k8s_diff`)."""
        return k8s_diff.diff(deployable, self.desired_objects(deployable), observed)

    def delete(self, service: str) -> None:
        """Delete every object of the service in the namespace, of any kind, by label."""
        selector = service_selector(self.target.env, service)
        deleted = []
        for resource in self._deletable_resources():
            self._call(
                f"delete {resource.kind}s of {service}",
                resource.delete,
                namespace=self.namespace,
                label_selector=selector,
                propagation_policy="Background",
            )
            deleted.append(resource.kind)
        log.info("deleted %s's objects in namespace %s", service, self.namespace)

    def _deletable_resources(self) -> list[Any]:
        from kubernetes.dynamic.resource import ResourceList, Subresource

        found = []
        for resource in self._client().resources.search():
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

    # -- stage jobs (configcenter.adapters.k8s_jobs) ------------------------------------

    def run_job(
        self,
        deployable: Deployable,
        file: str,
        stage: str,
        *,
        timeout: float,
        retention: int,
        log: Callable[[str], None],
    ) -> StageJobResult:
        """Run the release's stage Job rendered into `file` (see `k8s_jobs.run_stage_job`)."""
        from kubernetes import client

        from configcenter.adapters.k8s_jobs import JobClient, JobError, run_stage_job

        self._check_env(deployable)
        values = self._resolve_secrets(deployable)
        api = self._client().client
        jobs = JobClient(
            client.CoreV1Api(api),
            client.BatchV1Api(api),
            self.namespace,
            error=lambda what, exc: self._api_error(what, exc),
        )
        if not self._ensure_namespace(False):
            raise PlatformError(f"platform {self.target.name!r}: no namespace {self.namespace}")
        try:
            return run_stage_job(
                jobs,
                deployable,
                file,
                stage,
                values,
                timeout=timeout,
                retention=retention,
                log=log,
            )
        except JobError as exc:
            raise PlatformError(self.redactor.redact(str(exc))) from None

    # -- client plumbing ---------------------------------------------------------------

    def _client(self) -> Any:
        """The dynamic client, built on first use so constructing the adapter is cheap."""
        with self._lock:
            if self._dynamic is None:
                in_cluster = self.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST")
                if not in_cluster and not _kubeconfig_exists(self.kubeconfig):
                    # Said without importing the client (a quarter second a plan need not pay).
                    raise self._kubeconfig_error("no such file")
                from kubernetes import config, dynamic

                try:
                    api = config.new_client_from_config(
                        config_file=self.kubeconfig, context=self.context
                    )
                except Exception as exc:
                    if in_cluster:
                        api = _in_cluster_client()
                    else:
                        raise self._kubeconfig_error(str(exc)) from None
                try:
                    self._dynamic = dynamic.DynamicClient(api)
                except Exception as exc:
                    raise self._api_error("discover the API", exc) from None
            return self._dynamic

    def _kubeconfig_error(self, why: str) -> PlatformError:
        where = self.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        return PlatformError(
            f"platform {self.target.name!r}: cannot load kubeconfig {where}"
            f"{f' context {self.context!r}' if self.context else ''}: {why}; "
            "point KUBECONFIG at a valid file or fix platforms."
            f"{self.target.name}.context"
        )

    def _resource(self, api_version: str, kind: str) -> Any:
        client = self._client()
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return client.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise ManifestError(
                f"the cluster serves no {kind} in {api_version}; check apiVersion and kind"
            ) from None
        except PlatformError:
            raise
        except Exception as exc:
            raise self._api_error(f"discover {kind} ({api_version})", exc) from None

    def _resource_for(self, obj: SourcedObject) -> Any:
        try:
            resource = self._resource(str(obj.body["apiVersion"]), obj.kind)
        except ManifestError as exc:
            raise ManifestError(f"{obj.source}: {obj.ref}: {exc}") from None
        if not resource.namespaced:
            raise ManifestError(
                f"{obj.source}: {obj.ref} is cluster-scoped; configcenter manages only objects "
                "inside the target namespace, so create it outside the service's templates"
            )
        return resource

    def _get_json(self, resource: Any, **kwargs: Any) -> dict[str, Any]:
        response = resource.get(serialize=False, **kwargs)
        try:
            data: dict[str, Any] = json.loads(response.data)
        finally:
            response.release_conn()
        return data

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PlatformError:
            raise
        except Exception as exc:
            raise self._api_error(what, exc) from None

    def _api_error(self, what: str, exc: BaseException) -> PlatformError:
        """A PlatformError naming the failed step, with the API's own message, masked."""
        status = getattr(exc, "status", None)
        if status is None:
            host = ""
            if self._dynamic is not None:
                host = f" at {self._dynamic.configuration.host}"
            text = (
                f"platform {self.target.name!r}: {what}: cannot talk to the Kubernetes API{host} "
                f"({type(exc).__name__}: {exc}); check that the cluster is up and the kubeconfig"
            )
            return PlatformError(self.redactor.redact(text))
        message = str(getattr(exc, "reason", "") or "")
        body = getattr(exc, "body", None)
        if body:
            try:
                message = json.loads(body).get("message") or message
            except (ValueError, AttributeError):
                message = str(body)
        hint = {
            401: "check the credentials in the kubeconfig",
            403: "grant the kubeconfig's user the missing permission (RBAC)",
            404: "check the namespace and names",
            409: "another writer changed it at the same time; apply again",
            422: "fix the template that renders it",
        }.get(int(status), "")
        text = f"platform {self.target.name!r}: {what}: HTTP {status}: {message}"
        return PlatformError(self.redactor.redact(f"{text}; {hint}" if hint else text))


#: Service spec fields the API server allocates: kept from the live object on replace.
_ALLOCATED_SERVICE_FIELDS = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")


def _replacement(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """What a PUT sends to make `live` what `desired` renders, keeping others' metadata."""
    body = copy.deepcopy(dict(desired))
    live_meta = live.get("metadata") or {}
    meta = body.setdefault("metadata", {})
    meta["resourceVersion"] = live_meta.get("resourceVersion")
    _keep_foreign_metadata(meta, live_meta)
    for template, live_template in zip(pod_templates(body), pod_templates(live), strict=False):
        _keep_foreign_metadata(
            template.setdefault("metadata", {}), live_template.get("metadata") or {}
        )
    if body.get("kind") == "Service":
        spec = body.setdefault("spec", {})
        live_spec = live.get("spec") or {}
        for key in _ALLOCATED_SERVICE_FIELDS:
            if key not in spec and key in live_spec:
                spec[key] = live_spec[key]
    return body


def _keep_foreign_metadata(meta: dict[str, Any], live_meta: Mapping[str, Any]) -> None:
    for key in ("labels", "annotations"):
        theirs = {
            k: v for k, v in (live_meta.get(key) or {}).items() if k not in (meta.get(key) or {})
        }
        if theirs:
            meta[key] = {**theirs, **(meta.get(key) or {})}
    if live_meta.get("finalizers") and "finalizers" not in meta:
        meta["finalizers"] = live_meta["finalizers"]


def _group(api_version: str) -> str:
    """The API group of an apiVersion: one object is listed the same under every version."""
    return api_version.rpartition("/")[0]


def _record_kinds(
    objects: Iterable[SourcedObject], config_map: str, kinds: Iterable[tuple[str, str]]
) -> None:
    record = ",".join(sorted(f"{api_version}/{kind}" for api_version, kind in kinds))
    for obj in objects:
        if obj.kind == "ConfigMap" and obj.name == config_map:
            obj.body["metadata"].setdefault("annotations", {})[APPLIED_KINDS_ANNOTATION] = record


def _parse_kinds(record: str) -> set[tuple[str, str]]:
    kinds: set[tuple[str, str]] = set()
    for entry in record.split(","):
        api_version, _, kind = entry.strip().rpartition("/")
        if api_version and kind:
            kinds.add((api_version, kind))
    return kinds


def _prunable(item: Mapping[str, Any], kind: str, env: str, service: str) -> bool:
    """Whether configcenter applied this object for this env and service, and nothing owns it."""
    meta = item.get("metadata") or {}
    labels = meta.get("labels") or {}
    if (
        kind == "Namespace"
        or is_versioned(item)
        or (
            labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE
            or labels.get(ENV_LABEL) != env
            or labels.get(SERVICE_LABEL) != service
        )
    ):
        return False
    # ReplicaSets and pods inherit the labels from the pod template: their
    # controller owns them, and they go when it goes.
    if any(owner.get("controller") for owner in meta.get("ownerReferences") or []):
        return False
    return any(
        entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply"
        for entry in meta.get("managedFields") or []
    )


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


def _has_deadline_condition(deployment: Mapping[str, Any]) -> bool:
    conditions = (deployment.get("status") or {}).get("conditions") or []
    return any(c.get("reason") == "ProgressDeadlineExceeded" for c in conditions)


def _pod_revision(pod: Mapping[str, Any]) -> str | None:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    value = labels.get(REVISION_HASH_LABEL)
    return None if value is None else str(value)


def _owned_pods(workload: Mapping[str, Any], state: _RolloutState) -> list[dict[str, Any]]:
    """The pods the workload itself controls (StatefulSet and DaemonSet pods have no RS)."""
    uid = (workload.get("metadata") or {}).get("uid")
    return [
        pod
        for pod in state.objects["Pod"].values()
        if any(
            o.get("uid") == uid and o.get("controller")
            for o in pod["metadata"].get("ownerReferences") or []
        )
    ]


def _ordinal(pod_name: str) -> int:
    """A StatefulSet pod's ordinal: the number after its last '-'."""
    tail = pod_name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1


def _kubeconfig_exists(kubeconfig: str | None) -> bool:
    """Whether a kubeconfig the client would read exists: the given file, else any file
    KUBECONFIG lists, else ~/.kube/config."""
    if kubeconfig is not None:
        return os.path.exists(os.path.expanduser(kubeconfig))
    listed = os.environ.get("KUBECONFIG")
    if listed:
        return any(os.path.exists(os.path.expanduser(p)) for p in listed.split(os.pathsep) if p)
    return os.path.exists(os.path.expanduser("~/.kube/config"))


def _in_cluster_client() -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


def _observed(
    service: str, live: Mapping[str, list[dict[str, Any]]], objects: Mapping[str, Any]
) -> ObservedService:
    """Summarise a service by its main workload (see `main_workload`)."""
    workloads = {
        f"{kind}/{item['metadata']['name']}": item for kind, items in live.items() for item in items
    }
    ref = main_workload(service, workloads)
    main = workloads[ref] if ref is not None else None
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
    )


def _timed_out(
    last: RolloutStatus | None, timeout: float, no_deadline: Iterable[str] = ()
) -> RolloutStatus:
    counts = last or RolloutStatus("progressing")
    detail = f"; last seen: {last.message}" if last is not None and last.message else ""
    kinds = sorted(set(no_deadline))
    why = ""
    if kinds:
        why = (
            f" ({' and '.join(f'{k}s' for k in kinds)} have no progress deadline, "
            "so the rollout timeout is what ends this wait)"
        )
    return RolloutStatus(
        "failed",
        "Timeout",
        f"not healthy within {timeout:g}s{why}{detail}",
        desired=counts.desired,
        updated=counts.updated,
        ready=counts.ready,
        available=counts.available,
    )


@dataclass
class _Event:
    """What a watcher thread hands the waiting thread: a listing, a change, or an error."""

    kind: str
    type: str  # LIST | ADDED | MODIFIED | DELETED | ERROR
    items: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None


@dataclass
class _RolloutState:
    """What the watches have shown so far: objects by kind and name."""

    objects: dict[str, dict[str, dict[str, Any]]]
    listed: set[str] = field(default_factory=set)
    #: Pods `wait` deleted to unblock a StatefulSet, by uid: each is deleted once.
    deleted: set[str] = field(default_factory=set)

    @property
    def synced(self) -> bool:
        return self.listed >= set(self.objects)

    def fold(self, event: _Event) -> None:
        bucket = self.objects[event.kind]
        if event.type == "LIST":
            bucket.clear()
            self.listed.add(event.kind)
        for item in event.items:
            name = item["metadata"]["name"]
            if event.type == "DELETED":
                bucket.pop(name, None)
            else:
                bucket[name] = item


class _Watcher(threading.Thread):
    """Lists, then watches from that resourceVersion; re-lists on 410 Gone.

    `start_version` resumes from a resourceVersion the caller already has,
    instead of listing first.

    Runs in its own thread so the workloads and their pods are watched at once;
    `stop` shuts the open stream down so the thread ends without waiting for
    the server to close it.
    """

    def __init__(
        self,
        platform: KubernetesPlatform,
        resource: Any,
        selector: str,
        out: queue.Queue[_Event],
        deadline: float,
        start_version: str | None = None,
    ) -> None:
        super().__init__(name=f"configcenter-watch-{resource.kind}", daemon=True)
        self._platform = platform
        self._resource = resource
        self._kind = str(resource.kind)
        self._selector = selector
        self._out = out
        self._deadline = deadline
        self._start_version = start_version
        self._stopping = threading.Event()
        self._response: Any = None
        self._response_lock = threading.Lock()

    def stop(self) -> None:
        self._stopping.set()
        with self._response_lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()

    def run(self) -> None:
        try:
            self._loop()
        except Exception as exc:
            if not self._stopping.is_set():
                self._out.put(_Event(self._kind, "ERROR", error=exc))

    def _loop(self) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        version = self._start_version
        while not self._stopping.is_set():
            if version is None:
                listing = self._platform._get_json(
                    self._resource,
                    namespace=self._platform.namespace,
                    label_selector=self._selector,
                )
                version = str(listing["metadata"]["resourceVersion"])
                self._out.put(_Event(self._kind, "LIST", list(listing.get("items") or [])))
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                response = self._resource.get(
                    namespace=self._platform.namespace,
                    label_selector=self._selector,
                    watch=True,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=max(1, int(min(remaining + 1, WATCH_CHUNK_SECONDS))),
                    serialize=False,
                )
            except Exception as exc:
                if getattr(exc, "status", None) == 410:
                    version = None
                    continue
                raise
            with self._response_lock:
                self._response = response
            try:
                if self._stopping.is_set():
                    return
                for line in iter_resp_lines(response):
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:
                            version = None
                            break
                        raise PlatformError(f"watching {self._kind}s: {obj.get('message')}")
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if event.get("type") != "BOOKMARK":
                        self._out.put(_Event(self._kind, str(event.get("type")), [obj]))
                    if self._stopping.is_set():
                        return
            finally:
                with self._response_lock:
                    self._response = None
                # Close before releasing: a half-read stream must never go back to the
                # pool, or the next request on that connection reads its leftovers.
                with contextlib.suppress(Exception):
                    response.close()
                    response.release_conn()


def check_config_files(
    platform: str, settings: Mapping[str, object], files: Mapping[str, bytes]
) -> UndeliveredFiles | None:
    """Every config file is delivered, mounted from the release's ConfigMap or Secret
    (the `config_files` capability's check): no setting is needed for it."""
    return None


def open_platform(
    target: PlatformTarget, redactor: Redactor, *, force: bool = False
) -> KubernetesPlatform:
    """The registry's factory (`configcenter.core.kinds`); Kubernetes has no `force`."""
    return KubernetesPlatform(target, target.settings.get("kubeconfig") or None, redactor=redactor)
