"""The Marathon platform adapter: one Marathon app per service under the env's group.

An environment whose platform is `{kind: marathon, url: ..., group: "/shop/{{ env }}"}`
gets the same apply / wait / observe / delete behaviour as Kubernetes through
the platform port. The app definition is the rendered `marathon.json`; the
adapter owns the app id (`<group>/<service>`), `instances`,
`container.docker.image`, `env` (values plus secret references) and the
`configcenter.io/*` labels that tie the app to its env, service, release and
config digest (what `observe` reads back for drift).

Secrets: each secret ENV key becomes a Marathon `secrets` entry whose `source`
is a path in the DC/OS secret store (`<group>/<service>/<KEY>`) and an env
entry `{"secret": name}`. The value is resolved (`env:` / `file:` refs) only at
apply time and written to the store's API (`secrets_url`, e.g.
`https://dcos.example.com/secrets/v1`), so it never appears in the app JSON,
Marathon's version history, logs or errors. `k8s:` refs are rejected.

Transport: the `marathon` PyPI client (0.13) is used for `/v2/deployments`,
`/v2/apps/{id}/versions` and DELETE `/v2/apps/{id}`. Raw `requests` calls (on
the client's own session) are used where the client is broken or lacking:
its model serialisation (`MarathonApp.to_json`, used by `update_app`) raises
on Python 3.10+ (`collections.Iterable`), and its models reject app fields
they do not know (`MarathonApp.from_json` fails on e.g. `tty`), so PUT/GET of
app definitions and versions go through `requests`; the DC/OS secret store
has no client support at all.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from configcenter.adapters.secrets import SecretError, resolve_secret, secret_scheme
from configcenter.core import fileurls
from configcenter.core.errors import TransientFailure
from configcenter.core.secretrefs import MARKER, find_refs, substitute
from configcenter.ports.platform import (
    Deployable,
    ObservedService,
    PlatformError,
    PlatformTarget,
    ProgressCallback,
    RolloutStatus,
    ServiceDiff,
    UndeliveredFiles,
    service_diff,
)

if TYPE_CHECKING:
    import requests

    from configcenter.core.redact import Redactor

log = logging.getLogger(__name__)

APP_FILE = "marathon.json"
#: How a secret reference looks once rendered into a file (`${secret:KIND:REF}`).
SECRET_PLACEHOLDER = b"${secret:"
LABEL_ENV = "configcenter.io/env"
LABEL_SERVICE = "configcenter.io/service"
LABEL_RELEASE = "configcenter.io/release"
LABEL_DIGEST = "configcenter.io/config-digest"
#: Fields Marathon computes; sending them back is rejected or ignored.
_READ_ONLY = (
    "version",
    "versionInfo",
    "tasks",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
)
#: Fields Marathon fills in (defaults or assigned values) when a definition leaves
#: them out: their presence on a running app says nothing about what was sent.
_FILLED_BY_MARATHON = frozenset(
    {
        "id",
        "instances",
        "cpus",
        "mem",
        "disk",
        "gpus",
        "backoffSeconds",
        "backoffFactor",
        "maxLaunchDelaySeconds",
        "upgradeStrategy",
        "unreachableStrategy",
        "killSelection",
        "portDefinitions",
        "ports",
        "requirePorts",
        "networks",
        "role",
        "executor",
        "user",
        "acceptedResourceRoles",
        "taskKillGracePeriodSeconds",
        "ipAddress",
        "residency",
    }
)
_SEGMENT = re.compile(
    r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$"
)
_RETRY_STATUS = (502, 503, 504)
#: Marathon answers 403 with this message when `--max_running_deployments` is reached
#: (TooManyRunningDeploymentsException), and 403 for authorization failures otherwise.
#: The text is "Max number (100) of running deployments is achieved. ..." in Marathon's
#: Exception.scala (older releases: "... number of concurrent deployments ...").
_TOO_MANY_DEPLOYMENTS = re.compile(
    r"max(imum)? number (\(\d+\) )?of (concurrent|running) deployments", re.I
)
_TAG = re.compile(r"<[^>]+>")
_TITLE = re.compile(r"<title>(.*?)</title>", re.I | re.S)

JSON = dict[str, Any]


class MarathonError(PlatformError):
    """A Marathon call failed; the message says what, where, and what to do."""


class MarathonSettingsError(MarathonError, ValueError):
    """The platform settings or the rendered marathon.json cannot be used."""


class MarathonSecretError(MarathonError):
    """A secret reference cannot be used on Marathon; names the ref, never the value."""


class MarathonUnavailableError(MarathonError, TransientFailure):
    """Marathon (or the secret store) could not be reached after retries."""


class MarathonAuthError(MarathonError):
    """The token is missing or invalid (401), or its account lacks a permission (403)."""


class MarathonBusyError(MarathonError):
    """Marathon refused a new deployment: too many are running (its 403). Nothing changed."""


class MarathonConflictError(MarathonError):
    """The app is locked by a running deployment (HTTP 409)."""

    def __init__(self, message: str, deployment_ids: list[str]) -> None:
        super().__init__(message)
        self.deployment_ids = deployment_ids


class MarathonValidationError(MarathonError):
    """Marathon rejected the app definition (HTTP 400/422); carries its message and details."""

    def __init__(self, message: str, marathon_message: str, details: list[Any]) -> None:
        super().__init__(message)
        self.marathon_message = marathon_message
        self.details = details


@dataclass(frozen=True)
class AppVersion:
    """One stored version of an app, as far as finding a release cares."""

    version: str
    release_id: str | None
    config_digest: str | None
    image: str | None


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
        self.url = _setting(target, "url").rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise MarathonSettingsError(
                f"platforms.{target.name}.url {self.url!r} is not an http(s) URL; "
                "set it to Marathon's base URL, e.g. http://marathon.example.com:8080"
            )
        self.group = _group(target)
        secrets_url = target.settings.get("secrets_url", "")
        self.secrets_url = secrets_url.rstrip("/") or None
        self.secret_store = target.settings.get("secret_store", "default") or "default"
        self.force = force
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self.retries = max(1, retries)
        self.retry_delay = retry_delay
        self._on_secret = on_secret
        self._session = session if session is not None else _new_session()
        self._session.headers.setdefault("Accept", "application/json")
        token_ref = target.settings.get("token", "")
        if token_ref:
            token = _resolve(token_ref, f"platforms.{target.name}.token", on_secret)
            self._session.headers["Authorization"] = f"token={token}"
        self.files_url = (target.settings.get("files_url", "") or "").rstrip("/") or None
        if self.files_url and not self.files_url.startswith(("http://", "https://")):
            raise MarathonSettingsError(
                f"platforms.{target.name}.files_url {self.files_url!r} is not an http(s) URL; "
                "set it to the URL of configcenter serve as Mesos agents reach it"
            )
        files_key_ref = target.settings.get("files_key", "")
        self._files_key = (
            _resolve(files_key_ref, f"platforms.{target.name}.files_key", on_secret)
            if files_key_ref
            else ""
        )
        if target.settings.get("verify", "true").lower() in ("false", "no", "0"):
            self._session.verify = False
        #: app id -> deployment id started by our last apply.
        self._pending: dict[str, str] = {}
        #: deployments whose wait() we reported failed: safe to cancel on re-apply.
        self._failed: set[str] = set()
        self._client_obj: Any = None

    # -- the port --------------------------------------------------------------------

    def apply(
        self, deployable: Deployable, *, dry_run: bool = False, force: bool | None = None
    ) -> None:
        """PUT the app (creating it if new); a no-op when Marathon already runs this definition.

        A 409 (app locked by a running deployment) is an error unless `force`
        (per call, or the platform default) is set; the one exception is a lock
        held by a rollout this adapter's `wait` reported failed, which a
        rollback may cancel without asking, since it is known to be broken.
        """
        app_id = self.app_id(deployable.service)
        definition, secrets = self._definition(deployable)
        if dry_run:
            for key, (_, text) in secrets.items():
                for ref in find_refs(text):
                    _resolve(ref, f"{deployable.service}: {key}", None)  # proves it resolves
            return
        for key, (source, text) in secrets.items():
            self._store_secret(deployable.service, key, source, text)
        current = self._get_app(app_id, embed=("app.deployments",))
        if current is not None and _runs(current, definition):
            running = [d["id"] for d in current.get("deployments") or []]
            if running:
                self._pending[app_id] = running[0]
            else:
                self._pending.pop(app_id, None)
            log.info("marathon %s: %s already runs this definition", self.target.name, app_id)
            return
        use_force = self.force if force is None else force
        try:
            result = self._put_app(app_id, definition, force=use_force)
        except MarathonConflictError as exc:
            if use_force or not exc.deployment_ids or not set(exc.deployment_ids) <= self._failed:
                raise
            log.warning(
                "marathon %s: %s is locked by failed rollout %s; cancelling it with force",
                self.target.name,
                app_id,
                ", ".join(exc.deployment_ids),
            )
            result = self._put_app(app_id, definition, force=True)
        deployment_id = str(result.get("deploymentId", ""))
        self._pending[app_id] = deployment_id
        log.info(
            "marathon %s: %s release %s -> deployment %s (version %s)",
            self.target.name,
            app_id,
            deployable.release_id,
            deployment_id,
            result.get("version"),
        )

    def wait(
        self, deployable: Deployable, *, timeout: float, progress: ProgressCallback | None = None
    ) -> RolloutStatus:
        """Poll until our deployment left /v2/deployments and every new task is healthy.

        Healthy means tasksRunning == tasksHealthy == instances, all on the
        latest config version. Marathon counts no task healthy when the app
        has no health checks, so there running tasks are the measure.
        """
        app_id = self.app_id(deployable.service)
        deadline = time.monotonic() + max(timeout, 0.0)
        deployment_id = self._pending.get(app_id) or None
        last: RolloutStatus | None = None
        while True:
            running_ids = {d.id for d in self._client_call("list deployments", "list_deployments")}
            app = self._get_app(
                app_id, embed=("app.tasks", "app.counts", "app.deployments", "app.lastTaskFailure")
            )
            status = self._status(app_id, app, deployable, deployment_id, running_ids)
            if progress is not None and status != last:
                progress(status)
            last = status
            if status.state != "progressing":
                if status.state == "failed" and deployment_id:
                    self._failed.add(deployment_id)
                self._pending.pop(app_id, None)
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if deployment_id:
                    self._failed.add(deployment_id)
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

    def prune(self, deployable: Deployable) -> list[str]:
        """Nothing is left to prune: a release is one app, replaced whole by its PUT."""
        return []

    def observe(self) -> Mapping[str, ObservedService]:
        """One GET /v2/apps?embed=apps.tasks: every app directly under the env's group."""
        data = self._request(
            "GET",
            "/v2/apps",
            params={"id": self.group + "/", "embed": ["apps.tasks", "apps.counts"]},
        ).json()
        observed: dict[str, ObservedService] = {}
        for app in data.get("apps") or []:
            app_id = str(app.get("id", ""))
            parent, _, name = app_id.rpartition("/")
            if parent != self.group:
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
                    }
                },
            )
        return observed

    def secrets_match(self, deployable: Deployable, generations: list[int]) -> int | str | None:
        """Compare freshly resolved values with what the secret store holds per generation."""
        wanted = {
            key: text
            for key, text in _env_entries(deployable).items()
            if isinstance(text, str) and find_refs(text)
        }
        if not wanted:
            return generations[0] if generations else None
        if not self.secrets_url:
            return f"platforms.{self.target.name} has no secrets_url"
        try:
            values = {k: self._resolved(deployable.service, k, t) for k, t in wanted.items()}
            seen = False
            for generation in generations:
                candidate = replace(deployable, secrets_generation=generation)
                stored: dict[str, str] = {}
                for key in wanted:
                    response = self._secret_request(
                        "GET", self._secret_source(candidate, key), ok=(200, 404)
                    )
                    if response.status_code == 200:
                        stored[key] = str((response.json() or {}).get("value", ""))
                if set(stored) != set(wanted):
                    continue
                seen = True
                if stored == values:
                    return generation
        except (MarathonError, SecretError, ValueError) as exc:
            return str(exc)
        return None if seen else "its secrets are not in the secret store yet"

    def diff(self, deployable: Deployable, observed: ObservedService | None) -> ServiceDiff:
        """Image, instances, config digest and release: the labels and fields we own."""
        return service_diff(
            deployable, observed, image=deployable.image or None, replicas=deployable.replicas
        )

    def delete(self, service: str) -> None:
        """Destroy the app and the secrets this adapter stored for it."""
        app_id = self.app_id(service)
        current = self._get_app(app_id)
        if current is None:
            return
        from marathon.exceptions import NotFoundError

        try:
            self._client_call(f"delete {app_id}", "delete_app", app_id, force=self.force)
        except NotFoundError:
            return
        prefix = self._secret_prefix(service)
        for secret in (current.get("secrets") or {}).values():
            source = str(secret.get("source", ""))
            if source.startswith(prefix) and self.secrets_url:
                self._secret_request("DELETE", source, ok=(204, 404))
        self._pending.pop(app_id, None)
        log.info("marathon %s: deleted %s", self.target.name, app_id)

    # -- extras for rollback and previews ---------------------------------------------

    def app_id(self, service: str) -> str:
        """`<group>/<service>`, after checking the service name is a valid Marathon id segment."""
        if not _SEGMENT.match(service):
            raise MarathonSettingsError(
                f"service name {service!r} cannot be a Marathon app id: use lowercase letters, "
                "digits, '-' and '.', starting and ending with a letter or digit"
            )
        return f"{self.group}/{service}"

    def app_definition(self, deployable: Deployable) -> JSON:
        """The JSON `apply` would PUT, secret values not included (they never are)."""
        return self._definition(deployable)[0]

    def app_versions(self, service: str, *, limit: int = 20) -> list[AppVersion]:
        """Stored versions of the service's app, newest first, with their release labels."""
        app_id = self.app_id(service)
        from marathon.exceptions import NotFoundError

        try:
            versions = self._client_call(f"versions of {app_id}", "list_versions", app_id)
        except NotFoundError:
            return []
        found = []
        for version in sorted(versions, reverse=True)[:limit]:
            app = self._request("GET", f"/v2/apps{app_id}/versions/{quote(version)}").json()
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

    # -- building the app ---------------------------------------------------------------

    def _definition(self, deployable: Deployable) -> tuple[JSON, dict[str, tuple[str, str]]]:
        app_id = self.app_id(deployable.service)
        where = f"{deployable.env}/{deployable.service}/{APP_FILE}"
        raw = deployable.files.get(APP_FILE)
        if raw is None:
            raise MarathonSettingsError(
                f"{deployable.service}: the release has no rendered {APP_FILE} but its platform "
                f"{self.target.name!r} is Marathon; add {APP_FILE} to outputs in "
                f"templates/{deployable.service}/template.yaml (rendered from {APP_FILE}.j2)"
            )
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise MarathonSettingsError(f"{where}: not UTF-8 ({exc.reason})") from None
        except json.JSONDecodeError as exc:
            raise MarathonSettingsError(
                f"{where}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}; "
                f"fix templates/{deployable.service}/{APP_FILE}.j2"
            ) from None
        if not isinstance(data, dict):
            raise MarathonSettingsError(
                f"{where}: must be one JSON object (a Marathon app definition), "
                f"got {type(data).__name__}"
            )
        app: JSON = {k: v for k, v in data.items() if k not in _READ_ONLY}
        if "id" in app and "/" + str(app["id"]).strip("/") != app_id:
            log.info("%s: id %r replaced by %s (the env's group)", where, app["id"], app_id)
        app["id"] = app_id
        app["instances"] = deployable.replicas
        container = app.get("container")
        if container is None:
            container = {"type": "DOCKER"}
        if not isinstance(container, dict):
            raise MarathonSettingsError(f"{where}: 'container' must be an object")
        docker = container.get("docker") or {}
        if not isinstance(docker, dict):
            raise MarathonSettingsError(f"{where}: 'container.docker' must be an object")
        container = {**container, "docker": {**docker, "image": deployable.image}}
        container.setdefault("type", "DOCKER")
        app["container"] = container

        env = app.get("env") or {}
        if not isinstance(env, dict):
            raise MarathonSettingsError(f"{where}: 'env' must be an object")
        env = dict(env)
        env.update(_env_entries(deployable))
        declared = app.get("secrets") or {}
        if not isinstance(declared, dict):
            raise MarathonSettingsError(f"{where}: 'secrets' must be an object")
        declared = dict(declared)
        secrets: dict[str, tuple[str, str]] = {}
        for key, text in sorted(env.items()):
            if not isinstance(text, str) or not find_refs(text):
                continue
            for ref in find_refs(text):
                try:
                    scheme = secret_scheme(ref)
                except SecretError as exc:
                    raise MarathonSecretError(f"{deployable.service}: {key}: {exc}") from None
                if scheme not in ("env", "file"):
                    raise MarathonSecretError(
                        f"{deployable.service}: {key}: secret {ref!r} is a '{scheme}:' "
                        "reference, which Marathon cannot read; use env:NAME or "
                        "file:/absolute/path for Marathon environments"
                    )
            # Stored per secrets generation: a rotation is a new path, so a new app
            # definition that restarts the tasks, and a rollback reads its own values.
            source = self._secret_source(deployable, key)
            secrets[key] = (source, text)
            declared[key] = {"source": source}
            env[key] = {"secret": key}
        if declared:
            app["secrets"] = declared
        app["env"] = env
        fetch = self._fetch_entries(deployable, where)
        if fetch:
            own = app.get("fetch") or []
            if not isinstance(own, list):
                raise MarathonSettingsError(f"{where}: 'fetch' must be a list")
            app["fetch"] = [*own, *fetch]

        labels = app.get("labels") or {}
        if not isinstance(labels, dict):
            raise MarathonSettingsError(f"{where}: 'labels' must be an object")
        app["labels"] = {
            **{str(k): str(v) for k, v in labels.items()},
            **{str(k): str(v) for k, v in deployable.labels.items()},
            LABEL_ENV: deployable.env,
            LABEL_SERVICE: deployable.service,
            LABEL_RELEASE: deployable.release_id,
            LABEL_DIGEST: deployable.config_digest,
        }
        return app, secrets

    def _fetch_entries(self, deployable: Deployable, where: str) -> list[JSON]:
        """Mesos fetcher entries that put the release's config files into the task sandbox.

        Every rendered output but marathon.json, `.env` outputs (they are the
        environment) and build inputs is a config file. Each is fetched from
        configcenter serve by a content-addressed, signed URL (see
        `configcenter.core.fileurls`) to `$MESOS_SANDBOX/<output path>`, so a new
        release, and a rollback, point the app at exactly that release's files.
        """
        files = config_files(deployable.files)
        if not files:
            return []
        names = ", ".join(sorted(files))
        if not self.files_url or not self._files_key:
            raise MarathonSettingsError(
                f"{deployable.service}: renders config files ({names}) but platforms."
                f"{self.target.name} has no files_url and files_key, so a Marathon task cannot "
                "get them: set files_url to configcenter serve's URL as Mesos agents reach it "
                "and files_key to the same secret as serve.files_key (or render only "
                f"{APP_FILE} and .env outputs for this service)"
            )
        entries: list[JSON] = []
        for name, data in sorted(files.items()):
            if SECRET_PLACEHOLDER in data:
                raise MarathonSecretError(
                    f"{where}: config file {name} contains a secret placeholder; files are "
                    "fetched from serve and must not hold secrets on Marathon: pass the secret "
                    "as an environment variable (the ENV list) instead"
                )
            url = fileurls.file_url(self.files_url, self._files_key, deployable.env, name, data)
            entry = {"uri": url, "destPath": name, "extract": False, "executable": False}
            entries.append({**entry, "cache": False})
        return entries

    def _secret_prefix(self, service: str) -> str:
        return f"{self.group.strip('/')}/{service}/"

    # -- rollout status -----------------------------------------------------------------

    def task_endpoints(self, deployable: Deployable) -> list[str]:
        """ "host:port" (first port) of every running task of the app's current config.

        For the HTTP checks of verification (`configcenter.usecases.stages`); a task
        without ports is listed as its host alone, which no HTTP check can reach.
        """
        app_id = self.app_id(deployable.service)
        app = self._get_app(app_id, embed=("app.tasks",))
        if app is None:
            raise PlatformError(f"{app_id} does not exist on Marathon at {self.url}")
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
                message=f"{app_id} does not exist on Marathon at {self.url}; apply it first",
            )
        labels = app.get("labels") or {}
        ours = (
            labels.get(LABEL_RELEASE) == deployable.release_id
            and labels.get(LABEL_DIGEST) == deployable.config_digest
        )
        desired = int(app.get("instances") or 0)
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
                    f"{app_id} now runs release {labels.get(LABEL_RELEASE)!r}, not "
                    f"{deployable.release_id!r}: the deployment was cancelled or replaced"
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

    # -- HTTP -----------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._client_obj is None:
            from marathon import MarathonClient

            self._client_obj = MarathonClient(
                self.url, timeout=self.request_timeout, session=self._session
            )
        return self._client_obj

    def _client_call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the marathon client, retrying when no server answered."""
        from marathon.exceptions import MarathonHttpError, NoResponseError, NotFoundError

        for attempt in range(self.retries):
            try:
                return getattr(self._client(), method)(*args, **kwargs)
            except NoResponseError:
                if attempt + 1 == self.retries:
                    raise MarathonUnavailableError(
                        f"cannot reach Marathon at {self.url} ({what}) after {self.retries} "
                        f"attempts; check platforms.{self.target.name}.url and that Marathon is up"
                    ) from None
                time.sleep(self.retry_delay * 2**attempt)
            except NotFoundError:
                raise
            except MarathonHttpError as exc:
                body = {
                    "message": getattr(exc, "error_message", ""),
                    "details": getattr(exc, "error_details", None) or [],
                }
                raise self._http_error(exc.status_code, body, what) from None
        raise AssertionError("unreachable")

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: JSON | None = None,
        ok: tuple[int, ...] = (200, 201),
        what: str | None = None,
        retry: bool = True,
    ) -> requests.Response:
        response = self._send(method, self.url + path, params=params, body=body, retry=retry)
        if response.status_code in ok:
            return response
        try:
            payload = response.json()
        except ValueError:
            payload = {"message": _plain_text(response.text)}
        raise self._http_error(response.status_code, payload, what or f"{method} {path}")

    def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: JSON | None = None,
        retry: bool = True,
    ) -> requests.Response:
        """One HTTP call with retries on connection errors and 502/503/504 (leader changes).

        Without `retry` one attempt is made: for calls that may have taken
        effect although no good answer came back (a PUT answered 503 by a
        leader proxy that timed out), where the caller checks before repeating.
        """
        import requests

        target = url.split("?")[0]
        problem = ""
        attempts = self.retries if retry else 1
        for attempt in range(attempts):
            try:
                response = self._session.request(
                    method, url, params=params, json=body, timeout=self.request_timeout
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = type(exc).__name__
            else:
                if response.status_code not in _RETRY_STATUS:
                    return response
                problem = f"HTTP {response.status_code}" + _message_of(response)
            if attempt + 1 < attempts:
                time.sleep(self.retry_delay * 2**attempt)
        raise MarathonUnavailableError(
            f"cannot reach {target} ({method}): {problem} after {attempts} "
            f"{'attempt' if attempts == 1 else 'attempts'}; "
            f"check platforms.{self.target.name} (url, secrets_url) and that the service is up"
        )

    def _http_error(self, status: int, payload: Any, what: str) -> MarathonError:
        payload = payload if isinstance(payload, dict) else {"message": _plain_text(payload)}
        # Marathon says `message`; authorizer plugins answer their own shape (the example
        # plugin: `problem`), DC/OS's Admin Router an HTML page.
        message = str(
            payload.get("message")
            or payload.get("problem")
            or payload.get("description")
            or f"HTTP {status}"
        )
        if status == 409:
            ids = [
                str(d.get("id")) for d in payload.get("deployments") or [] if isinstance(d, dict)
            ]
            return MarathonConflictError(
                f"{what}: Marathon at {self.url} says the app is locked by running deployment(s) "
                f"{', '.join(ids) or '?'} ({message}). Wait for the rollout to finish, or re-run "
                "with --force (configcenter apply/deploy --force) to cancel it",
                ids,
            )
        if status in (400, 422):
            details = payload.get("details") or []
            parts = []
            for detail in details:
                if isinstance(detail, dict):
                    errors = "; ".join(str(e) for e in detail.get("errors") or [])
                    parts.append(f"{detail.get('path', '/')}: {errors}")
            listed = (" (" + ", ".join(parts) + ")") if parts else ""
            return MarathonValidationError(
                f"{what}: Marathon at {self.url} rejected the app definition: {message}{listed}; "
                f"fix the service's {APP_FILE}.j2 template or the values it uses",
                message,
                list(details),
            )
        if status == 403 and _TOO_MANY_DEPLOYMENTS.search(message):
            return MarathonBusyError(
                f"{what}: Marathon at {self.url} accepts no new deployment now (HTTP 403: "
                f"{message}). Nothing was changed: wait for running deployments to finish "
                "(GET /v2/deployments) and apply again, or raise Marathon's "
                "--max_running_deployments"
            )
        if status == 401:
            return MarathonAuthError(
                f"{what}: Marathon at {self.url} did not accept the credentials (HTTP 401: "
                f"{message}); set platforms.{self.target.name}.token to a secret ref holding a "
                "valid, unexpired DC/OS token"
            )
        if status == 403:
            return MarathonAuthError(
                f"{what}: Marathon at {self.url} refused the action (HTTP 403: {message}): the "
                f"token of platforms.{self.target.name} is valid but its account lacks the "
                f"permission; grant it dcos:service:marathon:marathon:services:{self.group} "
                "(full), or use a token of an account that has it"
            )
        return MarathonError(f"{what}: Marathon at {self.url} answered HTTP {status}: {message}")

    def _get_app(self, app_id: str, embed: tuple[str, ...] = ()) -> JSON | None:
        response = self._request(
            "GET", f"/v2/apps{app_id}", params={"embed": list(embed)}, ok=(200, 404)
        )
        if response.status_code == 404:
            return None
        app = response.json().get("app")
        return app if isinstance(app, dict) else None

    def _put_app(self, app_id: str, definition: JSON, *, force: bool) -> JSON:
        # Marathon's PUT is a partial update unless told otherwise: fields the
        # definition leaves out (a health check or constraint a failed release
        # added, a field removed from the template) would survive. The rendered
        # definition is the whole app, so it replaces the whole app.
        params = {"partialUpdate": "false"}
        if force:
            params["force"] = "true"
        unavailable: MarathonUnavailableError | None = None
        for attempt in range(self.retries):
            try:
                response = self._request(
                    "PUT",
                    f"/v2/apps{app_id}",
                    params=params,
                    body=definition,
                    what=f"deploy {app_id}",
                    retry=False,
                )
                break
            except MarathonUnavailableError as exc:
                # A 503 (or a lost answer) may come after Marathon started the
                # deployment: repeating the PUT blindly would get 409 from our own
                # deployment. Look first; adopt it if the app already is ours.
                unavailable = exc
                current = self._get_app(app_id, embed=("app.deployments",))
                if current is not None and _runs(current, definition):
                    running = [str(d["id"]) for d in current.get("deployments") or []]
                    log.warning(
                        "marathon %s: PUT %s got no good answer (%s) but Marathon took it; "
                        "following deployment %s",
                        self.target.name,
                        app_id,
                        exc,
                        ", ".join(running) or "(already finished)",
                    )
                    return {"deploymentId": running[0] if running else "", "version": ""}
                if attempt + 1 < self.retries:
                    time.sleep(self.retry_delay * 2**attempt)
        else:
            assert unavailable is not None
            raise unavailable
        result: JSON = response.json()
        if "deploymentId" not in result and response.headers.get("Marathon-Deployment-Id"):
            result["deploymentId"] = response.headers["Marathon-Deployment-Id"]
        return result

    def _store_secret(self, service: str, key: str, source: str, text: str) -> None:
        """Store the value of env entry `key` (`text` with its placeholders resolved).

        A generation's path is written once: when it exists it holds the values that
        generation was made with, which is what a rollback to it must find.
        """
        if not self.secrets_url:
            raise MarathonSettingsError(
                f"{service}: {key} is a secret, but platforms.{self.target.name} has no "
                "secrets_url; set it to the DC/OS secret store API "
                "(e.g. https://dcos.example.com/secrets/v1) so the value can be stored there"
            )
        response = self._secret_request("GET", source, ok=(200, 404))
        if response.status_code == 200:
            return
        value = self._resolved(service, key, text)
        response = self._secret_request("PUT", source, value=value, ok=(201, 409))
        if response.status_code == 409:
            return  # stored by a concurrent apply of the same generation
        log.info(
            "marathon %s: stored secret %s for %s (%s)",
            self.target.name,
            key,
            service,
            ", ".join(find_refs(text)),
        )

    def _resolved(self, service: str, key: str, text: str) -> str:
        return substitute(text, lambda ref: _resolve(ref, f"{service}: {key}", self._on_secret))

    def _secret_source(self, deployable: Deployable, key: str) -> str:
        return f"{self._secret_prefix(deployable.service)}{deployable.secrets_generation}/{key}"

    def _secret_request(
        self, method: str, source: str, *, value: str | None = None, ok: tuple[int, ...]
    ) -> requests.Response:
        assert self.secrets_url is not None
        url = f"{self.secrets_url}/secret/{quote(self.secret_store)}/{quote(source)}"
        response = self._send(method, url, body=None if value is None else {"value": value})
        if response.status_code not in ok:
            try:
                payload = response.json()
            except ValueError:
                payload = None
            # The store's answer describes the path, never the value we sent.
            raise self._secret_error(response.status_code, payload, method, source)
        return response

    def _secret_error(self, status: int, payload: Any, method: str, source: str) -> MarathonError:
        """A DC/OS secret store refusal, said as what it is (never "fix marathon.json.j2")."""
        # The Secrets API documents status codes only: the body, when there is one, is
        # quoted but never needed to decide.
        payload = payload if isinstance(payload, dict) else {}
        code = str(payload.get("code") or "")
        text = str(payload.get("description") or payload.get("message") or "")
        said = f"HTTP {status}" + (f" {code}" if code else "") + (f": {text}" if text else "")
        where = f"{method} secret {source} in store {self.secret_store!r} at {self.secrets_url}"
        if status == 401:
            fix = (
                f"set platforms.{self.target.name}.token to a secret ref holding a valid, "
                "unexpired DC/OS token"
            )
        elif status == 403:
            action = "create" if method == "PUT" else "update" if method == "PATCH" else "delete"
            fix = (
                f"grant the token's account dcos:secrets:{self.secret_store}:{source} "
                f"{action} (or dcos:secrets:{self.secret_store}:{self._secret_prefix('')}* )"
            )
        elif status == 404:
            fix = (
                f"check platforms.{self.target.name}.secret_store (is {self.secret_store!r}) "
                "and secrets_url: the store or the secret does not exist"
            )
        elif status == 400:
            fix = (
                "the store rejected the secret's path or value; the path is built from the "
                "env's group, the service and the key, so check they are valid store paths"
            )
        else:
            fix = f"check the secret store at {self.secrets_url}"
        return MarathonSecretError(f"{where}: the secret store refused ({said}); {fix}")


def config_files(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """The outputs a task reads as files: all but marathon.json, `.env`, build inputs and
    Kubernetes manifests (a template shared by both platforms renders those too)."""
    from configcenter.adapters.k8s_manifests import (
        is_build_file,
        is_env_file,
        is_manifest_file,
        parse_manifests,
    )

    return {
        name: data
        for name, data in files.items()
        if name != APP_FILE
        and not is_env_file(name)
        and not is_build_file(name)
        and not (is_manifest_file(name) and _is_manifest(name, data, parse_manifests))
    }


def check_config_files(
    platform: str, settings: Mapping[str, object], files: Mapping[str, bytes]
) -> UndeliveredFiles | None:
    """Config files reach a task through the Mesos fetcher from configcenter serve, which
    takes `files_url` and `files_key` (the `config_files` capability's check)."""
    found = tuple(sorted(config_files(files)))
    if not found or (settings.get("files_url") and settings.get("files_key")):
        return None
    return UndeliveredFiles(
        found,
        f"renders config files ({', '.join(found)}) for Marathon platform '{platform}', "
        "which has no files_url and files_key: its tasks could not get them",
        f"set platforms.{platform}.files_url to configcenter serve's URL as Mesos agents reach "
        "it and files_key to the same secret as serve.files_key, or render only "
        f"{APP_FILE} and .env outputs",
    )


def _is_manifest(name: str, data: bytes, parse: Callable[..., list[Any]]) -> bool:
    """Whether a YAML output holds Kubernetes objects (an app's own YAML holds none)."""
    from configcenter.adapters.k8s_manifests import ManifestError

    try:
        return bool(parse({name: data}))
    except ManifestError:
        return False


def _message_of(response: requests.Response) -> str:
    """` (Marathon's message)` from an error answer, when it has one."""
    try:
        payload = response.json()
    except ValueError:
        message: object = _plain_text(response.text)
    else:
        message = payload.get("message") if isinstance(payload, dict) else None
    return f" ({str(message)[:200]})" if message else ""


def _plain_text(body: object) -> str:
    """An error page as one line of text: Jetty's and Admin Router's answers are HTML."""
    text = str(body or "")
    title = _TITLE.search(text)
    text = _TAG.sub(" ", title.group(1) if title else text)
    return " ".join(text.split())[:500]


def _env_entries(deployable: Deployable) -> dict[str, str]:
    """The app's environment: the ENV list (secrets as placeholders) and the `.env` outputs.

    An entry that holds a placeholder anywhere is a secret (under its own key, another
    key, or inside a longer string) and goes through the secret store.
    """
    from configcenter.adapters.k8s_manifests import is_env_file, parse_env_file

    env = {key: str(value) for key, value in deployable.values.items()}
    env.update({key: MARKER + ref + "}" for key, ref in deployable.secrets.items()})
    for name in sorted(deployable.files):
        if is_env_file(name):
            env.update(parse_env_file(name, deployable.files[name]))
    return env


def _resolve(ref: str, where: str, on_resolved: Callable[[str], None] | None) -> str:
    try:
        return resolve_secret(ref, on_resolved=on_resolved)
    except SecretError as exc:
        raise MarathonSecretError(f"{where}: {exc}") from None


def _new_session() -> requests.Session:
    import requests

    return requests.Session()


def _setting(target: PlatformTarget, key: str) -> str:
    value = target.settings.get(key, "")
    if not value:
        raise MarathonSettingsError(
            f"platforms.{target.name} has no {key!r}; Marathon platforms need "
            'url (Marathon\'s base URL) and group (e.g. "/shop/{{ env }}")'
        )
    return str(value)


def _group(target: PlatformTarget) -> str:
    raw = _setting(target, "group")
    group = "/" + raw.strip("/")
    segments = group.strip("/").split("/")
    if group == "/" or not all(_SEGMENT.match(s) for s in segments):
        raise MarathonSettingsError(
            f"platforms.{target.name}.group {raw!r} (env {target.env}) is not a Marathon group "
            "path; use lowercase segments of letters, digits, '-' and '.', e.g. /shop/dev"
        )
    return group


def _image(app: Mapping[str, Any]) -> str | None:
    docker = (app.get("container") or {}).get("docker") or {}
    image = docker.get("image")
    return str(image) if image else None


def _task_healthy(task: Mapping[str, Any]) -> bool:
    results = task.get("healthCheckResults") or []
    return bool(results) and all(r.get("alive") for r in results)


def _runs(current: Mapping[str, Any], wanted: JSON) -> bool:
    """Whether the app Marathon returns is exactly the definition we would PUT.

    Every field we send must be there with our values (`_contains`, as Marathon
    adds defaults inside objects); `env`, `labels` and `secrets` must have no
    extra keys; and a field we do not send must be empty or one Marathon fills
    in itself, so a health check, constraint or fetch URI added by hand (or left
    by a partial update) is a difference that the next PUT removes.
    """
    if not _contains(current, wanted):
        return False
    for key in ("env", "labels", "secrets"):
        if set(current.get(key) or {}) != set(wanted.get(key) or {}):
            return False
    return all(
        key in wanted
        or key in _READ_ONLY
        or key in _FILLED_BY_MARATHON
        or value in (None, [], {}, "", False)
        for key, value in current.items()
    )


def _contains(actual: Any, wanted: Any) -> bool:
    """Whether `actual` (as Marathon returns it, defaults filled in) has every field we send."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            k in actual and _contains(actual[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(_contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)


def open_platform(
    target: PlatformTarget, redactor: Redactor, *, force: bool = False
) -> MarathonPlatform:
    """The registry's factory (`configcenter.core.kinds`); secrets it resolves are masked."""
    return MarathonPlatform(target, force=force, on_secret=redactor.register)
