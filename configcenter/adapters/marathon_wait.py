"""Waiting for a rollout on Marathon, and where a release's tasks listen.

`wait` polls until our deployment left /v2/deployments and every task of the
new config is healthy (or running, for an app without health checks, which
Marathon never counts healthy); a failed rollout is reported as such, and its
deployment remembered so a rollback may cancel it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from configcenter.adapters.marathon_client import (
    JSON,
    LABEL_DIGEST,
    LABEL_RELEASE,
    Deployments,
    MarathonApi,
)
from configcenter.ports.platform import Deployable, PlatformError, ProgressCallback, RolloutStatus


class MarathonWaiter:
    """Rollout status of one target's apps, by polling (`poll_interval` seconds)."""

    def __init__(
        self, client: MarathonApi, deployments: Deployments, *, poll_interval: float
    ) -> None:
        self.client = client
        self.target = client.target
        self.deployments = deployments
        self.poll_interval = poll_interval

    def wait(
        self, deployable: Deployable, *, timeout: float, progress: ProgressCallback | None = None
    ) -> RolloutStatus:
        """Poll until our deployment left /v2/deployments and every new task is healthy.

        Healthy means tasksRunning == tasksHealthy == instances, all on the
        latest config version. Marathon counts no task healthy when the app
        has no health checks, so there running tasks are the measure.
        """
        app_id = self.client.app_id(deployable.service)
        deadline = time.monotonic() + max(timeout, 0.0)
        deployment_id = self.deployments.pending.get(app_id) or None
        last: RolloutStatus | None = None
        while True:
            running_ids = {d.id for d in self.client.call("list deployments", "list_deployments")}
            app = self.client.get_app(
                app_id, embed=("app.tasks", "app.counts", "app.deployments", "app.lastTaskFailure")
            )
            status = self._status(app_id, app, deployable, deployment_id, running_ids)
            if progress is not None and status != last:
                progress(status)
            last = status
            if status.state != "progressing":
                if status.state == "failed" and deployment_id:
                    self.deployments.failed.add(deployment_id)
                self.deployments.pending.pop(app_id, None)
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if deployment_id:
                    self.deployments.failed.add(deployment_id)
                failure = (app or {}).get("lastTaskFailure") or {}
                detail = f"; last task failure: {failure.get('message')}" if failure else ""
                return RolloutStatus(
                    state="failed",
                    reason="ProgressDeadlineExceeded",
                    message=(f"{app_id} not healthy after {timeout:g}s: {status.message}{detail}"),
                    desired=status.desired,
                    updated=status.updated,
                    ready=status.ready,
                    available=status.available,
                )
            time.sleep(min(self.poll_interval, remaining))

    def task_endpoints(self, deployable: Deployable) -> list[str]:
        """ "host:port" (first port) of every running task of the app's current config.

        For the HTTP checks of verification (`configcenter.usecases.stages`); a task
        without ports is listed as its host alone, which no HTTP check can reach.
        """
        app_id = self.client.app_id(deployable.service)
        app = self.client.get_app(app_id, embed=("app.tasks",))
        if app is None:
            raise PlatformError(f"{app_id} does not exist on Marathon at {self.client.url}")
        config_version = str((app.get("versionInfo") or {}).get("lastConfigChangeAt") or "")
        endpoints: list[str] = []
        for task in app.get("tasks") or []:
            if task.get("state") != "TASK_RUNNING":
                continue
            if str(task.get("version", "")) < config_version:
                continue
            ports = task.get("ports") or []
            host = str(task.get("host") or "")
            endpoints.append(f"{host}:{ports[0]}" if ports else host)
        return sorted(endpoints)

    def _status(
        self,
        app_id: str,
        app: JSON | None,
        deployable: Deployable,
        deployment_id: str | None,
        running_ids: set[str],
    ) -> RolloutStatus:
        if app is None:
            return RolloutStatus(
                state="failed",
                reason="NotFound",
                message=f"{app_id} does not exist on Marathon at {self.client.url}; apply it first",
            )
        labels = app.get("labels") or {}
        release_id, digest = deployable.workload_identity
        desired = int(app.get("instances") or 0)
        # A release that only scales another carries that one's labels: its count tells them
        # apart (None: an autoscaler owns the count).
        ours = (
            labels.get(LABEL_RELEASE) == release_id
            and labels.get(LABEL_DIGEST) == digest
            and deployable.replicas in (None, desired)
        )
        config_version = str((app.get("versionInfo") or {}).get("lastConfigChangeAt") or "")
        checked = bool(app.get("healthChecks"))
        tasks = app.get("tasks") or []
        current = [t for t in tasks if str(t.get("version", "")) >= config_version]
        running = [t for t in current if t.get("state") == "TASK_RUNNING"]
        ready = [t for t in running if not checked or _task_healthy(t)]
        in_progress = bool(deployment_id and deployment_id in running_ids) or any(
            d.get("id") in running_ids for d in app.get("deployments") or []
        )
        counts = dict(desired=desired, updated=len(current), ready=len(ready))
        available = (
            int(app.get("tasksHealthy") or 0) if checked else int(app.get("tasksRunning") or 0)
        )
        summary = (
            f"{len(running)}/{desired} tasks of the new config running, "
            f"{len(ready)} {'healthy' if checked else 'ready'}"
        )
        if not ours and not in_progress:
            return RolloutStatus(
                state="failed",
                reason="Superseded",
                message=(
                    f"{app_id} now runs release {labels.get(LABEL_RELEASE)!r} with {desired} "
                    f"instance(s), not {release_id!r} with {deployable.replicas}: the "
                    "deployment was cancelled or replaced"
                ),
                available=available,
                **counts,
            )
        healthy = (
            ours
            and not in_progress
            and len(ready) == desired
            and int(app.get("tasksRunning") or 0) == desired
            and (not checked or int(app.get("tasksHealthy") or 0) == desired)
        )
        if healthy:
            return RolloutStatus(
                state="healthy",
                reason="DeploymentComplete",
                message=f"{app_id}: {summary}",
                available=available,
                **counts,
            )
        return RolloutStatus(
            state="progressing",
            reason="DeploymentInProgress" if in_progress else "TasksNotReady",
            message=summary,
            available=available,
            **counts,
        )


def _task_healthy(task: Mapping[str, Any]) -> bool:
    results = task.get("healthCheckResults") or []
    return bool(results) and all(r.get("alive") for r in results)
