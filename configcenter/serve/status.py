"""What the API and the status page show: environments, the env x service matrix, runs.

Read from the same places the CLI reads: the config repo, the deploy repo's
state files, and the run store (the newest reconcile run of an env carries its
drift per service), so every replica shows the same picture.
"""

from __future__ import annotations

from typing import Any

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


def last_reconcile(ws: Workspace, env: str) -> Run | None:
    runs = ws.run_store.list(env=env, kind="reconcile", limit=10)
    return next((r for r in runs if r.outcome != "running"), None)


def services(ws: Workspace, env: str) -> list[dict[str, Any]]:
    """Per service: template tag, image, last release, health, drift."""
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
    names = sorted(set(config.environment(env).services) | set(state.services))
    out = []
    for name in names:
        configured = config.environment(env).services.get(name)
        current = state.services.get(name)
        release = current.release if current else None
        drift = drift_by_service.get(name) or {}
        drifts = drift.get("drifts") if isinstance(drift, dict) else None
        out.append(
            {
                "service": name,
                "template": current.template_tag
                if current
                else (configured.template.tag if configured else None),
                "image": current.image if current else None,
                "replicas": current.replicas if current else None,
                "platform": current.platform if current else None,
                "release": None
                if release is None
                else {
                    "id": release.id,
                    "outcome": release.outcome,
                    "at": release.at,
                    "reason": release.reason or None,
                },
                "health": _health(release.outcome if release else None),
                "last_failed": current.last_failed.id if current and current.last_failed else None,
                "drift": None
                if reconciled is None
                else {
                    "status": drift.get("status", "unknown") if isinstance(drift, dict) else None,
                    "count": len(drifts or []),
                    "items": drifts or [],
                    "checked_at": reconciled.ended_at.isoformat() if reconciled.ended_at else None,
                    "run": reconciled.id,
                },
                "in_config": configured is not None,
            }
        )
    return out


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


def run_json(run: Run, with_log: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": run.id,
        "kind": run.kind,
        "env": run.env,
        "services": run.services,
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
