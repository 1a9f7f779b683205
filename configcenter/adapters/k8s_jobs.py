"""Running Kubernetes Jobs to their end: the part Kaniko builds, pre-deploy jobs and
verification jobs share.

A Job is created together with the small objects it reads (ConfigMaps, Secrets),
which are then owned by the Job, so the garbage collector removes them with it.
The Job is followed with a watch until its `Complete` or `Failed` condition or a
deadline; its pod's exit code and termination message are read from the pod
status and its log from the API. When the log cannot be read (no kubelet answers,
or the pod is gone) the termination message stands in for it: Jobs we render use
`terminationMessagePolicy: FallbackToLogsOnError`, so a failed container's message
is its log tail.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from configcenter.adapters.k8s_rollout import FAILING_WAIT_REASONS, pod_failure
from configcenter.ports.platform import Deployable, StageJobResult

#: Label every Job this module runs carries, with the name of the Job's purpose.
JOB_KIND_LABEL = "configcenter.io/job"
#: Longest stretch (seconds) between two looks at a running Job's pods for one that cannot
#: start (an image that cannot be pulled, a missing ConfigMap key): the Job's own status
#: does not change then, so its watch alone would wait out the whole timeout.
POD_CHECK_SECONDS = 2


class JobError(Exception):
    """The API refused something (namespace missing, no permission): the message says what."""


@dataclass
class JobRun:
    """How one Job ended."""

    name: str
    succeeded: bool
    reason: str  # "Complete", the Failed condition's reason/message, or "timed out after Ns"
    pod: str | None = None
    termination_message: str | None = None
    exit_code: int | None = None
    log_lines: list[str] = field(default_factory=list)

    @property
    def timed_out(self) -> bool:
        return self.reason.startswith("timed out")


ErrorFactory = Callable[[str, Any], Exception]


def default_error(namespace: str) -> ErrorFactory:
    def make(action: str, exc: Any) -> Exception:
        return JobError(
            f"cannot {action} in namespace {namespace}: HTTP {exc.status} {exc.reason}; check "
            "that the namespace exists and configcenter may manage Jobs, ConfigMaps and "
            "Secrets and read pods and their logs there"
        )

    return make


@dataclass
class JobClient:
    """Jobs in one namespace; `core` and `batch` are the client's CoreV1Api and BatchV1Api."""

    core: Any
    batch: Any
    namespace: str
    error: ErrorFactory | None = None
    gone_timeout: float = 60.0

    def _error(self, action: str, exc: Any) -> Exception:
        return (self.error or default_error(self.namespace))(action, exc)

    def delete(self, name: str, *, wait: bool = True) -> None:
        """Delete Job `name` and its pods (absent is fine); `wait` until it is gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch.delete_namespaced_job(name, self.namespace, propagation_policy="Foreground")
        except ApiException as exc:
            if exc.status == 404:
                return
            raise self._error(f"delete the Job {name}", exc) from None
        if wait:
            self._wait_gone(name)

    def create(self, job: Mapping[str, Any], owned: Iterable[Mapping[str, Any]] = ()) -> str:
        """Create `owned` objects (ConfigMap/Secret manifests), then the Job owning them.

        An earlier Job of the same name, and objects of the same names, are replaced.
        Returns the Job's uid.
        """
        from kubernetes.client.exceptions import ApiException

        name = str(job["metadata"]["name"])
        self.delete(name)
        objects = list(owned)
        for obj in objects:
            self._replace_owned(obj)
        try:
            created = self.batch.create_namespaced_job(self.namespace, dict(job))
        except ApiException as exc:
            raise self._error(f"create the Job {name}", exc) from None
        uid: str = created.metadata.uid
        owner = {
            "metadata": {
                "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}
                ]
            }
        }
        for obj in objects:
            try:
                self._patch(obj, owner)
            except ApiException as exc:
                what = f"{obj['kind']} {obj['metadata']['name']}"
                raise self._error(f"hand {what} to its Job", exc) from None
        return uid

    def read(self, name: str) -> Any | None:
        """Job `name` as the API server has it, or None when there is none."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.batch.read_namespaced_job(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._error(f"read the Job {name}", exc) from None

    def _replace_owned(self, obj: Mapping[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        kind, obj_name = obj["kind"], obj["metadata"]["name"]
        delete = (
            self.core.delete_namespaced_secret
            if kind == "Secret"
            else self.core.delete_namespaced_config_map
        )
        create = (
            self.core.create_namespaced_secret
            if kind == "Secret"
            else self.core.create_namespaced_config_map
        )
        try:
            delete(obj_name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise self._error(f"delete the old {kind} {obj_name}", exc) from None
        try:
            create(self.namespace, dict(obj))
        except ApiException as exc:
            raise self._error(f"create the {kind} {obj_name}", exc) from None

    def _patch(self, obj: Mapping[str, Any], body: Mapping[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if obj["kind"] == "Secret":
            self.core.patch_namespaced_secret(name, self.namespace, dict(body))
        else:
            self.core.patch_namespaced_config_map(name, self.namespace, dict(body))

    def wait(self, name: str, timeout: float) -> tuple[bool, str]:
        """Follow the Job with a watch until Complete/Failed or `timeout` seconds pass.

        A pod of the Job stuck where it will not recover by itself (ImagePullBackOff,
        ErrImagePull, CreateContainerConfigError, ... as a rollout judges them) ends the
        wait at once, failed, with the pod's reason and message: the Job would otherwise
        only end at its deadline, as a timeout that does not say why."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout
        resource_version: str | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, f"timed out after {timeout:g}s"
            stuck = self.stuck_pod(name)
            if stuck is not None:
                return False, stuck
            watcher = watch.Watch()
            kwargs: dict[str, Any] = {
                "field_selector": f"metadata.name={name}",
                "timeout_seconds": max(1, int(min(remaining, POD_CHECK_SECONDS))),
            }
            if resource_version:
                kwargs["resource_version"] = resource_version
            try:
                for event in watcher.stream(
                    self.batch.list_namespaced_job, self.namespace, **kwargs
                ):
                    obj = event["object"]
                    resource_version = obj.metadata.resource_version
                    for cond in obj.status.conditions or []:
                        if cond.status != "True":
                            continue
                        if cond.type == "Complete":
                            watcher.stop()
                            return True, "Complete"
                        if cond.type == "Failed":
                            watcher.stop()
                            if cond.reason == "DeadlineExceeded":
                                # The Job's own activeDeadlineSeconds ran out first: the same
                                # timeout, told the same way.
                                return False, f"timed out after {timeout:g}s ({cond.message})"
                            detail = ": ".join(x for x in (cond.reason, cond.message) if x)
                            return False, detail or "Failed"
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion expired: list afresh
                    resource_version = None
                    continue
                raise self._error(f"watch the Job {name}", exc) from None

    def stuck_pod(self, name: str) -> str | None:
        """`<reason>: pod P container C: <reason>: <message>` for a pod of Job `name` that
        cannot start and will not by itself; None when none is stuck."""
        from kubernetes.client.exceptions import ApiException

        try:
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"job-name={name}"
            ).items
        except ApiException as exc:
            raise self._error(f"list the pods of the Job {name}", exc) from None
        serialize = self.core.api_client.sanitize_for_serialization
        for pod in sorted(pods, key=lambda p: p.metadata.creation_timestamp):
            failure = pod_failure(serialize(pod))
            if failure is not None:
                return f"{failure[0]}: {failure[1]}"
        return None

    def _wait_gone(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + self.gone_timeout
        while time.monotonic() < deadline:
            try:
                self.batch.read_namespaced_job(name, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise self._error(f"read the Job {name}", exc) from None
            time.sleep(0.2)  # polling interval for the foreground deletion
        raise JobError(
            f"old Job {self.namespace}/{name} was not deleted within {self.gone_timeout:g}s"
        )

    def pod_result(
        self, name: str, container: str
    ) -> tuple[str | None, str, str | None, int | None]:
        """The newest pod of Job `name`: its name, the container that ended it (a failed
        init container, e.g. the source fetch, else `container`), its termination message
        and exit code."""
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"job-name={name}"
        ).items
        if not pods:
            return None, container, None, None
        pod = sorted(pods, key=lambda p: p.metadata.creation_timestamp)[-1]
        for status in pod.status.init_container_statuses or []:
            term = status.state.terminated if status.state else None
            if term is not None and term.exit_code:
                return pod.metadata.name, status.name, term.message, term.exit_code
        for status in pod.status.container_statuses or []:
            if status.name == container and status.state and status.state.terminated:
                term = status.state.terminated
                return pod.metadata.name, container, term.message, term.exit_code
        return pod.metadata.name, container, None, None

    def logs(self, pod: str, container: str, fallback: str | None = None) -> list[str]:
        """The container's log lines; the termination message when the log is unavailable."""
        from kubernetes.client.exceptions import ApiException

        try:
            text: str = self.core.read_namespaced_pod_log(pod, self.namespace, container=container)
        except ApiException as exc:
            if fallback:
                return [
                    f"(log of pod {pod} unavailable: HTTP {exc.status}; termination message:)",
                    *fallback.splitlines(),
                ]
            return [f"(log of pod {pod} unavailable: HTTP {exc.status} {exc.reason})"]
        return text.splitlines()

    def run(
        self,
        job: Mapping[str, Any],
        container: str,
        timeout: float,
        owned: Iterable[Mapping[str, Any]] = (),
        log: Callable[[str], None] | None = None,
    ) -> JobRun:
        """Create `job` (replacing an old one of its name), wait for its end, collect its log."""
        name = str(job["metadata"]["name"])
        self.create(job, owned)
        if log:
            log(f"Job {self.namespace}/{name} created")
        succeeded, reason = self.wait(name, timeout)
        pod, ended_by, message, exit_code = self.pod_result(name, container)
        lines = self.logs(pod, ended_by, message) if pod else []
        if log:
            for line in lines:
                log(line)
        return JobRun(name, succeeded, reason, pod, message, exit_code, lines)


# -- a release's stage Jobs (pre-deploy, verification) ----------------------------------------

#: Labels on stage Jobs and their pods. Not the workload's service label: a stage Job is
#: no object of the release's workload, so pruning and drift never consider it.
STAGE_OF_LABEL = "configcenter.io/stage-of"
STAGE_FILE_ANNOTATION = "configcenter.io/stage-file"
_MAX_JOB_NAME = 52  # the Job controller's pod names and job-name label must stay under 63


def stage_job_name(release_id: str, file: str) -> str:
    """`<release>-<file stem>`, DNS-1123: one Job per release and file, readable in kubectl."""
    stem = file.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    name = re.sub(r"[^a-z0-9-]+", "-", f"{release_id}-{stem}".lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if len(name) <= _MAX_JOB_NAME:
        return name
    digest = hashlib.sha256(f"{release_id}\0{file}".encode()).hexdigest()[:10]
    return f"{name[: _MAX_JOB_NAME - 11].rstrip('-')}-{digest}"


def stage_job_objects(
    deployable: Deployable,
    file: str,
    stage: str,
    namespace: str,
    secret_values: Mapping[str, str],
    *,
    timeout: float,
    retention: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Job rendered into `file`, wired to the release, and the env objects it owns.

    The Job gets the release's image (for containers without one), its values and
    secrets through a ConfigMap and a Secret of its own (owned by the Job, so they go
    with it and the running workload's objects are untouched until the workload is
    applied), `backoffLimit: 0` and a deadline unless the template sets them, and
    `ttlSecondsAfterFinished: retention`.
    """
    from configcenter.adapters.k8s_manifests import (
        ENV_LABEL,
        MANAGED_BY_LABEL,
        MANAGED_BY_VALUE,
        RELEASE_ANNOTATION,
        ManifestError,
        config_data,
        managed_labels,
        parse_manifests,
        secret_env,
    )
    from configcenter.core.secretrefs import substitute

    data = deployable.files.get(file)
    if data is None:
        raise ManifestError(f"{deployable.service}: stage job {file} was not rendered")
    items = parse_manifests({file: data})
    if len(items) != 1 or items[0].kind != "Job":
        found = ", ".join(i.ref for i in items) or "nothing"
        raise ManifestError(
            f"{deployable.service}/{file}: a {stage} job file must hold exactly one Job "
            f"(apiVersion: batch/v1, kind: Job); it holds {found}"
        )
    item = items[0]
    managed_labels(deployable)  # checks env and service can be label values
    name = stage_job_name(deployable.release_id, file)
    labels = {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        ENV_LABEL: deployable.env,
        STAGE_OF_LABEL: deployable.service,
        JOB_KIND_LABEL: stage,
    }
    annotations = {RELEASE_ANNOTATION: deployable.release_id, STAGE_FILE_ANNOTATION: file}
    body = copy.deepcopy(item.body)
    declared = (body.get("metadata") or {}).get("namespace")
    if declared not in (None, "", namespace):
        raise ManifestError(
            f"{deployable.service}/{file}: the Job declares namespace {declared!r} but the "
            f"target namespace is {namespace!r}; remove metadata.namespace"
        )
    meta = body.setdefault("metadata", {})
    meta.update(name=name, namespace=namespace)
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    spec = body.setdefault("spec", {})
    spec.setdefault("backoffLimit", 0)
    spec.setdefault("activeDeadlineSeconds", max(1, int(timeout)))
    spec["ttlSecondsAfterFinished"] = int(retention)
    spec.pop("selector", None)  # the Job controller generates it for the new name
    template = spec.setdefault("template", {})
    tmeta = template.setdefault("metadata", {})
    tmeta["labels"] = {
        k: v for k, v in {**(tmeta.get("labels") or {}), **labels}.items() if k != "job-name"
    }
    tmeta["labels"].pop("controller-uid", None)
    pod = template.setdefault("spec", {})
    pod.setdefault("restartPolicy", "Never")
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        raise ManifestError(
            f"{deployable.service}/{file}: the Job has no containers; add spec.template.spec."
            "containers"
        )
    env_name = f"{name}-env"
    sources = [{"configMapRef": {"name": env_name}}, {"secretRef": {"name": env_name}}]
    for container in [*containers, *(pod.get("initContainers") or [])]:
        if not isinstance(container, dict) or not container.get("name"):
            raise ManifestError(f"{deployable.service}/{file}: every container needs a name")
        if not container.get("image"):
            container["image"] = deployable.image
        container["envFrom"] = [*sources, *(container.get("envFrom") or [])]
        container.setdefault("terminationMessagePolicy", "FallbackToLogsOnError")
    owned_meta = {"name": env_name, "namespace": namespace, "labels": labels}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": dict(owned_meta),
        "data": config_data(deployable),
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": dict(owned_meta),
        # The env entries that hold a secret (ENV list, or any .env entry naming one),
        # resolved: `secret_values` maps each reference to its value.
        "data": {
            key: base64.b64encode(
                substitute(text, lambda ref: secret_values[ref]).encode("utf-8")
            ).decode("ascii")
            for key, text in sorted(secret_env(deployable).items())
        },
    }
    return body, [config_map, secret]


def run_stage_job(
    jobs: JobClient,
    deployable: Deployable,
    file: str,
    stage: str,
    secret_values: Mapping[str, str],
    *,
    timeout: float,
    retention: int,
    log: Callable[[str], None],
    resume: bool = False,
) -> StageJobResult:
    """Run one stage Job to its end; a Job that times out, or whose pod cannot start, is
    deleted so it stops.

    `resume`: an earlier attempt of the same release may have run it (see
    `JobPlatform.run_job`): this release's Job that completed is not run again (its result
    is the earlier run's), one still running is waited for, not restarted."""
    job, owned = stage_job_objects(
        deployable,
        file,
        stage,
        jobs.namespace,
        secret_values,
        timeout=timeout,
        retention=retention,
    )
    name = job["metadata"]["name"]
    container = job["spec"]["template"]["spec"]["containers"][0]["name"]
    earlier = (
        _earlier_job(jobs, name, deployable.release_id, file, stage, retention, log)
        if resume
        else None
    )
    if earlier is None:
        jobs.create(job, owned)  # replacing an earlier Job of the name: it runs again
        log(f"{stage} job {file}: Job {jobs.namespace}/{name} created")
    elif earlier == "running":
        log(f"{stage} job {file}: Job {jobs.namespace}/{name} of the earlier attempt still runs")
    succeeded, reason = jobs.wait(name, timeout)
    pod, ended_by, message, exit_code = jobs.pod_result(name, container)
    lines = jobs.logs(pod, ended_by, message) if pod else []
    if not succeeded and (reason.startswith("timed out") or _cannot_start(reason)):
        jobs.delete(name, wait=False)
    return StageJobResult(
        file, name, succeeded, reason, exit_code, tuple(lines), earlier=earlier is not None
    )


def _earlier_job(
    jobs: JobClient,
    name: str,
    release_id: str,
    file: str,
    stage: str,
    retention: int,
    log: Callable[[str], None],
) -> str | None:
    """Whether the platform still has this release's Job for `file` from an earlier attempt
    that did not fail: "complete" or "running" (then it is not started again when resuming),
    else None (absent, another release's, or failed: it runs), said in the log either way."""
    from configcenter.adapters.k8s_manifests import RELEASE_ANNOTATION

    found = jobs.read(name)
    where = f"Job {jobs.namespace}/{name}"
    annotations = (found.metadata.annotations or {}) if found is not None else {}
    if found is None or annotations.get(RELEASE_ANNOTATION) != release_id:
        log(
            f"{stage} job {file}: runs: the cluster shows no {where} of release {release_id} "
            f"from an earlier attempt (it never started, or it ended more than {retention}s "
            "ago and was deleted)"
        )
        return None
    conditions = {c.type for c in (found.status.conditions or []) if c.status == "True"}
    if "Failed" in conditions:
        log(f"{stage} job {file}: runs again: {where} of release {release_id} failed before")
        return None
    return "complete" if "Complete" in conditions else "running"


def _cannot_start(reason: str) -> bool:
    """Whether `wait` ended because a pod of the Job cannot start (see `stuck_pod`)."""
    return reason.partition(":")[0] in FAILING_WAIT_REASONS
