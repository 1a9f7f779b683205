"""The platform port: where releases run (Kubernetes, Marathon).

A use case hands the adapter a `Deployable` (rendered files from the deploy
repo plus the resolved image) and gets back rollout statuses. Adapters resolve
secret references only here, at deploy time, and never log their values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from configcenter.core.errors import PlatformFailure
from configcenter.core.redact import Redactor
from configcenter.core.secretrefs import SecretsRotated

RolloutState = Literal["progressing", "healthy", "failed"]
DriftKind = Literal["changed", "missing", "orphan"]


@dataclass(frozen=True)
class PlatformTarget:
    """One environment's target, settings already rendered for that env."""

    name: str  # the platform's name in configcenter.yaml
    kind: str  # a platform kind of the registry (configcenter.core.kinds)
    env: str
    settings: Mapping[str, str]  # e.g. namespace, context, url, group


@dataclass(frozen=True)
class Deployable:
    """One service's release, as the deploy repo holds it."""

    env: str
    service: str
    release_id: str
    image: str  # resolved reference (by digest once built)
    config_digest: str  # identity of rendered files + consumed values + secrets generation
    files: Mapping[str, bytes]  # output name -> rendered bytes (secrets as placeholders)
    values: Mapping[str, str]  # non-secret ENV-list values, as strings (maps and lists: JSON)
    secrets: Mapping[str, str]  # ENV key -> secret reference ("env:X", "file:/p", "k8s:ns/n/k")
    replicas: int | None = 1  # None: left to an autoscaler (`replicas: auto`)
    labels: Mapping[str, str] = field(default_factory=dict)
    # Outputs that are stage Jobs (pre-deploy, verification): run by the stages, never
    # applied as part of the workload.
    stage_files: frozenset[str] = frozenset()
    #: Names the objects that carry the release's secret values; moves when they rotate.
    secrets_generation: int = 1
    #: When only the replicas changed since an earlier release: that release's id and config
    #: digest. A platform whose workload restarts when its release labels change (Marathon:
    #: labels are part of an app's definition) labels the workload with these instead, so
    #: the change is a scale; the others label it with `release_id` and `config_digest`.
    scale_of: tuple[str, str] | None = None

    @property
    def workload_identity(self) -> tuple[str, str]:
        """The release id and config digest a restart-on-relabel platform's workload carries."""
        return self.scale_of or (self.release_id, self.config_digest)


@dataclass(frozen=True)
class RolloutStatus:
    state: RolloutState
    reason: str = ""
    message: str = ""
    desired: int = 0
    updated: int = 0
    ready: int = 0
    available: int = 0


@dataclass(frozen=True)
class ObservedService:
    """What runs on the platform for one service, as far as drift cares."""

    service: str
    image: str | None
    replicas: int | None
    config_digest: str | None
    release_id: str | None
    objects: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    #: `Kind/name` of objects the running release needs that are not there: the release
    #: does not run whole (deleted by hand, collected with an owner), so apply rolls it out.
    missing: tuple[str, ...] = ()
    #: `Kind/name` of every object of the service that exists, `objects` or not (immutable
    #: versions no workload refers to now, e.g. once the workload itself was deleted).
    present: frozenset[str] = frozenset()
    #: Who else changed what the service runs since configcenter wrote it, as the platform
    #: records writers (Kubernetes: the managers of fields in a spec): () when nobody did;
    #: None when the platform cannot tell, so plan and apply compare it with its release.
    changed_by: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Drift:
    """One difference between a release (as the deploy repo holds it) and the platform."""

    service: str
    field: str  # image | replicas | config_digest | release | service | "<Kind/name> <path>"
    desired: str | None
    live: str | None
    kind: DriftKind = "changed"


@dataclass(frozen=True)
class ServiceDiff:
    """What `Platform.diff` found for one service.

    `image` and `replicas` are the release's as the platform would apply them (a
    template may set both); `drifts` every difference from what runs, summary
    fields first, then objects (for platforms with the `object_drift` capability).
    """

    image: str | None
    replicas: int | None
    drifts: tuple[Drift, ...] = ()


def service_diff(
    deployable: Deployable,
    observed: ObservedService | None,
    *,
    image: str | None,
    replicas: int | None,
    objects: Iterable[Drift] = (),
) -> ServiceDiff:
    """The comparison every platform shares: nothing running, or image, replicas, config
    digest and release; then the platform's own object drifts (`objects`), less those
    that only repeat a summary drift."""
    service = deployable.service
    if observed is None:
        return ServiceDiff(
            image, replicas, (Drift(service, "service", "running", None, "missing"),)
        )
    drifts: list[Drift] = []
    summary = [
        ("image", image, observed.image),
        ("replicas", _text(replicas), _text(observed.replicas)),
        ("config_digest", deployable.config_digest, observed.config_digest),
        ("release", deployable.release_id, observed.release_id),
    ]
    for name, want, have in summary:
        if want is not None and want != have:
            drifts.append(Drift(service, name, want, have))
    pairs = {(d.desired, d.live) for d in drifts}
    drifts.extend(d for d in objects if (d.desired, d.live) not in pairs)
    return ServiceDiff(image, replicas, tuple(drifts))


def _text(value: object) -> str | None:
    return None if value is None else str(value)


ProgressCallback = Callable[[RolloutStatus], None]


class PlatformError(PlatformFailure):
    """The platform refused or could not carry out a request.

    A rollout that merely turns out unhealthy is not an error: `wait` returns a
    failed `RolloutStatus`. This is for bad input (unusable manifests, an
    unresolvable secret) and for the platform's API failing. Messages name what
    is wrong and the fix, and never carry a secret value.
    """


class Platform(Protocol):
    target: PlatformTarget

    def apply(self, deployable: Deployable, *, dry_run: bool = False) -> None:
        """Create or update everything the release needs (idempotent)."""
        ...

    def wait(
        self, deployable: Deployable, *, timeout: float, progress: ProgressCallback | None = None
    ) -> RolloutStatus:
        """Block until the release is healthy or failed (or the timeout passes: failed)."""
        ...

    def prune(self, deployable: Deployable) -> list[str]:
        """Delete what earlier releases left that this one no longer has (call only once
        it was verified healthy); returns what was deleted, as `Kind/name`."""
        ...

    def observe(self) -> Mapping[str, ObservedService]:
        """What runs in this target now, by service name (one list call per kind)."""
        ...

    def diff(self, deployable: Deployable, observed: ObservedService | None) -> ServiceDiff:
        """How what runs (`observed`, from `observe()`; None when nothing runs) differs from
        the release: only what someone set counts, never defaults the platform fills in."""
        ...

    def delete(self, service: str) -> None:
        """Remove a service that left the config."""
        ...

    def secrets_match(
        self, deployable: Deployable, generations: list[int]
    ) -> int | SecretsRotated | str:
        """Which of `generations` holds exactly the secret values `deployable` resolves to now.

        Compares with what the platform holds (never a stored hash). Returns the first
        matching generation; when the platform holds a candidate and none matches (the
        values rotated), a `SecretsRotated` naming the references whose values differ from
        the first candidate's, key by key (and those it cannot tell apart, honestly); or a
        sentence saying why it cannot tell (nothing live yet, a reference not resolvable
        here, a platform that cannot read its secrets back).
        """
        ...

    def secrets_unavailable(self) -> str | None:
        """A sentence when no secret value of the target's environment can be compared now
        (the platform cannot be reached, or cannot list what it holds), None when
        `secrets_match` may tell. A plan asks it once per platform, before any service: a
        service whose inputs did not change then says it cannot tell without its files
        being read. `secrets_match` says the same per service when asked.
        """
        ...


class ObjectDriftPlatform(Platform, Protocol):
    """A platform with the `object_drift` capability (`configcenter.core.kinds`): its `diff`
    compares objects field by field (drifts named `"<Kind/name> <path>"`)."""

    def replace_drifted(self, deployable: Deployable, refs: Iterable[str]) -> list[str]:
        """Replace the objects `refs` (`Kind/name`, as `diff` names them) with what the release
        renders, dropping fields other managers added inside them; returns those replaced."""
        ...

    def apply_replacing(self, deployable: Deployable, refs: Iterable[str]) -> list[str]:
        """`apply` the release, replacing the objects `refs` (changed by hand) whole with what
        it renders once the objects they read exist, so the fields others added inside them
        go in the release's own rollout; returns those replaced."""
        ...


@dataclass(frozen=True)
class HeldWorkload:
    """A service's workload that a deployment in progress holds: the platform refuses to
    change it (Marathon: HTTP 409 "App is locked by one or more deployments") until that
    deployment ends or is cancelled (`force`)."""

    service: str
    workload: str  # the platform's name for it, e.g. the Marathon app id /shop/dev/api
    deployments: tuple[str, ...]  # the ids of the deployments that hold it


class ForcePlatform(Platform, Protocol):
    """A platform with the `force` capability: a deployment in progress holds a workload,
    and `force=True` (when opened) cancels it to change the workload anyway."""

    def held(self, services: Iterable[str]) -> list[HeldWorkload]:
        """Which of `services`' workloads deployments in progress hold now (one call)."""
        ...


class ClusterSecretsPlatform(Platform, Protocol):
    """A platform with the `cluster_secrets` capability: it reads `k8s:` references itself."""

    def cluster_secret_problem(self, ref: str) -> tuple[str, str] | None:
        """Why the `k8s:` reference `ref` cannot be read on the cluster now, and the fix
        (never a value); None when it can (the value is only registered for masking).
        Raises `PlatformError` when the cluster cannot be asked at all."""
        ...


@dataclass(frozen=True)
class StageJobResult:
    """How one stage Job (pre-deploy or verification) of a release ended."""

    file: str  # the output it was rendered from, e.g. "migrate.yaml"
    job: str  # the Job's name on the platform (one per release and file)
    succeeded: bool
    reason: str  # "Complete", the Job's Failed condition, or "timed out after Ns"
    exit_code: int | None = None
    log_lines: tuple[str, ...] = ()
    #: Not started by this call: the release's Job of an earlier attempt (`run_job`'s
    #: `resume`), which had completed or was waited for.
    earlier: bool = False


StageLog = Callable[[str], None]


class JobPlatform(Platform, Protocol):
    """A platform with the `jobs` capability: runs a release's stage Jobs."""

    def run_job(
        self,
        deployable: Deployable,
        file: str,
        stage: str,
        *,
        timeout: float,
        retention: int,
        log: StageLog,
        resume: bool = False,
    ) -> StageJobResult:
        """Run the Job rendered into `file` with the release's image, values and secrets;
        block until it completes, fails or `timeout` passes (then it is deleted). Finished
        Jobs are deleted `retention` seconds after they end.

        `resume`: an earlier attempt of this release (whose outcome was never recorded) may
        have run the Job. When the platform still shows this release's Job for `file`
        completed, it is not run again (the result is that run's, `earlier` set); still
        running, it is waited for, not restarted. Failed, or no longer shown (never
        started, or deleted after `retention`), it runs; `log` says which."""
        ...


class TaskEndpointPlatform(Platform, Protocol):
    """A platform with the `task_endpoints` capability (Marathon): HTTP checks reach tasks."""

    def task_endpoints(self, deployable: Deployable) -> list[str]:
        """ "host:port" of every running task of the release (its first port)."""
        ...


@dataclass(frozen=True)
class UndeliveredFiles:
    """Rendered config files a platform, as configured, could not hand to its workloads."""

    files: tuple[str, ...]  # the outputs, e.g. ("config/app.yaml",)
    message: str  # follows the service's name: "renders config files (...) for ..."
    hint: str  # the fix


class ConfigFilesCheck(Protocol):
    """The `check_config_files` function of a platform module whose kind has the
    `config_files` capability (`configcenter.core.kinds`): which of a release's rendered
    `files` reach its workloads as files, and whether the platform named `platform`,
    configured with `settings` (as written in configcenter.yaml), can deliver them.
    Pure: validation calls it for every service without opening the platform."""

    def __call__(
        self, platform: str, settings: Mapping[str, object], files: Mapping[str, bytes]
    ) -> UndeliveredFiles | None: ...


class PlatformFactory(Protocol):
    """The one signature of every platform module's `open_platform`.

    `force` asks a platform with the `force` capability to cancel a deployment
    that holds the app; platforms without it ignore the flag.
    """

    def __call__(
        self, target: PlatformTarget, redactor: Redactor, *, force: bool = False
    ) -> Platform: ...
