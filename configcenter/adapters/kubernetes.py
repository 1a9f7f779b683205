"""The Kubernetes platform: server-side apply and prune, watch-based rollout wait, observe, diff.

`KubernetesPlatform` is the platform port for one namespace of one cluster; it
puts together the adapter's parts, one module each (the split fluxcd/pkg's
`ssa` makes into apply, diff and wait):

* `k8s_client`: the connection (the official `kubernetes` client, imported only
  when a request is first made), discovery, and errors that name the step;
* `k8s_manifests` (pure): the objects a release consists of;
* `k8s_apply`: server-side apply, config and secret versions, prune, heal
  (`replace_drifted`) and `secrets_match`;
* `k8s_wait` with `k8s_rollout` (pure): watching the rollout, judging its health;
* `k8s_observe` with `k8s_live` (pure): what runs, projected onto the fields
  someone set; delete;
* `k8s_diff` (pure): drift of a release against what runs; `k8s_desired_cache`
  keeps each release's desired objects on disk between runs, content-addressed;
* `k8s_jobs`: stage Jobs (pre-deploy, verification).

Secret values are resolved only at apply time, registered with a `Redactor`,
and never logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from configcenter.adapters import k8s_diff, k8s_observe
from configcenter.adapters.k8s_apply import ReleaseApplier
from configcenter.adapters.k8s_client import KubeClient
from configcenter.adapters.k8s_desired_cache import DesiredObjectsCache
from configcenter.adapters.k8s_manifests import check_namespace
from configcenter.adapters.k8s_wait import RolloutWaiter
from configcenter.core.redact import Redactor
from configcenter.core.secretrefs import SecretsRotated
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
        self.redactor = redactor if redactor is not None else Redactor()
        self.client = KubeClient(target, self.namespace, kubeconfig, self.redactor)
        self._applier = ReleaseApplier(self.client)
        self._waiter = RolloutWaiter(self.client)
        self._desired = DesiredObjectsCache()

    # -- the port ----------------------------------------------------------------------

    def apply(self, deployable: Deployable, *, dry_run: bool = False) -> None:
        """Server-side apply of the release's objects (see `ReleaseApplier.apply`).

        The objects reconcile will compare with are kept too, while the release's manifests
        are parsed anyway (the same content-addressed entry `desired_objects` would make).
        """
        self._applier.apply(deployable, dry_run=dry_run)
        if not dry_run:
            self.desired_objects(deployable)

    def apply_replacing(self, deployable: Deployable, refs: Iterable[str]) -> list[str]:
        """`apply`, with the objects `refs` (changed by hand) replaced whole (see
        `ReleaseApplier.apply`)."""
        replaced = self._applier.apply(deployable, replace=frozenset(refs))
        self.desired_objects(deployable)
        return replaced

    def prune(self, deployable: Deployable) -> list[str]:
        """Delete what earlier releases of the service left and this one no longer renders."""
        return self._applier.prune(deployable)

    def secrets_match(
        self, deployable: Deployable, generations: list[int]
    ) -> int | SecretsRotated | str:
        """Compare freshly resolved secret values with each generation's live Secrets."""
        return self._applier.secrets_match(deployable, generations)

    def cluster_secret_problem(self, ref: str) -> tuple[str, str] | None:
        """Why the `k8s:` reference cannot be read now and the fix; None when it can (the
        `cluster_secrets` capability: apply and plan check references before a commit)."""
        return self._applier.cluster_secret_problem(ref)

    def secrets_unavailable(self) -> str | None:
        """Why the env's secret values cannot be compared now (its Secrets cannot be
        listed: the cluster is unreachable, the kubeconfig is missing); asked once."""
        return self._applier.secrets_unavailable()

    def wait(
        self, deployable: Deployable, *, timeout: float, progress: ProgressCallback | None = None
    ) -> RolloutStatus:
        """Watch the service's workloads and pods until all are healthy, one failed, or the
        timeout passed (see `k8s_wait.RolloutWaiter.wait`)."""
        self._applier.check_env(deployable)
        return self._waiter.wait(deployable, timeout=timeout, progress=progress)

    def replace_drifted(self, deployable: Deployable, refs: Iterable[str]) -> list[str]:
        """Make the objects `refs` (`Kind/name`) equal to the release again, by replacing them."""
        return self._applier.replace_drifted(deployable, refs)

    def observe(self) -> Mapping[str, ObservedService]:
        """What configcenter manages in the namespace now: one list call per kind."""
        return k8s_observe.observe(self.client, self.target.env)

    def desired_objects(self, deployable: Deployable) -> dict[str, Mapping[str, Any]]:
        """The objects `apply` would send, keyed like `observe()` keys them (object drift)."""
        return k8s_observe.desired_objects(deployable, self.namespace, self._desired)

    def diff(self, deployable: Deployable, observed: ObservedService | None) -> ServiceDiff:
        """The release's drift, object by object and field by field (see `k8s_diff`)."""
        desired = self.desired_objects(deployable)

        def server_defaults(ref: str) -> Mapping[str, Any] | None:
            return self._applier.server_defaults(desired[ref])

        return k8s_diff.diff(deployable, desired, observed, server_defaults)

    def delete(self, service: str) -> None:
        """Delete every object of the service in the namespace, of any kind, by label."""
        k8s_observe.delete(self.client, self.target.env, service)

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
        resume: bool = False,
    ) -> StageJobResult:
        """Run the release's stage Job rendered into `file` (see `k8s_jobs.run_stage_job`)."""
        from kubernetes import client

        from configcenter.adapters.k8s_jobs import JobClient, JobError, run_stage_job

        self._applier.check_env(deployable)
        values = self._applier.resolve_secrets(deployable)
        api = self.client.dynamic().client
        jobs = JobClient(
            client.CoreV1Api(api),
            client.BatchV1Api(api),
            self.namespace,
            error=lambda what, exc: self.client.api_error(what, exc),
        )
        if not self._applier.ensure_namespace(False):
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
                resume=resume,
            )
        except JobError as exc:
            raise PlatformError(self.redactor.redact(str(exc))) from None


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
