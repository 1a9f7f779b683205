"""The console's routes: the status page, runs, a service's page, an environment's plan,
the diff of two releases; each HTML page has a JSON twin under /api with the same data.

The data comes from `configcenter.serve.views` (the CLI's use cases); the HTML from
`configcenter.serve.page`. Endpoints are sync, so Starlette runs them in its thread
pool and Git, rendering and database calls never block the event loop.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from configcenter.core.errors import ConfigError, TransientFailure, UserError
from configcenter.ports.deploy_repo import DeployRepoError
from configcenter.ports.runstore import RUN_KINDS, RunStoreError
from configcenter.serve import page, status, views
from configcenter.serve.engine import Engine, ServeWorkspace
from configcenter.usecases.workspace import Workspace

log = logging.getLogger(__name__)

#: What a page cannot be drawn without, as the operator fixes it: a config repo that does
#: not load, a deploy repo record that cannot be read, a repo that cannot be reached.
UNAVAILABLE = (ConfigError, UserError, DeployRepoError, TransientFailure)

#: Runs the status page lists; the runs page lists RUNS_PAGE per page.
INDEX_RUNS = 30
RUNS_PAGE = 50
MAX_PAGE = 1000


class _MissingQuery(ValueError):
    """A query parameter the request must carry is not there (answered 400)."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def _error(status_code: int, message: str, fix: str) -> JSONResponse:
    return JSONResponse({"error": message, "fix": fix}, status_code=status_code)


def _html_error(
    request: Request, project: str, status_code: int, message: str, fix: str
) -> HTMLResponse:
    return HTMLResponse(
        page.render(
            "error.html",
            root=page.root_of(request.url.path),
            project=project,
            message=message,
            fix=fix,
        ),
        status_code=status_code,
    )


def run_filters(request: Request) -> dict[str, str | None]:
    q = request.query_params
    return {name: (q.get(name) or None) for name in (*views.RUN_FILTERS, "before")}


def _limit(raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 5 or not 1 <= int(raw) <= MAX_PAGE:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def _check_filters(filters: dict[str, str | None]) -> None:
    kind, outcome = filters.get("kind"), filters.get("outcome")
    if kind and kind not in RUN_KINDS:
        raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(RUN_KINDS)}")
    if outcome and outcome not in status.RUN_OUTCOMES:
        raise ValueError(
            f"unknown outcome {outcome!r}: use one of {', '.join(status.RUN_OUTCOMES)}"
        )


def _choices(ws: Workspace) -> dict[str, list[str]]:
    config = ws.config
    names = sorted({s for env in config.environments.values() for s in env.services})
    return {
        "env": list(config.project.environments),
        "kind": list(RUN_KINDS),
        "outcome": list(status.RUN_OUTCOMES),
        "service": names,
    }


def routes(engine: Engine) -> list[Route]:
    """The console's routes for `engine` (the app adds them to its own)."""

    def workspace() -> ServeWorkspace:
        ws = engine.page_workspace()
        ws.read_only = True  # plan's git network steps use deploy_repo.plan_timeout
        return ws

    def runs_page(
        filters: dict[str, str | None], limit: int, with_log: bool
    ) -> tuple[views.RunsPage, list[dict[str, Any]]]:
        found = views.list_runs(
            engine.run_store,
            env=filters["env"],
            kind=filters["kind"],
            outcome=filters["outcome"],
            service=filters["service"],
            before=filters["before"],
            limit=limit,
            with_log=with_log,
        )
        return found, [status.run_json(r, with_log) for r in found.runs]

    def index(request: Request) -> Response:
        """
        summary: Status page (HTML)
        description: the environment x service matrix (cells link to the service pages,
          columns to the environments' plans) and the newest runs
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: html}}
        """
        ws = engine.page_workspace()
        _, runs = runs_page(dict.fromkeys((*views.RUN_FILTERS, "before")), INDEX_RUNS, True)
        return HTMLResponse(
            page.render_index(
                root=page.root_of(request.url.path),
                project=ws.config.project.name,
                identity=engine.identity,
                leader=engine.leader.is_leader(),
                jobs=engine.jobs.counts(),
                matrix=status.matrix(ws),
                runs=runs,
                filters={},
                choices=_choices(ws),
            )
        )

    def api_runs(request: Request) -> Response:
        """
        summary: Runs, newest first
        description: >-
          Filtered by env, kind, outcome (as the console shows it: succeeded, committed,
          no_changes, blocked, drift, healed, failed, rolled_back, running) and service (runs
          that changed it or were started for it). A `Link: <...>; rel="next"` header pages
          to older runs (its `before` is the last run id of this page).
        parameters:
          - {name: env, in: query, schema: {type: string}}
          - {name: kind, in: query, schema: {type: string}}
          - name: outcome
            in: query
            schema:
              type: string
              enum: [running, succeeded, committed, no_changes, blocked, drift, healed, failed,
                rolled_back]
          - {name: service, in: query, schema: {type: string}}
          - {name: limit, in: query, schema: {type: integer, default: 50}}
          - name: before
            in: query
            schema: {type: string}
            description: >-
              the id of a run in this run store: lists the runs older than it (take it from
              the Link header); an id of no run here is refused (400), never read as page one
          - {name: log, in: query, schema: {type: boolean}, description: include logs}
        security: [{bearer: []}, {basic: []}]
        responses:
          200: {description: list of runs}
          400: {description: bad query (also a before that names no run here)}
        """
        q = request.query_params
        filters = run_filters(request)
        try:
            limit = _limit(q.get("limit"), 50)
            _check_filters(filters)
            found, runs = runs_page(filters, limit, q.get("log") in ("1", "true", "yes"))
        except views.BadCursor as exc:
            return _error(400, exc.message, exc.fix)
        except (ValueError, RunStoreError) as exc:
            return _error(400, str(exc), "fix the query (GET /openapi.json lists the filters)")
        headers = {}
        if found.next:
            query = {k: v for k, v in q.items() if k != "before"}
            query["before"] = found.next
            headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
        return JSONResponse(runs, headers=headers)

    def runs_html(request: Request) -> Response:
        """
        summary: Runs, filtered and paged (HTML)
        parameters:
          - {name: env, in: query, schema: {type: string}}
          - {name: kind, in: query, schema: {type: string}}
          - {name: outcome, in: query, schema: {type: string}}
          - {name: service, in: query, schema: {type: string}}
          - {name: before, in: query, schema: {type: string}}
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: html}, 400: {description: bad query}}
        """
        # Only names for the form: the config serve started with will do (loading the
        # config repo anew costs more than the whole run store query).
        ws = engine.base
        project = ws.config.project.name
        filters = run_filters(request)
        try:
            _check_filters(filters)
            found, runs = runs_page(filters, RUNS_PAGE, True)
        except views.BadCursor as exc:
            return _html_error(request, project, 400, exc.message, "follow the page's older → link")
        except (ValueError, RunStoreError) as exc:
            return _html_error(request, project, 400, str(exc), "pick a filter from the form")

        def query(**changes: str | None) -> str:
            merged = {**filters, **changes}
            return urlencode({k: v for k, v in merged.items() if v})

        return HTMLResponse(
            page.render(
                "runs.html",
                root=page.root_of(request.url.path),
                project=project,
                runs=runs,
                filters=filters,
                choices=_choices(ws),
                next=found.next,
                stopped=found.next is not None and len(found.runs) < RUNS_PAGE,
                scanned=found.scanned,
                query=query,
            )
        )

    def run_page(request: Request) -> Response:
        """
        summary: One run (HTML)
        description: what it changed, its error in full when it failed, its log and details
        parameters: [{name: run, in: path, required: true, schema: {type: string}}]
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: html}, 404: {description: no such run}}
        """
        run = engine.run_store.get(request.path_params["run"])
        project = engine.base.config.project.name
        if run is None:
            return _html_error(request, project, 404, "no such run", "the runs page lists runs")
        error = run.details.get("error") if run.outcome in ("failed", "rolled_back") else None
        return HTMLResponse(
            page.render_run(
                root=page.root_of(request.url.path),
                project=project,
                run=run,
                shown=status.run_outcome(run),
                changed=status.changed_services(run),
                results=status.run_results(run),
                error=None if error is None else str(error),
                details=json.dumps(run.details, indent=2, sort_keys=True),
            )
        )

    def _service_args(request: Request) -> tuple[str, str]:
        return request.path_params["env"], request.path_params["service"]

    def api_plan(request: Request) -> Response:
        """
        summary: The plan an apply of the environment would carry out
        description: >-
          What `configcenter plan ENV --json` prints (values masked), plus config_commit and
          a summary; ?service= narrows it (repeatable) like --service.
        parameters:
          - {name: env, in: path, required: true, schema: {type: string}}
          - {name: service, in: query, schema: {type: string}}
        security: [{bearer: []}, {basic: []}]
        responses:
          200: {description: the plan}
          404: {description: no such environment}
          422: {description: "the config repo does not plan (the problems, as the CLI says them)"}
          503: {description: "the config or deploy repo cannot be read now (why, and the fix)"}
        """
        ws = workspace()
        only = request.query_params.getlist("service") or None
        try:
            return JSONResponse(views.env_plan(ws, request.path_params["env"], only))
        except views.NotFound as exc:
            return _error(404, exc.message, exc.fix)
        except (ConfigError, UserError) as exc:
            return _error(422, views.error_text(ws, exc), "fix the config repo; see plan's output")

    def env_html(request: Request) -> Response:
        """
        summary: An environment's plan (HTML)
        parameters: [{name: env, in: path, required: true, schema: {type: string}}]
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: html}, 404: {description: no such environment}}
        """
        ws = workspace()
        env = request.path_params["env"]
        project = ws.config.project.name
        plan: dict[str, Any] | None = None
        error: str | None = None
        try:
            plan = views.env_plan(ws, env)
        except views.NotFound as exc:
            return _html_error(request, project, 404, exc.message, exc.fix)
        except (ConfigError, UserError) as exc:
            error = views.error_text(ws, exc)
        return HTMLResponse(
            page.render(
                "env.html",
                root=page.root_of(request.url.path),
                project=project,
                env=env,
                plan=plan,
                error=error,
            )
        )

    def api_service(request: Request) -> Response:
        """
        summary: One service of an environment, its releases and its pending plan
        description: >-
          status is the matrix cell; releases are `configcenter history ENV --service S`
          (outcome, who, when, config commit), newest first; plan is that service's part of
          `configcenter plan ENV --service S` (null when the plan cannot be made: plan_error).
        parameters:
          - {name: env, in: path, required: true, schema: {type: string}}
          - {name: service, in: path, required: true, schema: {type: string}}
          - {name: limit, in: query, schema: {type: integer, default: 50, maximum: 1000},
             description: how many releases}
        security: [{bearer: []}, {basic: []}]
        responses:
          200: {description: the service}
          400: {description: bad limit}
          404: {description: no such env or service}
          503: {description: "the config or deploy repo cannot be read now (why, and the fix)"}
        """
        ws = workspace()
        try:
            limit = _limit(request.query_params.get("limit"), views.HISTORY_LIMIT)
        except ValueError as exc:
            return _error(400, str(exc), "pass e.g. limit=200")
        try:
            return JSONResponse(views.service_detail(ws, *_service_args(request), limit))
        except views.NotFound as exc:
            return _error(404, exc.message, exc.fix)

    def service_html(request: Request) -> Response:
        """
        summary: One service's page (HTML)
        parameters:
          - {name: limit, in: query, schema: {type: integer, default: 50, maximum: 1000},
             description: how many releases}
        security: [{bearer: []}, {basic: []}]
        responses:
          200: {description: html}
          400: {description: bad limit}
          404: {description: no such env or service}
        """
        ws = workspace()
        env, service = _service_args(request)
        project = ws.config.project.name
        try:
            limit = _limit(request.query_params.get("limit"), views.HISTORY_LIMIT)
        except ValueError as exc:
            return _html_error(request, project, 400, str(exc), "pass e.g. ?limit=200")
        try:
            detail = views.service_detail(ws, env, service, limit)
        except views.NotFound as exc:
            return _html_error(request, project, 404, exc.message, exc.fix)
        return HTMLResponse(
            page.render(
                "service.html",
                root=page.root_of(request.url.path),
                project=project,
                env=env,
                service=service,
                detail=detail,
                limit=limit,
            )
        )

    def _diff(request: Request) -> tuple[ServeWorkspace, str, str, str, str]:
        q = request.query_params
        a, b = q.get("from") or "", q.get("to") or ""
        if not a or not b:
            raise _MissingQuery("name the two releases to compare", "pass ?from=RELEASE&to=RELEASE")
        env, service = _service_args(request)
        return workspace(), env, service, a, b

    def api_diff(request: Request) -> Response:
        """
        summary: What changed from one release of a service to another
        description: >-
          `configcenter history ENV --diff FROM TO`: pins, values by key (secrets masked)
          with the config file and line that set each (sources, from each release's config
          commit), rendered files as unified diffs.
        parameters:
          - {name: env, in: path, required: true, schema: {type: string}}
          - {name: service, in: path, required: true, schema: {type: string}}
          - {name: from, in: query, required: true, schema: {type: string}}
          - {name: to, in: query, required: true, schema: {type: string}}
        security: [{bearer: []}, {basic: []}]
        responses:
          200: {description: the diff}
          400: {description: from or to is missing}
          404: {description: no such release}
          503: {description: "the config or deploy repo cannot be read now (why, and the fix)"}
        """
        try:
            ws, env, service, a, b = _diff(request)
            return JSONResponse(views.release_diff(ws, env, service, a, b))
        except _MissingQuery as exc:
            return _error(400, exc.message, exc.fix)
        except views.NotFound as exc:
            return _error(404, exc.message, exc.fix)

    def diff_html(request: Request) -> Response:
        """
        summary: The diff of two releases of a service (HTML)
        parameters:
          - {name: from, in: query, required: true, schema: {type: string}}
          - {name: to, in: query, required: true, schema: {type: string}}
        security: [{bearer: []}, {basic: []}]
        responses:
          200: {description: html}
          400: {description: from or to is missing}
          404: {description: no such release}
        """
        env, service = _service_args(request)
        q = request.query_params
        a, b = q.get("from") or "", q.get("to") or ""
        context: dict[str, Any] = {"env": env, "service": service, "a": a, "b": b}
        try:
            ws, *_ = _diff(request)
            context["project"] = ws.config.project.name
            context["d"] = views.release_diff(ws, env, service, a, b)
            code = 200
        except (_MissingQuery, views.NotFound) as exc:
            context.setdefault("project", engine.base.config.project.name)
            context["error"] = f"{exc.message} ({exc.fix})"
            code = 400 if isinstance(exc, _MissingQuery) else 404
        return HTMLResponse(
            page.render("diff.html", root=page.root_of(request.url.path), **context),
            status_code=code,
        )

    def guarded(fn: Callable[[Request], Response], html: bool) -> Callable[[Request], Response]:
        """`fn`, answering 503 with the reason (one log line) when what it reads is broken."""

        @functools.wraps(fn)
        def endpoint(request: Request) -> Response:
            try:
                return fn(request)
            except UNAVAILABLE as exc:
                text = engine.redactor.redact(str(exc))
                log.warning("%s: %s", request.url.path, text)
                fix = "fix what this names; the page reads it again on the next request"
                if html:
                    project = engine.base.config.project.name
                    return _html_error(request, project, 503, text, fix)
                return _error(503, text, fix)

        return endpoint

    endpoint = Callable[[Request], Response]
    table: list[tuple[str, endpoint]] = [
        ("/", index),
        ("/runs", runs_html),
        ("/runs/{run}", run_page),
        ("/environments/{env}", env_html),
        ("/environments/{env}/services/{service}", service_html),
        ("/environments/{env}/services/{service}/diff", diff_html),
        ("/api/runs", api_runs),
        ("/api/environments/{env}/plan", api_plan),
        ("/api/environments/{env}/services/{service}", api_service),
        ("/api/environments/{env}/services/{service}/diff", api_diff),
    ]
    return [
        Route(path, guarded(fn, not path.startswith("/api/")), methods=["GET"])
        for path, fn in table
    ]
