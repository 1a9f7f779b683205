"""apply, deploy and rollback: the one place each of these flows lives.

apply: plan -> build what changed -> one commit per env (pushed, retried on a
concurrent push) -> roll out in dependency order -> record the outcome, rolling
a failed service back to its last good release. The CLI and `serve` both call
these functions, so a webhook-triggered apply is the CLI's apply.
"""

from __future__ import annotations

import getpass
import random
import re
import socket
import time
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from configcenter.core import release_policy as policy
from configcenter.core.converge import Step, converge
from configcenter.core.errors import PlatformFailure, TransientFailure, UserError
from configcenter.core.model import Config
from configcenter.core.order import dependents_of
from configcenter.core.plan import (
    Plan,
    ResolvedImage,
    ServicePlan,
    make_plan,
    service_record,
)
from configcenter.core.release_policy import failure_reason
from configcenter.core.schema import parse_duration
from configcenter.core.state import EnvState, Release, ServiceState
from configcenter.crashpoints import crash_point
from configcenter.ports.deploy_repo import (
    CommitInfo,
    DeployRepo,
    DeployRepoError,
    compose_message,
    delete_prefix,
)
from configcenter.ports.platform import Deployable, Platform, RolloutStatus
from configcenter.usecases.inspect import check_env
from configcenter.usecases.platforms import deployable, open_platform
from configcenter.usecases.state_store import read_env_state
from configcenter.usecases.workspace import PreviousFiles, Workspace

MAX_PUSH_ATTEMPTS = 8
# What a platform raises when a release cannot be rolled out (as opposed to our own bugs):
# a refusal (PlatformError is a PlatformFailure), no answer, or bad input such as a secret
# reference that cannot be resolved.
PLATFORM_FAILURES: tuple[type[Exception], ...] = (PlatformFailure, TransientFailure, UserError)
DEFAULT_ROLLOUT_TIMEOUT = 300.0


class ApplyError(Exception):
    """apply could not finish; the deploy repo is before or after a whole commit."""


# -- reporting ---------------------------------------------------------------------------------


class Reporter:
    """Progress callbacks; the CLI prints them, serve stores them. Defaults do nothing."""

    def message(self, text: str) -> None:
        """A line for humans (also stored in the run's log)."""

    def plan_ready(self, plan: Plan) -> None:
        """The plan apply is about to carry out."""

    def build_log(self, service: str, line: str) -> None:
        """One line of a build's output."""

    def rollout(self, service: str, status: RolloutStatus) -> None:
        """A rollout's progress changed."""


@dataclass
class ServiceResult:
    service: str
    action: str
    outcome: str  # committed | healthy | failed | rolled_back | skipped | blocked | noop
    release: str | None = None
    reason: str = ""


@dataclass
class ApplyResult:
    env: str
    run_id: str | None
    plan: Plan
    commit: str | None = None
    results: list[ServiceResult] = field(default_factory=list)
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        outcomes = {r.outcome for r in self.results}
        if "rolled_back" in outcomes:
            return 3
        if "failed" in outcomes:
            return 1
        return 0

    @property
    def outcome(self) -> str:
        code = self.exit_code
        if code == 3:
            return "rolled_back"
        if code == 1:
            return "failed"
        return "succeeded" if self.commit or self.results else "noop"


@dataclass
class ApplyOptions:
    services: Collection[str] | None = None
    retry: Collection[str] = ()
    build: bool = True
    rollout: bool = True
    dry_run: bool = False
    trigger: str = "cli"
    actor: str = ""
    jobs: int = 2
    force: bool = False
    #: Apply a config commit older than, or diverged from, the one last applied (recorded).
    override: bool = False
    skip_verify: bool = False  # emergencies: no verification after rollout (recorded)


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class _RunLog:
    """Every message goes to the reporter and, redacted, to the run's log."""

    def __init__(self, ws: Workspace, run_id: str | None, reporter: Reporter) -> None:
        self.ws = ws
        self.run_id = run_id
        self.reporter = reporter

    def __call__(self, text: str) -> None:
        text = self.ws.redactor.redact(text)
        self.reporter.message(text)
        self._store(text + "\n")

    def build_line(self, service: str, line: str) -> None:
        line = self.ws.redactor.redact(line)
        self.reporter.build_log(service, line)
        self._store(f"[build {service}] {line}\n")

    def _store(self, text: str) -> None:
        """Append to the run's log; a run store that fails (locked, gone) never stops a
        rollout between its outcome and the record of it: it is said once, then skipped."""
        if self.run_id is None:
            return
        try:
            self.ws.run_store.append_log(self.run_id, text)
        except Exception as exc:
            run_id, self.run_id = self.run_id, None
            self.reporter.message(
                self.ws.redactor.redact(
                    f"run store: cannot log run {run_id} ({type(exc).__name__}: {exc}); "
                    "going on without its log"
                )
            )


# -- apply -------------------------------------------------------------------------------------


def apply_env(
    ws: Workspace, env: str, options: ApplyOptions, reporter: Reporter | None = None
) -> ApplyResult:
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
    _check_names(ws, env, options)
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
    log = _RunLog(ws, run.id, reporter)
    try:
        from configcenter.usecases.images import resolve_given_images

        # Given images on our registry deploy as the digest their tag names now.
        resolved: dict[str, ResolvedImage] = resolve_given_images(
            config, env, ws.redactor, only=options.services
        )
        caught: list[ServiceResult] = []
        shown: Plan | None = None
        if options.rollout:
            caught, shown = _catch_up(ws, env, options, resolved, log, reporter)
        with repo.lock():  # the cache dir, for sync + commit + push only
            plan, sha, state = _commit_release(
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
            if options.rollout and _rolls_out(config, env, committed):
                result.results += _rollout(ws, env, state, sha, committed, options, log, reporter)
            else:
                result.results += [
                    ServiceResult(
                        s.service,
                        s.action,
                        "committed",
                        _release_of(state, s.service),
                    )
                    for s in committed
                ]
        details: dict[str, object] = {
            "commit": sha,
            "results": [r.__dict__ for r in result.results if r.outcome != "noop"],
        }
        if options.skip_verify:
            details["skip_verify"] = True
        store.finish(run.id, result.outcome, details)
        return result
    except BaseException as exc:
        store.finish(run.id, "failed", {"error": ws.redactor.redact(str(exc))})
        raise


def _check_names(ws: Workspace, env: str, options: ApplyOptions) -> None:
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
        raise ApplyError(
            f"{', '.join(repr(s) for s in unknown)}: no such service in {env} "
            f"(known: {', '.join(names) or 'none'}); check --service/--retry"
        )


def _release_of(state: EnvState, service: str) -> str | None:
    current = state.services.get(service)
    return current.release.id if current and current.release else None


def _rolls_out(config: Config, env: str, plans: list[ServicePlan]) -> bool:
    """An environment rolls out when its services have a platform."""
    return any(
        s.config is not None and s.config.platform for s in plans if s.action != "delete"
    ) or any(s.action == "delete" for s in plans)


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _commit_release(
    ws: Workspace,
    env: str,
    options: ApplyOptions,
    run_id: str,
    log: _RunLog,
    reporter: Reporter,
    resolved: dict[str, ResolvedImage],
    caught_up: bool = False,
) -> tuple[Plan, str | None, EnvState]:
    """Plan, build, commit and push; on a rejected push, fetch, re-plan and retry."""
    config = ws.config
    repo = ws.deploy_repo
    announced = caught_up  # the catch-up showed the plan already
    for attempt in range(1, MAX_PUSH_ATTEMPTS + 1):
        head = repo.sync()
        state = _state_at(repo, env, head)
        plan = _plan(ws, env, state, head, options, resolved)
        pending = [s for s in plan.services if _needs_build(s)]
        if pending:
            if not options.build:
                names = ", ".join(s.service for s in pending)
                raise ApplyError(
                    f"{names}: the image must be built first (its source or Dockerfile inputs "
                    "changed); run without --no-build, or first "
                    + " and ".join(f"`configcenter build {env} {s.service}`" for s in pending)
                )
            from configcenter.usecases.images import build_images

            # Not "building": an image with these inputs may already be on the registry.
            log(
                f"looking up {len(pending)} image(s) by their inputs (built only if missing): "
                + ", ".join(s.service for s in pending)
            )
            resolved.update(
                build_images(config, pending, ws.redactor, log.build_line, jobs=options.jobs)
            )
            plan = _plan(ws, env, state, head, options, resolved)
        # A service whose platform changed is committed (its state records the platform).
        plan = converge(plan, state, {}, only=options.services).plan
        if not announced:
            reporter.plan_ready(plan)
            announced = True
        if not plan.changes:
            log(f"{env}: nothing more to commit" if caught_up else f"{env}: nothing to do")
            return plan, None, state
        override = _guard_config_commit(ws, env, state, plan, options)
        if options.rollout and attempt == 1:
            _preflight(ws, env, plan.changes, log)
        new_state, changes = _changes(env, plan, state, run_id, options.rollout, config.commit)
        message = _message(
            env,
            plan,
            new_state,
            run_id,
            config.commit,
            override,
            skip_verify=options.rollout and options.skip_verify,
        )
        sha = repo.commit(changes, message, parent=head)
        if sha is None:
            return plan, None, state
        crash_point("apply:before-push")
        if _push(repo, sha, head):
            crash_point("apply:after-push")
            log(f"{env}: committed {sha[:10]} and pushed ({len(plan.changes)} service(s))")
            return plan, sha, new_state
        delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
        log(f"push rejected (attempt {attempt}): the deploy repo moved; re-planning")
        time.sleep(delay)  # backoff before retrying against the new remote head
    raise ApplyError(
        f"gave up after {MAX_PUSH_ATTEMPTS} attempts: the deploy repo kept moving under us; "
        "nothing was lost, run apply again"
    )


# -- catching up with the platform -------------------------------------------------------------


def _catch_up(
    ws: Workspace,
    env: str,
    options: ApplyOptions,
    resolved: Mapping[str, ResolvedImage],
    log: _RunLog,
    reporter: Reporter,
) -> tuple[list[ServiceResult], Plan | None]:
    """Make the platform run what the deploy repo already says, before committing more.

    Observes every platform of the environment (one listing per kind), then: rolls
    out a committed release that is not live, watches and records a live release
    whose outcome was never recorded, deletes what runs of a service the
    environment no longer has. Returns the results and the plan it showed, if any.
    """
    from configcenter.usecases.observe import ObserveError, env_platforms, observe_env

    repo = ws.deploy_repo
    with repo.lock():
        head = repo.sync()
    state = _state_at(repo, env, head)
    if not env_platforms(ws.config, env, state):
        return [], None
    try:
        live = observe_env(ws, env, state, log)
    except ObserveError as exc:
        raise ApplyError(
            f"{exc}; nothing was committed or changed (fix the platform settings or "
            "connection, or use --no-rollout to commit only)"
        ) from None
    plan = _plan(ws, env, state, head, options, resolved)
    _guard_config_commit(ws, env, state, plan, options)  # before anything is done
    converged = converge(plan, state, live, only=options.services)
    steps = converged.catch_up()
    if not steps:
        return [], None
    reporter.plan_ready(converged.plan)
    return _run_steps(ws, env, state, steps, log, reporter, options), converged.plan


def _run_steps(
    ws: Workspace,
    env: str,
    state: EnvState,
    steps: list[Step],
    log: _RunLog,
    reporter: Reporter,
    options: ApplyOptions,
) -> list[ServiceResult]:
    config = ws.config
    environment = config.environment(env)
    timeout = rollout_timeout(config, env)
    outcomes: dict[str, _Outcome] = {}
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
            outcome = _deploy_one(
                ws,
                env,
                step.service,
                current,
                timeout,
                log,
                reporter,
                options.force,
                options.skip_verify,
            )
            outcomes[step.service] = outcome
            results.append(outcome.result)
            if outcome.result.outcome in ("failed", "rolled_back"):
                failed.add(step.service)
    finally:
        _record(ws, env, outcomes, log)
    return results


def _prune_service(ws: Workspace, env: str, step: Step, log: _RunLog) -> ServiceResult:
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
    log: _RunLog,
    reporter: Reporter,
) -> _Outcome | None:
    """Wait for a live release whose outcome was never recorded, and record it (no rollback:
    the release this apply commits next replaces it either way)."""
    release = current.release
    assert release is not None and current.platform
    platform = open_platform(ws.config, env, current.platform, ws.redactor)
    files = _files_of(ws.deploy_repo, env, service, current)
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
    return _Outcome(
        ServiceResult(service, "record", settled.outcome, release.id, settled.reason),
        settled.record,
        None,
    )


def _guard_config_commit(
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
    from configcenter.adapters.git_lineage import Relation, dirty_paths, relation

    dirty = dirty_paths(config.root)
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise ApplyError(
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
            known[applied] = relation(config.root, applied, current)
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
    raise ApplyError(
        f"{what}. Nothing was changed. `git pull` to apply the newest config; "
        + " or ".join(f"`configcenter rollback {env} {name}`" for name in sorted(found))
        + " to go back to an earlier release on purpose; "
        "or `apply --allow-stale-config` to apply this commit anyway (recorded in the "
        "deploy repo commit)"
    )


def _preflight(ws: Workspace, env: str, changes: list[ServicePlan], log: _RunLog) -> None:
    """Reach every platform the release will roll out to before committing anything.

    A missing kubeconfig context or an unreachable Marathon is a setup problem, not a
    failed release: it must not leave a commit behind that later plans call blocked.
    """
    from configcenter.usecases.stages import check_plan

    try:
        check_plan(ws.config, changes)  # stages the platform cannot run (hooks:, verify:)
    except ValueError as exc:
        raise ApplyError(f"{exc}; nothing was committed") from None
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
            raise ApplyError(
                f"platform '{name}' for {env} cannot be reached: {ws.redactor.redact(str(exc))}; "
                "nothing was committed (fix the platform settings or connection, or use "
                "--no-rollout to commit only)"
            ) from None
        log(f"{env}: platform {name} reachable")


def _push(repo: DeployRepo, sha: str, parent: str | None) -> bool:
    """Push `sha`; False when we lost a race to another writer, so the caller re-plans.

    A concurrent push can also fail the remote's ref update itself ("cannot lock ref
    ... is at X but expected Y") instead of being refused as non-fast-forward. Either
    way the branch moved under us: when the remote is no longer at our parent, the
    failure is a lost race, not an error.
    """
    try:
        return repo.push(sha)
    except DeployRepoError:
        try:
            now = repo.sync()
        except DeployRepoError:
            now = parent
        if now == sha:  # it landed after all
            return True
        if now != parent:
            return False
        raise


def _needs_build(plan: ServicePlan) -> bool:
    from configcenter.usecases.images import needs_build

    return needs_build(plan)


def _plan(
    ws: Workspace,
    env: str,
    state: EnvState,
    head: str | None,
    options: ApplyOptions,
    resolved: Mapping[str, ResolvedImage],
) -> Plan:
    from configcenter.usecases.secret_check import secret_checker

    previous = PreviousFiles(ws.deploy_repo, head) if head else _no_file
    return make_plan(
        ws.config,
        env,
        state,
        ws.renderer,
        previous,
        only=options.services,
        retry=options.retry,
        resolved_images=resolved,
        secret_check=secret_checker(ws, env, previous),
    )


def _no_file(path: str) -> bytes | None:
    return None


def _state_at(repo: DeployRepo, env: str, rev: str | None) -> EnvState:
    return read_env_state(repo, env, rev)


def _changes(
    env: str,
    plan: Plan,
    state: EnvState,
    run_id: str,
    rolls_out: bool,
    config_commit: str | None = None,
) -> tuple[EnvState, dict[str, bytes | None]]:
    now = _now()
    new_state = EnvState(env, dict(state.services), config_commit or state.config_commit)
    changes: dict[str, bytes | None] = {}
    for sp in plan.changes:
        changes.update(delete_prefix(f"{env}/{sp.service}"))
        if sp.action == "delete":
            new_state.services.pop(sp.service, None)
            continue
        assert sp.files is not None and sp.config is not None and sp.image is not None
        for name, data in sp.files.items():
            changes[f"{env}/{sp.service}/{name}"] = data
        release = Release(
            id=release_id(sp.service, run_id),
            outcome="committed",
            at=now,
            run=run_id,
            template_tag=sp.config.template.tag,
            image=sp.image.ref,
            values_digest=sp.values_digest,
            rendered_digest=sp.rendered_digest,
            inputs_digest=sp.inputs_digest,
            secrets_generation=sp.secrets_generation,
        )
        previous = sp.previous
        new_state.services[sp.service] = service_record(
            sp,
            release,
            # Never rolled out: the newest committed release is the last good one.
            last_good=release
            if not (rolls_out and sp.config.platform)
            else (previous.last_good if previous else None),
            last_failed=previous.last_failed if previous else None,
            config_commit=config_commit,
            stages=_stages_record(sp),
        )
    changes.update(new_state.changes(state))  # only the records that changed
    return new_state, changes


def _stages_record(sp: ServicePlan) -> dict[str, object]:
    """The release's stages as its template declares them (`configcenter.core.stages`)."""
    from configcenter.core.stages import template_stages

    assert sp.config is not None
    template = sp.config.template
    stages = template_stages(template.doc.data or {}, template.outputs, template.doc.source)
    return stages.to_record()


def release_id(service: str, run_id: str) -> str:
    """Short, sortable, unique per run: api-20261123.044600-3f4e82 (time and run suffix)."""
    digits = re.sub(r"\D", "", run_id[: run_id.find("Z")] if "Z" in run_id else run_id)
    stamp = f"{digits[:8]}.{digits[8:14]}" if len(digits) >= 14 else digits
    return f"{service}-{stamp}-{run_id[-6:]}"


def _message(
    env: str,
    plan: Plan,
    state: EnvState,
    run_id: str,
    config_commit: str | None,
    override: str | None = None,
    *,
    skip_verify: bool = False,
) -> str:
    parts = [
        f"{s.service} ({s.action}" + (f": {', '.join(s.reasons)}" if s.reasons else "") + ")"
        for s in plan.changes
    ]
    subject = f"apply {env}: " + ", ".join(parts)
    if len(subject) > 200:
        subject = f"apply {env}: {len(plan.changes)} services"
    body = "\n".join(
        f"- {s.service}: {s.action}"
        + (f" [{', '.join(s.reasons)}]" if s.reasons else "")
        + (
            f" template {s.template_to}"
            if s.template_to and s.template_from in (None, s.template_to)
            else f" template {s.template_from} -> {s.template_to}"
            if s.template_to
            else ""
        )
        + (f", image {s.image_to}" if s.image_to and "image" in s.reasons else "")
        for s in plan.changes
    )
    trailers = [("Configcenter-Env", env), ("Configcenter-Run", run_id)]
    if config_commit:
        trailers.append(("Configcenter-Config-Commit", config_commit))
    if override:
        trailers.append(("Configcenter-Override", override))
    if skip_verify:  # apply --skip-verify: these releases were not verified after rollout
        trailers.append(("Configcenter-Skip-Verify", "true"))
    for s in plan.changes:
        release = state.services.get(s.service)
        if release and release.release:
            trailers.append(("Configcenter-Release", f"{s.service} {release.release.id}"))
    return compose_message(subject, body, trailers)


# -- rollout -----------------------------------------------------------------------------------


@dataclass
class _Outcome:
    """How one service's release ended, and what the state record should become."""

    result: ServiceResult
    state: ServiceState | None  # None: remove the service from the state
    files: dict[str, bytes] | None  # None: leave the files as they are


def rollout_timeout(config: Config, env: str) -> float:
    if env not in config.environments:  # loaded without its environment files
        return DEFAULT_ROLLOUT_TIMEOUT
    raw = config.environment(env).rollout_timeout
    if not raw:
        return DEFAULT_ROLLOUT_TIMEOUT
    return parse_duration(raw)  # validated at load time, by the same parser


def _rollout(
    ws: Workspace,
    env: str,
    state: EnvState,
    sha: str,
    committed: list[ServicePlan],
    options: ApplyOptions,
    log: _RunLog,
    reporter: Reporter,
) -> list[ServiceResult]:
    config = ws.config
    environment = config.environment(env)
    deps = {
        name: [d for d in svc.template.depends_on if d in environment.services]
        for name, svc in environment.services.items()
    }
    timeout = rollout_timeout(config, env)
    outcomes: dict[str, _Outcome] = {}
    blocked: set[str] = set()
    for sp in [s for s in committed if s.action == "delete"]:
        previous = sp.previous
        result = ServiceResult(sp.service, "delete", "committed")
        if previous and previous.platform:
            try:
                open_platform(config, env, previous.platform, ws.redactor).delete(sp.service)
                log(f"{sp.service}: deleted from {previous.platform}")
            except PLATFORM_FAILURES as exc:
                reason = ws.redactor.redact(f"{type(exc).__name__}: {exc}")
                log(f"{sp.service}: could not delete it from {previous.platform} ({reason})")
                result = ServiceResult(sp.service, "delete", "failed", reason=reason)
        outcomes[sp.service] = _Outcome(result, None, None)
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
                    outcomes[s.service] = _Outcome(
                        ServiceResult(
                            s.service,
                            s.action,
                            "skipped",
                            current.release.id if current.release else None,
                            reason,
                        ),
                        restored,
                        _files_of(ws.deploy_repo, env, s.service, restored, f"{sha}^")
                        if restored
                        else {},
                    )
                    done.add(s.service)
            with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
                futures = {
                    s.service: pool.submit(
                        _deploy_one,
                        ws,
                        env,
                        s.service,
                        state.services[s.service],
                        timeout,
                        log,
                        reporter,
                        options.force,
                        options.skip_verify,
                    )
                    for s in runnable
                }
                for name, future in futures.items():
                    outcome = future.result()
                    outcomes[name] = outcome
                    done.add(name)
                    if outcome.result.outcome in ("failed", "rolled_back"):
                        blocked |= dependents_of(deps, name)
    finally:
        # Whatever happens, what did finish is recorded (and restored files written).
        _record(ws, env, outcomes, log)
    results = {name: outcome.result for name, outcome in outcomes.items()}
    for s in unplaced:
        results[s.service] = ServiceResult(
            s.service, s.action, "committed", _release_of(state, s.service)
        )
    return [results[s.service] for s in committed if s.service in results]


def _files_of(
    repo: DeployRepo, env: str, service: str, snapshot: ServiceState, rev: str | None = None
) -> dict[str, bytes]:
    prefix = f"{env}/{service}/"
    found = repo.read_many([prefix + name for name in snapshot.files], rev)
    # Output names keep their folders: dev/api/conf/app.conf is the output conf/app.conf.
    return {path[len(prefix) :]: data for path, data in found.items()}


def _deploy_one(
    ws: Workspace,
    env: str,
    service: str,
    current: ServiceState,
    timeout: float,
    log: _RunLog,
    reporter: Reporter,
    force: bool = False,
    skip_verify: bool = False,
) -> _Outcome:
    """Roll out `current` through its stages; on failure roll back to its last good release.

    `force` lets a platform cancel a deployment that holds the app (Marathon's 409).
    Pre-deploy jobs, verification and `skip_verify` are `usecases.stages`'.
    """
    from configcenter.usecases import stages

    config = ws.config
    repo = ws.deploy_repo
    release = current.release
    assert release is not None
    platform = open_platform(config, env, current.platform or "", ws.redactor, force=force)
    files = _files_of(repo, env, service, current)
    item = deployable(env, service, current, files, release.id)
    run = stages.run_release(
        platform,
        item,
        stages.release_stages(current),
        timeout=timeout,
        skip_verify=skip_verify,
        log=log,
        apply_and_wait=lambda: _apply_and_wait(platform, item, timeout, service, log, reporter),
    )
    status = run.status
    reason = failure_reason(status.reason, status.message)
    decision = policy.after_rollout(current, status.state == "healthy", reason, applied=run.applied)
    if run.applied and status.state == "healthy":
        _prune_verified(platform, item, service, log)
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
    back = _apply_and_wait(platform, restored, timeout, service, log, reporter)
    why = failure_reason(back.reason, back.message)
    if back.state == "healthy":
        _prune_verified(platform, restored, service, log)
    else:
        log(f"{service}: rollback to {decision.to.id} did not become healthy ({why})")
    settled = policy.after_going_back(current, decision, snapshot, back.state == "healthy", why)
    if settled.outcome == "rolled_back":
        crash_point("rollout:rolled-back")
    return _settled(service, settled, good_files)


def _settled(
    service: str, settled: policy.Settled, restored_files: dict[str, bytes] | None
) -> _Outcome:
    """The outcome of a deploy as the release policy settled it (files only when restored)."""
    return _Outcome(
        ServiceResult(service, "deploy", settled.outcome, settled.release, settled.reason),
        settled.record,
        restored_files if settled.restored else None,
    )


def _apply_and_wait(
    platform: Platform,
    item: Deployable,
    timeout: float,
    service: str,
    log: _RunLog,
    reporter: Reporter,
) -> RolloutStatus:
    try:
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


def _prune_verified(platform: Platform, item: Deployable, service: str, log: _RunLog) -> None:
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


def release_snapshot(
    repo: DeployRepo, env: str, service: str, release_id: str
) -> tuple[ServiceState, dict[str, bytes]]:
    """The state record and files a release was committed with, from deploy repo history."""
    commit = find_release_commit(repo, env, service, release_id)
    state = _state_at(repo, env, commit.sha)
    snapshot = state.services.get(service)
    if snapshot is None:
        raise ApplyError(
            f"release {release_id}: commit {commit.sha[:10]} has no state for {service}"
        )
    return snapshot, _files_of(repo, env, service, snapshot, commit.sha)


def find_release_commit(repo: DeployRepo, env: str, service: str, release_id: str) -> CommitInfo:
    for info in repo.log(prefix=f"{env}/", limit=None, grep=release_id):
        if f"{service} {release_id}" in info.trailer_values("Configcenter-Release"):
            return info
    raise ApplyError(
        f"release {release_id} of {service} is not in the deploy repo's history of {env}; "
        f"`configcenter history {env} --service {service}` lists releases"
    )


def _record(ws: Workspace, env: str, outcomes: Mapping[str, _Outcome], log: _RunLog) -> None:
    """Commit the rollout's outcome (state, and restored files on rollback), retrying on races."""
    repo = ws.deploy_repo
    if not outcomes:
        return
    with repo.lock():
        _record_locked(repo, env, outcomes, log.run_id)


def _record_locked(
    repo: DeployRepo, env: str, outcomes: Mapping[str, _Outcome], run_id: str | None
) -> None:
    for attempt in range(1, MAX_PUSH_ATTEMPTS + 1):
        head = repo.sync()
        state = _state_at(repo, env, head)
        changes: dict[str, bytes | None] = {}
        parts: list[str] = []
        trailers: list[tuple[str, str]] = [("Configcenter-Env", env)]
        if run_id is not None:
            trailers.append(("Configcenter-Run", run_id))
        for service, outcome in outcomes.items():
            parts.append(f"{service} {outcome.result.outcome}")
            if outcome.state is None:
                state.services.pop(service, None)
            else:
                state.services[service] = outcome.state
                if outcome.state.release:
                    trailers.append(
                        ("Configcenter-Release", f"{service} {outcome.state.release.id}")
                    )
            if outcome.files is not None:
                changes.update(delete_prefix(f"{env}/{service}"))
                for name, data in outcome.files.items():
                    changes[f"{env}/{service}/{name}"] = data
        changes.update(state.changes())
        kind = "rollback" if any(o.files is not None for o in outcomes.values()) else "record"
        message = compose_message(f"{kind} {env}: " + ", ".join(parts), "", trailers)
        sha = repo.commit(changes, message, parent=head)
        if sha is None or _push(repo, sha, head):
            return
        time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise ApplyError("could not record the rollout outcome: the deploy repo kept moving")


# -- deploy and rollback -----------------------------------------------------------------------


def _current(ws: Workspace, env: str, service: str) -> tuple[EnvState, ServiceState]:
    repo = ws.deploy_repo
    head = repo.sync()
    state = _state_at(repo, env, head)
    current = state.services.get(service)
    if current is None or current.release is None:
        raise ApplyError(
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
            raise ApplyError(
                f"{service} has no platform in {env}: set `platform:` for the environment or "
                "the service in the config repo, then `configcenter apply` (or deploy again)"
            )
        current = replace(current, platform=wanted)
    assert current.release is not None
    if dry_run:
        platform = open_platform(ws.config, env, current.platform or "", ws.redactor)
        files = _files_of(ws.deploy_repo, env, service, current)
        platform.apply(deployable(env, service, current, files, current.release.id), dry_run=True)
        return ServiceResult(service, "deploy", "dry-run", current.release.id)
    run = ws.start_run("deploy", env, [service], trigger, actor or default_actor())
    log = _RunLog(ws, run.id, reporter)
    try:
        outcome = _deploy_one(
            ws, env, service, current, rollout_timeout(ws.config, env), log, reporter, force
        )
        _record(ws, env, {service: outcome}, log)
    except BaseException as exc:
        ws.run_store.finish(run.id, "failed", {"error": ws.redactor.redact(str(exc))})
        raise
    ws.run_store.finish(
        run.id, _run_outcome(outcome.result.outcome), {"result": outcome.result.__dict__}
    )
    return outcome.result


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
) -> ServiceResult:
    """Restore the last good (or named) release's files and state as a new commit.

    Needs only the deploy repo (and configcenter.yaml for the platforms): a config
    repo whose environment files do not load is reported and does not block it.
    """
    reporter = reporter or Reporter()
    ws.without_environments_if_broken(reporter.message)
    check_env(ws.config, env)
    repo = ws.deploy_repo
    _, current = _current(ws, env, service)
    assert current.release is not None
    target = to or _previous_good(ws, env, service, current)
    if target is None:
        raise ApplyError(
            f"{service} in {env} has no earlier good release to roll back to "
            f"(`configcenter history {env} --service {service}` lists its releases)"
        )
    if target == current.release.id:
        raise ApplyError(
            f"{service} in {env} already runs {target}; name an older one with --to "
            f"(see `configcenter history {env} --service {service}`)"
        )
    snapshot, files = release_snapshot(repo, env, service, target)
    if dry_run:
        return ServiceResult(service, "rollback", "dry-run", target)
    run = ws.start_run("rollback", env, [service], trigger, actor or default_actor())
    log = _RunLog(ws, run.id, reporter)
    try:
        result_outcome = "committed"
        if rollout and snapshot.platform:
            platform = open_platform(ws.config, env, snapshot.platform, ws.redactor)
            item = deployable(env, service, snapshot, files, target)
            status = _apply_and_wait(
                platform, item, rollout_timeout(ws.config, env), service, log, reporter
            )
            if status.state != "healthy":
                raise ApplyError(
                    f"rollback of {service} to {target} did not become healthy: "
                    f"{status.reason} {status.message}".strip()
                )
            _prune_verified(platform, item, service, log)
            result_outcome = "healthy"
        new = policy.rolled_back_to(
            current,
            snapshot,
            target,
            verified=result_outcome == "healthy",
            by=actor or default_actor(),
            at=_now(),
        )
        log(f"{service}: rolled back to {target}")
        _record(
            ws,
            env,
            {
                service: _Outcome(
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
