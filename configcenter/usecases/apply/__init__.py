"""apply, deploy and rollback: the one place each of these flows lives.

apply: plan -> build what changed -> one commit per env (pushed, retried on a
concurrent push) -> roll out in dependency order -> record the outcome, rolling
a failed service back to its last good release. The CLI and `serve` both call
these functions, so a webhook-triggered apply is the CLI's apply.

The flow's parts, one module each:

* `report`: options, results, the reporter and the run's log;
* `guard`: refusals before anything is committed;
* `commit`: plan, build, commit and push the environment's new releases;
* `rollout`: catching up with the platform, and rolling out in dependency order;
* `deploy`: one release's rollout and what the release policy makes of its end
  (`configcenter.core.release_policy`), and the deploy and rollback use cases;
* `records`: reading and writing the deploy repo's records.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from configcenter.core.plan import Plan, ResolvedImage
    from configcenter.usecases.apply.commit import release_id
    from configcenter.usecases.apply.deploy import (
        PLATFORM_FAILURES,
        deploy_service,
        rollback_service,
        rollout_timeout,
    )
    from configcenter.usecases.apply.records import Recorded, find_release_commit, release_snapshot
    from configcenter.usecases.apply.report import (
        ApplyError,
        ApplyFailed,
        ApplyOptions,
        ApplyRefused,
        ApplyResult,
        ApplyUnreachable,
        Reporter,
        ServiceResult,
        default_actor,
    )
    from configcenter.usecases.workspace import Workspace

#: Where each name the package offers is defined, imported on first use: `plan` imports
#: apply's checks (`guard`) without the commit, rollout and deploy flows and theirs.
_EXPORTS: dict[str, str] = {
    "commit_release": "configcenter.usecases.apply.commit",
    "release_id": "configcenter.usecases.apply.commit",
    "PLATFORM_FAILURES": "configcenter.usecases.apply.deploy",
    "deploy_service": "configcenter.usecases.apply.deploy",
    "rollback_service": "configcenter.usecases.apply.deploy",
    "rollout_timeout": "configcenter.usecases.apply.deploy",
    "check_names": "configcenter.usecases.apply.guard",
    "Recorded": "configcenter.usecases.apply.records",
    "find_release_commit": "configcenter.usecases.apply.records",
    "release_snapshot": "configcenter.usecases.apply.records",
    "ApplyError": "configcenter.usecases.apply.report",
    "ApplyFailed": "configcenter.usecases.apply.report",
    "ApplyOptions": "configcenter.usecases.apply.report",
    "ApplyRefused": "configcenter.usecases.apply.report",
    "ApplyResult": "configcenter.usecases.apply.report",
    "ApplyUnreachable": "configcenter.usecases.apply.report",
    "Reporter": "configcenter.usecases.apply.report",
    "RunLog": "configcenter.usecases.apply.report",
    "ServiceResult": "configcenter.usecases.apply.report",
    "default_actor": "configcenter.usecases.apply.report",
    "catch_up": "configcenter.usecases.apply.rollout",
    "release_of": "configcenter.usecases.apply.rollout",
    "roll_out": "configcenter.usecases.apply.rollout",
    "rolls_out": "configcenter.usecases.apply.rollout",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def apply_env(
    ws: Workspace, env: str, options: ApplyOptions, reporter: Reporter | None = None
) -> ApplyResult:
    from configcenter.usecases.apply.commit import commit_release
    from configcenter.usecases.apply.guard import check_names
    from configcenter.usecases.apply.report import (
        ApplyResult,
        Reporter,
        RunLog,
        ServiceResult,
        default_actor,
    )
    from configcenter.usecases.apply.rollout import catch_up, release_of, roll_out, rolls_out
    from configcenter.usecases.inspect import check_env

    reporter = reporter or Reporter()
    config = ws.config
    check_env(config, env)
    if options.dry_run:
        from configcenter.usecases.observe import converged_plan

        plan = converged_plan(
            ws, env, only=options.services, retry=options.retry, warn=reporter.message
        ).plan
        reporter.plan_ready(plan)
        return ApplyResult(env, None, plan, dry_run=True)
    check_names(ws, env, options)
    repo = ws.deploy_repo
    store = ws.run_store
    run = ws.start_run(
        "apply",
        env,
        sorted(options.services or []),
        options.trigger,
        options.actor or default_actor(),
        {"config_commit": config.commit},
    )
    log = RunLog(ws, run.id, reporter)
    try:
        from configcenter.usecases.images import resolve_given_images

        # Given images on our registry deploy as the digest their tag names now.
        resolved: dict[str, ResolvedImage] = resolve_given_images(
            config, env, ws.redactor, only=options.services
        )
        caught: list[ServiceResult] = []
        shown: Plan | None = None
        recorded: list[Recorded | None] = []
        replacing: dict[str, tuple[str, ...]] = {}
        if options.rollout:
            caught, shown, caught_up, replacing = catch_up(
                ws, env, options, resolved, log, reporter
            )
            recorded.append(caught_up)
        with repo.lock():  # the cache dir, for sync + commit + push only
            plan, sha, state = commit_release(
                ws, env, options, run.id, log, reporter, resolved, shown is not None
            )
        # The plan as shown: with the platform steps the catch-up carried out.
        result = ApplyResult(env, run.id, shown or plan, sha)
        done = {r.service for r in caught}
        result.results = caught + [
            ServiceResult(
                s.service,
                s.action,
                s.action if s.action == "blocked" else "noop",
                reason=s.blocked or "",
            )
            for s in plan.services
            if s.action in ("noop", "blocked") and s.service not in done
        ]
        if sha is not None:
            committed = list(plan.changes)
            if options.rollout and rolls_out(committed):
                rolled, done_at = roll_out(
                    ws, env, state, sha, committed, options, log, reporter, replacing
                )
                result.results += rolled
                recorded.append(done_at)
            else:
                result.results += [
                    ServiceResult(
                        s.service,
                        s.action,
                        "committed",
                        release_of(state, s.service),
                    )
                    for s in committed
                ]
        rollbacks = [r.sha for r in recorded if r is not None and r.rollback]
        result.rollback_commit = rollbacks[-1] if rollbacks else None
        details: dict[str, object] = {
            "commit": sha,
            "results": [r.__dict__ for r in result.results if r.outcome != "noop"],
        }
        if result.rollback_commit:
            details["rollback_commit"] = result.rollback_commit
        if options.skip_verify:
            details["skip_verify"] = True
        store.finish(run.id, result.outcome, details)
        return result
    except BaseException as exc:
        error = str(exc) or ("interrupted" if isinstance(exc, KeyboardInterrupt) else repr(exc))
        store.finish(run.id, "failed", {"error": ws.redactor.redact(error)})
        raise


__all__ = [
    "PLATFORM_FAILURES",
    "ApplyError",
    "ApplyFailed",
    "ApplyOptions",
    "ApplyRefused",
    "ApplyResult",
    "ApplyUnreachable",
    "Reporter",
    "ServiceResult",
    "apply_env",
    "default_actor",
    "deploy_service",
    "find_release_commit",
    "release_id",
    "release_snapshot",
    "rollback_service",
    "rollout_timeout",
]
