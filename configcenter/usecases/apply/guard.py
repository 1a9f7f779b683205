"""Refusals before anything is committed: mistyped service names, a dirty or stale
config commit, stages or platforms the release cannot reach."""

from __future__ import annotations

from configcenter import wiring
from configcenter.core.errors import UserError
from configcenter.core.plan import (
    Plan,
    ServicePlan,
)
from configcenter.core.state import EnvState
from configcenter.ports.config_lineage import Relation
from configcenter.usecases.apply.report import ApplyOptions, ApplyRefused, ApplyUnreachable, RunLog
from configcenter.usecases.platforms import open_platform
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
