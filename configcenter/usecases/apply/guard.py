"""Refusals before anything is committed or rolled out: mistyped service names, a dirty or
stale config commit, stages or platforms the release cannot reach, secrets a release needs
that cannot be resolved."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from configcenter import wiring
from configcenter.core import kinds
from configcenter.core.errors import PlatformFailure, Problem, Source, UserError
from configcenter.core.plan import (
    Plan,
    ServicePlan,
)
from configcenter.core.state import EnvState
from configcenter.ports.config_lineage import Relation
from configcenter.ports.platform import ClusterSecretsPlatform
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
    found: dict[str, tuple[str, Relation]] = {}  # service -> (commit applied last, relation)
    known: dict[str, Relation] = {}
    for sp in plan.changes:
        record = state.services.get(sp.service)
        applied = record.config_commit if record else None
        if not applied:
            continue
        if applied not in known:
            known[applied] = lineage.relation(applied, current)
        if known[applied] not in ("same", "newer"):
            found[sp.service] = (applied, known[applied])
    if not found:
        return None
    names = ", ".join(sorted(found))
    applied, worst = sorted(found.values(), key=lambda f: f[1])[0]
    what = {
        "older": f"config commit {current[:12]} (HEAD) is older than {applied[:12]}, the one "
        f"{env} last applied {names} from: applying it would revert what came after it",
        "diverged": f"config commit {current[:12]} (HEAD) has diverged from {applied[:12]}, "
        f"the one {env} last applied {names} from (neither contains the other)",
        "unknown": f"{env} last applied {names} from config commit {applied[:12]}, which "
        f"this clone does not have (HEAD is {current[:12]})",
    }[worst]
    if options.override:
        return f"{worst} config {current} applied over {applied} ({names})"
    raise ApplyRefused(
        f"{what}. Nothing was changed. `git pull` to apply the newest config; "
        + " or ".join(f"`configcenter rollback {env} {name}`" for name in sorted(found))
        + " to go back to an earlier release on purpose; "
        "or `apply --allow-stale-config` to apply this commit anyway (recorded in the "
        "deploy repo commit)"
    )


def preflight(ws: Workspace, env: str, changes: list[ServicePlan], log: RunLog) -> None:
    """Reach every platform the release will roll out to before committing anything.

    A missing kubeconfig context or an unreachable Marathon is a setup problem, not a
    failed release: it must not leave a commit behind that later plans call blocked.
    """
    from configcenter.usecases.stages import check_plan

    try:
        check_plan(ws.config, changes)  # stages the platform cannot run (hooks:, verify:)
    except UserError as exc:
        raise ApplyRefused(f"{exc}; nothing was committed") from None
    names = sorted(
        {
            (s.config.platform if s.config else None)
            or (s.previous.platform if s.previous else None)
            or ""
            for s in changes
        }
        - {""}
    )
    for name in names:
        try:
            open_platform(ws.config, env, name, ws.redactor).observe()
        except Exception as exc:
            raise ApplyUnreachable(
                f"platform '{name}' for {env} cannot be reached: {ws.redactor.redact(str(exc))}; "
                "nothing was committed (fix the platform settings or connection, or use "
                "--no-rollout to commit only)"
            ) from None
        log(f"{env}: platform {name} reachable")


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

    found = SecretsFound()
    failures: dict[tuple[str, str], _Failure] = {}  # (platform, ref) -> (why, fix)
    asked = _ClusterSecrets(ws, env)
    for sp in releases:
        service = sp.config
        assert service is not None and service.platform
        for key, ref in sorted(secret_refs(sp.consumed_values).items()):
            scheme = ref.partition(":")[0]
            if scheme not in ("env", "file", "k8s"):
                continue
            at = (service.platform if scheme == "k8s" else "", ref)
            if at not in failures:
                failures[at] = (
                    asked.problem(service.platform, ref)
                    if scheme == "k8s"
                    else _resolve_failure(ws, ref)
                )
            entry = service.values.entries.get(tuple(key.split(".")))
            source = entry.source if entry is not None else Source("")
            failure = failures[at]
            if failure is None:
                continue
            if isinstance(failure, _Unchecked):
                found.unchecked.append(
                    Problem(
                        source,
                        f"{sp.service}: value {key}: secret {ref!r} was not checked: {failure.why}",
                        "it is read at rollout; check the platform's connection",
                        "warning",
                    )
                )
                continue
            found.problems.append(
                Problem(
                    source,
                    f"{sp.service}: value {key}: secret {ref!r} cannot be resolved: {failure[0]}",
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


def secrets_warnings(ws: Workspace, env: str, changes: list[ServicePlan]) -> list[Problem]:
    """What `plan` says about the releases apply would refuse for their secrets (and the
    `k8s:` references it could not check)."""
    found = unresolved_secrets(ws, env, changes)
    return [
        Problem(p.source, f"{p.message}; apply will refuse this release", p.hint, "warning")
        for p in found.problems
    ] + found.unchecked
