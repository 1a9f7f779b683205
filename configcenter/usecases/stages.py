"""The stages of one service's release on its platform, in order:

1. pre-deploy Jobs (`hooks: {pre_deploy: [...]}`), one after another; the first that
   fails or times out ends the release before anything of it is applied;
2. apply and wait until the workload is ready (the caller's step);
3. verification (`verify:`): Jobs, then HTTP checks against the release's tasks.

A failed verification turns a healthy rollout into a failed one, so the caller rolls
image and config back to the last good release exactly as for a failed rollout.
`skip_verify` (apply --skip-verify) leaves step 3 out and says so in the log.
Every Job's log goes to the run's log; a failure's reason names the check and ends
with the last lines of its log, so `history` shows it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from configcenter.core import kinds
from configcenter.core.errors import UserError
from configcenter.core.model import Config
from configcenter.core.plan import ServicePlan
from configcenter.core.stages import HttpCheck, ReleaseStages
from configcenter.core.state import ServiceState
from configcenter.crashpoints import crash_point
from configcenter.ports.platform import (
    Deployable,
    JobPlatform,
    Platform,
    PlatformError,
    RolloutStatus,
    StageJobResult,
    TaskEndpointPlatform,
)

PRE_DEPLOY_FAILED = "PreDeployJobFailed"
VERIFICATION_FAILED = "VerificationFailed"
# What a platform raises when a stage cannot be carried out (as opposed to our own bugs).
STAGE_FAILURES: tuple[type[Exception], ...] = (PlatformError, ValueError, OSError)
LOG_TAIL = 3  # log lines a failure's reason ends with
HTTP_RETRY_INTERVAL = 1.0

Log = Callable[[str], None]


@dataclass
class StageRun:
    """How the stages of one release went."""

    status: RolloutStatus
    applied: bool = True  # False: a pre-deploy job failed, nothing of the release was applied
    checks: list[dict[str, Any]] = field(default_factory=list)  # one per job / HTTP check
    verify_skipped: bool = False


def release_stages(state: ServiceState) -> ReleaseStages:
    return ReleaseStages.from_record(state.stages)


def check_platform(stages: ReleaseStages, platform_kind: str, service: str) -> None:
    """Refuse stages the platform cannot run, naming the fix (before anything changes).

    Raises UserError: the template asks for what its platform cannot do."""
    if (stages.pre_deploy or stages.verify) and not kinds.REGISTRY.supports(
        "platform", platform_kind, kinds.JOBS
    ):
        raise UserError(
            f"{service}: pre-deploy and verification Jobs need a platform that runs Jobs "
            f"({_kinds_with(kinds.JOBS)}), and its platform is {platform_kind}; use "
            "verify: {http: ...} checks there, or remove hooks:/verify: jobs from its template"
        )
    if stages.http and not kinds.REGISTRY.supports("platform", platform_kind, kinds.TASK_ENDPOINTS):
        raise UserError(
            f"{service}: verify.http checks need a platform that reports its tasks' "
            f"endpoints ({_kinds_with(kinds.TASK_ENDPOINTS)}), and its platform is "
            f"{platform_kind}; use a verification Job (verify: [smoke.yaml]) there"
        )


def _kinds_with(capability: str) -> str:
    return " or ".join(kinds.REGISTRY.having("platform", capability)) or "none registered"


def check_plan(config: Config, changes: Iterable[ServicePlan]) -> None:
    """Before anything is committed: every changed service's stages fit its platform.

    Raises one UserError naming every template that does not fit."""
    from configcenter.core.stages import template_stages

    problems: list[str] = []
    for plan in changes:
        if plan.action == "delete" or plan.config is None or not plan.config.platform:
            continue
        spec = config.project.platforms.get(plan.config.platform)
        if spec is None:
            continue
        template = plan.config.template
        stages = template_stages(template.doc.data or {}, template.outputs, template.doc.source)
        try:
            check_platform(stages, spec.kind, plan.service)
        except UserError as exc:
            problems.append(f"{template.label}/template.yaml: {exc}")
    if problems:
        raise UserError("; ".join(problems))


def _tail(lines: tuple[str, ...] | list[str]) -> str:
    # The log's own lines, not the note that the log API was unavailable (k8s_jobs).
    kept = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("(log of pod")]
    kept = kept[-LOG_TAIL:]
    text = " | ".join(kept)
    return (text[:297] + "...") if len(text) > 300 else text


def _job(
    platform: Platform,
    item: Deployable,
    file: str,
    stage: str,
    stages: ReleaseStages,
    timeout: float,
    log: Log,
    resume: bool = False,
) -> tuple[StageJobResult | None, str]:
    """Run one stage Job (`resume`: see `JobPlatform.run_job`); (result, failure reason or "")."""
    service = item.service
    try:
        result = cast(JobPlatform, platform).run_job(
            item,
            file,
            stage,
            timeout=stages.job_timeout or timeout,
            retention=stages.retention,
            log=lambda line: log(f"{service}: {line}"),
            resume=resume,
        )
    except STAGE_FAILURES as exc:
        return None, f"{stage} job {file} could not run: {type(exc).__name__}: {exc}"
    for line in result.log_lines:
        log(f"[{stage} {service}/{file}] {line}")
    if result.succeeded and result.earlier:
        log(
            f"{service}: {stage} job {file} of {item.release_id} completed in an earlier "
            f"attempt (Job {result.job}); not run again"
        )
        return result, ""
    if result.succeeded:
        log(f"{service}: {stage} job {file} completed (Job {result.job})")
        return result, ""
    code = f", exit status {result.exit_code}" if result.exit_code is not None else ""
    tail = _tail(result.log_lines)
    reason = f"{stage} job {file} failed (Job {result.job}: {result.reason}{code})" + (
        f"; log: {tail}" if tail else ""
    )
    log(f"{service}: {reason}")
    return result, reason


def _check(stage: str, name: str, result: StageJobResult | None, reason: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "stage": stage,
        "check": name,
        "outcome": "failed" if reason else "succeeded",
    }
    if result is not None:
        entry["job"] = result.job
        if result.exit_code is not None:
            entry["exit_code"] = result.exit_code
    if reason:
        entry["reason"] = reason
    return entry


def run_release(
    platform: Platform,
    item: Deployable,
    stages: ReleaseStages,
    *,
    timeout: float,
    skip_verify: bool,
    log: Log,
    apply_and_wait: Callable[[], RolloutStatus],
    resume: bool = False,
) -> StageRun:
    """Pre-deploy jobs, then `apply_and_wait()`, then verification; see the module doc.

    `resume`: the release was rolled out before and its outcome never recorded (a catch-up
    after the process was killed): a stage Job of this release the platform shows completed
    is not run again, one still running is waited for (`JobPlatform.run_job`)."""
    service = item.service
    run = StageRun(RolloutStatus("healthy"))
    if stages.empty:
        run.status = apply_and_wait()
        return run
    try:
        check_platform(stages, platform.target.kind, service)
    except UserError as exc:
        run.status = RolloutStatus("failed", PRE_DEPLOY_FAILED, str(exc))
        run.applied = False
        return run
    for file in stages.pre_deploy:
        result, reason = _job(platform, item, file, "pre-deploy", stages, timeout, log, resume)
        run.checks.append(_check("pre-deploy", file, result, reason))
        if reason:
            run.status = RolloutStatus("failed", PRE_DEPLOY_FAILED, reason)
            run.applied = False
            log(f"{service}: nothing of {item.release_id} was applied")
            return run
    if stages.pre_deploy:
        crash_point("rollout:pre-deployed")
    run.status = apply_and_wait()
    if run.status.state != "healthy" or not stages.verifies:
        return run
    if skip_verify:
        run.verify_skipped = True
        log(f"{service}: verification skipped (--skip-verify)")
        return run
    for file in stages.verify:
        result, reason = _job(platform, item, file, "verify", stages, timeout, log, resume)
        run.checks.append(_check("verify", file, result, reason))
        if reason:
            run.status = RolloutStatus("failed", VERIFICATION_FAILED, reason)
            return run
    if stages.http:
        reason = http_verify(platform, item, stages.http, log)
        run.checks.append(_check("verify", stages.http.describe(), None, reason))
        if reason:
            log(f"{service}: {reason}")
            run.status = RolloutStatus("failed", VERIFICATION_FAILED, reason)
            return run
    log(f"{service}: verification passed")
    return run


def http_verify(platform: Platform, item: Deployable, check: HttpCheck, log: Log) -> str:
    """GET the check's path on every running task until each answers the expected status.

    Returns "" when all did within the check's timeout, else why not (per task).
    """
    import requests

    what = f"verify {check.describe()}"
    try:
        endpoints = cast(TaskEndpointPlatform, platform).task_endpoints(item)
    except STAGE_FAILURES as exc:
        return f"{what}: cannot list the tasks: {type(exc).__name__}: {exc}"
    if not endpoints:
        return f"{what}: the release has no running task to check"
    no_port = [e for e in endpoints if ":" not in e]
    if no_port:
        return f"{what}: task(s) on {', '.join(no_port)} expose no port; give the app a port"
    deadline = time.monotonic() + check.timeout
    pending = set(endpoints)
    last: dict[str, str] = {}
    with requests.Session() as session:
        while True:
            for endpoint in sorted(pending):
                remaining = max(0.5, deadline - time.monotonic())
                url = f"http://{endpoint}{check.path}"
                try:
                    answer = session.get(url, timeout=min(5.0, remaining), allow_redirects=False)
                except requests.RequestException as exc:
                    last[endpoint] = type(exc).__name__
                    continue
                if answer.status_code == check.expect_status:
                    pending.discard(endpoint)
                    log(f"{item.service}: {url} answered {answer.status_code}")
                else:
                    last[endpoint] = f"HTTP {answer.status_code}"
            if not pending:
                return ""
            if time.monotonic() >= deadline:
                got = ", ".join(f"{e} answered {last.get(e, 'nothing')}" for e in sorted(pending))
                return (
                    f"{what} failed: {got} (expected {check.expect_status} within "
                    f"{check.timeout:g}s)"
                )
            time.sleep(HTTP_RETRY_INTERVAL)  # the task may still be starting to serve
