"""reconcile: compare what runs on the platform with what the deploy repo says, and heal.

The deploy repo's state records (`<env>/.state/`) are the desired state; each platform's
`observe()` (one list call per kind per namespace) is the live state, and the
platform's `diff` says how they differ: only what someone set counts (the
Kubernetes adapter projects live objects onto their managed fields, so defaults
and status never show up as drift; labels and annotations other managers added
are not drift either). `heal` replaces drifted
objects with what the release renders, applies and waits for it; it never
records a release outcome (a failed heal is a failed reconcile run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from configcenter.core import kinds
from configcenter.core.state import EnvState
from configcenter.ports.platform import (
    Deployable,
    Drift,
    ObjectDriftPlatform,
    ObservedService,
    Platform,
    RolloutStatus,
)
from configcenter.usecases.apply.deploy import PLATFORM_FAILURES, rollout_timeout
from configcenter.usecases.apply.records import files_of, state_at
from configcenter.usecases.apply.report import Reporter, RunLog, ServiceResult, default_actor
from configcenter.usecases.inspect import check_env
from configcenter.usecases.platforms import deployable, open_platform
from configcenter.usecases.workspace import Workspace

__all__ = ["Drift", "DriftReport", "ServiceDrift", "reconcile"]


@dataclass
class ServiceDrift:
    """One service as reconcile saw it: desired and live summary plus its drifts."""

    service: str
    platform: str | None
    status: str  # in_sync | drifted | missing | orphan | not_deployed
    desired_image: str | None = None
    live_image: str | None = None
    desired_replicas: int | None = None
    live_replicas: int | None = None
    release: str | None = None
    live_release: str | None = None
    drifts: list[Drift] = field(default_factory=list)


@dataclass
class DriftReport:
    env: str
    run_id: str | None
    services: list[ServiceDrift] = field(default_factory=list)
    healed: list[ServiceResult] = field(default_factory=list)
    heal: bool = False
    seconds: float = 0.0

    @property
    def drifts(self) -> list[Drift]:
        return [d for s in self.services for d in s.drifts]

    @property
    def has_drift(self) -> bool:
        return bool(self.drifts)

    @property
    def outcome(self) -> str:
        """The run outcome: noop (in sync), succeeded (drift reported or healed), or failed."""
        outcomes = {r.outcome for r in self.healed}
        if "rolled_back" in outcomes:
            return "rolled_back"
        if "failed" in outcomes:
            return "failed"
        return "succeeded" if self.has_drift else "noop"

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "run": self.run_id,
            "drift": self.has_drift,
            "drift_count": len(self.drifts),
            "heal": self.heal,
            "seconds": round(self.seconds, 3),
            "services": [
                {**asdict(s), "drifts": [asdict(d) for d in s.drifts]} for s in self.services
            ],
            "healed": [asdict(r) for r in self.healed],
        }


def reconcile(
    ws: Workspace,
    env: str,
    heal: bool = False,
    *,
    reporter: Reporter | None = None,
    trigger: str = "cli",
    actor: str = "",
    record: bool = True,
) -> DriftReport:
    """Report drift in ENV (and heal it through the deploy path when `heal`)."""
    reporter = reporter or Reporter()
    check_env(ws.config, env)
    started = time.monotonic()
    run_id: str | None = None
    if record:
        run = ws.start_run(
            "reconcile",
            env,
            [],
            trigger,
            actor or default_actor(),
            {"heal": heal, "config_commit": ws.config.commit},
        )
        run_id = run.id
    log = RunLog(ws, run_id, reporter)
    report = DriftReport(env, run_id, heal=heal)
    try:
        state = ws.read_state(env)
        report.services = _compare(ws, env, state, log)
        for item in report.services:
            for drift in item.drifts:
                log(
                    f"drift: {drift.service}: {drift.field}: desired {drift.desired or '-'}, "
                    f"live {drift.live or '-'}"
                )
        if not report.has_drift:
            log(f"{env}: no drift ({len(report.services)} service(s) checked)")
        if heal:
            todo = [s for s in report.services if s.status in ("drifted", "missing")]
            if todo:
                report.healed = _heal(ws, env, todo, log, reporter)
            orphans = [s.service for s in report.services if s.status == "orphan"]
            if orphans:
                log(
                    "not healed: orphans "
                    + ", ".join(orphans)
                    + " (not in the deploy repo; heal never deletes: delete them on the "
                    "platform, or add them back to the config repo)"
                )
        report.seconds = time.monotonic() - started
        if run_id is not None:
            ws.run_store.finish(
                run_id,
                report.outcome,
                {
                    "drift_count": len(report.drifts),
                    "services": {
                        s.service: {
                            "status": s.status,
                            "drifts": [asdict(d) for d in s.drifts],
                        }
                        for s in report.services
                    },
                    "healed": [asdict(r) for r in report.healed],
                    "seconds": round(report.seconds, 3),
                },
            )
        return report
    except BaseException as exc:
        if run_id is not None:
            ws.run_store.finish(run_id, "failed", {"error": ws.redactor.redact(str(exc))})
        raise


# -- comparing ---------------------------------------------------------------------------------


def _compare(ws: Workspace, env: str, state: EnvState, log: RunLog) -> list[ServiceDrift]:
    config = ws.config
    by_platform: dict[str, list[str]] = {}
    results: dict[str, ServiceDrift] = {}
    for name in sorted(state.services):
        current = state.services[name]
        if not current.platform or current.release is None:
            results[name] = ServiceDrift(
                name,
                None,
                "not_deployed",
                desired_image=current.image,
                desired_replicas=current.replicas,
                release=current.release.id if current.release else None,
            )
            continue
        by_platform.setdefault(current.platform, []).append(name)
    # Platforms the config names for this env are observed too: orphans live there.
    environment = config.environment(env)
    named = [environment.platform, *(s.platform for s in environment.services.values())]
    for platform_name in named:
        if platform_name and platform_name in config.project.platforms:
            by_platform.setdefault(platform_name, [])
    files = _desired_files(ws, env, state, [n for names in by_platform.values() for n in names])
    for platform_name in sorted(by_platform):
        platform = open_platform(config, env, platform_name, ws.redactor)
        live = platform.observe()
        log(f"observed {len(live)} service(s) on platform {platform_name}")
        for name in by_platform[platform_name]:
            current = state.services[name]
            assert current.release is not None
            desired = deployable(env, name, current, files.get(name, {}), current.release.id)
            results[name] = _compare_service(platform, platform_name, desired, live.get(name))
        for name, observed in live.items():
            if name in state.services:
                continue
            results[name] = ServiceDrift(
                name,
                platform_name,
                "orphan",
                live_image=observed.image,
                live_replicas=observed.replicas,
                live_release=observed.release_id,
                drifts=[
                    Drift(
                        name,
                        "service",
                        None,
                        ", ".join(sorted(observed.objects)) or "running",
                        "orphan",
                    )
                ],
            )
    return [results[name] for name in sorted(results)]


def _desired_files(
    ws: Workspace, env: str, state: EnvState, services: list[str]
) -> dict[str, dict[str, bytes]]:
    """Every deployed service's rendered files, in one batched read of the deploy repo."""
    if not services:
        return {}
    prefixes = {name: f"{env}/{name}/" for name in services}
    found = ws.deploy_repo.read_many(
        [prefixes[name] + file for name in services for file in state.services[name].files]
    )
    files: dict[str, dict[str, bytes]] = {name: {} for name in services}
    for name in services:
        prefix = prefixes[name]
        for file in state.services[name].files:
            data = found.get(prefix + file)
            if data is not None:  # output names keep their folders (conf/app.conf)
                files[name][file] = data
    return files


def _compare_service(
    platform: Platform,
    platform_name: str,
    desired: Deployable,
    observed: ObservedService | None,
) -> ServiceDrift:
    found = platform.diff(desired, observed)
    item = ServiceDrift(
        desired.service,
        platform_name,
        "in_sync",
        desired_image=found.image,
        desired_replicas=found.replicas,
        release=desired.release_id,
        drifts=list(found.drifts),
    )
    if observed is None:
        item.status = "missing"
        return item
    item.live_image = observed.image
    item.live_replicas = observed.replicas
    item.live_release = _live_release(desired, observed, item.drifts)
    if item.drifts:
        item.status = "drifted"
    return item


def _live_release(
    desired: Deployable, observed: ObservedService, drifts: list[Drift]
) -> str | None:
    """The release that runs. A platform that restarts a workload when its labels change
    (Marathon) keeps a scale release on the labels of the release it scales: when those
    are what runs, at the scale release's count, the scale release is what runs."""
    scaled = desired.scale_of[0] if desired.scale_of else None
    if (
        scaled is not None
        and observed.release_id == scaled
        and not any(d.field in ("release", "replicas") for d in drifts)
    ):
        return desired.release_id
    return observed.release_id


# -- healing -----------------------------------------------------------------------------------


def _progress(reporter: Reporter, service: str) -> Callable[[RolloutStatus], None]:
    return lambda status: reporter.rollout(service, status)


def _heal(
    ws: Workspace, env: str, services: list[ServiceDrift], log: RunLog, reporter: Reporter
) -> list[ServiceResult]:
    """Make each drifted service's live objects equal to its current release again.

    Objects that drifted are replaced with what the release renders (so fields
    other managers added inside them go), then the release is applied as `deploy`
    would and waited for; once healthy, objects it does not render are pruned. A
    heal that fails is this reconcile run failing: the release's recorded outcome
    is never rewritten, and nothing is rolled back.
    """
    repo = ws.deploy_repo
    state = state_at(repo, env, repo.sync())
    timeout = rollout_timeout(ws.config, env)
    results: list[ServiceResult] = []
    for item in services:
        name = item.service
        current = state.services.get(name)
        if current is None or current.release is None or not current.platform:
            log(f"{name}: left the deploy repo while reconciling; not healed")
            continue
        release = current.release.id
        log(f"{name}: healing: re-applying {release}")
        platform = open_platform(ws.config, env, current.platform, ws.redactor)
        desired = deployable(env, name, current, files_of(repo, env, name, current), release)
        # Object drifts are "<Kind/name> <path>"; summary ones (image, replicas) are one word.
        changed = sorted(
            {
                d.field.split(" ", 1)[0]
                for d in item.drifts
                if d.kind == "changed" and " " in d.field
            }
        )
        # Objects of the service the release does not render (made by hand with its labels:
        # `prune` deletes only what configcenter applied) go once the release is verified.
        orphans = sorted({d.field for d in item.drifts if d.kind == "orphan" and "/" in d.field})
        objects = kinds.REGISTRY.supports("platform", platform.target.kind, kinds.OBJECT_DRIFT)
        try:
            if changed and objects:
                replaced = cast(ObjectDriftPlatform, platform).replace_drifted(desired, changed)
                if replaced:
                    log(f"{name}: replaced {', '.join(replaced)} with what {release} renders")
            platform.apply(desired)
            status = platform.wait(desired, timeout=timeout, progress=_progress(reporter, name))
            if status.state == "healthy":
                platform.prune(desired)
                if orphans and objects:
                    deleted = cast(ObjectDriftPlatform, platform).replace_drifted(desired, orphans)
                    if deleted:
                        log(
                            f"{name}: deleted {', '.join(deleted)} (its release does not render it)"
                        )
        except PLATFORM_FAILURES as exc:
            reason = ws.redactor.redact(f"{type(exc).__name__}: {exc}")
            log(f"{name}: heal failed ({reason}); its release record is left as it was")
            results.append(ServiceResult(name, "heal", "failed", release, reason))
            continue
        if status.state == "healthy":
            log(f"{name}: healed ({release})")
            results.append(ServiceResult(name, "heal", "healthy", release))
        else:
            reason = status.reason + (f": {status.message}" if status.message else "")
            log(f"{name}: heal did not become healthy ({reason}); its release record is left")
            results.append(ServiceResult(name, "heal", "failed", release, reason))
    return results
