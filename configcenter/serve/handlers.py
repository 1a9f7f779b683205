"""From deliveries to jobs, and from jobs to use-case calls.

The request side (`gitlab_job`, `registry_jobs`) only parses and names the
job, so a webhook is answered in milliseconds; the worker side (`run_job`)
does the slow part: fetch the config repo, decide environments, call
`apply_env` or `reconcile` (the CLI's own functions) under the env's lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from configcenter.ports.jobstore import Job
from configcenter.usecases.image_push import services_for_pushed_image
from configcenter.usecases.webhooks import GitLabEvent, WebhookError

if TYPE_CHECKING:
    from configcenter.serve.engine import Engine
    from configcenter.usecases.apply import ApplyResult

REGISTRY_MEDIA_TYPES = (
    "application/vnd.docker.distribution.events.v1+json",
    "application/vnd.docker.distribution.events.v2+json",
    "application/json",
)

JobOutcome = tuple[str, list[str], str]


# -- deliveries -> jobs ------------------------------------------------------------------------


def gitlab_job(event: GitLabEvent, headers: Mapping[str, str], body: bytes) -> Job:
    """The job for one GitLab delivery, named so that a second delivery of it is a duplicate.

    GitLab's `Idempotency-Key` stays the same across retries of one delivery and
    names the job. Without it (GitLab before 17.4, a hand-made resend) the event's
    natural key names the job: push = project, ref, before and after; merge =
    project, MR iid and merge commit; events with neither (MR updates, which apply
    nothing) a hash of the body. The job keeps that event key too (`event_key`),
    so a retry that carries another subset of the delivery's identifiers (the key
    missing now, or there only now) is the same job. `X-Gitlab-Webhook-UUID` is new
    for every request and `X-Gitlab-Event-UUID` for every resend (and shared by
    every hook one trigger fires), so neither names a job.
    """
    natural = "gitlab:" + (event.natural_key or "body:" + hashlib.sha256(body).hexdigest())
    key = f"gitlab:{event.idempotency_key}" if event.idempotency_key else natural
    payload: dict[str, Any] = {
        "project": event.project,
        "project_id": event.project_id,
        "event_uuid": event.delivery_id,
        "idempotency_key": event.idempotency_key,
        "actor": _gitlab_user(body),
        "user": event.user,
    }
    if event.kind == "push":
        payload.update(ref=event.ref, before=event.before, after=event.after)
    else:
        payload.update(
            iid=event.iid,
            action=event.action,
            state=event.state,
            source_branch=event.source_branch,
            target_branch=event.target_branch,
            merged=event.merged,
            merge_commit_sha=event.merge_commit_sha,
            last_commit=event.last_commit,
        )
    return Job(
        id=key,
        source="gitlab",
        kind=event.kind,
        payload=payload,
        event_key=natural,
        keyed=bool(event.idempotency_key),
    )


def _gitlab_user(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return "gitlab"
    user = data.get("user_username") or (data.get("user") or {}).get("username")
    return f"gitlab:{user}" if isinstance(user, str) and user else "gitlab"


def registry_jobs(body: bytes) -> list[Job]:
    """One job per manifest push in a Distribution notification envelope."""
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookError(
            f"registry notification is not JSON ({exc}): point the registry's "
            "notifications endpoint at /hooks/registry"
        ) from None
    events = envelope.get("events") if isinstance(envelope, dict) else None
    if not isinstance(events, list):
        raise WebhookError(
            "registry notification has no 'events' list: this is not a Distribution "
            "notification envelope"
        )
    jobs = []
    for index, event in enumerate(events):
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            raise WebhookError(f"registry notification event {index} has no string 'id'")
        target = event.get("target") or {}
        media = str(target.get("mediaType") or "")
        is_manifest = "manifest" in media or "image.index" in media or bool(target.get("tag"))
        if event.get("action") != "push" or not is_manifest:
            continue  # layer pushes and pulls: nothing to deploy
        repository = target.get("repository")
        if not isinstance(repository, str) or not repository:
            raise WebhookError(
                f"registry notification event {event['id']} has no target.repository"
            )
        request = event.get("request") or {}
        jobs.append(
            Job(
                id=f"registry:{event['id']}",
                source="registry",
                kind="image",
                payload={
                    "repository": repository,
                    "tag": target.get("tag"),
                    "digest": target.get("digest"),
                    "host": request.get("host"),
                    "actor": (event.get("actor") or {}).get("name") or "registry",
                },
            )
        )
    return jobs


# -- jobs -> use cases -------------------------------------------------------------------------


def run_job(engine: Engine, job: Job) -> JobOutcome:
    if job.kind == "reconcile":
        return _reconcile(engine, job)
    if job.kind == "notify":
        if engine.notifier is None:
            return "ignored", [], "serve.notifications is not set"
        return engine.notifier.send(job)
    if job.kind == "poll":
        from configcenter.serve.poll import run_poll

        return run_poll(engine, job, run_job)
    if job.source == "console":
        from configcenter.serve.actions import run_action

        return run_action(engine, job)
    if job.source == "gitlab":
        return _via_promotion(engine, job)
    if job.source == "registry":
        return _image(engine, job)
    return "ignored", [], f"no handler for {job.source} {job.kind} jobs"


def _reconcile(engine: Engine, job: Job) -> JobOutcome:
    from configcenter.usecases.reconcile import reconcile

    env = job.env
    heal = bool(job.payload.get("heal"))
    started = time.monotonic()
    with engine.env_lock(env):
        # Under the lock, so a heal puts back the newest config, never an older one.
        engine.update_config_repo()
        ws = engine.fresh_workspace()
        try:
            report = reconcile(ws, env, heal=heal, trigger="schedule", actor=engine.identity)
        except Exception:
            engine.record_run("reconcile", "failed", time.monotonic() - started)
            raise
    engine.record_run("reconcile", report.outcome, time.monotonic() - started)
    runs = [report.run_id] if report.run_id else []
    note = f"{len(report.drifts)} drift(s)" + (f", healed {len(report.healed)}" if heal else "")
    return ("failed" if report.outcome == "failed" else "done"), runs, note


def _image(engine: Engine, job: Job) -> JobOutcome:
    repository = str(job.payload["repository"])
    tag = job.payload.get("tag")
    ws = engine.fresh_workspace()
    targets = services_for_pushed_image(
        ws.config, repository, tag if isinstance(tag, str) else None
    )
    if not targets:
        return "ignored", [], f"no auto_apply environment runs {repository}"
    runs: list[str] = []
    notes: list[str] = []
    state = "done"
    for env, services in targets.items():
        env_runs, env_state, env_notes = _apply_envs(
            engine, ws, [env], services, str(job.payload.get("actor")), job
        )
        runs += env_runs
        notes += env_notes
        state = "failed" if env_state == "failed" else state
    return state, runs, "; ".join(notes)


def _apply_envs(
    engine: Engine,
    ws: Any,
    envs: list[str],
    services: list[str] | None,
    actor: str,
    job: Job,
) -> tuple[list[str], str, list[str]]:
    from configcenter.usecases.apply import ApplyOptions, apply_env

    runs: list[str] = []
    notes: list[str] = []
    state = "done"
    for env in envs:
        started = time.monotonic()
        options = ApplyOptions(
            services=services, trigger=f"webhook:{job.source}", actor=actor or job.source
        )
        with engine.env_lock(env):
            try:
                # Fetch again under the lock: another replica may have applied a newer
                # push while this job waited; the last push must win.
                engine.update_config_repo()
                result = apply_env(engine.fresh_workspace(), env, options)
            except Exception as exc:
                engine.record_run("apply", "failed", time.monotonic() - started)
                notes.append(f"{env}: failed: {engine.redactor.redact(str(exc))}")
                state = "failed"
                continue
        engine.record_run("apply", result.outcome, time.monotonic() - started)
        if result.run_id:
            runs.append(result.run_id)
        notes.append(f"{env}: {said(result)}")
        if result.outcome in ("failed", "rolled_back"):
            state = "failed"
    return runs, state, notes


def said(result: ApplyResult) -> str:
    """An apply's outcome as a job's note says it, in the runs list's words: an apply that
    committed and rolled out nothing is "no changes" (or "blocked"), not "succeeded"."""
    outcome = str(result.outcome)
    if outcome != "succeeded" or result.commit:
        return outcome
    kinds = {str(r.outcome) for r in result.results}
    if kinds <= {"noop", "blocked", "skipped"}:
        return "blocked" if "blocked" in kinds else "no changes"
    return outcome


def _auto_apply_envs(engine: Engine) -> tuple[str, ...]:
    """The environments with `auto_apply: true`, from configcenter.yaml and `_env.yaml`."""
    config = engine.fresh_workspace(services=()).config
    return tuple(e for e in config.project.environments if config.environment(e).auto_apply)


def _event_of(job: Job) -> GitLabEvent:
    p = job.payload
    if job.kind == "push":
        return GitLabEvent(
            kind="push",
            delivery_id=p.get("event_uuid"),
            project=p.get("project"),
            project_id=p.get("project_id"),
            idempotency_key=p.get("idempotency_key"),
            user=p.get("user"),
            ref=p.get("ref"),
            before=p.get("before"),
            after=p.get("after"),
        )
    return GitLabEvent(
        kind="merge_request",
        delivery_id=p.get("event_uuid"),
        project=p.get("project"),
        project_id=p.get("project_id"),
        idempotency_key=p.get("idempotency_key"),
        user=p.get("user"),
        iid=p.get("iid"),
        action=p.get("action"),
        state=p.get("state"),
        source_branch=p.get("source_branch"),
        target_branch=p.get("target_branch"),
        merged=bool(p.get("merged")),
        merge_commit_sha=p.get("merge_commit_sha"),
        last_commit=p.get("last_commit"),
    )


def _via_promotion(engine: Engine, job: Job) -> JobOutcome:
    """Hand the event to the promotion use case, after fetching the config repo.

    It may apply any environment, so every environment's lock is held (in a
    fixed order, so two workers never deadlock) while it runs. The config repo
    is fetched and loaded only once the locks are held: a job that waited for
    them (behind another replica's apply of a newer push) applies the newest
    default branch, never the older one it would have fetched before waiting.
    """
    from configcenter.usecases.triggers import handle_gitlab_event

    # Which locks to take needs configcenter.yaml alone (every environment's files: ~1 s
    # of a push at 500 services, loaded again below after the fetch anyway).
    envs = sorted(engine.fresh_workspace(focus=()).config.project.environments)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        for env in envs:
            stack.enter_context(engine.env_lock(env))
        covered_up_to = engine.jobs.last_seq()
        note = engine.update_config_repo()
        # A push applies the auto_apply environments: which they are is in their
        # _env.yaml; only those are loaded whole (the others' files: ~0.6 s each at 500).
        focus = _auto_apply_envs(engine) if job.kind == "push" else None
        ws = engine.fresh_workspace(focus=focus)
        added = sorted(set(ws.config.project.environments) - set(envs))
        for env in added:  # a new environment came with this fetch: lock it too
            stack.enter_context(engine.env_lock(env))
        try:
            outcome = handle_gitlab_event(ws, _event_of(job), polled=job.id.startswith("poll:"))
        except Exception:
            engine.record_run("apply", "failed", time.monotonic() - started)
            raise
    elapsed = time.monotonic() - started
    reason = outcome.reason
    results = list(outcome)
    runs = outcome.runs
    for result in results:
        engine.record_run("apply", str(result.outcome), elapsed / len(results))
    if not results:
        # Nothing applied (another branch, a tag, another project): this job covers nothing.
        return "ignored", [], f"{note}; {reason or f'nothing to apply for this {job.kind} event'}"
    if job.kind == "push":
        engine.jobs.finish_covered(
            "gitlab",
            "push",
            covered_up_to,
            runs,
            f"covered by {job.id}",
            ref=str(job.payload.get("ref") or ""),
        )
    failed = any(str(r.outcome) in ("failed", "rolled_back") for r in results)
    summary = "; ".join(f"{r.env}: {said(r)}" for r in results)
    return ("failed" if failed else "done"), runs, f"{note}; {summary}"
