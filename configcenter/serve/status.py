"""What the API and the status page show: environments, the env x service matrix, runs.

Read from the same places the CLI reads: the config repo, the deploy repo's
state files, and the run store (the newest reconcile run of an env carries its
drift per service), so every replica shows the same picture.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from configcenter.core.release_policy import rolled_back_by_hand
from configcenter.core.state import Release
from configcenter.ports.runstore import Run
from configcenter.usecases.workspace import Workspace


def environments(ws: Workspace) -> list[dict[str, Any]]:
    config = ws.config
    out = []
    for env in config.project.environments:
        e = config.environment(env)
        out.append(
            {
                "name": env,
                "platform": e.platform,
                "auto_apply": e.auto_apply,
                "reconcile": {"interval": e.reconcile_interval, "heal": e.reconcile_heal},
                "services": sorted(e.services),
            }
        )
    return out


#: What a cell's `status` can be, and what it means (the page's legend and the README's).
STATUSES = {
    "healthy": "the current release rolled out and passed its health checks",
    "progressing": "a run is rolling this environment out now",
    "failed": "the newest release failed and nothing was rolled back",
    "rolled_back": "the newest release failed and the previous one was put back",
    "blocked": "the last apply refused to redeploy inputs whose release failed",
    "committed": "committed to the deploy repo, not rolled out (no platform or --no-rollout)",
    "not_deployed": "never applied to this environment",
    "unknown": "the deploy repo records an outcome this version does not know",
}
#: What a cell's `drift.state` can be.
DRIFT_STATES = ("known", "none", "unknown")
APPLY_KINDS = ("apply", "deploy", "rollback")


def last_reconcile(ws: Workspace, env: str) -> Run | None:
    runs = ws.run_store.list(env=env, kind="reconcile", limit=10)
    return next((r for r in runs if r.outcome != "running"), None)


def _blocked(ws: Workspace, env: str) -> dict[str, tuple[str, str]]:
    """Services whose newest mention in a finished apply of `env` is a refusal (blocked).

    Applies record only the services they acted on (noops are left out), so the
    newest apply that names a service decides; older ones never override it.
    """
    runs = ws.run_store.list(env=env, kind="apply", limit=20)
    seen: set[str] = set()
    out: dict[str, tuple[str, str]] = {}  # service -> (reason, the refusing run)
    for run in runs:
        if run.outcome == "running":
            continue
        results = run.details.get("results")
        for item in results if isinstance(results, list) else []:
            if not isinstance(item, dict) or str(item.get("service")) in seen:
                continue
            name = str(item.get("service"))
            seen.add(name)
            if item.get("outcome") == "blocked":
                out[name] = (str(item.get("reason") or "blocked"), run.id)
    return out


def _running(ws: Workspace, env: str) -> list[Run]:
    runs: list[Run] = []
    for kind in APPLY_KINDS:
        runs += [
            r for r in ws.run_store.list(env=env, kind=kind, limit=5) if r.outcome == "running"
        ]
    return runs


def short_digest(value: str | None) -> str | None:
    """`name@sha256:0123456789ab` for a pinned image, `sha256:0123456789ab` for a digest."""
    if not value:
        return value
    name, at, digest = value.rpartition("@")
    algo, colon, hexpart = (digest if at else value).partition(":")
    if colon and algo.startswith("sha") and len(hexpart) > 12:
        short = f"{algo}:{hexpart[:12]}"
        return f"{name}@{short}" if at else short
    return value


def _parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _drift(
    reconciled: Run | None, entry: object, release_at: str | None, deployed: bool
) -> dict[str, Any]:
    """Drift as known / none / unknown, and why it is unknown (never "in sync" by default)."""
    base: dict[str, Any] = {
        "state": "unknown",
        "status": "unknown",
        "why": None,
        "count": 0,
        "items": [],
        "checked_at": None,
        "run": None,
    }
    if not deployed:
        return {**base, "why": "not deployed: nothing to compare"}
    if reconciled is None:
        return {**base, "why": "no reconcile has run for this environment"}
    checked = reconciled.ended_at
    base.update(checked_at=checked.isoformat() if checked else None, run=reconciled.id)
    if reconciled.outcome == "failed" and not isinstance(reconciled.details.get("services"), dict):
        error = str(reconciled.details.get("error") or "the run failed")
        return {**base, "why": f"the last reconcile failed: {error[:300]}"}
    if not isinstance(entry, dict):
        return {**base, "why": "the last reconcile did not check this service"}
    released = _parse_time(release_at)
    if released is not None and checked is not None:
        when = checked if checked.tzinfo else checked.replace(tzinfo=UTC)
        if released > when:
            return {**base, "why": "the last reconcile ran before the current release"}
    drifts = entry.get("drifts") or []
    status = str(entry.get("status") or "unknown")
    base.update(status=status, count=len(drifts), items=drifts)
    if status == "in_sync" and not drifts:
        return {**base, "state": "none"}
    if status in ("drifted", "missing", "orphan") or drifts:
        return {**base, "state": "known"}
    return {**base, "why": f"the last reconcile says {status.replace('_', ' ')}"}


def services(ws: Workspace, env: str) -> list[dict[str, Any]]:
    """Per service: template tag, image, last release, status, drift."""
    config = ws.config
    if env not in config.environments:
        raise KeyError(env)
    state = ws.read_state(env)
    reconciled = last_reconcile(ws, env)
    drift_by_service: dict[str, Any] = {}
    if reconciled is not None:
        found = reconciled.details.get("services")
        if isinstance(found, dict):
            drift_by_service = found
    blocked = _blocked(ws, env)
    running = _running(ws, env)
    names = sorted(set(config.environment(env).services) | set(state.services))
    out = []
    for name in names:
        configured = config.environment(env).services.get(name)
        current = state.services.get(name)
        release = current.release if current else None
        progressing = next((r for r in running if not r.services or name in r.services), None)
        refusal = blocked.get(name) if current and current.last_failed else None
        refused = refusal[0] if refusal else None
        failure = _newer_failure(release, current.last_failed if current else None)
        status, why = _status(release.outcome if release else None, refused)
        # The run that explains the status: the apply that refused, the failed release's.
        status_run = refusal[1] if refusal else (release.run or None) if release else None
        if failure is not None and refused is None:
            # A failed rollout rolled back (or a pre-deploy job that stopped its release):
            # the record names the good release as current, the failed one as last_failed.
            status = failure.outcome
            why = f"release {failure.id} " + (
                f"failed and was rolled back to {release.id}"
                if failure.outcome == "rolled_back" and release is not None
                else "failed"
            )
            why += f": {failure.reason}" if failure.reason else ""
            status_run = failure.run or None
        if progressing is not None:
            status, why = "progressing", f"{progressing.kind} run {progressing.id} is running"
            status_run = progressing.id
        image = current.image if current else None
        out.append(
            {
                "service": name,
                "template": current.template_tag
                if current
                else (configured.template.tag if configured else None),
                "image": image,
                "image_short": short_digest(image),
                "image_digest": current.image_digest if current else None,
                "replicas": current.replicas if current else None,
                "platform": current.platform if current else None,
                "release": _release_json(release),
                "status": status,
                "status_why": why,
                "status_run": status_run,
                "health": _health(release.outcome if release else None),
                "last_failed": current.last_failed.id if current and current.last_failed else None,
                "failure": _release_json(failure),
                "drift": _drift(
                    reconciled,
                    drift_by_service.get(name),
                    release.at if release else None,
                    release is not None,
                ),
                "in_config": configured is not None,
            }
        )
    return out


def _newer_failure(release: Release | None, failed: Release | None) -> Release | None:
    """`failed` when it is newer than the release the record names as current: what the
    environment last tried for this service failed (and, mostly, was rolled back). A
    release someone rolled back from on purpose (`configcenter rollback`) did not fail."""
    if release is None or failed is None or failed.id == release.id:
        return None
    if failed.outcome not in ("failed", "rolled_back") or rolled_back_by_hand(failed):
        return None
    failed_at, release_at = _parse_time(failed.at), _parse_time(release.at)
    if failed_at is None or release_at is None or failed_at < release_at:
        return None
    return failed


def _status(outcome: str | None, blocked: str | None) -> tuple[str, str | None]:
    if outcome is None:
        return "not_deployed", None
    if blocked is not None:
        return "blocked", blocked
    if outcome in ("healthy", "committed", "failed", "rolled_back"):
        return outcome, None
    return "unknown", f"release outcome {outcome!r}"


def _health(outcome: str | None) -> str:
    return {
        None: "not deployed",
        "healthy": "healthy",
        "committed": "committed",
        "failed": "failed",
        "rolled_back": "rolled back",
    }.get(outcome, outcome or "unknown")


def matrix(ws: Workspace) -> dict[str, Any]:
    envs = ws.config.project.environments
    cells = {env: {s["service"]: s for s in services(ws, env)} for env in envs}
    names = sorted({name for row in cells.values() for name in row})
    return {
        "environments": envs,
        "services": names,
        "cells": {env: cells[env] for env in envs},
    }


#: What a run reads as on the console: the store's outcome, told apart by what the run did.
RUN_OUTCOMES = {
    "running": "the run is going on now",
    "succeeded": "it changed something and everything it rolled out is healthy",
    "committed": "it committed to the deploy repo; nothing was rolled out (no platform, or "
    "--no-rollout)",
    "no_changes": "it changed nothing: everything was as the config repo says",
    "blocked": "it changed nothing: it refused services whose inputs failed before",
    "drift": "a reconcile that found drift (and did not heal it)",
    "healed": "a reconcile that found drift and put the deploy repo's state back",
    "failed": "it failed (the error is on the run's page)",
    "rolled_back": "a release failed and the previous one was put back",
}
#: Result outcomes of an apply that changed nothing.
_UNCHANGED = ("noop", "blocked", "skipped")


def _results(run: Run) -> list[dict[str, Any]]:
    results = run.details.get("results")
    if not isinstance(results, list):
        return []
    return [r for r in results if isinstance(r, dict)]


def changed_services(run: Run) -> list[str]:
    """The services a run changed (or tried to), which is what its row shows.

    Not `run.services`: that is the --service filter it was started with, empty for
    a whole-environment apply.
    """
    details = run.details
    promotion = details.get("promotion")
    if run.kind == "promote" and isinstance(promotion, dict):
        pins = promotion.get("services")
        return sorted(str(name) for name in pins) if isinstance(pins, dict) else []
    if run.kind in ("apply", "promote"):
        names = [str(r.get("service")) for r in _results(run) if r.get("outcome") not in _UNCHANGED]
        return list(dict.fromkeys(names))
    if run.kind == "reconcile":
        found = details.get("services")
        if not isinstance(found, dict):
            return []
        drifted = [
            str(name)
            for name, entry in found.items()
            if isinstance(entry, dict) and entry.get("status") not in (None, "in_sync")
        ]
        return sorted(drifted)
    return list(run.services)


def run_results(run: Run) -> list[dict[str, Any]]:
    """An apply's per-service results (a deploy's one result), for the run's page."""
    one = run.details.get("result")
    if isinstance(one, dict):
        return [one]
    return _results(run)


def run_outcome(run: Run) -> dict[str, str]:
    """{outcome, label}: how the console names what a run did (see RUN_OUTCOMES)."""
    shown = run.outcome
    if run.outcome == "noop":
        shown = "no_changes"
    elif run.outcome == "succeeded" and run.kind in ("apply", "promote"):
        results = _results(run)
        acted = [str(r.get("outcome")) for r in results if r.get("outcome") not in _UNCHANGED]
        if "results" in run.details and not acted:
            blocked = any(r.get("outcome") == "blocked" for r in results)
            shown = "blocked" if blocked else "no_changes"
        elif "committed" in acted:
            shown = "committed"
    elif run.outcome == "succeeded" and run.kind == "reconcile":
        healed = run.details.get("healed")
        shown = "healed" if isinstance(healed, list) and healed else "drift"
    label = {
        "no_changes": "no drift" if run.kind == "reconcile" else "no changes",
        "rolled_back": "rolled back",
        "drift": "drift found",
        "committed": "committed, not rolled out",
    }.get(shown, shown)
    return {"outcome": shown, "label": label}


def run_json(run: Run, with_log: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": run.id,
        "kind": run.kind,
        "env": run.env,
        "services": run.services,
        "changed": changed_services(run),
        "shown": run_outcome(run),
        "trigger": run.trigger,
        "actor": run.actor,
        "started_at": run.started_at.isoformat(),
        "ended_at": run.ended_at.isoformat() if run.ended_at else None,
        "outcome": run.outcome,
        "details": run.details,
    }
    if with_log:
        data["log"] = run.log
    return data


def _release_json(release: Release | None) -> dict[str, Any] | None:
    """A release as the matrix names it (the current one, or the failure beside it)."""
    if release is None:
        return None
    return {
        "id": release.id,
        "outcome": release.outcome,
        "at": release.at,
        "run": release.run or None,
        "reason": release.reason or None,
    }
