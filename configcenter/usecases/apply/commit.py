"""Plan, build what changed, and commit the environment's new releases as one commit
(pushed, re-planned and retried when the deploy repo moved)."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from configcenter.core.converge import converge
from configcenter.core.plan import (
    Plan,
    ResolvedImage,
    ServicePlan,
    make_plan,
    service_record,
)
from configcenter.core.state import EnvState, Release
from configcenter.crashpoints import crash_point
from configcenter.ports.deploy_repo import (
    compose_message,
    delete_prefix,
)
from configcenter.usecases.apply.guard import (
    guard_config_commit,
    preflight,
    refuse_unresolved_secrets,
    unresolved_secrets,
)
from configcenter.usecases.apply.records import MAX_PUSH_ATTEMPTS, push
from configcenter.usecases.apply.report import (
    ApplyOptions,
    ApplyRefused,
    ApplyUnreachable,
    Reporter,
    RunLog,
)
from configcenter.usecases.workspace import PreviousFiles, Workspace


def commit_release(
    ws: Workspace,
    env: str,
    options: ApplyOptions,
    run_id: str,
    log: RunLog,
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
        # Read through the workspace: its records kept by content are parsed once.
        state = ws.read_state(env, head) if head is not None else EnvState(env)
        plan = plan_at(ws, env, state, head, options, resolved)
        pending = [s for s in plan.services if _needs_build(s)]
        checked: set[_SecretsKey] = set()
        reached = False  # the platforms were reached (preflight) before the build
        if pending:
            if not options.build:
                names = ", ".join(s.service for s in pending)
                raise ApplyRefused(
                    f"{names}: the image must be built first (its source or Dockerfile inputs "
                    "changed); run without --no-build, or first "
                    + " and ".join(f"`configcenter build {env} {s.service}`" for s in pending)
                )
            # Every refusal comes before the build: a refused release's image is never built
            # or pushed (a dirty or stale config, an unreachable platform, a secret that
            # cannot be resolved).
            would = converge(plan, state, {}, only=options.services).plan
            guard_config_commit(ws, env, state, would, options)
            if options.rollout and attempt == 1:
                preflight(ws, env, would.changes, log, options.force)
                reached = True
            checked = _refuse_unresolved(
                ws, env, would.changes, log, checked, "nothing was built, committed or changed"
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
            plan = plan_at(ws, env, state, head, options, resolved)
        # A service whose platform changed is committed (its state records the platform).
        plan = converge(plan, state, {}, only=options.services).plan
        if not announced:
            reporter.plan_ready(plan)
            announced = True
        if not plan.changes:
            log(f"{env}: nothing more to commit" if caught_up else f"{env}: nothing to do")
            return plan, None, state
        override = guard_config_commit(ws, env, state, plan, options)
        if options.rollout and attempt == 1 and not reached:
            preflight(ws, env, plan.changes, log, options.force)
        # Every apply, rolled out now or later (--no-rollout: the next apply catches up),
        # refuses releases whose secrets cannot be resolved before committing them.
        _refuse_unresolved(ws, env, plan.changes, log, checked)
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
        if push(repo, sha, head):
            crash_point("apply:after-push")
            log(f"{env}: committed {sha[:10]} and pushed ({len(plan.changes)} service(s))")
            return plan, sha, new_state
        delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
        log(f"push rejected (attempt {attempt}): the deploy repo moved; re-planning")
        time.sleep(delay)  # backoff before retrying against the new remote head
    raise ApplyUnreachable(
        f"gave up after {MAX_PUSH_ATTEMPTS} attempts: the deploy repo kept moving under us; "
        "nothing was lost, run apply again"
    )


#: What a release's secrets check depends on: service, platform, generation, references.
_SecretsKey = tuple[str, str | None, int, tuple[tuple[str, str], ...]]


def _secrets_key(sp: ServicePlan) -> _SecretsKey:
    from configcenter.core.plan import secret_refs

    if sp.config is None:  # a delete: it needs no secret
        return sp.service, None, sp.secrets_generation, ()
    refs = tuple(sorted(secret_refs(sp.consumed_values).items()))
    return sp.service, sp.config.platform, sp.secrets_generation, refs


def _refuse_unresolved(
    ws: Workspace,
    env: str,
    changes: list[ServicePlan],
    log: RunLog,
    checked: set[_SecretsKey],
    what: str = "nothing was committed or changed",
) -> set[_SecretsKey]:
    """Refuse the releases whose secrets cannot be resolved (`unresolved_secrets`), skipping
    those `checked` already passed with the same references and generation (the check
    before the build); returns the keys of every release checked now or before."""
    todo = [sp for sp in changes if _secrets_key(sp) not in checked]
    refuse_unresolved_secrets(unresolved_secrets(ws, env, todo), log, what)
    return set(checked) | {_secrets_key(sp) for sp in todo}


def plan_at(
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
        digests=ws.plan_digests(env),
    )


def _no_file(path: str) -> bytes | None:
    return None


def _needs_build(plan: ServicePlan) -> bool:
    from configcenter.usecases.images import needs_build

    return needs_build(plan)


def _changes(
    env: str,
    plan: Plan,
    state: EnvState,
    run_id: str,
    rolls_out: bool,
    config_commit: str | None = None,
) -> tuple[EnvState, dict[str, bytes | None]]:
    now = utc_now()
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
        scaled = _scaled_release(sp)
        if scaled is not None:
            release.scale_of, release.scale_of_digest = scaled
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


def _scaled_release(sp: ServicePlan) -> tuple[str, str] | None:
    """When only the replicas change: the release this one scales (id, config digest), the
    first of a run of scales, so every release of the run carries the same workload."""
    from configcenter.usecases.platforms import config_digest, scale_of

    previous = sp.previous
    if sp.reasons != ["replicas"] or previous is None or previous.release is None:
        return None
    if previous.release.outcome not in ("healthy", "committed"):
        return None  # what runs is not known to be that release: roll the new one out whole
    return scale_of(previous, previous.release.id) or (
        previous.release.id,
        config_digest(previous),
    )


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


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
