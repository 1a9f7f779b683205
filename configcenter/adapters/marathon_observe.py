"""What runs on Marathon for an env (apps directly under its group), app versions, delete."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from configcenter.adapters.marathon_client import (
    LABEL_DIGEST,
    LABEL_RELEASE,
    LABEL_SERVICE,
    Deployments,
    MarathonApi,
)
from configcenter.adapters.marathon_diff import DEFINITION, READ_ONLY
from configcenter.ports.platform import HeldWorkload, ObservedService

log = logging.getLogger("configcenter.adapters.marathon")  # one logger name for the adapter


@dataclass(frozen=True)
class AppVersion:
    """One stored version of an app, as far as finding a release cares."""

    version: str
    release_id: str | None
    config_digest: str | None
    image: str | None


class MarathonObserver:
    """observe, delete and the app version history of one target."""

    def __init__(self, client: MarathonApi, deployments: Deployments, *, force: bool) -> None:
        self.client = client
        self.target = client.target
        self.deployments = deployments
        self.force = force

    def observe(self) -> Mapping[str, ObservedService]:
        """One GET /v2/apps?embed=apps.tasks: every app directly under the env's group."""
        data = self.client.request(
            "GET",
            "/v2/apps",
            params={"id": self.client.group + "/", "embed": ["apps.tasks", "apps.counts"]},
        ).json()
        observed: dict[str, ObservedService] = {}
        for app in data.get("apps") or []:
            app_id = str(app.get("id", ""))
            parent, _, name = app_id.rpartition("/")
            if parent != self.client.group:
                continue
            labels = app.get("labels") or {}
            service = str(labels.get(LABEL_SERVICE) or name)
            observed[service] = ObservedService(
                service=service,
                image=_image(app),
                replicas=app.get("instances"),
                config_digest=labels.get(LABEL_DIGEST),
                release_id=labels.get(LABEL_RELEASE),
                objects={
                    DEFINITION: {k: v for k, v in app.items() if k not in READ_ONLY},
                    "app": {
                        key: app.get(key)
                        for key in (
                            "id",
                            "version",
                            "versionInfo",
                            "labels",
                            "env",
                            "instances",
                            "tasksRunning",
                            "tasksHealthy",
                            "deployments",
                        )
                    },
                },
            )
        return observed

    def held(self, services: Iterable[str]) -> list[HeldWorkload]:
        """The apps of `services` that deployments in progress hold: one GET /v2/deployments
        (deployments.raml: each deployment lists its `affectedApps`). Marathon answers 409
        to a PUT or DELETE of such an app without `force=true`."""
        wanted = {self.client.app_id(service): service for service in services}
        if not wanted:
            return []
        running = self.client.request("GET", "/v2/deployments", what="list deployments").json()
        holding: dict[str, list[str]] = {}
        for deployment in running if isinstance(running, list) else []:
            if not isinstance(deployment, dict):
                continue
            for app_id in deployment.get("affectedApps") or []:
                if app_id in wanted:
                    holding.setdefault(app_id, []).append(str(deployment.get("id", "?")))
        return [
            HeldWorkload(wanted[app_id], app_id, tuple(ids))
            for app_id, ids in sorted(holding.items())
        ]

    def delete(self, service: str) -> None:
        """Destroy the app and the secrets this adapter stored for it."""
        app_id = self.client.app_id(service)
        current = self.client.get_app(app_id)
        if current is None:
            return
        from marathon.exceptions import NotFoundError

        try:
            self.client.call(f"delete {app_id}", "delete_app", app_id, force=self.force)
        except NotFoundError:
            return
        prefix = self.client.secret_prefix(service)
        if self.client.secrets_url:
            # Every generation this adapter stored for it, not only the one the app reads.
            sources = {
                prefix + path.strip("/")
                for path in self.client.list_secrets(prefix)
                if path.strip("/").partition("/")[0].isdigit()
            }
            for secret in (current.get("secrets") or {}).values():
                source = str(secret.get("source", ""))
                if source.startswith(prefix):
                    sources.add(source)
            for source in sorted(sources):
                self.client.secret_request("DELETE", source, ok=(204, 404))
        self.deployments.pending.pop(app_id, None)
        log.info("marathon %s: deleted %s", self.target.name, app_id)

    def app_versions(self, service: str, *, limit: int = 20) -> list[AppVersion]:
        """Stored versions of the service's app, newest first, with their release labels."""
        app_id = self.client.app_id(service)
        from marathon.exceptions import NotFoundError

        try:
            versions = self.client.call(f"versions of {app_id}", "list_versions", app_id)
        except NotFoundError:
            return []
        found = []
        for version in sorted(versions, reverse=True)[:limit]:
            app = self.client.request("GET", f"/v2/apps{app_id}/versions/{quote(version)}").json()
            labels = app.get("labels") or {}
            found.append(
                AppVersion(
                    version=version,
                    release_id=labels.get(LABEL_RELEASE),
                    config_digest=labels.get(LABEL_DIGEST),
                    image=_image(app),
                )
            )
        return found

    def find_version(
        self, service: str, *, release_id: str | None = None, config_digest: str | None = None
    ) -> AppVersion | None:
        """The newest stored version matching a release id and/or config digest."""
        for version in self.app_versions(service):
            if release_id is not None and version.release_id != release_id:
                continue
            if config_digest is not None and version.config_digest != config_digest:
                continue
            return version
        return None


def _image(app: Mapping[str, Any]) -> str | None:
    docker = (app.get("container") or {}).get("docker") or {}
    image = docker.get("image")
    return str(image) if image else None
