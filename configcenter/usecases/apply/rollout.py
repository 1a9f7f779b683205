"""Rollout scheduling: catching up with what the deploy repo already says before
committing more, and rolling a commit's releases out in dependency order (waves of
independent services in parallel; dependents of a failed service are skipped)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from configcenter.core import release_policy as policy
from configcenter.core.converge import Step, converge
from configcenter.core.order import dependents_of
from configcenter.core.plan import (
    Plan,
    ResolvedImage,
    ServicePlan,
)
from configcenter.core.release_policy import failure_reason
from configcenter.core.state import EnvState, ServiceState
from configcenter.usecases.apply.commit import plan_at
from configcenter.usecases.apply.deploy import PLATFORM_FAILURES, deploy_one, rollout_timeout
from configcenter.usecases.apply.guard import (
    catch_up_releases,
    guard_config_commit,
    held_workloads,
    recorded_secrets,
    refuse_held,
    refuse_unresolved_secrets,
)
from configcenter.usecases.apply.records import Outcome, Recorded, files_of, record, state_at
from configcenter.usecases.apply.report import (
    ApplyOptions,
    ApplyUnreachable,
    Reporter,
    RunLog,
    ServiceResult,
)
from configcenter.usecases.platforms import deployable, open_platform
from configcenter.usecases.workspace import Workspace


def catch_up(
    ws: Workspace,
    env: str,
    options: ApplyOptions,
    resolved: Mapping[str, ResolvedImage],
    log: RunLog,
    reporter: Reporter,
) -> tuple[list[ServiceResult], Plan | None, Recorded | None, dict[str, tuple[str, ...]]]:
    """Make the platform run what the deploy repo already says, before committing more.

    Observes every platform of the environment (one listing per kind), then: rolls
    out a committed release that is not live, watches and records a live release
    whose outcome was never recorded, deletes what runs of a service the
    environment no longer has. Returns the results, the plan it showed, if any, the
    commit that recorded their outcomes, if any, and by service the objects changed by
    hand that its new release replaces whole (`roll_out`'s `replacing`).
    """
    from configcenter.usecases.observe import ObserveError, env_platforms, observe_env

    repo = ws.deploy_repo
    with repo.lock():
        head = repo.sync()
    state = state_at(repo, env, head)
    if not env_platforms(ws.config, env, state):
        return [], None, None, {}
    try:
        live, edited, missing = observe_env(ws, env, state, log)
    except ObserveError as exc:
        raise ApplyUnreachable(
            f"{exc}; nothing was committed or changed (fix the platform settings or "
            "connection, or use --no-rollout to commit only)"
        ) from None
    plan = plan_at(ws, env, state, head, options, resolved)
    guard_config_commit(ws, env, state, plan, options)  # before anything is done
    converged = converge(plan, state, live, only=options.services, edited=edited, missing=missing)
    steps = converged.catch_up()
    replacing = {
        name: step.edit.replace
        for name, step in converged.steps.items()
        if step.kind in ("replace", "watch") and step.edit is not None and step.edit.replace
    }
    if not steps and not replacing:
        return [], None, None, {}
    reporter.plan_ready(converged.plan)
    if not steps:
        return [], converged.plan, None, replacing
    # What the catch-up rolls out is refused as apply refuses a new release: before the
    # platform is touched, when a secret it needs cannot be resolved (the recorded
    # releases' own references: a blocked service's config holds other inputs).
    refuse_unresolved_secrets(
        recorded_secrets(ws, env, catch_up_releases(state, steps, live)),
        log,
        "nothing was rolled out, committed or changed",
    )
    # A recorded release rolled out again, or a service deleted, on an app a deployment in
    # progress holds: refused as a new release is (the platform would answer 409).
    changing: dict[str, list[str]] = {}
    for step in steps:
        if step.kind in ("rollout", "prune"):
            changing.setdefault(step.platform, []).append(step.service)
    refuse_held(
        env,
        held_workloads(ws, env, changing),
        log,
        options.force,
        "nothing was rolled out, committed or changed",
    )
    results, recorded = _run_steps(ws, env, state, steps, log, reporter, options)
    return results, converged.plan, recorded, replacing


def _run_steps(
    ws: Workspace,
    env: str,
    state: EnvState,
    steps: list[Step],
    log: RunLog,
    reporter: Reporter,
    options: ApplyOptions,
) -> tuple[list[ServiceResult], Recorded | None]:
    config = ws.config
    environment = config.environment(env)
    timeout = rollout_timeout(config, env)
    outcomes: dict[str, Outcome] = {}
    results: list[ServiceResult] = []
    failed: set[str] = set()
    deps = {
        name: [d for d in svc.template.depends_on if d in environment.services]
        for name, svc in environment.services.items()
    }
    try:
        for step in steps:
            log(f"{step.service}: {step.why}")
            if step.kind == "prune":
                results.append(_prune_service(ws, env, step, log))
                continue
            current = state.services[step.service]
            if step.kind == "watch":
                outcome = _watch_one(ws, env, step.service, current, timeout, log, reporter)
                if outcome is not None:
                    outcomes[step.service] = outcome
                continue
            if any(d in failed for d in deps.get(step.service, [])):
                reason = "skipped: a service it depends on failed"
                log(f"{step.service}: {reason}")
                results.append(
                    ServiceResult(step.service, "deploy", "skipped", step.release, reason)
                )
                continue
            if step.edit is not None:  # changed by hand: its objects are put back first
                from configcenter.usecases.observe import put_back

                failure = put_back(ws, env, step.service, current, step.edit, log)
                if failure is not None:
                    failed.add(step.service)
                    results.append(
                        ServiceResult(step.service, "deploy", "failed", step.release, failure)
                    )
                    continue
            outcome = deploy_one(
                ws,
                env,
                step.service,
                current,
                timeout,
                log,
                reporter,
                options.force,
                options.skip_verify,
                catching_up=True,
            )
            outcomes[step.service] = outcome
            results.append(outcome.result)
            if outcome.result.outcome in ("failed", "rolled_back"):
                failed.add(step.service)
    finally:
        recorded = record(ws, env, outcomes, log)
    return results, recorded


def _prune_service(ws: Workspace, env: str, step: Step, log: RunLog) -> ServiceResult:
    try:
        open_platform(ws.config, env, step.platform, ws.redactor).delete(step.service)
    except PLATFORM_FAILURES as exc:
        reason = ws.redactor.redact(f"{type(exc).__name__}: {exc}")
        log(f"{step.service}: could not delete it from {step.platform} ({reason})")
        return ServiceResult(step.service, "delete", "failed", step.release, reason)
    log(f"{step.service}: deleted from {step.platform}")
    return ServiceResult(step.service, "delete", "pruned", step.release)


def _watch_one(
    ws: Workspace,
    env: str,
    service: str,
    current: ServiceState,
    timeout: float,
    log: RunLog,
    reporter: Reporter,
) -> Outcome | None:
    """Wait for a live release whose outcome was never recorded, and record it (no rollback:
    the release this apply commits next replaces it either way)."""
    release = current.release
    assert release is not None and current.platform
    platform = open_platform(ws.config, env, current.platform, ws.redactor)
    files = files_of(ws.deploy_repo, env, service, current)
    item = deployable(env, service, current, files, release.id)
    try:
        status = platform.wait(
            item, timeout=timeout, progress=lambda st: reporter.rollout(service, st)
        )
    except PLATFORM_FAILURES as exc:
        log(f"{service}: cannot watch {release.id} ({ws.redactor.redact(str(exc))})")
        return None
    reason = failure_reason(status.reason, status.message)
    settled = policy.after_watch(current, status.state == "healthy", reason)
    if settled.outcome == "healthy":
        log(f"{service}: {release.id} is healthy; recorded before the new release")
    else:
        log(f"{service}: {release.id} failed ({reason}); recorded before the new release")
    return Outcome(
        ServiceResult(service, "record", settled.outcome, release.id, settled.reason),
        settled.record,
        None,
    )


def roll_out(
    ws: Workspace,
    env: str,
    state: EnvState,
    sha: str,
    committed: list[ServicePlan],
    options: ApplyOptions,
    log: RunLog,
    reporter: Reporter,
    replacing: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[list[ServiceResult], Recorded | None]:
    """Roll the releases of commit `sha` out in dependency order; their results, and the
    commit that recorded their outcomes (a rollback commit when one was rolled back).
    `replacing` names, by service, the objects changed by hand that the new release
    replaces whole (see `catch_up`)."""
    config = ws.config
    environment = config.environment(env)
    deps = {
        name: [d for d in svc.template.depends_on if d in environment.services]
        for name, svc in environment.services.items()
    }
    timeout = rollout_timeout(config, env)
    outcomes: dict[str, Outcome] = {}
    blocked: set[str] = set()
    for sp in [s for s in committed if s.action == "delete"]:
        previous = sp.previous
        result = ServiceResult(sp.service, "delete", "committed")
        if previous and previous.platform and previous.platform not in config.project.platforms:
            log(
                f"{sp.service}: platform {previous.platform} is no longer defined in "
                "configcenter.yaml; what runs there is left as it is"
            )
        elif previous and previous.platform:
            try:
                open_platform(config, env, previous.platform, ws.redactor).delete(sp.service)
                log(f"{sp.service}: deleted from {previous.platform}")
            except PLATFORM_FAILURES as exc:
                reason = ws.redactor.redact(f"{type(exc).__name__}: {exc}")
                log(f"{sp.service}: could not delete it from {previous.platform} ({reason})")
                result = ServiceResult(sp.service, "delete", "failed", reason=reason)
        outcomes[sp.service] = Outcome(result, None, None)
    # A service without a platform is committed, not rolled out (its release is already good).
    deploying = [s for s in committed if s.action != "delete"]
    unplaced = [s for s in deploying if not state.services[s.service].platform]
    todo = [s for s in deploying if state.services[s.service].platform]
    by_name = {s.service: s for s in todo}
    done: set[str] = set()
    try:
        while len(done) < len(todo):
            wave = [
                s
                for s in todo
                if s.service not in done
                and all(d in done or d not in by_name for d in deps.get(s.service, []))
            ]
            runnable = [s for s in wave if s.service not in blocked]
            for s in wave:
                if s.service in blocked:
                    current = state.services[s.service]
                    reason = "skipped: a service it depends on failed"
                    log(f"{s.service}: {reason}")
                    # Back to what the deploy repo held before this apply's commit (`sha`
                    # holds the new files), or nothing at all for a service that is new.
                    restored = s.previous
                    outcomes[s.service] = Outcome(
                        ServiceResult(
                            s.service,
                            s.action,
                            "skipped",
                            current.release.id if current.release else None,
                            reason,
                        ),
                        restored,
                        files_of(ws.deploy_repo, env, s.service, restored, f"{sha}^")
                        if restored
                        else {},
                    )
                    done.add(s.service)
            # Not `with`: its exit joins the workers, so Ctrl-C would wait out every rollout.
            pool = ThreadPoolExecutor(max_workers=max(1, options.jobs))
            try:
                futures = {
                    s.service: pool.submit(
                        deploy_one,
                        ws,
                        env,
                        s.service,
                        state.services[s.service],
                        timeout,
                        log,
                        reporter,
                        options.force,
                        options.skip_verify,
                        replacing=(replacing or {}).get(s.service, ()),
                    )
                    for s in runnable
                }
                for name, future in futures.items():
                    outcome = future.result()
                    outcomes[name] = outcome
                    done.add(name)
                    if outcome.result.outcome in ("failed", "rolled_back"):
                        blocked |= dependents_of(deps, name)
            except KeyboardInterrupt:
                # Ctrl-C: what rolls out goes on unwatched (the next apply watches it).
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
    finally:
        # Whatever happens, what did finish is recorded (and restored files written).
        recorded = record(ws, env, outcomes, log)
    results = {name: outcome.result for name, outcome in outcomes.items()}
    for s in unplaced:
        results[s.service] = ServiceResult(
            s.service, s.action, "committed", release_of(state, s.service)
        )
    return [results[s.service] for s in committed if s.service in results], recorded


def rolls_out(plans: list[ServicePlan]) -> bool:
    """An environment rolls out when its services have a platform."""
    return any(
        s.config is not None and s.config.platform for s in plans if s.action != "delete"
    ) or any(s.action == "delete" for s in plans)


def release_of(state: EnvState, service: str) -> str | None:
    current = state.services.get(service)
    return current.release.id if current and current.release else None
