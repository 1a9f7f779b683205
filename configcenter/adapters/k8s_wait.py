"""Waiting for a rollout on Kubernetes: watches on the workloads and their pods.

One thread per watched kind lists, then watches from that resourceVersion
(re-listing on 410 Gone); the waiting thread folds the events into what it has
seen and judges health with `k8s_rollout` (pure) until every workload is
healthy, one failed, or the timeout passed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from configcenter.adapters.k8s_client import KubeClient
from configcenter.adapters.k8s_manifests import parse_manifests, service_selector
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
    pod_not_ready,
    statefulset_status,
)
from configcenter.ports.platform import Deployable, PlatformError, ProgressCallback, RolloutStatus

log = logging.getLogger("configcenter.adapters.kubernetes")  # one logger name for the adapter

#: Longest single watch request; the watch is resumed from its resourceVersion after.
WATCH_CHUNK_SECONDS = 240


class RolloutWaiter:
    """`wait` for one target; remembers ReplicaSet and ControllerRevision hashes it found."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.namespace = client.namespace
        self._hash_cache: dict[tuple[str, str], str | None] = {}

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
            _Watcher(self.client, self.client.resource("apps/v1", kind), selector, events, deadline)
            for kind in kinds
        ]
        watchers.append(
            _Watcher(self.client, self.client.resource("v1", "Pod"), selector, events, deadline)
        )
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
                    raise self.client.api_error(f"watch {event.kind}s", event.error) from None
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
        unready: list[str] = []
        if deployment is not None and generation_observed(deployment):
            if _has_deadline_condition(deployment):
                current_hash = self._current_template_hash(deployment)
                current_rs = f"{name}-{current_hash}" if current_hash else None
                unready = [
                    why
                    for pod in sorted(
                        state.objects["Pod"].values(), key=lambda p: p["metadata"]["name"]
                    )
                    if current_hash is not None
                    and (pod["metadata"].get("labels") or {}).get(TEMPLATE_HASH_LABEL)
                    == current_hash
                    and (why := pod_not_ready(pod)) is not None
                ]
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
        return deployment_status(deployment, name, failing, current_rs, unready)

    def _current_template_hash(self, deployment: Mapping[str, Any]) -> str | None:
        """The pod-template-hash of the Deployment's newest ReplicaSet (by revision)."""
        meta = deployment["metadata"]
        revision = (meta.get("annotations") or {}).get(REVISION_ANNOTATION)
        if not revision:
            return None
        key = (str(meta.get("uid")), str(revision))
        if key in self._hash_cache:
            return self._hash_cache[key]
        listing = self.client.call(
            f"list ReplicaSets of Deployment {meta['name']}",
            self.client.get_json,
            self.client.resource("apps/v1", "ReplicaSet"),
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
        listing = self.client.call(
            f"list ControllerRevisions of DaemonSet {meta['name']}",
            self.client.get_json,
            self.client.resource("apps/v1", "ControllerRevision"),
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
                if self.client.delete_object(
                    self.client.resource("v1", "Pod"), pod, f"delete stuck pod {meta['name']}"
                ):
                    log.warning(
                        "deleted pod %s of StatefulSet %s: it is not ready on revision %s, and "
                        "the controller waits for it before rolling to %s",
                        meta["name"],
                        name,
                        _pod_revision(pod),
                        update,
                    )


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
        client: KubeClient,
        resource: Any,
        selector: str,
        out: queue.Queue[_Event],
        deadline: float,
        start_version: str | None = None,
    ) -> None:
        super().__init__(name=f"configcenter-watch-{resource.kind}", daemon=True)
        self._client = client
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
                listing = self._client.get_json(
                    self._resource,
                    namespace=self._client.namespace,
                    label_selector=self._selector,
                )
                version = str(listing["metadata"]["resourceVersion"])
                self._out.put(_Event(self._kind, "LIST", list(listing.get("items") or [])))
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                response = self._resource.get(
                    namespace=self._client.namespace,
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
