"""Roll one release out and carry out the release policy's decision
(`configcenter.core.release_policy`): record it healthy, roll back to the last good
release, or leave it failed. Also the `deploy` and `rollback` use cases of one service."""

from __future__ import annotations

from dataclasses import replace
from typing import cast

from configcenter.core import kinds
from configcenter.core import release_policy as policy
from configcenter.core.errors import PlatformFailure, TransientFailure, UserError
from configcenter.core.model import Config
from configcenter.core.release_policy import failure_reason
from configcenter.core.state import EnvState, ServiceState
from configcenter.crashpoints import crash_point
from configcenter.ports.platform import Deployable, ObjectDriftPlatform, Platform, RolloutStatus
from configcenter.usecases.apply.commit import utc_now
from configcenter.usecases.apply.guard import (
    RecordedRelease,
    held_workloads,
    recorded_secrets,
    refuse_held,
    refuse_unresolved_secrets,
)
from configcenter.usecases.apply.records import (
    Outcome,
    files_of,
    record,
    release_snapshot,
    state_at,
)
from configcenter.usecases.apply.report import (
    ApplyFailed,
    ApplyRefused,
    Reporter,
    RunLog,
    ServiceResult,
    default_actor,
)
from configcenter.usecases.inspect import check_env
from configcenter.usecases.platforms import deployable, open_platform
from configcenter.usecases.workspace import Workspace

# What a platform raises when a release cannot be rolled out (as opposed to our own bugs):
# a refusal (PlatformError is a PlatformFailure), no answer, or bad input such as a secret
# reference that cannot be resolved.
PLATFORM_FAILURES: tuple[type[Exception], ...] = (PlatformFailure, TransientFailure, UserError)


DEFAULT_ROLLOUT_TIMEOUT = 300.0


def rollout_timeout(config: Config, env: str) -> float:
    if env not in config.environments:  # loaded without its environment files
        return DEFAULT_ROLLOUT_TIMEOUT
    raw = config.environment(env).rollout_timeout
    if not raw:
        return DEFAULT_ROLLOUT_TIMEOUT
    # The schema's parser (validated at load time by it), imported here: plan imports this
    # module for apply's checks, and the schema's 15 dataclasses are ~10 ms of a start.
    from configcenter.core.schema import parse_duration

    return parse_duration(raw)


def deploy_one(
    ws: Workspace,
    env: str,
    service: str,
    current: ServiceState,
    timeout: float,
    log: RunLog,
    reporter: Reporter,
    force: bool = False,
    skip_verify: bool = False,
    catching_up: bool = False,
    replacing: tuple[str, ...] = (),
) -> Outcome:
    """Roll out `current` through its stages; on failure roll back to its last good release.

    `force` lets a platform cancel a deployment that holds the app (Marathon's 409).
    `replacing`: objects changed by hand that the release's apply replaces whole.
    Pre-deploy jobs, verification and `skip_verify` are `usecases.stages`'. A catch-up
    runs only the stages its release has not passed (`core.stages.still_to_run`): none of
    a release recorded healthy; of one whose outcome was never recorded, not the stage Jobs
    the platform shows this release completed (`resume`).
    """
    from configcenter.core.stages import still_to_run
    from configcenter.usecases import stages

    config = ws.config
    repo = ws.deploy_repo
    release = current.release
    assert release is not None
    platform = open_platform(config, env, current.platform or "", ws.redactor, force=force)
    files = files_of(repo, env, service, current)
    item = deployable(env, service, current, files, release.id)
    run = stages.run_release(
        platform,
        item,
        still_to_run(stages.release_stages(current), release.outcome)
        if catching_up
        else stages.release_stages(current),
        timeout=timeout,
        skip_verify=skip_verify,
        log=log,
        apply_and_wait=lambda: apply_and_wait(
            platform, item, timeout, service, log, reporter, replacing
        ),
        # Committed, never recorded: an earlier attempt may have run some of its stages.
        resume=catching_up and release.outcome == "committed",
    )
    crash_point("rollout:stages-done")  # every stage ran, the outcome is not recorded yet
    status = run.status
    reason = failure_reason(status.reason, status.message)
    decision = policy.after_rollout(current, status.state == "healthy", reason, applied=run.applied)
    if run.applied and status.state == "healthy":
        prune_verified(platform, item, service, log)
        log(f"{service}: healthy ({release.id})")
    elif run.applied:
        log(f"{service}: rollout of {release.id} failed ({reason})")
        crash_point("rollout:failed")
        if not isinstance(decision, policy.GoBack):
            log(f"{service}: no earlier good release to roll back to; left failed")
    if isinstance(decision, policy.Settled):
        return _settled(service, decision, None)
    snapshot, good_files = release_snapshot(repo, env, service, decision.to.id)
    if not decision.roll_out:
        log(f"{service}: still runs {decision.to.id}; the deploy repo goes back to it")
        return _settled(service, policy.after_going_back(current, decision, snapshot), good_files)
    log(f"{service}: rolling back to {decision.to.id} (image {snapshot.image})")
    restored = deployable(env, service, snapshot, good_files, decision.to.id)
    back = apply_and_wait(platform, restored, timeout, service, log, reporter)
    why = failure_reason(back.reason, back.message)
    if back.state == "healthy":
        prune_verified(platform, restored, service, log)
    else:
        log(f"{service}: rollback to {decision.to.id} did not become healthy ({why})")
    settled = policy.after_going_back(current, decision, snapshot, back.state == "healthy", why)
    if settled.outcome == "rolled_back":
        crash_point("rollout:rolled-back")
    return _settled(service, settled, good_files)


def _settled(
    service: str, settled: policy.Settled, restored_files: dict[str, bytes] | None
) -> Outcome:
    """The outcome of a deploy as the release policy settled it (files only when restored)."""
    return Outcome(
        ServiceResult(service, "deploy", settled.outcome, settled.release, settled.reason),
        settled.record,
        restored_files if settled.restored else None,
    )


def apply_and_wait(
    platform: Platform,
    item: Deployable,
    timeout: float,
    service: str,
    log: RunLog,
    reporter: Reporter,
    replacing: tuple[str, ...] = (),
) -> RolloutStatus:
    """Apply `item` and wait for it. `replacing`: objects changed by hand that are replaced
    whole with what the release renders (on a platform with the `object_drift`
    capability; one that applies whole definitions drops such fields anyway)."""
    try:
        drift = kinds.REGISTRY.supports("platform", platform.target.kind, kinds.OBJECT_DRIFT)
        if replacing and drift:
            replaced = cast(ObjectDriftPlatform, platform).apply_replacing(item, replacing)
            if replaced:
                log(f"{service}: replaced {', '.join(replaced)} (changed by hand) whole")
        else:
            platform.apply(item)
        crash_point("rollout:applied")
        status = platform.wait(
            item, timeout=timeout, progress=lambda st: reporter.rollout(service, st)
        )
    except PLATFORM_FAILURES as exc:
        # Refused, unreachable mid-rollout, a secret that cannot be resolved: this release
        # failed (and is rolled back and recorded); a bug in our code still raises.
        return RolloutStatus("failed", type(exc).__name__, log.ws.redactor.redact(str(exc)))
    crash_point("rollout:verified")
    return status


def prune_verified(platform: Platform, item: Deployable, service: str, log: RunLog) -> None:
    """Only once a release is verified (healthy, and its verification passed): what earlier
    releases had and this one dropped goes. A failed release drops nothing; its rollback,
    once healthy, prunes what the failed one added."""
    try:
        pruned = platform.prune(item)
    except PLATFORM_FAILURES as exc:
        log(
            f"{service}: healthy, but pruning what it dropped failed "
            f"({log.ws.redactor.redact(str(exc))}); `reconcile --heal` or its next "
            "release prunes it"
        )
        return
    if pruned:
        log(f"{service}: pruned {', '.join(pruned)} (no longer rendered)")


def _current(ws: Workspace, env: str, service: str) -> tuple[EnvState, ServiceState]:
    repo = ws.deploy_repo
    head = repo.sync()
    state = state_at(repo, env, head)
    current = state.services.get(service)
    if current is None and state.services:
        raise ApplyRefused(
            f"{service!r}: the deploy repo has no release of it in {env} "
            f"(services with releases there: {', '.join(sorted(state.services))}); "
            "check the service name"
        )
    if current is None or current.release is None:
        raise ApplyRefused(
            f"{service} has no release in {env} yet: "
            f"run `configcenter apply {env} --service {service}`"
        )
    return state, current


def deploy_service(
    ws: Workspace,
    env: str,
    service: str,
    reporter: Reporter | None = None,
    *,
    dry_run: bool = False,
    trigger: str = "cli",
    actor: str = "",
    force: bool = False,
) -> ServiceResult:
    """Roll out what the deploy repo says for one service, alone."""
    reporter = reporter or Reporter()
    check_env(ws.config, env)
    _, current = _current(ws, env, service)
    assert current.release is not None
    if not current.platform:
        # The environment got a platform after this release was committed: deploy there
        # (the recorded outcome then names the platform, as the next apply would).
        wanted = _config_platform(ws.config, env, service)
        if wanted is None:
            raise ApplyRefused(
                f"{service} has no platform in {env}: set `platform:` for the environment or "
                "the service in the config repo, then `configcenter apply` (or deploy again)"
            )
        current = replace(current, platform=wanted)
    assert current.release is not None
    refuse_recorded_secrets(ws, env, RecordedRelease(service, current, current), reporter)
    if dry_run:
        platform = open_platform(ws.config, env, current.platform or "", ws.redactor)
        files = files_of(ws.deploy_repo, env, service, current)
        platform.apply(deployable(env, service, current, files, current.release.id), dry_run=True)
        return ServiceResult(service, "deploy", "dry-run", current.release.id)
    refuse_held_app(ws, env, service, current.platform or "", force, reporter, "deploy", "")
    run = ws.start_run("deploy", env, [service], trigger, actor or default_actor())
    log = RunLog(ws, run.id, reporter)
    try:
        outcome = deploy_one(
            ws, env, service, current, rollout_timeout(ws.config, env), log, reporter, force
        )
        record(ws, env, {service: outcome}, log)
    except BaseException as exc:
        ws.run_store.finish(run.id, "failed", {"error": ws.redactor.redact(str(exc))})
        raise
    ws.run_store.finish(
        run.id, _run_outcome(outcome.result.outcome), {"result": outcome.result.__dict__}
    )
    return outcome.result


def refuse_recorded_secrets(
    ws: Workspace, env: str, release: RecordedRelease, reporter: Reporter
) -> None:
    """Refuse to roll out (or commit) a recorded release whose secrets cannot be resolved,
    before anything is recorded or changed: `deploy` and `rollback` check what every apply
    checks (see `guard.recorded_secrets`). What the platform runs is asked only when a
    reference does not resolve (it may hold the release's generation already)."""
    found = recorded_secrets(ws, env, [release])
    if found.problems and release.record.platform:
        try:
            observed = open_platform(ws.config, env, release.record.platform, ws.redactor).observe()
        except PLATFORM_FAILURES:
            observed = {}
        item = observed.get(release.service)
        if item is not None and item.release_id:
            found = recorded_secrets(ws, env, [replace(release, running=item.release_id)])
    refuse_unresolved_secrets(
        found, RunLog(ws, None, reporter), "nothing was rolled out, committed or changed"
    )


def refuse_held_app(
    ws: Workspace,
    env: str,
    service: str,
    platform: str,
    force: bool,
    reporter: Reporter,
    command: str,
    commit_only: str,
) -> None:
    """Refuse `deploy` or `rollback` (`command`) of a service whose workload a deployment
    in progress holds, before anything is recorded or rolled out, as apply refuses it
    (one question to the platform; Marathon would answer the PUT 409); with `force` the
    rollout cancels that deployment. `commit_only`: what the command's --no-rollout does."""
    refuse_held(
        env,
        held_workloads(ws, env, {platform: [service]}, "nothing was rolled out or changed"),
        RunLog(ws, None, reporter),
        force,
        "nothing was rolled out, committed or changed",
        f"configcenter {command} {env} {service}",
        commit_only,
    )


def _config_platform(config: Config, env: str, service: str) -> str | None:
    environment = config.environment(env)
    svc = environment.services.get(service)
    return (svc.platform if svc else None) or environment.platform or None


def _previous_good(ws: Workspace, env: str, service: str, current: ServiceState) -> str | None:
    """The newest good release other than the current one.

    Where releases are verified on a platform only `healthy` counts; where the
    environment is never rolled out, a `committed` release is good too.
    """
    assert current.release is not None
    if current.last_good and current.last_good.id != current.release.id:
        return current.last_good.id
    from configcenter.usecases.history import history

    verified = current.release.outcome != "committed"
    good = {"healthy"} if verified else {"healthy", "committed"}
    for entry in history(ws, env, service, limit=200):
        if entry.release != current.release.id and entry.outcome in good:
            return entry.release
    return None


def _run_outcome(outcome: str) -> str:
    return {"healthy": "succeeded", "committed": "succeeded"}.get(outcome, outcome)


def rollback_service(
    ws: Workspace,
    env: str,
    service: str,
    to: str | None = None,
    *,
    rollout: bool = True,
    dry_run: bool = False,
    reporter: Reporter | None = None,
    trigger: str = "cli",
    actor: str = "",
    force: bool = False,
) -> ServiceResult:
    """Restore the last good (or named) release's files and state as a new commit.

    Needs only the deploy repo (and configcenter.yaml for the platforms): a config
    repo whose environment files do not load is reported and does not block it. A
    rollout to a workload a deployment in progress holds is refused before anything is
    done, unless `force` (the rollout cancels that deployment: Marathon's force=true).
    """
    reporter = reporter or Reporter()
    ws.without_environments_if_broken(reporter.message)
    check_env(ws.config, env)
    repo = ws.deploy_repo
    _, current = _current(ws, env, service)
    assert current.release is not None
    target = to or _previous_good(ws, env, service, current)
    if target is None:
        raise ApplyRefused(
            f"{service} in {env} has no earlier good release to roll back to "
            f"(`configcenter history {env} --service {service}` lists its releases)"
        )
    if target == current.release.id:
        raise ApplyRefused(
            f"{service} in {env} already runs {target}; name an older one with --to "
            f"(see `configcenter history {env} --service {service}`)"
        )
    snapshot, files = release_snapshot(repo, env, service, target)
    refuse_recorded_secrets(ws, env, RecordedRelease(service, snapshot, current), reporter)
    if dry_run:
        return ServiceResult(service, "rollback", "dry-run", target)
    if rollout and snapshot.platform:
        refuse_held_app(
            ws,
            env,
            service,
            snapshot.platform,
            force,
            reporter,
            "rollback",
            "restore the deploy repo only (an apply rolls it out once the app is free)",
        )
    run = ws.start_run("rollback", env, [service], trigger, actor or default_actor())
    log = RunLog(ws, run.id, reporter)
    try:
        result_outcome = "committed"
        if rollout and snapshot.platform:
            platform = open_platform(ws.config, env, snapshot.platform, ws.redactor, force=force)
            item = deployable(env, service, snapshot, files, target)
            status = apply_and_wait(
                platform, item, rollout_timeout(ws.config, env), service, log, reporter
            )
            if status.state != "healthy":
                # Never leave the platform on a release the deploy repo does not name.
                ran = current.release.id
                now, now_files = release_snapshot(repo, env, service, ran)
                if now.platform != snapshot.platform:
                    put_back = (
                        f"{ran}, the release the deploy repo names, runs on platform "
                        f"{now.platform}, left as it is; the deploy repo is unchanged"
                    )
                else:
                    again = apply_and_wait(
                        platform,
                        deployable(env, service, now, now_files, ran),
                        rollout_timeout(ws.config, env),
                        service,
                        log,
                        reporter,
                    )
                    put_back = (
                        f"{ran}, the release the deploy repo names, runs again; the deploy "
                        "repo is unchanged"
                        if again.state == "healthy"
                        else f"putting {ran}, the release the deploy repo names, back failed "
                        f"too ({failure_reason(again.reason, again.message)}); the deploy repo "
                        f"is unchanged: `configcenter deploy {env} {service}` tries again"
                    )
                raise ApplyFailed(
                    f"rollback of {service} to {target} failed "
                    f"({failure_reason(status.reason, status.message)}); {put_back}"
                )
            prune_verified(platform, item, service, log)
            result_outcome = "healthy"
        new = policy.rolled_back_to(
            current,
            snapshot,
            target,
            verified=result_outcome == "healthy",
            by=actor or default_actor(),
            at=utc_now(),
        )
        log(f"{service}: rolled back to {target}")
        record(
            ws,
            env,
            {
                service: Outcome(
                    ServiceResult(service, "rollback", result_outcome, target), new, files
                )
            },
            log,
        )
    except BaseException as exc:
        ws.run_store.finish(run.id, "failed", {"error": ws.redactor.redact(str(exc))})
        raise
    ws.run_store.finish(run.id, "succeeded", {"release": target})
    return ServiceResult(service, "rollback", result_outcome, target)
