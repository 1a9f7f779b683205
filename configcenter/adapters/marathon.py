"""The Marathon platform adapter: one Marathon app per service under the env's group.

An environment whose platform is `{kind: marathon, url: ..., group: "/shop/{{ env }}"}`
gets the same apply / wait / observe / diff / delete behaviour as Kubernetes
through the platform port. `MarathonPlatform` puts the adapter's parts together,
one module each:

* `marathon_client`: Marathon's REST API and the DC/OS secret store (retries,
  typed errors);
* `marathon_apply`: the app definition (from the rendered `marathon.json`), its
  secrets (in the secret store, never in the app JSON) and config files (the
  Mesos fetcher, from configcenter serve);
* `marathon_wait`: rollout status by polling, task endpoints for HTTP checks;
* `marathon_observe`: the apps under the group, app versions, delete;
* `marathon_diff` (pure): drift, and whether Marathon already runs a definition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from configcenter.adapters import marathon_diff
from configcenter.adapters.marathon_apply import MarathonApplier, check_config_files, resolve_ref
from configcenter.adapters.marathon_client import (
    JSON,
    Deployments,
    MarathonApi,
    MarathonError,
    MarathonSettingsError,
    group_path,
    new_session,
    required_setting,
)
from configcenter.adapters.marathon_observe import AppVersion, MarathonObserver
from configcenter.adapters.marathon_wait import MarathonWaiter
from configcenter.core.errors import UserError
from configcenter.core.secretrefs import SecretsRotated
from configcenter.ports.platform import (
    Deployable,
    HeldWorkload,
    ObservedService,
    PlatformTarget,
    ProgressCallback,
    RolloutStatus,
    ServiceDiff,
)

if TYPE_CHECKING:
    import requests

    from configcenter.core.redact import Redactor

#: The registry's entry points (`configcenter.core.kinds`): the factory and the
#: `config_files` capability's check.
__all__ = ["MarathonPlatform", "check_config_files", "open_platform"]


class MarathonPlatform:
    """Platform port on Marathon's REST API (see the module docstring for the split)."""

    def __init__(
        self,
        target: PlatformTarget,
        *,
        force: bool = False,
        poll_interval: float = 2.0,
        request_timeout: float = 10.0,
        retries: int = 3,
        retry_delay: float = 0.5,
        session: requests.Session | None = None,
        on_secret: Callable[[str], None] | None = None,
    ) -> None:
        if target.kind != "marathon":
            raise MarathonSettingsError(
                f"platform {target.name!r} has kind {target.kind!r}, not 'marathon'; "
                "use the adapter that matches its kind"
            )
        self.target = target
        self.url = required_setting(target, "url").rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise MarathonSettingsError(
                f"platforms.{target.name}.url {self.url!r} is not an http(s) URL; "
                "set it to Marathon's base URL, e.g. http://marathon.example.com:8080"
            )
        self.group = group_path(target)
        secrets_url = target.settings.get("secrets_url", "")
        self.secrets_url = secrets_url.rstrip("/") or None
        self.secret_store = target.settings.get("secret_store", "default") or "default"
        self.force = force
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self.retries = max(1, retries)
        self.retry_delay = retry_delay
        self._on_secret = on_secret
        self._session = session if session is not None else new_session()
        self._session.headers.setdefault("Accept", "application/json")
        token_ref = target.settings.get("token", "")
        if token_ref:
            token = resolve_ref(token_ref, f"platforms.{target.name}.token", on_secret)
            self._session.headers["Authorization"] = f"token={token}"
        self.files_url = (target.settings.get("files_url", "") or "").rstrip("/") or None
        if self.files_url and not self.files_url.startswith(("http://", "https://")):
            raise MarathonSettingsError(
                f"platforms.{target.name}.files_url {self.files_url!r} is not an http(s) URL; "
                "set it to the URL of configcenter serve as Mesos agents reach it"
            )
        files_key_ref = target.settings.get("files_key", "")
        self._files_key = (
            resolve_ref(files_key_ref, f"platforms.{target.name}.files_key", on_secret)
            if files_key_ref
            else ""
        )
        if target.settings.get("verify", "true").lower() in ("false", "no", "0"):
            self._session.verify = False
        self.client = MarathonApi(
            target,
            url=self.url,
            group=self.group,
            secrets_url=self.secrets_url,
            secret_store=self.secret_store,
            session=self._session,
            request_timeout=request_timeout,
            retries=self.retries,
            retry_delay=retry_delay,
        )
        deployments = Deployments()
        self._applier = MarathonApplier(
            self.client,
            deployments,
            force=force,
            files_url=self.files_url,
            files_key=self._files_key,
            on_secret=on_secret,
        )
        self._waiter = MarathonWaiter(self.client, deployments, poll_interval=poll_interval)
        self._observer = MarathonObserver(self.client, deployments, force=force)

    # -- the port --------------------------------------------------------------------

    def apply(
        self, deployable: Deployable, *, dry_run: bool = False, force: bool | None = None
    ) -> None:
        """PUT the app unless Marathon runs this definition already; `force` and 409s: see
        `MarathonApplier.apply`."""
        self._applier.apply(deployable, dry_run=dry_run, force=force)

    def wait(
        self, deployable: Deployable, *, timeout: float, progress: ProgressCallback | None = None
    ) -> RolloutStatus:
        """Poll until our deployment left /v2/deployments and every new task is healthy."""
        return self._waiter.wait(deployable, timeout=timeout, progress=progress)

    def prune(self, deployable: Deployable) -> list[str]:
        """A release is one app, replaced whole by its PUT: nothing of it is left to prune.
        Its secret generations older than the newest few are collected (as Kubernetes
        collects its Secrets' versions); returns nothing, like Kubernetes' collection."""
        self._applier.collect_generations(deployable)
        return []

    def observe(self) -> Mapping[str, ObservedService]:
        """One GET /v2/apps?embed=apps.tasks: every app directly under the env's group."""
        return self._observer.observe()

    def secrets_match(
        self, deployable: Deployable, generations: list[int]
    ) -> int | SecretsRotated | str:
        """Compare freshly resolved values with what the secret store holds per generation."""
        return self._applier.secrets_match(deployable, generations)

    def secrets_unavailable(self) -> str | None:
        """None: each service's secrets are looked up in the secret store by key, so whether
        they can be compared is said per service by `secrets_match`."""
        return None

    def diff(self, deployable: Deployable, observed: ObservedService | None) -> ServiceDiff:
        """Image, instances, config digest and release: the labels and fields we own; then
        every field of the app that is not the definition apply would PUT."""
        try:
            wanted = self._applier.app_definition(deployable)
        except (MarathonError, UserError):
            wanted = None  # the release cannot be PUT as it is: its rollout says why
        return marathon_diff.diff(deployable, observed, wanted)

    def held(self, services: Iterable[str]) -> list[HeldWorkload]:
        """The apps of `services` that deployments in progress hold (Marathon's 409 lock)."""
        return self._observer.held(services)

    def delete(self, service: str) -> None:
        """Destroy the app and the secrets this adapter stored for it."""
        self._observer.delete(service)

    def task_endpoints(self, deployable: Deployable) -> list[str]:
        """ "host:port" (first port) of every running task of the app's current config."""
        return self._waiter.task_endpoints(deployable)

    # -- extras for rollback and previews ---------------------------------------------

    def app_id(self, service: str) -> str:
        """`<group>/<service>`, after checking the service name is a valid Marathon id segment."""
        return self.client.app_id(service)

    def app_definition(self, deployable: Deployable) -> JSON:
        """The JSON `apply` would PUT, secret values not included (they never are)."""
        return self._applier.app_definition(deployable)

    def app_versions(self, service: str, *, limit: int = 20) -> list[AppVersion]:
        """Stored versions of the service's app, newest first, with their release labels."""
        return self._observer.app_versions(service, limit=limit)

    def find_version(
        self, service: str, *, release_id: str | None = None, config_digest: str | None = None
    ) -> AppVersion | None:
        """The newest stored version matching a release id and/or config digest."""
        return self._observer.find_version(
            service, release_id=release_id, config_digest=config_digest
        )


def open_platform(
    target: PlatformTarget, redactor: Redactor, *, force: bool = False
) -> MarathonPlatform:
    """The registry's factory (`configcenter.core.kinds`); secrets it resolves are masked."""
    return MarathonPlatform(target, force=force, on_secret=redactor.register)
