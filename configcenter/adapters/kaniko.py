"""Builder adapter: a Kubernetes Job running the Kaniko executor, for building on the cluster.

Small contexts travel in a ConfigMap with the rendered Dockerfile (the context
as a reproducible tar.gz in binaryData; Kaniko reads it with `--context
tar://`). Larger ones are fetched by the Job itself: an init container clones
the source repository at the pinned commit into an emptyDir (credentials from
a Secret made for the Job, never in its spec), lays the rendered context files
over it, and Kaniko builds `--context dir://` from there. The ConfigMap and
Secret are owned by the Job, so all are garbage-collected together.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from configcenter.adapters.buildah import split_target
from configcenter.adapters.k8s_jobs import JOB_KIND_LABEL, JobClient, JobError
from configcenter.core.errors import UserError
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
FETCH_CONTAINER = "fetch-source"
DEFAULT_GIT_IMAGE = "docker.io/alpine/git:v2.47.2"
FETCH_MODES = ("auto", "always", "never")
# The init container's script. Everything it needs comes from its environment; the
# credential helper answers git from GIT_USERNAME/GIT_PASSWORD (a Secret), so no
# credential is in the URL, the arguments or the Job's spec. A shallow fetch of the
# commit works on GitLab and GitHub; servers that refuse it get a full fetch.
FETCH_SCRIPT = r"""set -eu
git init -q /workspace/source
cd /workspace/source
if [ -n "${GIT_USERNAME:-}" ]; then
  helper='!f() { test "$1" = get || exit 0; echo "username=$GIT_USERNAME";'
  git config credential.helper "$helper"' echo "password=${GIT_PASSWORD:-}"; }; f'
fi
git fetch -q --depth=1 "$SOURCE_URL" "$SOURCE_COMMIT" \
  || git fetch -q "$SOURCE_URL" '+refs/heads/*:refs/remotes/origin/*' '+refs/tags/*:refs/tags/*'
git -c advice.detachedHead=false checkout -q "$SOURCE_COMMIT"
test "$(git rev-parse HEAD)" = "$SOURCE_COMMIT"
rm -rf .git
if [ -f /build-input/overlay.tar.gz ]; then
  tar -xzf /build-input/overlay.tar.gz -C "/workspace/source/$SOURCE_SUBDIR"
fi
echo "fetched $SOURCE_URL at $SOURCE_COMMIT"
"""
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


def files_tarball(files: Mapping[str, bytes]) -> bytes:
    """`files` (relative path -> bytes) as a reproducible tar.gz."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0)


def fetchable_url(url: str) -> bool:
    """Can a pod on the cluster clone this? Not a path on this machine."""
    scheme = urlsplit(url).scheme
    if scheme in ("http", "https", "ssh", "git"):
        return True
    # scp-like "git@host:group/repo.git"
    return bool(re.match(r"^[\w.-]+@[\w.-]+:", url))


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(URL without userinfo, username, password); a lone https user part is a token."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or (parts.username is None):
        return url, None, None
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    from urllib.parse import unquote

    return clean, unquote(parts.username), unquote(parts.password or "")


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
    # "auto": a context that fits travels in a ConfigMap, a larger one is fetched by the
    # Job from the source repository; "always": the Job always fetches; "never": refuse
    # contexts over the ConfigMap limit.
    fetch_source: str = "auto"
    git_image: str = DEFAULT_GIT_IMAGE

    # --- manifests -------------------------------------------------------------

    def executor_args(self, request: BuildRequest, fetched: bool = False) -> list[str]:
        host = request.target.split("/", 1)[0]
        if fetched:
            assert request.source is not None
            where = "/workspace/source" + (
                f"/{request.source.subdir}" if request.source.subdir else ""
            )
            context = [f"--context=dir://{where}", "--dockerfile=/build-input/Dockerfile"]
        else:
            context = [
                "--context=tar:///workspace/context.tar.gz",
                "--dockerfile=/workspace/Dockerfile",
            ]
        args = [
            *context,
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

    def fetches_source(self, request: BuildRequest) -> bool:
        """Does this request's Job fetch the source itself (rather than get a ConfigMap)?"""
        if self.fetch_source not in FETCH_MODES:
            raise BuildFailed(
                f"builder fetch_source {self.fetch_source!r} is not one of {', '.join(FETCH_MODES)}"
            )
        if self.fetch_source == "never":
            return False
        if self.fetch_source == "auto":
            tarball = context_tarball(request.context_dir)
            if len(tarball) + len(request.dockerfile.encode()) <= MAX_CONTEXT_BYTES:
                return False
        source = request.source
        if source is None or not fetchable_url(source.url):
            where = (
                f"{split_credentials(source.url)[0]} is a path on this machine"
                if source
                else "it has no source repository"
            )
            raise BuildFailed(
                f"the build context of {request.service} is too big for a ConfigMap and a "
                f"Kaniko Job cannot fetch it ({where}): give image.source.repo as a URL the "
                "cluster can clone (https://, ssh://), or use the buildah builder"
            )
        return True

    def config_map_manifest(self, request: BuildRequest, name: str) -> dict[str, Any]:
        import base64

        tarball = context_tarball(request.context_dir)
        if len(tarball) + len(request.dockerfile.encode()) > MAX_CONTEXT_BYTES:
            raise BuildFailed(
                f"build context of {request.service} is {len(tarball)} bytes compressed, over "
                f"the {MAX_CONTEXT_BYTES} a ConfigMap can carry to a Kaniko Job: give "
                "image.source.repo as a URL the cluster can clone (the Job then fetches it), "
                "use the buildah builder, or keep large files out of the context"
            )
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": self.labels(request)},
            "data": {"Dockerfile": request.dockerfile},
            "binaryData": {"context.tar.gz": base64.b64encode(tarball).decode("ascii")},
        }

    def fetch_inputs_manifest(self, request: BuildRequest, name: str) -> dict[str, Any]:
        """The ConfigMap of a fetching Job: the Dockerfile and the files laid over the tree."""
        import base64

        assert request.source is not None
        data: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": self.labels(request)},
            "data": {"Dockerfile": request.dockerfile},
        }
        if request.source.overlay:
            overlay = files_tarball(request.source.overlay)
            if len(overlay) + len(request.dockerfile.encode()) > MAX_CONTEXT_BYTES:
                raise BuildFailed(
                    f"the rendered context files of {request.service} are {len(overlay)} bytes "
                    f"compressed, over the {MAX_CONTEXT_BYTES} a ConfigMap can carry: use the "
                    "buildah builder"
                )
            data["binaryData"] = {"overlay.tar.gz": base64.b64encode(overlay).decode("ascii")}
        return data

    def source_secret_manifest(self, request: BuildRequest, name: str) -> dict[str, Any] | None:
        """The source repository's credentials for the fetch, None when its URL has none."""
        assert request.source is not None
        _url, username, password = split_credentials(request.source.url)
        if username is None:
            return None
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/basic-auth",
            "metadata": {"name": f"{name}-source", "labels": self.labels(request)},
            "stringData": {"username": username, "password": password or ""},
        }

    def labels(self, request: BuildRequest) -> dict[str, str]:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.service).strip("-_.")[:63]
        return {
            "app.kubernetes.io/managed-by": MANAGED_BY,
            SERVICE_LABEL: slug or "image",
            JOB_KIND_LABEL: "build",
        }

    def fetch_container(self, request: BuildRequest, name: str) -> dict[str, Any]:
        assert request.source is not None
        url, username, _password = split_credentials(request.source.url)
        env: list[dict[str, Any]] = [
            {"name": "SOURCE_URL", "value": url},
            {"name": "SOURCE_COMMIT", "value": request.source.commit},
            {"name": "SOURCE_SUBDIR", "value": request.source.subdir},
            {"name": "GIT_TERMINAL_PROMPT", "value": "0"},
        ]
        if username is not None:
            for var, key in (("GIT_USERNAME", "username"), ("GIT_PASSWORD", "password")):
                env.append(
                    {
                        "name": var,
                        "valueFrom": {"secretKeyRef": {"name": f"{name}-source", "key": key}},
                    }
                )
        return {
            "name": FETCH_CONTAINER,
            "image": self.git_image,
            "command": ["sh", "-c", FETCH_SCRIPT],
            "env": env,
            "volumeMounts": [
                {"name": "workspace", "mountPath": "/workspace"},
                {"name": "build-input", "mountPath": "/build-input", "readOnly": True},
            ],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }

    def job_manifest(
        self, request: BuildRequest, name: str, fetched: bool = False
    ) -> dict[str, Any]:
        volumes: list[dict[str, Any]] = [
            {"name": "build-input", "configMap": {"name": name}},
        ]
        if fetched:
            volumes.append({"name": "workspace", "emptyDir": {}})
            mounts: list[dict[str, Any]] = [
                {"name": "workspace", "mountPath": "/workspace"},
                {"name": "build-input", "mountPath": "/build-input", "readOnly": True},
            ]
        else:
            mounts = [{"name": "build-input", "mountPath": "/workspace", "readOnly": True}]
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
                    "args": self.executor_args(request, fetched),
                    "volumeMounts": mounts,
                    "resources": self.resources,
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                }
            ],
            "volumes": volumes,
        }
        if fetched:
            pod_spec["initContainers"] = [self.fetch_container(request, name)]
        if self.service_account:
            pod_spec["serviceAccountName"] = self.service_account
        labels = self.labels(request)
        annotations = {"configcenter.io/target": request.target}
        if request.source is not None:
            annotations["configcenter.io/source-commit"] = request.source.commit
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
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

    def manifests(self, request: BuildRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The Job and the objects it owns (its ConfigMap, and a Secret when it fetches)."""
        name = job_name_for(request)
        if self.fetches_source(request):
            owned = [self.fetch_inputs_manifest(request, name)]
            secret = self.source_secret_manifest(request, name)
            if secret is not None:
                owned.append(secret)
            return self.job_manifest(request, name, fetched=True), owned
        return self.job_manifest(request, name), [self.config_map_manifest(request, name)]

    def run_job(self, request: BuildRequest, log: LogSink) -> JobOutcome:
        """Create the Job and what it owns, watch it to its end, collect pod logs."""
        from kubernetes import client

        job, owned = self.manifests(request)
        name = job["metadata"]["name"]
        with self._api() as api:
            jobs = JobClient(
                client.CoreV1Api(api),
                client.BatchV1Api(api),
                self.namespace,
                error=lambda action, exc: self._api_error(action, exc),
            )
            try:
                jobs.create(job, owned)
                how = (
                    "fetching its source"
                    if len(job["spec"]["template"]["spec"].get("initContainers", []))
                    else "context in a ConfigMap"
                )
                log(f"{request.service}: Kaniko Job {self.namespace}/{name} created ({how})")
                succeeded, reason = jobs.wait(name, self.timeout)
                pod, ended_by, message, exit_code = jobs.pod_result(name, CONTAINER)
                lines = (
                    jobs.logs(pod, ended_by, message if ended_by != CONTAINER else None)
                    if pod
                    else []
                )
            except JobError as exc:
                raise BuildFailed(str(exc)) from None
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

    def _api_error(self, action: str, exc: Any) -> BuildFailed:
        return BuildFailed(
            f"cannot {action.replace('the Job', 'the build Job')} in namespace "
            f"{self.namespace}: HTTP {exc.status} {exc.reason}; check that the namespace "
            "exists and the build service account may manage Jobs, ConfigMaps and Secrets "
            "and read pod logs there"
        )


def open_builder(settings: Mapping[str, Any], context: BuilderContext) -> KanikoBuilder:
    """The registry's factory (`configcenter.core.kinds`) for `builder: {kind: kaniko}`."""
    namespace = settings.get("namespace")
    if not namespace:
        raise UserError(
            "builder: {kind: kaniko} needs namespace: (where the build Jobs run) in "
            "configcenter.yaml, and push_secret: naming a kubernetes.io/dockerconfigjson "
            "Secret there unless the registry takes anonymous pushes"
        )
    return KanikoBuilder(
        namespace=str(namespace),
        kubeconfig=settings.get("kubeconfig"),
        kube_context=settings.get("context"),
        push_secret=settings.get("push_secret"),
        fetch_source=str(settings.get("fetch_source", "auto")),
        git_image=str(settings.get("git_image", DEFAULT_GIT_IMAGE)),
        insecure_registries=context.registry.insecure_hosts,
        registry=context.open_registry(),
    )
