"""An in-process Marathon (plus the DC/OS secret store) for adapter tests.

Marathon cannot run on the test machine, so this double follows the published
REST contract closely enough that the same adapter code works against a real
Marathon: the RAML in mesosphere/marathon, `docs/docs/rest-api/public/api/`
(`v2/apps.raml`, `v2/deployments.raml`, `v2/groups.raml`, `v2/info.raml`,
`traits.raml` for the `deployable` 200/409 and `objectValidator` 422 shapes,
`v2/types/app.raml`, `secrets.raml`, `environmentVariable.raml`,
`versionInfo.raml`, `v2/examples/deployments.json`, `app_list.json`,
`deployments_result.json`), and the DC/OS Secrets API
(`PUT|PATCH|GET|DELETE /secrets/v1/secret/{store}/{path}` with `{"value": ...}`, and
`GET ...?list=true` answering `{"array": [paths under it]}`, dcos-docs-site
`security/ent/secrets/secrets-api`, dcos-commons `SecretsClient.list`).

What it models:

* apps with `version` / `versionInfo` semantics: a change to anything but
  `instances` is a config change (`lastConfigChangeAt` moves); a change of
  `instances` alone only moves `lastScalingAt`; every stored version is
  listed newest first under `/versions` and readable by timestamp;
* deployments that exist for `deploy_seconds` and then complete: new tasks
  are staged, run after half the time, and replace the old tasks at the end;
  `steps`, `currentStep`, `totalSteps`, `affectedApps` as Marathon lists them;
* task health driven by the image: tasks of an image containing
  `never-ready` run but never pass their health checks (without health
  checks they never leave TASK_STAGING), so their deployment never
  completes, exactly like a real stuck rollout; tasks whose secrets are
  missing from the secret store never start either;
* `PUT /v2/apps/{id}` and `PUT /v2/apps` as partial updates unless the query
  says `partialUpdate=false` (apps.raml: "values not defined in the JSON
  will not change"): top-level fields the body leaves out keep their current
  value, a field it sets replaces the current one whole;
* 409 for a change to an app locked by a deployment (unless `?force=true`,
  which cancels the running deployment), 422 `{"message", "details"}` for
  invalid definitions, 404 `{"message"}` for unknown ids;
* 403 `{"message": "Max number (N) of running deployments is achieved. ..."}`
  once `max_running_deployments` deployments run (Marathon's
  `--max_running_deployments`, TooManyRunningDeploymentsException); with
  `token` set, 401 from DC/OS's Admin Router (an HTML page, `WWW-Authenticate:
  oauthjwt`) for a missing or wrong `Authorization: token=...`; the secret
  store's documented status codes without bodies (its API declares none),
  403 for a path outside `secret_permissions`; `fail_next()` for 502/503
  answers (by default the leader proxy's Jetty HTML page), before or after the
  call took effect;
* the Mesos fetcher: a task's `fetch` URIs are downloaded when it launches
  (`sandboxes[task id]`, by `destPath`); a failed download fails the task
  (`lastTaskFailure` TASK_FAILED "Failed to fetch all URIs ...");
* readiness checks: tasks of an app with `readinessChecks` run, and the
  deployment lists their `readinessCheckResults`; it completes only once every
  new task is ready (never for `never-ready` images);
* `tasksHealthy` counts only tasks with passing health checks, so an app
  without health checks reports 0 healthy tasks, as Marathon does.

State advances lazily on each request, under one lock, from a monotonic
clock: no background threads, and tests control timing via `deploy_seconds`.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.loopback_http import LoopbackServer

JSON = dict[str, Any]

NEVER_READY = "never-ready"
_SEGMENT = r"(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])"
_PATH_ID = re.compile(rf"^(/{_SEGMENT})+$")
_ENV_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DEFAULTS: JSON = {
    "instances": 1,
    "cpus": 1.0,
    "mem": 128.0,
    "disk": 0.0,
    "gpus": 0,
    "env": {},
    "labels": {},
    "secrets": {},
    "healthChecks": [],
    "constraints": [],
    "dependencies": [],
    "backoffSeconds": 1,
    "backoffFactor": 1.15,
    "maxLaunchDelaySeconds": 3600,
    "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0},
}
_READ_ONLY = {
    "version",
    "versionInfo",
    "tasks",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
}


@dataclass
class Task:
    id: str
    app_id: str
    version: str
    ready: bool  # whether this task can ever start and pass its checks
    health_checked: bool
    staged_at: str
    state: str = "TASK_STAGING"
    ports: list[int] = field(default_factory=list)  # host ports (fixed portDefinitions)

    def to_json(self) -> JSON:
        data: JSON = {
            "id": self.id,
            "appId": self.app_id,
            "host": "127.0.0.1",
            "ports": list(self.ports),
            "slaveId": "agent-1",
            "stagedAt": self.staged_at,
            "startedAt": self.staged_at if self.state == "TASK_RUNNING" else None,
            "state": self.state,
            "version": self.version,
            "ipAddresses": [{"ipAddress": "127.0.0.1", "protocol": "IPv4"}],
        }
        if self.health_checked and self.state == "TASK_RUNNING":
            data["healthCheckResults"] = [
                {
                    "alive": self.ready,
                    "consecutiveFailures": 0 if self.ready else 3,
                    "taskId": self.id,
                }
            ]
        return data

    @property
    def healthy(self) -> bool:
        return self.state == "TASK_RUNNING" and self.health_checked and self.ready


@dataclass
class App:
    id: str
    definition: JSON  # the stored definition, defaults filled, no read-only fields
    version: str
    last_scaling_at: str
    last_config_change_at: str
    versions: dict[str, JSON] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    #: app.raml TaskFailure of the last task that failed or was killed, if any.
    last_task_failure: JSON | None = None

    def to_json(self, *, tasks: bool, deployments: list[JSON], failure: bool = True) -> JSON:
        data = dict(self.definition)
        data["id"] = self.id
        data["version"] = self.version
        data["versionInfo"] = {
            "lastScalingAt": self.last_scaling_at,
            "lastConfigChangeAt": self.last_config_change_at,
        }
        running = [t for t in self.tasks if t.state == "TASK_RUNNING"]
        data["tasksStaged"] = sum(1 for t in self.tasks if t.state == "TASK_STAGING")
        data["tasksRunning"] = len(running)
        data["tasksHealthy"] = sum(1 for t in running if t.healthy)
        data["tasksUnhealthy"] = sum(1 for t in running if t.health_checked and not t.ready)
        data["deployments"] = deployments
        if tasks:
            data["tasks"] = [t.to_json() for t in self.tasks]
        if failure and self.last_task_failure is not None:
            data["lastTaskFailure"] = dict(self.last_task_failure)
        return data


@dataclass
class Change:
    app_id: str
    action: str  # StartApplication | RestartApplication | ScaleApplication | StopApplication
    target_version: str
    previous: JSON | None  # definition before the change, for DELETE /v2/deployments rollback


@dataclass
class Deployment:
    id: str
    version: str
    started: float
    changes: list[Change]

    def steps(self) -> list[JSON]:
        steps: list[JSON] = []
        for change in self.changes:
            if change.action == "StartApplication":
                steps.append({"actions": [{"action": "StartApplication", "app": change.app_id}]})
                steps.append({"actions": [{"action": "ScaleApplication", "app": change.app_id}]})
            else:
                steps.append({"actions": [{"action": change.action, "app": change.app_id}]})
        return steps


#: LeaderProxyFilter's `sendError(503, ...)` as Jetty renders it (an HTML page, not JSON).
_UNAVAILABLE = (
    "<html>\n<head>\n<title>Error 503 Could not determine the current leader</title>\n"
    "</head>\n<body><h2>HTTP ERROR 503</h2>\n<p>Reason:\n<pre>    Could not determine the "
    'current leader</pre></p><hr><a href="http://eclipse.org/jetty">Powered by Jetty://'
    "</a><hr/>\n</body>\n</html>\n"
)


@dataclass
class Fault:
    method: str
    path_prefix: str
    status: int
    times: int
    after_effect: bool
    body: JSON | str


class HttpError(Exception):
    def __init__(self, status: int, body: JSON | str | None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    body: str


class MarathonDouble:
    """The state and the HTTP server; `url` is valid between `start()` and `stop()`."""

    def __init__(
        self, *, deploy_seconds: float = 0.2, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.deploy_seconds = deploy_seconds
        self._clock = clock
        self._lock = threading.RLock()
        self.apps: dict[str, App] = {}
        self.deployments: dict[str, Deployment] = {}
        #: (store, path) -> value: what the DC/OS secret store holds.
        self.secret_values: dict[tuple[str, str], str] = {}
        self.requests: list[RecordedRequest] = []
        self._last_version = datetime(2000, 1, 1, tzinfo=UTC)
        self._task_seq = 0
        #: Marathon's --max_running_deployments (None: no limit in tests).
        self.max_running_deployments: int | None = None
        #: When set, every call needs `Authorization: token=<token>` (DC/OS ACS).
        self.token: str | None = None
        #: Secret paths (prefixes) the token's account may write; None: all of them.
        self.secret_permissions: list[str] | None = None
        self._faults: list[Fault] = []
        #: task id -> what the Mesos fetcher put in its sandbox (destPath -> bytes).
        self.sandboxes: dict[str, dict[str, bytes]] = {}
        self._http = LoopbackServer("marathon-double")

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        double = self

        class Handler(_Handler):
            pass

        Handler.double = double
        self._http.start(Handler)

    def stop(self) -> None:
        self._http.stop()

    @property
    def url(self) -> str:
        port = self._http.port
        if port is None:
            raise RuntimeError("the Marathon double is not running; call start()")
        return f"http://127.0.0.1:{port}"

    # -- helpers for tests ---------------------------------------------------------

    def app_json(self, app_id: str) -> JSON:
        """The app as GET /v2/apps/{id} would show it, tasks embedded."""
        with self._lock:
            self._advance()
            return self._app_view(self._app(app_id), tasks=True, failure=True)

    def marathon_bodies(self) -> list[str]:
        """Every request body sent to Marathon itself (not the secret store)."""
        with self._lock:
            return [r.body for r in self.requests if r.path.startswith("/v2")]

    # -- request dispatch ------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path_prefix: str,
        status: int,
        *,
        times: int = 1,
        after_effect: bool = False,
        body: JSON | str | None = None,
    ) -> None:
        """Answer the next `times` matching calls with `status` (503: a leader change).

        With `after_effect` the call is carried out first and only its answer is
        lost, as when Marathon's leader proxy times out on a PUT whose deployment
        the leader has already started.
        """
        with self._lock:
            self._faults.append(
                Fault(method, path_prefix, status, times, after_effect, body or _UNAVAILABLE)
            )

    def handle(
        self, method: str, raw_path: str, body: bytes, authorization: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        text = body.decode("utf-8", "replace")
        with self._lock:
            self.requests.append(RecordedRequest(method, path, parts.query, text))
            self._advance()
            headers: dict[str, str] = {}
            fault = self._fault(method, path)
            try:
                if self.token is not None and authorization != f"token={self.token}":
                    # DC/OS Admin Router: no or a bad token (auth/authentication docs).
                    # Admin Router's auth.lua exit_401: an HTML page, not JSON.
                    headers["WWW-Authenticate"] = "oauthjwt"
                    raise HttpError(401, "<html><body><h1>401 Unauthorized</h1></body></html>\n")
                if fault is not None and not fault.after_effect:
                    raise HttpError(fault.status, fault.body)
                status, payload = self._route(method, path, query, text, headers)
                if fault is not None:
                    status, payload = fault.status, fault.body
            except HttpError as exc:
                status, payload = exc.status, exc.body
        if isinstance(payload, str):
            html = payload.startswith("<html")
            headers.setdefault("Content-Type", "text/html; charset=UTF-8" if html else "text/plain")
            return status, headers, payload.encode()
        if payload is None:
            return status, headers, b""
        headers["Content-Type"] = "application/json"
        return status, headers, json.dumps(payload).encode()

    def _fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.method == method and path.startswith(fault.path_prefix) and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: str,
        headers: dict[str, str],
    ) -> tuple[int, Any]:
        force = _flag(query, "force")
        if path == "/ping" and method == "GET":
            return 200, "pong"
        if path == "/v2/info" and method == "GET":
            return 200, self._info()
        if path.startswith("/secrets/v1/secret/"):
            return self._secret(
                method, path.removeprefix("/secrets/v1/secret/"), body, _flag(query, "list")
            )
        if path in ("/v2/apps", "/v2/apps/"):
            if method == "GET":
                return 200, self._list_apps(query)
            if method == "POST":
                return self._create_app(_parse_json(body), headers)
            if method == "PUT":
                return self._put_apps(_parse_json(body), force, _partial(query), headers)
            raise HttpError(405, {"message": f"{method} is not allowed on /v2/apps"})
        match = re.fullmatch(r"/v2/apps(/.+?)/versions(?:/([^/]+))?/?", path)
        if match and method == "GET":
            app = self._app(match.group(1))
            if match.group(2) is None:
                return 200, {"versions": sorted(app.versions, reverse=True)}
            version = match.group(2)
            if version not in app.versions:
                raise HttpError(
                    404, {"message": f"App '{app.id}' does not exist in version {version}"}
                )
            return 200, dict(app.versions[version], id=app.id, version=version)
        match = re.fullmatch(r"/v2/apps(/.+?)/tasks/?", path)
        if match and method == "GET":
            app = self._app(match.group(1))
            return 200, {"tasks": [t.to_json() for t in app.tasks]}
        match = re.fullmatch(r"/v2/apps(/.+?)/?", path)
        if match:
            app_id = match.group(1)
            if method == "GET":
                embed = set(query.get("embed", []))
                tasks = "app.tasks" in embed or "app.failures" in embed
                failure = "app.lastTaskFailure" in embed or "app.failures" in embed
                view = self._app_view(self._app(app_id), tasks=tasks, failure=failure)
                return 200, {"app": view}
            if method == "PUT":
                return self._put_app(app_id, _parse_json(body), force, _partial(query), headers)
            if method == "DELETE":
                return self._delete_app(app_id, force, headers)
            raise HttpError(405, {"message": f"{method} is not allowed on {path}"})
        if path in ("/v2/deployments", "/v2/deployments/") and method == "GET":
            return 200, [self._deployment_view(d) for d in self.deployments.values()]
        match = re.fullmatch(r"/v2/deployments/([^/]+)/?", path)
        if match and method == "DELETE":
            return self._cancel_deployment(match.group(1), force)
        if path.startswith("/v2/groups") and method == "GET":
            group_id = _normalise_id(path.removeprefix("/v2/groups") or "/")
            return 200, self._group(group_id)
        raise HttpError(404, {"message": f"no resource at {method} {path}"})

    # -- apps --------------------------------------------------------------------------

    def _app(self, app_id: str) -> App:
        app = self.apps.get(_normalise_id(app_id))
        if app is None:
            raise HttpError(404, {"message": f"App '{_normalise_id(app_id)}' does not exist"})
        return app

    def _app_view(self, app: App, *, tasks: bool, failure: bool = False) -> JSON:
        return app.to_json(tasks=tasks, deployments=self._deployments_of(app.id), failure=failure)

    def _deployments_of(self, app_id: str) -> list[JSON]:
        return [
            {"id": d.id}
            for d in self.deployments.values()
            if any(c.app_id == app_id for c in d.changes)
        ]

    def _list_apps(self, query: dict[str, list[str]]) -> JSON:
        embed = set(query.get("embed", []))
        tasks = "apps.tasks" in embed or "apps.failures" in embed
        wanted_id = (query.get("id") or [""])[0]
        selectors = _label_selectors((query.get("label") or [""])[0])
        apps = []
        for app in sorted(self.apps.values(), key=lambda a: a.id):
            if wanted_id and wanted_id not in app.id:
                continue
            labels = app.definition.get("labels", {})
            if not all(sel(labels) for sel in selectors):
                continue
            apps.append(self._app_view(app, tasks=tasks))
        return {"apps": apps}

    def _create_app(self, data: Any, headers: dict[str, str]) -> tuple[int, Any]:
        definition = _as_app_object(data)
        app_id = _normalise_id(str(definition.get("id", "")))
        _validate(definition, app_id)
        if app_id in self.apps:
            raise HttpError(409, {"message": f"An app with id [{app_id}] already exists."})
        deployment = self._deploy([(app_id, definition)])
        headers["Location"] = f"/v2/apps{app_id}"
        headers["Marathon-Deployment-Id"] = deployment.id
        return 201, self._app_view(self.apps[app_id], tasks=False)

    def _put_app(
        self, path_id: str, data: Any, force: bool, partial: bool, headers: dict[str, str]
    ) -> tuple[int, Any]:
        app_id = _normalise_id(path_id)
        definition = self._updated(app_id, _as_app_object(data), partial)
        body_id = definition.get("id")
        if body_id is not None and _normalise_id(str(body_id)) != app_id:
            raise HttpError(
                422,
                {
                    "message": "Object is not valid",
                    "details": [
                        {"path": "/id", "errors": [f"id {body_id} does not match path {app_id}"]}
                    ],
                },
            )
        _validate(definition, app_id)
        self._check_lock([app_id], force)
        created = app_id not in self.apps
        deployment = self._deploy([(app_id, definition)])
        headers["Marathon-Deployment-Id"] = deployment.id
        if created:
            headers["Location"] = f"/v2/apps{app_id}"
        return (201 if created else 200), {
            "deploymentId": deployment.id,
            "version": deployment.version,
        }

    def _put_apps(
        self, data: Any, force: bool, partial: bool, headers: dict[str, str]
    ) -> tuple[int, Any]:
        if not isinstance(data, list):
            raise HttpError(
                400,
                {
                    "message": "Invalid JSON",
                    "details": [{"path": "/", "errors": ["expected array"]}],
                },
            )
        items = []
        for index, item in enumerate(data):
            definition = _as_app_object(item)
            app_id = _normalise_id(str(definition.get("id", "")))
            definition = self._updated(app_id, definition, partial)
            try:
                _validate(definition, app_id)
            except HttpError as exc:
                assert exc.body is not None
                for detail in exc.body["details"]:
                    detail["path"] = f"/{index}{detail['path']}"
                raise
            items.append((app_id, definition))
        self._check_lock([app_id for app_id, _ in items], force)
        deployment = self._deploy(items)
        headers["Marathon-Deployment-Id"] = deployment.id
        return 200, {"deploymentId": deployment.id, "version": deployment.version}

    def _updated(self, app_id: str, update: JSON, partial: bool) -> JSON:
        """What a PUT stores: Marathon's `partialUpdate` (default true) keeps every top-level
        field the body leaves out; `partialUpdate=false` replaces the whole definition.

        AppsResource.replace parses a partial body as an AppUpdate and copies each
        field it does not define from the current app (a field it defines, e.g.
        `env`, replaces the current one as a whole); a complete replacement is
        parsed as a new app, so absent fields take their defaults.
        """
        existing = self.apps.get(app_id)
        if not partial or existing is None:
            return update
        merged = dict(existing.definition)
        merged.update(update)
        return merged

    def _delete_app(self, path_id: str, force: bool, headers: dict[str, str]) -> tuple[int, Any]:
        app = self._app(path_id)
        self._check_lock([app.id], force)
        version = self._next_version()
        deployment = Deployment(
            str(uuid.uuid4()),
            version,
            self._clock(),
            [Change(app.id, "StopApplication", version, dict(app.definition))],
        )
        del self.apps[app.id]
        self.deployments[deployment.id] = deployment
        headers["Marathon-Deployment-Id"] = deployment.id
        return 200, {"deploymentId": deployment.id, "version": version}

    def _check_lock(self, app_ids: list[str], force: bool) -> None:
        locking = [
            d for d in self.deployments.values() if any(c.app_id in app_ids for c in d.changes)
        ]
        if not locking:
            return
        if not force:
            raise HttpError(
                409,
                {
                    "message": (
                        "App is locked by one or more deployments. Override with the option "
                        f"'?force=true'. View details at '/v2/deployments/{locking[0].id}'."
                    ),
                    "deployments": [{"id": d.id} for d in locking],
                },
            )
        for deployment in locking:
            del self.deployments[deployment.id]

    def _deploy(self, items: list[tuple[str, JSON]]) -> Deployment:
        limit = self.max_running_deployments
        if limit is not None and len(self.deployments) >= limit:
            # TooManyRunningDeploymentsException, mapped to 403 by MarathonExceptionMapper.
            raise HttpError(
                403,
                {
                    "message": (
                        f"Max number ({limit}) of running deployments is achieved. Wait for "
                        "existing deployments to complete or cancel oneusing force=true "
                        "parameter. You can increase max deployment number by using "
                        "--max_running_deployments parameter but be advised that this can "
                        "have negative effects on the performance."
                    )
                },
            )
        version = self._next_version()
        changes = []
        for app_id, definition in items:
            stored = _with_defaults(definition)
            app = self.apps.get(app_id)
            if app is None:
                app = App(app_id, stored, version, version, version)
                self.apps[app_id] = app
                action, previous = "StartApplication", None
            else:
                previous = dict(app.definition)
                scaling_only = _without(previous, "instances") == _without(stored, "instances")
                app.definition = stored
                app.version = version
                app.last_scaling_at = version
                if scaling_only:
                    action = "ScaleApplication"
                else:
                    app.last_config_change_at = version
                    action = "RestartApplication"
            app.versions[version] = dict(stored)
            changes.append(Change(app_id, action, version, previous))
            self._launch(app, action, version)
        deployment = Deployment(str(uuid.uuid4()), version, self._clock(), changes)
        self.deployments[deployment.id] = deployment
        return deployment

    def _launch(self, app: App, action: str, version: str) -> None:
        instances = int(app.definition["instances"])
        if action == "ScaleApplication":
            current = [t for t in app.tasks if t.version != "" and t.state != "TASK_KILLED"]
            for task in current[instances:]:
                app.tasks.remove(task)
            missing = instances - len(app.tasks)
            config_version = app.last_config_change_at
        else:
            # A restart drops tasks of an earlier, cancelled rollout that never became healthy.
            app.tasks = [t for t in app.tasks if t.healthy or (not t.health_checked and t.ready)]
            missing = instances
            config_version = version
        for _ in range(max(missing, 0)):
            self._task_seq += 1
            slug = app.id.strip("/").replace("/", "_")
            task = Task(
                id=f"{slug}.{uuid.UUID(int=self._task_seq)}",
                app_id=app.id,
                version=version if action != "ScaleApplication" else config_version,
                ready=self._can_be_ready(app.definition),
                health_checked=bool(app.definition.get("healthChecks")),
                staged_at=version,
                ports=_fixed_ports(app.definition),
            )
            failure = self._fetch(task, app.definition.get("fetch") or [])
            if failure:
                task.ready = False
                app.last_task_failure = {
                    "appId": app.id,
                    "host": "127.0.0.1",
                    "message": failure,
                    "state": "TASK_FAILED",
                    "taskId": task.id,
                    "timestamp": version,
                    "version": task.version,
                    "slaveId": "agent-1",
                }
            app.tasks.append(task)

    def _fetch(self, task: Task, entries: list[JSON]) -> str:
        """What the Mesos fetcher does before a task starts: download each `fetch` URI
        into the sandbox (at `destPath`, else the URI's last segment). Returns the
        failure message Mesos reports when a download fails, "" when all arrived."""
        sandbox: dict[str, bytes] = {}
        for entry in entries:
            uri = str(entry.get("uri", ""))
            dest = str(entry.get("destPath") or urlsplit(uri).path.rsplit("/", 1)[-1])
            try:
                with urllib.request.urlopen(uri, timeout=10) as response:
                    sandbox[dest] = response.read()
            except (urllib.error.URLError, OSError) as exc:
                self.sandboxes[task.id] = sandbox
                return (
                    f"Failed to fetch all URIs for container '{task.id}': "
                    f"Error downloading resource {urlsplit(uri).path}: {exc}"
                )
        self.sandboxes[task.id] = sandbox
        return ""

    def _can_be_ready(self, definition: JSON) -> bool:
        image = str(((definition.get("container") or {}).get("docker") or {}).get("image", ""))
        if NEVER_READY in image:
            return False
        for secret in (definition.get("secrets") or {}).values():
            if ("default", str(secret.get("source", ""))) not in self.secret_values:
                return False
        return True

    # -- time --------------------------------------------------------------------------

    def _advance(self) -> None:
        now = self._clock()
        for deployment in list(self.deployments.values()):
            elapsed = now - deployment.started
            done = True
            for change in deployment.changes:
                done = self._advance_change(change, elapsed) and done
            if done:
                del self.deployments[deployment.id]

    def _advance_change(self, change: Change, elapsed: float) -> bool:
        """Move one app's tasks along; True once this change has completed."""
        if change.action == "StopApplication":
            return elapsed >= self.deploy_seconds
        app = self.apps.get(change.app_id)
        if app is None or app.version != change.target_version:
            return True  # superseded by a forced change
        new = [t for t in app.tasks if t.version >= change.target_version]
        if change.action == "ScaleApplication":
            new = [t for t in app.tasks if t.state == "TASK_STAGING"]
        if elapsed >= self.deploy_seconds / 2:
            for task in new:
                readiness = bool(app.definition.get("readinessChecks"))
                if task.state == "TASK_STAGING" and (
                    task.ready or task.health_checked or readiness
                ):
                    task.state = "TASK_RUNNING"
        if elapsed < self.deploy_seconds:
            return False
        if not all(t.ready and t.state == "TASK_RUNNING" for t in new):
            failing = next((t for t in new if t.health_checked and not t.ready), None)
            recorded = (app.last_task_failure or {}).get("taskId")
            if failing is not None and failing.state == "TASK_RUNNING" and recorded != failing.id:
                # Marathon kills a task whose health checks keep failing and records it.
                app.last_task_failure = {
                    "appId": app.id,
                    "host": "127.0.0.1",
                    "message": "Task was killed since health check failed",
                    "state": "TASK_KILLED",
                    "taskId": failing.id,
                    "timestamp": self._next_version(),
                    "version": failing.version,
                    "slaveId": "agent-1",
                }
            return False
        if change.action != "ScaleApplication":
            app.tasks = [t for t in app.tasks if t.version >= change.target_version]
        return True

    def _next_version(self) -> str:
        now = datetime.now(UTC)
        if now <= self._last_version:
            now = self._last_version + timedelta(milliseconds=1)
        self._last_version = now
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"

    # -- deployments -------------------------------------------------------------------

    def _deployment_view(self, deployment: Deployment) -> JSON:
        steps = deployment.steps()
        elapsed = self._clock() - deployment.started
        fraction = min(elapsed / self.deploy_seconds, 0.999) if self.deploy_seconds else 0.999
        current = min(int(fraction * len(steps)) + 1, len(steps)) if steps else 0
        return {
            "id": deployment.id,
            "version": deployment.version,
            "affectedApps": sorted({c.app_id for c in deployment.changes}),
            "affectedPods": [],
            "steps": steps,
            "currentActions": [
                self._with_readiness(action) for action in steps[current - 1]["actions"]
            ]
            if steps
            else [],
            "currentStep": current,
            "totalSteps": len(steps),
        }

    def _with_readiness(self, action: JSON) -> JSON:
        """An action of an app with readinessChecks lists each new task's result
        (deployments.raml: currentActions[].readinessCheckResults); a task that is
        not ready keeps the deployment, and so the app's lock, in place."""
        app = self.apps.get(str(action.get("app")))
        checks = (app.definition.get("readinessChecks") or []) if app else []
        if app is None or not checks:
            return dict(action)
        results = [
            {
                "name": str(check.get("name") or "readinessCheck"),
                "taskId": task.id,
                "ready": task.ready,
                "lastResponse": {
                    "status": 200 if task.ready else 503,
                    "contentType": "text/plain",
                    "body": "ready" if task.ready else "not ready",
                },
            }
            for check in checks
            for task in app.tasks
            if task.version >= app.last_config_change_at and task.state == "TASK_RUNNING"
        ]
        return {**action, "readinessCheckResults": results}

    def _cancel_deployment(self, deployment_id: str, force: bool) -> tuple[int, Any]:
        deployment = self.deployments.pop(deployment_id, None)
        if deployment is None:
            raise HttpError(404, {"message": f"DeploymentPlan {deployment_id} does not exist"})
        if force:
            return 202, None
        reverts = []
        for change in deployment.changes:
            if change.previous is None:
                self.apps.pop(change.app_id, None)
            else:
                reverts.append((change.app_id, change.previous))
        if not reverts:
            return 200, {"deploymentId": deployment.id, "version": deployment.version}
        rollback = self._deploy(reverts)
        return 200, {"deploymentId": rollback.id, "version": rollback.version}

    # -- groups, info, secrets ------------------------------------------------------

    def _group(self, group_id: str) -> JSON:
        prefix = "/" if group_id == "/" else group_id + "/"
        members = [a for a in self.apps.values() if a.id.startswith(prefix)]
        if group_id != "/" and not members:
            raise HttpError(404, {"message": f"Group '{group_id}' does not exist"})
        direct = sorted((a for a in members if "/" not in a.id[len(prefix) :]), key=lambda a: a.id)
        children = sorted(
            {prefix + a.id[len(prefix) :].split("/")[0] for a in members} - {a.id for a in direct}
        )
        versions = [a.version for a in members]
        return {
            "id": group_id,
            "apps": [self._app_view(a, tasks=False) for a in direct],
            "groups": [self._group(child) for child in children],
            "pods": [],
            "dependencies": [],
            "version": max(versions) if versions else self._last_version.isoformat(),
        }

    def _info(self) -> JSON:
        """Shaped like v2/examples/info.json."""
        port = int(self.url.rsplit(":", 1)[1])
        return {
            "name": "marathon",
            "version": "1.11.24",
            "buildref": "test-double",
            "elected": True,
            "leader": f"127.0.0.1:{port}",
            "frameworkId": "test-double-framework-0000",
            "marathon_config": {
                "master": "127.0.0.1:5050",
                "failover_timeout": 604800,
                "framework_name": "marathon",
                "ha": False,
                "checkpoint": True,
                "local_port_min": 10000,
                "local_port_max": 20000,
                "executor": "//cmd",
                "hostname": "127.0.0.1",
                "webui_url": None,
                "mesos_role": None,
                "task_launch_timeout": 300000,
                "reconciliation_initial_delay": 15000,
                "reconciliation_interval": 300000,
                "mesos_user": "root",
                "leader_proxy_connection_timeout_ms": 5000,
                "leader_proxy_read_timeout_ms": 10000,
                "mesos_leader_ui_url": None,
                "features": ["secrets"],
            },
            "zookeeper_config": {
                "zk": "zk://127.0.0.1:2181/marathon",
                "zk_timeout": 10000,
                "zk_session_timeout": 1800000,
                "zk_max_versions": 25,
            },
            "event_subscriber": None,
            "http_config": {"assets_path": None, "http_port": port, "https_port": 8443},
        }

    def _secret(self, method: str, rest: str, body: str, listing: bool = False) -> tuple[int, Any]:
        store, _, path = rest.partition("/")
        key = (store, path.strip("/"))
        if method == "GET" and listing:
            # `GET .../secret/{store}/{path}?list=true`: the secrets under the path, relative
            # to it, as `{"array": [...]}` (dcos-commons' SecretsClient.list reads it so).
            prefix = key[1] + "/" if key[1] else ""
            return 200, {
                "array": sorted(
                    p.removeprefix(prefix)
                    for s, p in self.secret_values
                    if s == store and p.startswith(prefix)
                )
            }
        if not key[1]:
            raise HttpError(400, None)
        allowed = self.secret_permissions
        permitted = allowed is None or any(key[1].startswith(prefix) for prefix in allowed)
        if method != "GET" and not permitted:
            raise HttpError(403, None)
        if method in ("PUT", "PATCH"):
            data = _parse_json(body)
            if not isinstance(data, dict) or not isinstance(data.get("value"), str):
                raise HttpError(400, None)
            if method == "PUT" and key in self.secret_values:
                raise HttpError(409, None)
            if method == "PATCH" and key not in self.secret_values:
                raise HttpError(404, None)
            self.secret_values[key] = data["value"]
            return (201, None) if method == "PUT" else (204, None)
        if key not in self.secret_values:
            raise HttpError(404, None)
        if method == "GET":
            return 200, {"value": self.secret_values[key]}
        if method == "DELETE":
            del self.secret_values[key]
            return 204, None
        raise HttpError(405, None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffer the response so headers and body leave in one segment (no Nagle stall).
    wbufsize = 1 << 16
    double: MarathonDouble

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, payload = self.double.handle(
            self.command, self.path, body, self.headers.get("Authorization")
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows failures, not access logs."""


# -- validation and small helpers -----------------------------------------------------


def _fixed_ports(definition: JSON) -> list[int]:
    """The host ports a task gets: Marathon assigns `portDefinitions[].port`; 0 is random,
    which the double does not model, so only fixed ports are reported."""
    return [
        int(p["port"])
        for p in definition.get("portDefinitions") or []
        if isinstance(p, dict) and isinstance(p.get("port"), int) and p["port"] > 0
    ]


def _parse_json(body: str) -> Any:
    try:
        return json.loads(body) if body else None
    except json.JSONDecodeError as exc:
        raise HttpError(
            400,
            {
                "message": "Invalid JSON",
                "details": [{"path": "/", "errors": [f"error.invalid.json: {exc.msg}"]}],
            },
        ) from None


def _as_app_object(data: Any) -> JSON:
    if not isinstance(data, dict):
        raise HttpError(
            400,
            {
                "message": "Invalid JSON",
                "details": [{"path": "/", "errors": ["error.expected.jsobject"]}],
            },
        )
    return {k: v for k, v in data.items() if k not in _READ_ONLY}


def _normalise_id(raw: str) -> str:
    value = "/" + raw.strip("/")
    return value


def _with_defaults(definition: JSON) -> JSON:
    stored: JSON = json.loads(json.dumps(_DEFAULTS))
    stored.update(json.loads(json.dumps(definition)))
    stored.pop("id", None)
    return stored


def _without(definition: JSON, key: str) -> JSON:
    return {k: v for k, v in definition.items() if k != key}


def _partial(query: dict[str, list[str]]) -> bool:
    """`partialUpdate` as AppsResource reads it: true unless given as false."""
    return (query.get("partialUpdate") or ["true"])[0].lower() != "false"


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return (query.get(name) or ["false"])[0].lower() in ("true", "1", "")


def _label_selectors(raw: str) -> list[Callable[[dict[str, str]], bool]]:
    """Existence (`k`), equality (`k==v`) and inequality (`k!=v`) selectors, comma-joined."""
    selectors: list[Callable[[dict[str, str]], bool]] = []
    for part in (p.strip() for p in re.split(r"(?<!\\),", raw) if p.strip()):
        match = re.fullmatch(r"(.+?)\s*(==|!=)\s*(.*)", part)
        if match:
            key, op, value = (g.replace("\\", "") for g in match.groups())
            selectors.append(_selector(key, op, value))
        else:
            selectors.append(_selector(part.replace("\\", ""), "exists", ""))
    return selectors


def _selector(key: str, op: str, value: str) -> Callable[[dict[str, str]], bool]:
    def matches(labels: dict[str, str]) -> bool:
        if key not in labels:
            return False
        if op == "==":
            return labels[key] == value
        if op == "!=":
            return labels[key] != value
        return True

    return matches


def _validate(definition: JSON, app_id: str) -> None:
    """Marathon's 422 rules for the fields configcenter sends, with its detail shape."""
    details: list[JSON] = []

    def bad(path: str, error: str) -> None:
        details.append({"path": path, "errors": [error]})

    if not _PATH_ID.match(app_id):
        bad("/id", f"must fully match regular expression '^{_SEGMENT}|(\\.|\\.\\.)$'")
    has_cmd = bool(definition.get("cmd"))
    has_args = bool(definition.get("args"))
    container = definition.get("container")
    if has_cmd and has_args:
        bad("/", "AppDefinition must not contain both 'cmd' and 'args'")
    if not (has_cmd or has_args or container):
        bad("/", "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.")
    instances = definition.get("instances", 1)
    if not isinstance(instances, int) or isinstance(instances, bool) or instances < 0:
        bad("/instances", "got " + json.dumps(instances) + ", expected 0 or more")
    for name, minimum in (("cpus", 0.001), ("mem", 0.0), ("disk", 0.0)):
        value = definition.get(name, minimum)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < minimum:
            bad(f"/{name}", f"got {json.dumps(value)}, expected {minimum} or more")
    if container is not None:
        if not isinstance(container, dict):
            bad("/container", "error.expected.jsobject")
        elif container.get("type", "DOCKER") == "DOCKER":
            image = (container.get("docker") or {}).get("image")
            if not isinstance(image, str) or not image:
                bad("/container/docker/image", "error.minLength")
    secrets = definition.get("secrets") or {}
    if not isinstance(secrets, dict):
        bad("/secrets", "error.expected.jsobject")
        secrets = {}
    for name, secret in secrets.items():
        if (
            not isinstance(secret, dict)
            or not isinstance(secret.get("source"), str)
            or not secret["source"]
        ):
            bad(f"/secrets/{name}/source", "error.minLength")
    env = definition.get("env") or {}
    if not isinstance(env, dict):
        bad("/env", "error.expected.jsobject")
        env = {}
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            bad(f"/env/{key}", "must fully match regular expression '^[a-zA-Z_][a-zA-Z0-9_]*$'")
        if isinstance(value, dict):
            ref = value.get("secret")
            if not isinstance(ref, str) or ref not in secrets:
                bad(f"/env/{key}", f"references an undefined secret named '{ref}'")
        elif not isinstance(value, str):
            bad(f"/env/{key}", "error.expected.jsstring")
    labels = definition.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        bad("/labels", "error.expected.jsstring")
    health = definition.get("healthChecks") or []
    if not isinstance(health, list) or not all(isinstance(h, dict) for h in health):
        bad("/healthChecks", "error.expected.jsarray")
    strategy = definition.get("upgradeStrategy") or {}
    for key in ("minimumHealthCapacity", "maximumOverCapacity"):
        value = strategy.get(key, 1) if isinstance(strategy, dict) else None
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            bad(
                f"/upgradeStrategy/{key}",
                "is greater than 1"
                if isinstance(value, int | float) and value > 1
                else "is less than 0",
            )
    if details:
        raise HttpError(422, {"message": "Object is not valid", "details": details})
