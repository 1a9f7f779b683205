"""Refusals before anything is committed or rolled out: mistyped service names, a dirty or
stale config commit, stages or platforms the release cannot reach, workloads a deployment
in progress holds, secrets a release needs that cannot be resolved; and what `plan` says
of the ones it can see coming."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from configcenter import wiring
from configcenter.core import kinds
from configcenter.core.converge import Converged, LiveServices, Step
from configcenter.core.errors import PlatformFailure, Problem, Source, UserError
from configcenter.core.plan import (
    Plan,
    ServicePlan,
)
from configcenter.core.state import EnvState, ServiceState
from configcenter.ports.config_lineage import ConfigLineage, Relation
from configcenter.ports.platform import ClusterSecretsPlatform, ForcePlatform, HeldWorkload
from configcenter.usecases.apply.report import ApplyOptions, ApplyRefused, ApplyUnreachable, RunLog
from configcenter.usecases.platforms import open_platform, supports
from configcenter.usecases.workspace import Workspace


def check_names(ws: Workspace, env: str, options: ApplyOptions) -> None:
    """Refuse a mistyped --service/--retry before a run is recorded: bad input writes nothing.

    A name only the deploy repo knows (a service removed from the config, to delete)
    is fine, so the state is read only when the config does not know a name.
    """
    known = ws.config.environment(env).services
    named = [*(options.services or ()), *options.retry]
    unknown = [s for s in named if s not in known]
    if not unknown:
        return
    state = ws.read_state(env)
    unknown = [s for s in dict.fromkeys(unknown) if s not in state.services]
    if unknown:
        names = sorted({*known, *state.services})
        raise ApplyRefused(
            f"{', '.join(repr(s) for s in unknown)}: no such service in {env} "
            f"(known: {', '.join(names) or 'none'}); check --service/--retry"
        )


def guard_config_commit(
    ws: Workspace, env: str, state: EnvState, plan: Plan, options: ApplyOptions
) -> str | None:
    """Refuse a dirty config work tree, and changing a service from a config commit older
    than (or diverged from) the one its current release was applied from: that would
    silently revert what came after. Returns the override trailer's text when
    `options.override` lets a stale commit through."""
    config = ws.config
    current = config.commit
    if current is None:
        return None  # not a Git work tree: there is no commit to compare
    lineage = wiring.open_config_lineage(config.root)
    dirty = lineage.dirty_paths()
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise ApplyRefused(
            f"the config work tree has uncommitted changes in files apply reads ({shown}); "
            f"apply deploys commits (its record names config commit {current[:12]}, which "
            "does not hold them): commit them, or `git stash` them, and apply again"
        )
    found = stale_services(lineage, state, current, plan.changes)
    if not found:
        return None
    names = ", ".join(sorted(found))
    applied, worst = sorted(found.values(), key=lambda f: f[1])[0]
    what = _stale_text(env, names, current, applied, worst)
    if options.override:
        return f"{worst} config {current} applied over {applied} ({names})"
    raise ApplyRefused(
        f"{what}. Nothing was changed. `git pull` to apply the newest config; "
        + " or ".join(f"`configcenter rollback {env} {name}`" for name in sorted(found))
        + " to go back to an earlier release on purpose; "
        "or `apply --allow-stale-config` to apply this commit anyway (recorded in the "
        "deploy repo commit)"
    )


def stale_services(
    lineage: ConfigLineage, state: EnvState, current: str, changes: list[ServicePlan]
) -> dict[str, tuple[str, Relation]]:
    """The changed services whose current release was applied from a config commit that
    `current` does not contain: service -> (that commit, how `current` relates to it)."""
    found: dict[str, tuple[str, Relation]] = {}
    known: dict[str, Relation] = {}
    for sp in changes:
        record = state.services.get(sp.service)
        applied = record.config_commit if record else None
        if not applied:
            continue
        if applied not in known:
            known[applied] = lineage.relation(applied, current)
        if known[applied] not in ("same", "newer"):
            found[sp.service] = (applied, known[applied])
    return found


def _stale_text(env: str, names: str, current: str, applied: str, relation: Relation) -> str:
    return {
        "older": f"config commit {current[:12]} (HEAD) is older than {applied[:12]}, the one "
        f"{env} last applied {names} from: applying it would revert what came after it",
        "diverged": f"config commit {current[:12]} (HEAD) has diverged from {applied[:12]}, "
        f"the one {env} last applied {names} from (neither contains the other)",
        "unknown": f"{env} last applied {names} from config commit {applied[:12]}, which "
        f"this clone does not have (HEAD is {current[:12]})",
    }[relation]


def stale_config_warnings(ws: Workspace, env: str, changes: list[ServicePlan]) -> list[Problem]:
    """What `plan` says about the services apply would refuse because this clone's config
    commit is older than, or diverged from, the one each was last applied from."""
    config = ws.config
    current = config.commit
    if current is None:
        return []
    lineage = wiring.open_config_lineage(config.root)
    found = stale_services(lineage, ws.read_state(env), current, changes)
    services = config.environment(env).services
    return [
        Problem(
            services[name].source() if name in services else Source(""),
            f"{name}: {_stale_text(env, name, current, applied, relation)}; apply will refuse it",
            f"`git pull` first; `configcenter rollback {env} {name}` to go back on purpose; "
            "or `apply --allow-stale-config`",
            "warning",
        )
        for name, (applied, relation) in sorted(found.items())
    ]


def preflight(
    ws: Workspace, env: str, changes: list[ServicePlan], log: RunLog, force: bool = False
) -> None:
    """Reach every platform the release will roll out to before committing anything, and
    refuse releases whose workloads a deployment in progress holds (unless `force`).

    A missing kubeconfig context or an unreachable Marathon is a setup problem, not a
    failed release: it must not leave a commit behind that later plans call blocked. Nor
    must an app locked by someone else's deployment (Marathon answers the PUT 409).
    """
    from configcenter.usecases.stages import check_plan

    try:
        check_plan(ws.config, changes)  # stages the platform cannot run (hooks:, verify:)
    except UserError as exc:
        raise ApplyRefused(f"{exc}; nothing was committed") from None
    wanted = {p for p in (_rollout_platform(s) for s in changes) if p}
    defined = ws.config.project.platforms
    for name in sorted(wanted - set(defined)):
        # Only a delete asks for a platform the config no longer defines: nothing reaches it.
        log(f"{env}: platform {name} is no longer defined in configcenter.yaml; left as it is")
    held: list[tuple[str, HeldWorkload]] = []
    for name in sorted(n for n in wanted if n in defined):
        try:
            platform = open_platform(ws.config, env, name, ws.redactor)
            platform.observe()
            if supports(ws.config, name, kinds.FORCE):
                services = [s.service for s in changes if _rollout_platform(s) == name]
                held += [(name, h) for h in cast(ForcePlatform, platform).held(services)]
        except Exception as exc:
            raise ApplyUnreachable(
                f"platform '{name}' for {env} cannot be reached: {ws.redactor.redact(str(exc))}; "
                "nothing was committed (fix the platform settings or connection, or use "
                "--no-rollout to commit only)"
            ) from None
        log(f"{env}: platform {name} reachable")
    refuse_held(env, held, log, force, "nothing was committed")


def held_workloads(
    ws: Workspace,
    env: str,
    by_platform: Mapping[str, list[str]],
    what: str = "nothing was changed",
) -> list[tuple[str, HeldWorkload]]:
    """(platform, workload) for each of the services (by platform) whose workload a
    deployment in progress holds, on the platforms with the `force` capability (a
    platform that cannot say: ApplyUnreachable, `what` saying what was not done)."""
    held: list[tuple[str, HeldWorkload]] = []
    for name, services in sorted(by_platform.items()):
        if not services or not supports(ws.config, name, kinds.FORCE):
            continue
        platform = cast(ForcePlatform, open_platform(ws.config, env, name, ws.redactor))
        try:
            held += [(name, h) for h in platform.held(services)]
        except PlatformFailure as exc:
            raise ApplyUnreachable(
                f"platform '{name}' for {env} cannot say which apps deployments in progress "
                f"hold: {ws.redactor.redact(str(exc))}; {what}"
            ) from None
    return held


def refuse_held(
    env: str,
    held: list[tuple[str, HeldWorkload]],
    log: RunLog,
    force: bool,
    what: str,
    command: str = "",
    commit_only: str = "commit only (an apply rolls it out once the app is free)",
) -> None:
    """Refuse (`what` says what was not done) when deployments in progress hold workloads
    to change: the platform would refuse each change (Marathon's 409); with `force` they
    are cancelled at rollout instead, and the log says so. `command` is the one to run
    again (default: `configcenter apply ENV`); `commit_only` what its `--no-rollout`
    does (empty: it has none)."""
    if not held:
        return
    said = _held_text(held)
    if force:
        log(f"{env}: {said}: --force cancels it at rollout")
        return
    command = command or f"configcenter apply {env}"
    raise ApplyRefused(
        f"{env}: {said}; {what}. Wait for that deployment to finish and run `{command}` "
        f"again; or, if it is stuck or failed, `{command} --force` cancels it "
        "(Marathon's force=true cancels the deployments holding the app where they got to, "
        "without rolling them back: meant for one that will not finish) and rolls this "
        "release out" + (f"; or `--no-rollout` to {commit_only}" if commit_only else "")
    )


def _held_text(held: list[tuple[str, HeldWorkload]]) -> str:
    return "; ".join(f"{_held_one(name, h)} in progress" for name, h in held)


def _held_one(platform: str, h: HeldWorkload) -> str:
    return (
        f"{h.service}: {h.workload} on platform '{platform}' is locked by deployment "
        f"{', '.join(h.deployments)}"
    )


def held_warnings(
    ws: Workspace,
    env: str,
    converged: Converged,
    reachable: Collection[str],
) -> list[Problem]:
    """What `plan` says about the services apply would refuse because a deployment in
    progress holds their workload (Marathon's 409 lock): its new releases and its
    catch-up's rollouts and deletes, on the `reachable` platforms (one question each)."""
    steps = converged.steps
    by_platform: dict[str, list[str]] = {}
    for sp in converged.plan.changes:
        step = steps.get(sp.service)
        if step is None or step.kind == "commit":
            platform = _rollout_platform(sp)  # a new release: what apply's preflight asks
        elif step.kind in ("rollout", "prune"):
            platform = step.platform  # what apply's catch-up asks
        else:
            continue  # watched or recorded: the deployment may be that release's own
        if platform and platform in reachable:
            by_platform.setdefault(platform, []).append(sp.service)
    try:
        held = held_workloads(ws, env, by_platform, "plan did not check them")
    except ApplyUnreachable as exc:
        return [
            Problem(Source(""), str(exc), "apply asks again before it changes anything", "warning")
        ]
    services = ws.config.environment(env).services
    return [
        Problem(
            services[h.service].source() if h.service in services else Source(""),
            f"{_held_one(name, h)} in progress; apply will refuse it",
            "wait for that deployment to finish; or, if it is stuck or failed, "
            f"`configcenter apply {env} --force` cancels it (Marathon's force=true) and "
            "rolls the release out",
            "warning",
        )
        for name, h in held
    ]


def _rollout_platform(sp: ServicePlan) -> str | None:
    """The platform a change rolls out to (a delete: the one it is deleted from)."""
    if sp.action == "delete":
        return sp.previous.platform if sp.previous is not None else None
    return sp.config.platform if sp.config is not None else None


@dataclass
class SecretsFound:
    """What checking the secrets of releases before a commit or rollout found."""

    #: Secrets that cannot be resolved: apply refuses these releases.
    problems: list[Problem] = field(default_factory=list)
    #: `k8s:` references whose platform could not be asked now (they are read at rollout).
    unchecked: list[Problem] = field(default_factory=list)


def unresolved_secrets(ws: Workspace, env: str, changes: list[ServicePlan]) -> SecretsFound:
    """Every secret a release to commit needs that cannot be resolved, as problems naming
    the service, the value's file and line, and the fix (never a value).

    A release needs its secrets' values when its platform does not hold its secrets
    generation yet (a new service, a new or rotated generation, another platform): the
    platform resolves them at rollout. A generation the platform holds is immutable and
    keeps the values it was made with, so nothing is resolved for it. `env:` and `file:`
    references are resolved here; `k8s:` ones are asked of the cluster (a platform with
    the `cluster_secrets` capability), when it answers.
    """
    needed = [
        sp
        for sp in changes
        if sp.action in ("create", "update")
        and sp.config is not None
        and sp.config.platform
        and _needs_secret_values(sp, sp.config.platform)
    ]
    return check_secrets(ws, env, needed)


def check_secrets(ws: Workspace, env: str, releases: list[ServicePlan]) -> SecretsFound:
    """Whether every secret reference of `releases` (each with a config and a platform)
    resolves now; see `unresolved_secrets`."""
    from configcenter.core.plan import secret_refs

    items: list[_Refs] = []
    for sp in releases:
        service = sp.config
        assert service is not None and service.platform
        entries = service.values.entries

        def source(key: str, entries: Mapping[tuple[str, ...], Any] = entries) -> Source:
            entry = entries.get(tuple(key.split(".")))
            return entry.source if entry is not None else Source("")

        items.append((sp.service, service.platform, secret_refs(sp.consumed_values), source))
    return _check(ws, env, items)


@dataclass(frozen=True)
class RecordedRelease:
    """A release the deploy repo records, about to be rolled out again (a catch-up, `deploy`,
    `rollback`): `record` is its state record (its values, generation and platform),
    `current` the service's record now (the generations it knows reached the platform),
    `running` the release id the platform runs, when observed."""

    service: str
    record: ServiceState
    current: ServiceState | None = None
    running: str | None = None


def recorded_secrets(ws: Workspace, env: str, releases: list[RecordedRelease]) -> SecretsFound:
    """The secrets that recorded releases to roll out need and that cannot be resolved.

    The references are the release's own (its record's values, not the config's now). A
    release needs their values unless its platform holds its secrets generation: one a
    release that reached the platform was made with (recorded healthy or failed, or what
    runs there now; the deploy repo's history says which generation that one had). Each
    problem names the config's file:line where the config still holds that reference at
    that key, else the deploy repo's record of the release.
    """
    todo = [r for r in releases if r.record.platform and not _reached_platform(r)]
    found = _check(ws, env, [_record_refs(ws, env, r) for r in todo])
    if found.problems:
        # Only now is the deploy repo's history read, for the generation of what runs.
        todo = [r for r in todo if not _runs_generation(ws, env, r)]
        found = _check(ws, env, [_record_refs(ws, env, r) for r in todo])
    return found


def catch_up_releases(
    state: EnvState, steps: list[Step], live: Mapping[str, LiveServices]
) -> list[RecordedRelease]:
    """The recorded releases the catch-up `steps` roll out (for their secrets' check)."""
    found = []
    for step in steps:
        current = state.services.get(step.service)
        if step.kind != "rollout" or current is None or current.release is None:
            continue
        if current.platform != step.platform:
            continue
        running = live.get(step.platform, {}).get(step.service)
        found.append(RecordedRelease(step.service, current, current, running))
    return found


def _record_refs(ws: Workspace, env: str, release: RecordedRelease) -> _Refs:
    from configcenter.core.plan import secret_refs
    from configcenter.core.values import to_value

    record = release.record
    assert record.platform
    refs = secret_refs(to_value(record.values))
    config = ws.config
    environment = config.environments.get(env)
    service = environment.services.get(release.service) if environment is not None else None
    now = secret_refs(service.values.tree) if service is not None else {}
    kept = Source(f"deploy repo {env}/.state/{release.service}.json")

    def source(key: str) -> Source:
        if service is None or now.get(key) != refs.get(key):
            return kept
        entry = service.values.entries.get(tuple(key.split(".")))
        return entry.source if entry is not None else kept

    return release.service, record.platform, refs, source


def _generation(record: ServiceState) -> int:
    release = record.release
    return (release.secrets_generation if release else 0) or record.secrets_generation


def _reached_platform(release: RecordedRelease) -> bool:
    """Whether the platform was handed the release's secrets generation: the release itself,
    or a release the service's records know of with the same generation, was rolled out."""
    record = release.record
    if record.release is not None and record.release.outcome != "committed":
        return True
    generation = _generation(record)
    current = release.current
    if current is None or current.platform != record.platform:
        return False
    return any(
        other is not None
        and other.outcome != "committed"
        and other.secrets_generation == generation
        for other in (current.release, current.last_good, current.last_failed)
    )


def _runs_generation(ws: Workspace, env: str, release: RecordedRelease) -> bool:
    """Whether the release the platform runs has the same generation as `release`."""
    from configcenter.usecases.apply.records import find_release_commit, state_at

    record = release.record
    running = release.running
    if not running or (record.release is not None and running == record.release.id):
        return False
    try:
        commit = find_release_commit(ws.deploy_repo, env, release.service, running)
    except ApplyRefused:
        return False
    then = state_at(ws.deploy_repo, env, commit.sha).services.get(release.service)
    return (
        then is not None
        and then.release is not None
        and then.platform == record.platform
        and _generation(then) == _generation(record)
    )


#: One release's references to check: service, platform, key -> reference, key -> source.
_Refs = tuple[str, str, Mapping[str, str], Callable[[str], Source]]


def _check(ws: Workspace, env: str, items: list[_Refs]) -> SecretsFound:
    found = SecretsFound()
    failures: dict[tuple[str, str], _Failure] = {}  # (platform, ref) -> (why, fix)
    asked = _ClusterSecrets(ws, env)
    for name, platform, refs, source_of in items:
        for key, ref in sorted(refs.items()):
            scheme = ref.partition(":")[0]
            if scheme not in ("env", "file", "k8s"):
                continue
            at = (platform if scheme == "k8s" else "", ref)
            if at not in failures:
                failures[at] = (
                    asked.problem(platform, ref) if scheme == "k8s" else _resolve_failure(ws, ref)
                )
            failure = failures[at]
            if failure is None:
                continue
            source = source_of(key)
            if isinstance(failure, _Unchecked):
                found.unchecked.append(
                    Problem(
                        source,
                        f"{name}: value {key}: secret {ref!r} was not checked: {failure.why}",
                        "it is read at rollout; check the platform's connection",
                        "warning",
                    )
                )
                continue
            found.problems.append(
                Problem(
                    source,
                    f"{name}: value {key}: secret {ref!r} cannot be resolved: {failure[0]}",
                    failure[1] or "fix the reference",
                )
            )
    return found


@dataclass(frozen=True)
class _Unchecked:
    """A `k8s:` reference whose platform could not be asked: why."""

    why: str


#: Why a reference cannot be resolved and the fix; `_Unchecked`; None when it resolves.
_Failure = tuple[str, str] | _Unchecked | None


class _ClusterSecrets:
    """`k8s:` references asked of each platform of the env, opened once; a platform that
    cannot be asked (or cannot read `k8s:` references) says so once, for every reference."""

    def __init__(self, ws: Workspace, env: str) -> None:
        self.ws = ws
        self.env = env
        self._platforms: dict[str, ClusterSecretsPlatform | tuple[str, str] | _Unchecked] = {}

    def problem(self, name: str, ref: str) -> _Failure:
        platform = self._platform(name)
        if isinstance(platform, tuple | _Unchecked):
            return platform
        try:
            return platform.cluster_secret_problem(ref)
        except PlatformFailure as exc:
            why = self.ws.redactor.redact(str(exc))
            unchecked = _Unchecked(f"platform {name!r} cannot be asked: {why}")
            self._platforms[name] = unchecked
            return unchecked

    def _platform(self, name: str) -> ClusterSecretsPlatform | tuple[str, str] | _Unchecked:
        if name not in self._platforms:
            config = self.ws.config
            if not supports(config, name, kinds.CLUSTER_SECRETS):
                self._platforms[name] = (
                    f"platform {name!r} cannot read k8s: references",
                    "use env: or file: references on this platform",
                )
            else:
                try:
                    opened = open_platform(config, self.env, name, self.ws.redactor)
                    self._platforms[name] = cast(ClusterSecretsPlatform, opened)
                except (PlatformFailure, UserError) as exc:
                    why = self.ws.redactor.redact(str(exc))
                    self._platforms[name] = _Unchecked(f"platform {name!r} cannot be opened: {why}")
        return self._platforms[name]


def _resolve_failure(ws: Workspace, ref: str) -> tuple[str, str] | None:
    """Why `ref` cannot be resolved here and the fix, or None when it resolves (the value is
    only registered for masking, never kept)."""
    try:
        wiring.resolve_secret(ref, ws.redactor)
    except wiring.SecretError as exc:
        return ws.redactor.redact(exc.problem), exc.fix
    return None


def _needs_secret_values(sp: ServicePlan, platform: str) -> bool:
    """Whether the platform must be handed the release's secret values (see above)."""
    previous = sp.previous
    if previous is None or previous.platform != platform:
        return True
    known = {previous.secrets_generation}
    for release in (previous.release, previous.last_good, previous.last_failed):
        if release is not None and release.secrets_generation:
            known.add(release.secrets_generation)
    return sp.secrets_generation not in known


def refuse_unresolved_secrets(
    found: SecretsFound, log: RunLog, what: str = "nothing was committed or changed"
) -> None:
    """Refuse, before anything is committed or rolled out, releases whose secrets cannot be
    resolved: they would only fail at rollout (and be rolled back). References that could
    not be checked are said so, and left to the rollout."""
    for p in found.unchecked:
        log(f"{p.source}: {p.message} ({p.hint})")
    if not found.problems:
        return
    raise ApplyRefused(
        "; ".join(f"{p.source}: {p.message} (fix: {p.hint})" for p in found.problems) + f"; {what}"
    )


def secrets_warnings(
    ws: Workspace, env: str, converged: Converged, live: Mapping[str, LiveServices]
) -> list[Problem]:
    """What `plan` says about what apply would refuse for its secrets (and the `k8s:`
    references it could not check): the releases it would make, and the recorded releases
    its catch-up would roll out again (apply refuses those before it changes anything)."""
    steps = converged.catch_up()
    again = {s.service for s in steps if s.kind != "watch"}
    found = unresolved_secrets(
        ws, env, [s for s in converged.plan.changes if s.service not in again]
    )
    warnings = [
        Problem(p.source, f"{p.message}; apply will refuse this release", p.hint, "warning")
        for p in found.problems
    ] + found.unchecked
    if steps:
        state = ws.peek_state(env)
        caught = recorded_secrets(ws, env, catch_up_releases(state, steps, live))
        warnings += [
            Problem(
                p.source,
                f"{p.message}; apply will refuse to roll this release out again "
                "(and change nothing)",
                p.hint,
                "warning",
            )
            for p in caught.problems
        ] + caught.unchecked
    return warnings
