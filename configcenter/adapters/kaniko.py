"""Builder adapter: a Kubernetes Job running the Kaniko executor, for building on the cluster.

The rendered Dockerfile and the build context travel in a ConfigMap (the
context as a reproducible tar.gz in binaryData; Kaniko reads it with
`--context tar://`), owned by the Job so both are garbage-collected together.
Kaniko writes the pushed digest to the container's termination message
(`--digest-file /dev/termination-log`), which we read from the pod status; if
a cluster drops it, the registry is asked for the pushed tag instead.
Registry credentials are a docker-config Secret the cluster already holds
(`push_secret`): this adapter never sees them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from configcenter.adapters.buildah import split_target
from configcenter.ports.builder import (
    BuilderContext,
    BuildFailed,
    BuildRequest,
    BuildResult,
    LogSink,
)
from configcenter.ports.registry import Registry

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

DEFAULT_IMAGE = "gcr.io/kaniko-project/executor:v1.23.2"
MANAGED_BY = "configcenter"
SERVICE_LABEL = "configcenter.io/service"
CONTAINER = "kaniko"
# A ConfigMap holds at most 1 MiB in all; keep room for the Dockerfile and metadata.
MAX_CONTEXT_BYTES = 900 * 1024
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_KANIKO_STEP_RE = re.compile(
    r"^(?:INFO|WARN)\[\d+\] ((?:RUN|COPY|ADD|FROM|WORKDIR|ENV|ARG|USER|CMD|ENTRYPOINT)\b.*)$"
)


def context_tarball(context_dir: Path) -> bytes:
    """The context as tar.gz with fixed owners and times, so equal trees give equal bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(context_dir.rglob("*")):
            info = archive.gettarinfo(str(path), arcname=str(path.relative_to(context_dir)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with open(path, "rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)
    return gzip.compress(raw.getvalue(), mtime=0)


def job_name_for(request: BuildRequest) -> str:
    """A DNS-1123 name unique per target: `cc-build-<service>-<hash>`, at most 63 chars."""
    digest = hashlib.sha256(request.target.encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9-]+", "-", request.service.lower()).strip("-")[:40].strip("-")
    return f"cc-build-{slug or 'image'}-{digest}"


def failed_step(lines: list[str]) -> str | None:
    step = None
    for line in lines:
        match = _KANIKO_STEP_RE.match(line)
        if match:
            step = match.group(1)
    return step


@dataclass
class JobOutcome:
    name: str
    succeeded: bool
    reason: str  # the Job condition's reason/message, or "timed out"
    pod: str | None
    termination_message: str | None
    exit_code: int | None
    log_lines: list[str]


@dataclass
class KanikoBuilder:
    """Runs each build as a Job in `namespace`; `api_client` is a kubernetes ApiClient."""

    namespace: str
    api_client_factory: Callable[[], ApiClient] | None = None  # None: kubeconfig / in-cluster
    kubeconfig: str | None = None
    kube_context: str | None = None
    image: str = DEFAULT_IMAGE
    push_secret: str | None = None  # a kubernetes.io/dockerconfigjson Secret for the registry
    insecure_registries: frozenset[str] = frozenset()
    cache_repo: str | None = None  # overrides the request's cache repository
    service_account: str | None = None
    timeout: float = 3600.0
    ttl_seconds_after_finished: int = 3600
    resources: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"requests": {"cpu": "500m", "memory": "1Gi"}}
    )
    registry: Registry | None = None  # asked for the digest when the pod status lacks it
    tail_lines: int = 40

    # --- manifests -------------------------------------------------------------

    def executor_args(self, request: BuildRequest) -> list[str]:
        host = request.target.split("/", 1)[0]
        args = [
            "--context=tar:///workspace/context.tar.gz",
            "--dockerfile=/workspace/Dockerfile",
            f"--destination={request.target}",
            "--digest-file=/dev/termination-log",
            "--reproducible",
        ]
        args += [f"--build-arg={k}={request.build_args[k]}" for k in sorted(request.build_args)]
        if host in self.insecure_registries:
            args += [f"--insecure-registry={host}", f"--skip-tls-verify-registry={host}"]
        for registry in sorted(self.insecure_registries - {host}):
            args += [f"--insecure-registry={registry}", f"--skip-tls-verify-registry={registry}"]
        cache_repo = self.cache_repo or request.cache_repo
        if request.cache and cache_repo:
            args += ["--cache=true", f"--cache-repo={cache_repo}"]
        elif request.cache:
            args.append("--cache=true")  # Kaniko's default repository: <destination>/cache
        else:
            args.append("--cache=false")
        return args

    def config_map_manifest(self, request: BuildRequest, name: str) -> dict[str, Any]:
        import base64

        tarball = context_tarball(request.context_dir)
        if len(tarball) + len(request.dockerfile.encode()) > MAX_CONTEXT_BYTES:
            raise BuildFailed(
                f"build context of {request.service} is {len(tarball)} bytes compressed, over "
                f"the {MAX_CONTEXT_BYTES} a ConfigMap can carry to a Kaniko Job: use the "
                "buildah builder, or keep large files out of the context"
            )
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": self.labels(request)},
            "data": {"Dockerfile": request.dockerfile},
            "binaryData": {"context.tar.gz": base64.b64encode(tarball).decode("ascii")},
        }

    def labels(self, request: BuildRequest) -> dict[str, str]:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.service).strip("-_.")[:63]
        return {"app.kubernetes.io/managed-by": MANAGED_BY, SERVICE_LABEL: slug or "image"}

    def job_manifest(self, request: BuildRequest, name: str) -> dict[str, Any]:
        volumes: list[dict[str, Any]] = [
            {"name": "build-input", "configMap": {"name": name}},
        ]
        mounts: list[dict[str, Any]] = [
            {"name": "build-input", "mountPath": "/workspace", "readOnly": True},
        ]
        if self.push_secret:
            volumes.append(
                {
                    "name": "registry-auth",
                    "secret": {
                        "secretName": self.push_secret,
                        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                    },
                }
            )
            mounts.append({"name": "registry-auth", "mountPath": "/kaniko/.docker"})
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": CONTAINER,
                    "image": self.image,
                    "args": self.executor_args(request),
                    "volumeMounts": mounts,
                    "resources": self.resources,
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                }
            ],
            "volumes": volumes,
        }
        if self.service_account:
            pod_spec["serviceAccountName"] = self.service_account
        labels = self.labels(request)
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {"configcenter.io/target": request.target},
            },
            "spec": {
                "backoffLimit": 0,  # a failed build is reported, not retried
                "activeDeadlineSeconds": int(self.timeout),
                "ttlSecondsAfterFinished": self.ttl_seconds_after_finished,
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        }

    # --- running ---------------------------------------------------------------

    def _api(self) -> ApiClient:
        if self.api_client_factory is not None:
            return self.api_client_factory()
        from kubernetes import config

        try:
            return config.new_client_from_config(
                config_file=self.kubeconfig, context=self.kube_context
            )
        except config.ConfigException:
            config.load_incluster_config()
            from kubernetes.client import ApiClient

            return ApiClient()

    def run_job(self, request: BuildRequest, log: LogSink) -> JobOutcome:
        """Create the ConfigMap and Job, watch the Job to its end, collect pod logs."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        name = job_name_for(request)
        config_map = self.config_map_manifest(request, name)
        job = self.job_manifest(request, name)
        with self._api() as api:
            # Typed Any: the client takes plain manifest dicts as bodies, its stubs do not say so.
            core: Any = client.CoreV1Api(api)
            batch: Any = client.BatchV1Api(api)
            try:
                # A finished Job of an earlier attempt at the same target: replace it.
                batch.delete_namespaced_job(name, self.namespace, propagation_policy="Foreground")
                self._wait_gone(batch, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise self._api_error("delete the old build Job", exc) from None
            try:
                core.delete_namespaced_config_map(name, self.namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise self._api_error("delete the old build ConfigMap", exc) from None
            try:
                core.create_namespaced_config_map(self.namespace, config_map)
                created = batch.create_namespaced_job(self.namespace, job)
                core.patch_namespaced_config_map(
                    name,
                    self.namespace,
                    {
                        "metadata": {
                            "ownerReferences": [
                                {
                                    "apiVersion": "batch/v1",
                                    "kind": "Job",
                                    "name": name,
                                    "uid": created.metadata.uid,
                                }
                            ]
                        }
                    },
                )
            except ApiException as exc:
                raise self._api_error("create the build Job", exc) from None
            log(f"{request.service}: Kaniko Job {self.namespace}/{name} created")
            succeeded, reason = self._watch(batch, name)
            pod, message, exit_code = self._pod_result(core, name)
            lines = self._logs(core, pod) if pod else []
            for line in lines:
                log(line)
        return JobOutcome(name, succeeded, reason, pod, message, exit_code, lines)

    def build_and_push(self, request: BuildRequest, log: LogSink) -> BuildResult:
        repository, tag = split_target(request.target)
        if not request.context_dir.is_dir():
            raise BuildFailed(f"build context {request.context_dir} is not a directory")
        outcome = self.run_job(request, log)
        tail = "\n".join(outcome.log_lines[-self.tail_lines :])
        if not outcome.succeeded:
            step = failed_step(outcome.log_lines)
            where = f" at {step}" if step else ""
            code = f", exit status {outcome.exit_code}" if outcome.exit_code is not None else ""
            raise BuildFailed(
                f"Kaniko build of {request.service} failed{where} "
                f"(Job {self.namespace}/{outcome.name}: {outcome.reason}{code})",
                tail,
            )
        match = _DIGEST_RE.search(outcome.termination_message or "")
        digest = match.group(0) if match else None
        if digest is None and self.registry is not None:
            digest = self.registry.manifest_digest(repository.split("/", 1)[1], tag)
        if digest is None:
            raise BuildFailed(
                f"Kaniko Job {self.namespace}/{outcome.name} for {request.service} completed "
                f"but reported no digest, and {request.target} is not in the registry",
                tail,
            )
        return BuildResult(reference=f"{repository}@{digest}", digest=digest)

    def _watch(self, batch: Any, name: str) -> tuple[bool, str]:
        """Follow the Job with a watch until Complete/Failed or the deadline."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + self.timeout
        resource_version: str | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, f"timed out after {self.timeout:g}s"
            watcher = watch.Watch()
            kwargs: dict[str, Any] = {
                "field_selector": f"metadata.name={name}",
                "timeout_seconds": max(1, int(min(remaining, 60))),
            }
            if resource_version:
                kwargs["resource_version"] = resource_version
            try:
                for event in watcher.stream(batch.list_namespaced_job, self.namespace, **kwargs):
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
                            detail = ": ".join(x for x in (cond.reason, cond.message) if x)
                            return False, detail or "Failed"
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion expired: list afresh
                    resource_version = None
                    continue
                raise self._api_error("watch the build Job", exc) from None

    def _wait_gone(self, batch: Any, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                batch.read_namespaced_job(name, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(0.2)  # polling interval for the foreground deletion
        raise BuildFailed(f"old build Job {self.namespace}/{name} was not deleted within 60s")

    def _pod_result(self, core: Any, name: str) -> tuple[str | None, str | None, int | None]:
        pods = core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}").items
        if not pods:
            return None, None, None
        pod = sorted(pods, key=lambda p: p.metadata.creation_timestamp)[-1]
        for status in pod.status.container_statuses or []:
            if status.name == CONTAINER and status.state and status.state.terminated:
                term = status.state.terminated
                return pod.metadata.name, term.message, term.exit_code
        return pod.metadata.name, None, None

    def _logs(self, core: Any, pod: str) -> list[str]:
        from kubernetes.client.exceptions import ApiException

        try:
            text: str = core.read_namespaced_pod_log(pod, self.namespace, container=CONTAINER)
        except ApiException as exc:
            return [f"(build log of pod {pod} unavailable: HTTP {exc.status} {exc.reason})"]
        return text.splitlines()

    def _api_error(self, action: str, exc: Any) -> BuildFailed:
        return BuildFailed(
            f"cannot {action} in namespace {self.namespace}: HTTP {exc.status} {exc.reason}; "
            "check that the namespace exists and the build service account may manage "
            "Jobs, ConfigMaps and read pod logs there"
        )


def open_builder(settings: Mapping[str, Any], context: BuilderContext) -> KanikoBuilder:
    """The registry's factory (`configcenter.core.kinds`) for `builder: {kind: kaniko}`."""
    namespace = settings.get("namespace")
    if not namespace:
        raise ValueError(
            "builder: {kind: kaniko} needs namespace: (where the build Jobs run) in "
            "configcenter.yaml, and push_secret: naming a kubernetes.io/dockerconfigjson "
            "Secret there unless the registry takes anonymous pushes"
        )
    return KanikoBuilder(
        namespace=str(namespace),
        kubeconfig=settings.get("kubeconfig"),
        kube_context=settings.get("context"),
        push_secret=settings.get("push_secret"),
        insecure_registries=context.registry.insecure_hosts,
        registry=context.open_registry(),
    )
