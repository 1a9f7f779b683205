"""Convergence: what a plan must add once the platform's own state is known.

`make_plan` compares the config repo with the deploy repo's state record. The
platform can still differ from that record: a release committed with
`--no-rollout` (or by an apply that died before rolling out), a release whose
outcome was never recorded (the apply died while waiting, or before its record
commit), a platform given to an environment after its first apply, objects of a
service no longer in the environment. `converge` takes the plan and what each
platform runs (the release id its workloads carry, per service) and returns the
plan with those services turned into platform steps (reason `platform`).

Pure: the caller observes the platforms and carries the steps out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from configcenter.core.plan import Plan, ServicePlan
from configcenter.core.state import EnvState, Release, ServiceState

#: The plan reason of a service whose platform differs from the deploy repo.
PLATFORM_REASON = "platform"

StepKind = Literal["rollout", "record", "watch", "commit", "prune", "replace"]
#: Steps carried out before the apply's commit, without one of their own.
CATCH_UP_KINDS: frozenset[str] = frozenset({"rollout", "record", "watch", "prune"})

#: Released on the platform, by service: the release id its objects carry (None when
#: its objects carry none, e.g. written by an older version).
LiveServices = Mapping[str, str | None]

#: How a field of a workload differs from its release.
FieldChange = Literal["added", "removed", "changed"]


@dataclass(frozen=True)
class EditedField:
    """One field a workload runs with that its release does not say (changed by hand).

    `change` is `added` (only the platform has it), `removed` (only the release has it) or
    `changed`; `desired` and `live` are kept only for summary fields (image, replicas),
    never for fields inside objects, which may hold values someone set by hand."""

    field: str  # "image", "replicas" or "<Kind/name> <path>" ("app <path>" on Marathon)
    change: FieldChange
    desired: str | None = None
    live: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"field": self.field, "change": self.change}
        if self.desired is not None or self.live is not None:
            data.update(desired=self.desired, live=self.live)
        return data


@dataclass(frozen=True)
class HandEdit:
    """Why a workload that carries its current release does not run it as released."""

    why: str  # in a few words: "bed runs image X (the release's: Y)"
    fields: tuple[EditedField, ...] = ()
    #: `Kind/name` of the objects to put back whole (a re-apply keeps fields others added).
    replace: tuple[str, ...] = ()


#: By platform, by service: the services whose workloads carry their current release but
#: were changed by hand (an image, a replica count, anything inside a pod template).
HandEdits = Mapping[str, Mapping[str, HandEdit]]
#: By platform, by service: the objects of the service's release the platform lacks
#: (`Kind/name`: a Deployment or a Secret deleted by hand), for services some of whose
#: objects are there.
MissingObjects = Mapping[str, Mapping[str, tuple[str, ...]]]


@dataclass(frozen=True)
class Step:
    """One thing apply does on a platform that the deploy repo alone would not ask for.

    * rollout: the state's current release is not what the platform runs: roll it out;
    * record: the platform runs the current release but its outcome was never
      recorded: watch it (re-applying it is idempotent), record healthy, or failed
      and rolled back;
    * watch: as record, for a service this apply also changes: the outcome is
      recorded (no rollback) before the new release, so `last_good` is right;
    * commit: the state must change although nothing rendered did (the service's
      platform changed); committed and rolled out like any update;
    * prune: the platform runs a service the environment no longer has: delete it;
    * replace: a new release of a service whose objects were changed by hand (`edit`):
      its rollout replaces them whole (a server-side apply would keep the fields others
      added inside them), so it runs as released after one rollout. Carried out by the
      release's own rollout, not before the commit.
    """

    service: str
    kind: StepKind
    platform: str
    why: str
    release: str | None = None  # the release the step rolls out or records
    #: A rollout of a release that runs, changed by hand: what differs, what to put back.
    edit: HandEdit | None = None


@dataclass
class PlatformServicePlan(ServicePlan):
    """A service plan with the platform step that changed it."""

    step: Step | None = None

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.step is not None:
            data["platform"] = {
                "step": self.step.kind,
                "platform": self.step.platform,
                "why": self.step.why,
                "release": self.step.release,
            }
            if self.step.edit is not None:
                data["platform"]["edited"] = [f.to_json() for f in self.step.edit.fields]
        return data


@dataclass
class Converged:
    """The plan as apply carries it out, and the platform steps, by service."""

    plan: Plan
    steps: dict[str, Step] = field(default_factory=dict)

    def catch_up(self) -> list[Step]:
        """Steps that need no new commit, in the plan's (dependency) order."""
        order = {s.service: i for i, s in enumerate(self.plan.services)}
        return sorted(
            (s for s in self.steps.values() if s.kind in CATCH_UP_KINDS),
            key=lambda s: order.get(s.service, len(order)),
        )


def converge(
    plan: Plan,
    state: EnvState,
    live: Mapping[str, LiveServices],
    *,
    only: Collection[str] | None = None,
    edited: HandEdits | None = None,
    missing: MissingObjects | None = None,
) -> Converged:
    """`plan` adjusted to what the observed platforms run.

    `live` maps each observed platform's name to the services it runs. A
    platform missing from `live` was not observed: its services keep their
    plan as it is (nothing is concluded about them). `edited` names the services
    whose workloads carry their release but were changed by hand: rolled out again.
    `missing` names the objects of a release the platform lacks, for the step's reason.
    """
    steps: dict[str, Step] = {}
    services: list[ServicePlan] = []
    for sp in plan.services:
        step = _step(sp, live, edited or {}, missing or {})
        if step is None:
            services.append(sp)
            continue
        steps[sp.service] = step
        adjusted = _with_step(sp, step)
        if step.kind not in ("watch", "replace"):
            adjusted.action = "delete" if step.kind == "prune" else "update"
            adjusted.reasons = [PLATFORM_REASON]
        services.append(adjusted)
    planned = {s.service for s in plan.services}
    for platform in sorted(live):
        for service in sorted(live[platform]):
            if service in planned or service in state.services or service in steps:
                continue
            if only and service not in only:
                continue
            release = live[platform][service]
            step = Step(
                service,
                "prune",
                platform,
                f"not in {plan.env} any more, still on platform {platform}: delete it",
                release,
            )
            steps[service] = step
            services.append(
                PlatformServicePlan(
                    service=service, action="delete", reasons=[PLATFORM_REASON], step=step
                )
            )
    return Converged(Plan(plan.env, services, plan.config_commit), steps)


def _step(
    sp: ServicePlan, live: Mapping[str, LiveServices], edited: HandEdits, missing: MissingObjects
) -> Step | None:
    previous = sp.previous
    if previous is None or sp.action == "delete":
        return None
    wanted = sp.config.platform if sp.config is not None else None
    if sp.action == "noop" and wanted != previous.platform and sp.files is not None:
        was = previous.platform or "none"
        if wanted:
            return Step(sp.service, "commit", wanted, f"platform {was} -> {wanted}")
        # The environment (or configcenter.yaml) no longer gives it a platform: recorded so.
        why = f"platform {was} -> none (what runs on {was} is left as it is)"
        return Step(sp.service, "commit", "", why)
    release = previous.release
    platform = previous.platform
    if release is None or not platform or platform not in live:
        return None
    running = live[platform].get(sp.service)
    present = sp.service in live[platform]
    if sp.action in ("create", "update"):
        # Objects of the running release changed by hand: the new release replaces them.
        edit = edited.get(platform, {}).get(sp.service) if wanted == platform else None
        if edit is not None and not edit.replace:
            edit = None  # an image or a count only: the new release's apply sets them
        # A new release follows; the one it replaces must have its outcome first.
        if release.outcome == "committed" and present and _runs(release, running):
            return Step(
                sp.service,
                "watch",
                platform,
                f"{release.id} runs on {platform} but its outcome was never recorded: "
                "record it before the new release",
                release.id,
                edit,
            )
        if edit is not None:
            return Step(
                sp.service,
                "replace",
                platform,
                f"{edit.why}: the new release replaces {', '.join(edit.replace)} whole, "
                "so nothing changed by hand stays in it",
                release.id,
                edit,
            )
        return None
    if sp.action not in ("noop", "blocked"):
        return None
    # Blocked: the failed release is not rolled out again, but the one the deploy repo holds
    # (the good one it was rolled back to) must still run.
    edit = edited.get(platform, {}).get(sp.service)
    lacking = missing.get(platform, {}).get(sp.service, ())
    return _catch_up(sp.service, previous, release, platform, running, present, edit, lacking)


def _catch_up(
    service: str,
    previous: ServiceState,
    release: Release,
    platform: str,
    running: str | None,
    present: bool,
    edit: HandEdit | None = None,
    lacking: tuple[str, ...] = (),
) -> Step | None:
    if release.outcome not in ("committed", "healthy"):
        return None
    if present and _runs(release, running):
        if release.outcome == "healthy":
            if edit is None:
                return None
            why = f"{release.id} recorded healthy, but {edit.why}: roll it out again"
            return Step(service, "rollout", platform, why, release.id, edit)
        return Step(
            service,
            "record",
            platform,
            f"{release.id} runs on {platform}, its outcome was never recorded: watch and record",
            release.id,
        )
    on_platform = (
        f"{', '.join(lacking)} missing on {platform}"
        if present and lacking
        else f"{platform} runs {running}"
        if present and running
        else f"{platform} runs an unknown or incomplete release"
        if present
        else f"not on {platform}"
    )
    what = "committed, not yet on the platform" if release.outcome == "committed" else "recorded"
    return Step(
        service,
        "rollout",
        platform,
        f"{release.id} {what} ({on_platform}): roll it out"
        if release.outcome == "committed"
        else f"{release.id} {what} healthy, but {on_platform}: roll it out again",
        release.id,
    )


def _runs(release: Release, running: str | None) -> bool:
    """Whether a workload carrying release id `running` runs `release`: its own id, or, for
    a release that only scales another, that one's (a platform whose labels restart the
    workload keeps them on a scale; a catch-up re-applies it, which scales)."""
    return running is not None and running in (release.id, release.scale_of or release.id)


def _with_step(sp: ServicePlan, step: Step) -> PlatformServicePlan:
    values = {f.name: getattr(sp, f.name) for f in fields(ServicePlan)}
    values["reasons"] = list(sp.reasons)
    return PlatformServicePlan(**values, step=step)
