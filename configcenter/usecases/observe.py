"""What the platforms of an environment run, for plan and apply (see `core.converge`).

One `observe()` per platform: one list call per kind for Kubernetes, one app
listing for Marathon. Kept: the release each service's objects carry, and which
services carry their current release but not its image or replica count (changed
by hand: `kubectl set image`, `kubectl scale`), so apply rolls those out again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import cast

from configcenter.core import kinds
from configcenter.core.converge import (
    Converged,
    EditedField,
    FieldChange,
    HandEdit,
    HandEdits,
    LiveServices,
    MissingObjects,
    converge,
)
from configcenter.core.errors import PlatformFailure, TransientFailure, UserError
from configcenter.core.model import Config
from configcenter.core.plan import Plan
from configcenter.core.state import EnvState, ServiceState
from configcenter.ports.deploy_repo import DeployRepoError
from configcenter.ports.platform import (
    ObjectDriftPlatform,
    ObservedService,
    Platform,
    ServiceDiff,
)
from configcenter.usecases.platforms import deployable, open_platform
from configcenter.usecases.workspace import Workspace


class ObserveError(TransientFailure):
    """A platform of the environment could not be observed (unreachable, or refused)."""


def env_platforms(
    config: Config, env: str, state: EnvState, only: Collection[str] | None = None
) -> list[str]:
    """Platforms the deploy repo or the config puts services of `env` (or of the services
    `only` names) on (known ones only)."""
    names = {s.platform for n, s in state.services.items() if s.platform and _picked(n, only)}
    if env in config.environments:
        environment = config.environment(env)
        default = environment.platform or ""
        names |= {
            s.platform or default for n, s in environment.services.items() if _picked(n, only)
        }
        if not only:
            names.add(default)
    return sorted(n for n in names if n and n in config.project.platforms)


def _picked(service: str, only: Collection[str] | None) -> bool:
    return not only or service in only


def observe_env(
    ws: Workspace,
    env: str,
    state: EnvState,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, LiveServices], HandEdits, MissingObjects]:
    """Platform name -> service -> the release its objects carry, the services changed
    by hand (see `hand_edits`) and the objects of a release the platform lacks (see
    `missing_objects`). Raises ObserveError."""
    live: dict[str, LiveServices] = {}
    edited: dict[str, dict[str, HandEdit]] = {}
    missing: dict[str, dict[str, tuple[str, ...]]] = {}
    for name in env_platforms(ws.config, env, state):
        try:
            platform = open_platform(ws.config, env, name, ws.redactor)
            observed = platform.observe()
        except Exception as exc:
            raise ObserveError(
                f"platform '{name}' for {env} cannot be reached: {ws.redactor.redact(str(exc))}"
            ) from None
        edited[name] = hand_edits(ws, env, state, name, platform, observed)
        live[name] = live_releases(observed)
        missing[name] = missing_objects(observed)
        if log is not None:
            log(f"{env}: observed {len(observed)} service(s) on platform {name}")
            for service, item in observed.items():
                if item.missing:
                    log(f"{service}: {', '.join(item.missing)} missing on platform {name}")
            for service, edit in edited[name].items():
                log(f"{service}: {edit.why}")
    return only_ours(ws, env, state, live, log), edited, missing


def only_ours(
    ws: Workspace,
    env: str,
    state: EnvState,
    live: Mapping[str, LiveServices],
    log: Callable[[str], None] | None = None,
) -> dict[str, LiveServices]:
    """`live` without services this deploy repo never deployed to `env`.

    A service on the platform that neither the config nor the state has is pruned by
    apply, but only if this deploy repo's history of the environment has it: another
    project sharing the namespace (and the environment's name) is left alone.
    """
    known = set(state.services)
    if env in ws.config.environments:
        known |= set(ws.config.environment(env).services)
    kept: dict[str, LiveServices] = {}
    for platform, services in live.items():
        mine: dict[str, str | None] = {}
        for service, release in services.items():
            if service in known or _deployed_before(ws, env, service):
                mine[service] = release
            elif log is not None:
                log(
                    f"{service}: runs on {platform} with {env}'s labels, but this deploy repo "
                    "never deployed it; left alone"
                )
        kept[platform] = mine
    return kept


def converged_plan(
    ws: Workspace,
    env: str,
    *,
    only: Collection[str] | None = None,
    retry: Collection[str] = (),
    warn: Callable[[str], None] | None = None,
) -> Converged:
    """`plan_env`, with what the platforms run folded in (see `converge_observed`)."""
    from configcenter.usecases.inspect import plan_env

    return converge_observed(
        ws, env, plan_env(ws, env, only=only, retry=retry), only=only, warn=warn
    )


def converge_observed(
    ws: Workspace,
    env: str,
    plan: Plan,
    *,
    only: Collection[str] | None = None,
    warn: Callable[[str], None] | None = None,
    seen: dict[str, LiveServices] | None = None,
) -> Converged:
    """`plan` with what the platforms run folded in. A platform that cannot be observed
    is reported through `warn` and left out: the plan is then the deploy repo's alone
    for its services. `seen`, when given, is filled with what each platform runs."""
    state = ws.peek_state(env)  # only read: its service names and platforms
    live: dict[str, LiveServices] = {}
    edited: dict[str, dict[str, HandEdit]] = {}
    missing: dict[str, dict[str, tuple[str, ...]]] = {}
    for name in env_platforms(ws.config, env, state, only):
        try:
            platform = open_platform(ws.config, env, name, ws.redactor)
            observed = platform.observe()
        except Exception as exc:
            if warn is not None:
                warn(
                    f"platform '{name}' not observed ({ws.redactor.redact(str(exc))}); "
                    "the plan compares with the deploy repo only for its services"
                )
            continue
        edited[name] = hand_edits(ws, env, state, name, platform, observed)
        live[name] = live_releases(observed)
        missing[name] = missing_objects(observed)
    ours = only_ours(ws, env, state, live, warn)
    if seen is not None:
        seen.update(ours)
    return converge(plan, state, ours, only=only, edited=edited, missing=missing)


def live_releases(observed: Mapping[str, ObservedService]) -> LiveServices:
    """Service -> the release it runs. A release some of whose objects are gone does not
    run whole (None: an unknown release), so converge rolls it out again."""
    return {
        service: None if item.missing else item.release_id for service, item in observed.items()
    }


def missing_objects(observed: Mapping[str, ObservedService]) -> dict[str, tuple[str, ...]]:
    """Service -> the objects of its release the platform lacks (a Deployment or a Secret
    deleted by hand), for services some of whose objects are there."""
    return {service: tuple(item.missing) for service, item in observed.items() if item.missing}


def hand_edits(
    ws: Workspace,
    env: str,
    state: EnvState,
    name: str,
    platform: Platform,
    observed: Mapping[str, ObservedService],
) -> dict[str, HandEdit]:
    """Service -> what differs, for workloads on platform `name` that carry their current
    release (so its annotation says all is well) but do not run it as released: someone
    ran `kubectl set image`, `kubectl scale`, `kubectl set env`, `kubectl edit`.

    Cheap first: only a service whose image or replica count differs from its state record,
    or that someone other than configcenter wrote to (`ObservedService.changed_by`, read
    from what `observe` listed; every service on a platform that cannot tell), is read
    from the deploy repo and compared by the platform's own `diff`, the one reconcile uses
    (server defaults are not drift), which has the last word.
    """
    suspects = []
    for service, item in observed.items():
        current = state.services.get(service)
        release = current.release if current is not None else None
        if current is None or release is None or current.platform != name or item.missing:
            continue
        if item.release_id is None or item.release_id not in (release.id, release.scale_of):
            continue
        image = bool(item.image and current.image and item.image != current.image)
        count = None not in (item.replicas, current.replicas) and item.replicas != current.replicas
        if image or count or item.changed_by is None or item.changed_by:
            suspects.append(service)
    if not suspects:
        return {}
    paths = [f"{env}/{s}/{file}" for s in suspects for file in state.services[s].files]
    found = ws.deploy_repo.read_many(paths)
    edits: dict[str, HandEdit] = {}
    for service in suspects:
        current = state.services[service]
        assert current.release is not None
        prefix = f"{env}/{service}/"
        files = {p[len(prefix) :]: data for p, data in found.items() if p.startswith(prefix)}
        wanted = deployable(env, service, current, files, current.release.id)
        edit = hand_edit(name, platform.diff(wanted, observed[service]), observed[service])
        if edit is not None:
            edits[service] = edit
    return edits


#: How many edited fields a plan's reason names; `plan --json` lists them all.
SHOWN_FIELDS = 3


def hand_edit(name: str, found: ServiceDiff, item: ObservedService) -> HandEdit | None:
    """What of `found` (a service's diff against its running release) is a hand edit: the
    image, the replica count, and fields changed inside its objects. Values are named for
    the image and replica count only: a field inside an object may hold a secret."""
    fields: list[EditedField] = []
    replace: dict[str, None] = {}
    for d in found.drifts:
        if d.field in ("image", "replicas"):
            fields.append(EditedField(d.field, "changed", d.desired, d.live))
        elif d.kind == "changed" and " " in d.field:
            change: FieldChange = (
                "added" if d.desired is None else "removed" if d.live is None else "changed"
            )
            fields.append(EditedField(d.field, change))
            ref = d.field.split(" ", 1)[0]
            if "/" in ref:
                replace[ref] = None
    if not fields:
        return None
    return HandEdit(_edit_why(name, fields, item), tuple(fields), tuple(replace))


def _edit_why(name: str, fields: list[EditedField], item: ObservedService) -> str:
    """`k8s runs image X (the release's: Y) and Deployment/api with spec...env[X].value
    added, ... and 2 more (changed by kubectl-set)`: at most `SHOWN_FIELDS` fields."""
    said: list[str] = []
    by_object: dict[str, list[str]] = {}
    for f in fields[:SHOWN_FIELDS]:
        if f.desired is not None or f.live is not None:
            said.append(f"{f.field} {f.live} (the release's: {f.desired})")
        else:
            ref, _, path = f.field.partition(" ")
            by_object.setdefault(ref, []).append(f"{path} {f.change}")
    said += [f"{ref} with {', '.join(paths)}" for ref, paths in by_object.items()]
    more = f" and {len(fields) - SHOWN_FIELDS} more" if len(fields) > SHOWN_FIELDS else ""
    by = f" (changed by {', '.join(item.changed_by)})" if item.changed_by else ""
    return f"{name} runs {' and '.join(said)}{more}{by}"


def put_back(
    ws: Workspace,
    env: str,
    service: str,
    current: ServiceState,
    edit: HandEdit,
    log: Callable[[str], None],
) -> str | None:
    """Before a release changed by hand is rolled out again: the objects whose fields others
    changed (`edit.replace`) are replaced with what the release renders, as reconcile's heal
    does (a re-apply would keep the fields they added), so the pod template is the release's
    own again and so is its ReplicaSet. Returns why it failed; None when done (or when the
    platform replaces nothing itself: its apply puts whole definitions back)."""
    if not edit.replace or current.release is None or not current.platform:
        return None
    platform = open_platform(ws.config, env, current.platform, ws.redactor)
    if not kinds.REGISTRY.supports("platform", platform.target.kind, kinds.OBJECT_DRIFT):
        return None
    prefix = f"{env}/{service}/"
    found = ws.deploy_repo.read_many([prefix + file for file in current.files])
    files = {p[len(prefix) :]: data for p, data in found.items()}
    wanted = deployable(env, service, current, files, current.release.id)
    try:
        done = cast(ObjectDriftPlatform, platform).replace_drifted(wanted, edit.replace)
    except (PlatformFailure, TransientFailure, UserError) as exc:
        reason = ws.redactor.redact(f"{type(exc).__name__}: {exc}")
        log(f"{service}: could not put back what was changed by hand ({reason})")
        return reason
    if done:
        log(f"{service}: put back {', '.join(done)} as {current.release.id} renders it")
    return None


def _deployed_before(ws: Workspace, env: str, service: str) -> bool:
    if not ws.has_deploy_repo():
        return False
    try:
        return bool(ws.deploy_repo.log(prefix=f"{env}/{service}/", limit=1))
    except DeployRepoError:
        return False
