"""The ASGI app: webhooks in, status out.

Webhooks are checked (shared secret, constant-time compare), parsed, stored as
a job and answered 202 before anything slow happens. The API, the page and
/metrics sit behind a bearer token or basic auth when one is configured.
Endpoints are sync functions, so Starlette runs them in its thread pool and
Git or database calls never block the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator
from starlette.types import ASGIApp, Receive, Scope, Send

from configcenter.serve import actions, status, stream
from configcenter.serve.console import routes as console_routes
from configcenter.serve.engine import Engine
from configcenter.serve.handlers import gitlab_job, registry_jobs
from configcenter.serve.metrics import CONTENT_TYPE
from configcenter.serve.openapi import document as openapi_document
from configcenter.serve.settings import ServeSettings
from configcenter.usecases.webhooks import (
    UnsupportedEvent,
    WebhookError,
    parse_gitlab_event,
    verify_gitlab_token,
)

log = logging.getLogger(__name__)

MAX_BODY = 25 * 1024 * 1024  # GitLab caps webhook payloads at 25 MB


class BodyTooLarge(WebhookError):
    """The body is over MAX_BODY: answered 413, read no further."""


MAX_JSON_DEPTH = 64  # real webhook payloads nest a handful of levels
MAX_LIMIT = 10_000  # ?limit= of the listing endpoints


def query_limit(raw: str | None, default: int) -> int:
    """A listing's ?limit=, 1..MAX_LIMIT; ValueError with a short reason otherwise."""
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    value = int(raw)
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return value


def check_json_shape(body: bytes) -> None:
    """WebhookError when the body is JSON nested deeper than MAX_JSON_DEPTH.

    Checked before any handler parses it, so deep nesting is a 400, never a
    RecursionError; a body that is not JSON at all is left for the handler to name.
    """
    try:
        data = json.loads(body)
    except RecursionError:
        raise WebhookError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        return
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise WebhookError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def _malformed(exc: Exception) -> str:
    """A payload of the right JSON but the wrong shape (a string where an object belongs)."""
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"payload has an unexpected shape ({type(exc).__name__}{': ' + text if text else ''})"


OPEN_PATHS = ("/healthz", "/hooks/", "/files/")

SCHEMAS = SchemaGenerator(
    {
        "openapi": "3.0.3",
        "info": {
            "title": "configcenter serve",
            "version": "1",
            "description": "Webhooks, runs, environments and drift of one configcenter project.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
                "gitlabToken": {"type": "apiKey", "in": "header", "name": "X-Gitlab-Token"},
            }
        },
    }
)


class _Auth:
    """Bearer token or basic auth in front of everything but /healthz and the webhooks."""

    def __init__(self, app: ASGIApp, settings: ServeSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.settings.api_protected:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path.startswith(OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self._allowed(headers.get("authorization", "")):
            await self.app(scope, receive, send)
            return
        challenge = 'Bearer realm="configcenter"'
        if self.settings.basic_password:
            challenge = 'Basic realm="configcenter", charset="UTF-8"'
        response = JSONResponse(
            {
                "error": "unauthorized",
                "fix": "send Authorization: Bearer <serve.api_token>"
                + (" or basic auth (serve.basic_auth)" if self.settings.basic_password else ""),
            },
            status_code=401,
            headers={"WWW-Authenticate": challenge},
        )
        await response(scope, receive, send)

    def _allowed(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        s = self.settings
        if scheme == "bearer" and s.api_token:
            return hmac.compare_digest(value.strip().encode(), s.api_token.encode())
        if scheme == "basic" and s.basic_password and s.basic_user:
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            ok_user = hmac.compare_digest(user.encode(), s.basic_user.encode())
            ok_password = hmac.compare_digest(password.encode(), s.basic_password.encode())
            return ok_user and ok_password
        return False


def create_app(engine: Engine, settings: ServeSettings) -> Starlette:
    """The app for one engine; the engine's lifecycle is the caller's."""

    async def read_body(request: Request) -> bytes:
        """The body, counted while it streams in (chunked bodies have no Content-Length):
        reading stops at the limit instead of buffering whatever is sent."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and len(declared) < 20 and int(declared) > MAX_BODY:
            raise BodyTooLarge(f"body of {declared} bytes is over the {MAX_BODY}-byte limit")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise BodyTooLarge(f"body is over the {MAX_BODY}-byte limit")
            chunks.append(chunk)
        body = b"".join(chunks)
        check_json_shape(body)
        return body

    def delivery(source: str, result: str) -> None:
        engine.metrics.inc("configcenter_webhook_deliveries_total", source=source, result=result)

    async def gitlab_hook(request: Request) -> Response:
        """
        summary: GitLab webhook (Push Hook, Merge Request Hook)
        description: >-
          Verified by X-Gitlab-Token (constant-time), deduplicated by Idempotency-Key
          and by the event itself (a retry without the key, or with it only now, is a
          duplicate), stored and answered 202; a worker applies
          environments with auto_apply on a push to the followed branch.
        security: [{gitlabToken: []}]
        responses:
          202: {description: "accepted (or a duplicate: {duplicate: true})"}
          400: {description: not a usable GitLab webhook}
          401: {description: missing or wrong X-Gitlab-Token}
          413: {description: body over 25 MiB (GitLab's own cap)}
          503: {description: no webhook secret configured}
        """
        if not settings.webhook_token:
            delivery("gitlab", "disabled")
            return _error(
                503,
                "no GitLab webhook secret configured",
                'set serve: {webhook_token: {secret: "env:NAME"}} in configcenter.yaml',
            )
        if not verify_gitlab_token(settings.webhook_token, request.headers.get("x-gitlab-token")):
            delivery("gitlab", "unauthorized")
            return _error(
                401,
                "X-Gitlab-Token is missing or wrong",
                "enter serve.webhook_token as the webhook's Secret token in GitLab",
            )
        try:
            body = await read_body(request)
            event = parse_gitlab_event(dict(request.headers), body)
            job = gitlab_job(event, dict(request.headers), body)
        except UnsupportedEvent as exc:
            delivery("gitlab", "ignored")
            return JSONResponse({"accepted": False, "ignored": str(exc)}, status_code=202)
        except BodyTooLarge as exc:
            delivery("gitlab", "invalid")
            return _error(413, str(exc), "GitLab sends at most 25 MB: send its request unchanged")
        except WebhookError as exc:
            delivery("gitlab", "invalid")
            return _error(400, str(exc), "send GitLab's webhook request unchanged")
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
            delivery("gitlab", "invalid")
            return _error(400, _malformed(exc), "send GitLab's webhook request unchanged")
        return await _enqueue(request, engine, [job], "gitlab", delivery)

    async def registry_hook(request: Request) -> Response:
        """
        summary: Distribution (registry) notifications
        description: >-
          Authorization Bearer <serve.registry_token> (constant-time); one job per
          manifest push event, deduplicated by event id; environments with
          auto_apply whose services use the pushed repository are applied.
        security: [{bearer: []}]
        responses:
          202: {description: "accepted; duplicates and non-push events are counted, not run"}
          400: {description: not a notification envelope}
          413: {description: body over 25 MiB}
          401: {description: missing or wrong token}
          503: {description: no registry secret configured}
        """
        if not settings.registry_token:
            delivery("registry", "disabled")
            return _error(
                503,
                "no registry notification secret configured",
                'set serve: {registry_token: {secret: "env:NAME"}} in configcenter.yaml',
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), settings.registry_token.encode()
        ):
            delivery("registry", "unauthorized")
            return _error(
                401,
                "Authorization: Bearer <token> is missing or wrong",
                "set notifications.endpoints[].headers.Authorization in the registry's config",
            )
        try:
            jobs = registry_jobs(await read_body(request))
        except BodyTooLarge as exc:
            delivery("registry", "invalid")
            return _error(413, str(exc), "send the registry's notification envelope unchanged")
        except WebhookError as exc:
            delivery("registry", "invalid")
            return _error(400, str(exc), "send the registry's notification envelope unchanged")
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
            delivery("registry", "invalid")
            return _error(
                400, _malformed(exc), "send the registry's notification envelope unchanged"
            )
        if not jobs:
            delivery("registry", "ignored")
            return JSONResponse({"accepted": 0, "duplicates": 0}, status_code=202)
        return await _enqueue(request, engine, jobs, "registry", delivery)

    async def config_file(request: Request) -> Response:
        """
        summary: A rendered config file, for Marathon's Mesos fetcher
        description: >-
          /files/{env}/{blob}/{path}?sig=... where blob is the file's Git blob id
          in the deploy repo and sig the HMAC-SHA256 of env/blob/path under
          serve.files_key (the Marathon adapter makes these URLs; the fetcher
          cannot send headers). Any release's files, so rollbacks work.
        responses:
          200: {description: the file's bytes}
          403: {description: missing or wrong sig}
          404: {description: no such file in the deploy repo}
          503: {description: serve.files_key is not set}
        """
        from starlette.concurrency import run_in_threadpool

        from configcenter.core import fileurls

        if not settings.files_key:
            return _error(
                503,
                "serve does not hand out config files: serve.files_key is not set",
                'set serve: {files_key: {secret: "env:NAME"}} and the same secret as the '
                "Marathon platform's files_key",
            )
        env, blob = request.path_params["env"], request.path_params["blob"]
        path = request.path_params["path"]
        given = request.query_params.get("sig", "")
        if not fileurls.valid(settings.files_key, env, blob, path, given):
            return _error(403, "the file URL's signature is missing or wrong", "use the URL "
                          "configcenter put in the Marathon app; it signs each file")  # fmt: skip
        data = await run_in_threadpool(_deploy_blob, engine, blob)
        if data is None:
            return _error(404, f"no file {blob} in the deploy repo", "apply the release first")
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    def healthz(request: Request) -> Response:
        """
        summary: Liveness, and whether this replica is (or can be) the leader
        description: >-
          can_lead is false, with the reason in problem and status 503, while the
          leader Lease cannot be used (its namespace is missing, RBAC denies it):
          such a replica still takes webhooks but the schedule never runs on it.
        responses:
          200: {description: "{ok, leader, can_lead, identity}"}
          503: {description: "{ok: false, leader: false, can_lead: false, problem, identity}"}
        """
        problem = engine.leader.problem()
        body = {
            "ok": not problem,
            "leader": engine.leader.is_leader(),
            "can_lead": not problem,
            "identity": engine.identity,
        }
        if problem:
            body["problem"] = problem
        return JSONResponse(body, status_code=503 if problem else 200)

    def api_environments(request: Request) -> Response:
        """
        summary: Environments with their platform, auto_apply and reconcile settings
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: list of environments}}
        """
        return JSONResponse(status.environments(engine.page_workspace()))

    def api_services(request: Request) -> Response:
        """
        summary: Services of one environment
        description: template tag, image, last release, health and drift (from the last reconcile)
        parameters:
          - {name: env, in: path, required: true, schema: {type: string}}
        security: [{bearer: []}, {basic: []}]
        responses:
          200: {description: list of services}
          404: {description: no such environment}
        """
        env = request.path_params["env"]
        ws = engine.page_workspace()
        if env not in ws.config.environments:
            return _error(
                404,
                f"no environment {env!r}",
                "use one of " + ", ".join(ws.config.project.environments),
            )
        return JSONResponse(status.services(ws, env))

    def api_matrix(request: Request) -> Response:
        """
        summary: The environment x service matrix
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: "{environments, services, cells: {env: {service: ...}}}"}}
        """
        return JSONResponse(status.matrix(engine.page_workspace()))

    def api_run(request: Request) -> Response:
        """
        summary: One run with its log
        parameters: [{name: run, in: path, required: true, schema: {type: string}}]
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: the run}, 404: {description: no such run}}
        """
        run = engine.run_store.get(request.path_params["run"])
        if run is None:
            return _error(404, "no such run", "GET /api/runs lists runs")
        return JSONResponse(status.run_json(run, with_log=True))

    def api_jobs(request: Request) -> Response:
        """
        summary: Webhook deliveries and scheduled jobs, newest first
        parameters:
          - {name: source, in: query, schema: {type: string, enum: [gitlab, registry, schedule]}}
          - {name: limit, in: query, schema: {type: integer, default: 100}}
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: "{counts, jobs}"}, 400: {description: bad query}}
        """
        q = request.query_params
        try:
            limit = query_limit(q.get("limit"), 100)
        except ValueError as exc:
            return _error(400, str(exc), "pass e.g. limit=100")
        jobs = engine.jobs.recent(limit, q.get("source") or None)
        return JSONResponse({"counts": engine.jobs.counts(), "jobs": [j.to_json() for j in jobs]})

    def metrics(request: Request) -> Response:
        """
        summary: Prometheus metrics (text format 0.0.4)
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: metrics}}
        """
        return PlainTextResponse(engine.metrics.render(), media_type=CONTENT_TYPE)

    def openapi(request: Request) -> Response:
        """
        summary: This API's OpenAPI document
        responses: {200: {description: OpenAPI 3 JSON}}
        """
        return JSONResponse(openapi_document(SCHEMAS.get_schema(routes=app.routes), OPEN_PATHS))

    app = Starlette(
        routes=[
            *console_routes(engine),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/hooks/gitlab", gitlab_hook, methods=["POST"]),
            Route("/hooks/registry", registry_hook, methods=["POST"]),
            Route("/files/{env}/{blob}/{path:path}", config_file, methods=["GET"]),
            Route("/api/environments", api_environments, methods=["GET"]),
            Route("/api/environments/{env}/services", api_services, methods=["GET"]),
            Route("/api/matrix", api_matrix, methods=["GET"]),
            Route("/api/runs/{run}", api_run, methods=["GET"]),
            Route("/api/jobs", api_jobs, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
            *actions.routes(engine, settings),
            *stream.routes(engine),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error(engine)},
    )
    app.add_middleware(_Auth, settings=settings)
    return app


async def _enqueue(
    request: Request,
    engine: Engine,
    jobs: list[Any],
    source: str,
    delivery: Callable[[str, str], None],
) -> Response:
    from starlette.concurrency import run_in_threadpool

    new = 0
    for job in jobs:
        # A delivery answered 202 is only sent again on purpose (GitLab's "Resend
        # request"): when its job failed, that is a retry, not a duplicate.
        if await run_in_threadpool(partial(engine.submit, job, again_if_failed=True)):
            new += 1
            delivery(source, "accepted")
        else:
            delivery(source, "duplicate")
    return JSONResponse(
        {
            "accepted": new,
            "duplicates": len(jobs) - new,
            "jobs": [j.id for j in jobs],
            "duplicate": new == 0,
        },
        status_code=202,
    )


def _deploy_blob(engine: Engine, blob: str) -> bytes | None:
    """A blob of the deploy repo by id, fetching the repo once when it is not there yet."""
    from configcenter.ports.deploy_repo import DeployRepoError

    repo = engine.base.deploy_repo
    for attempt in range(2):
        if attempt or repo.head() is None:
            repo.sync()
        try:
            found = repo.read_blobs([blob]).get(blob)
        except DeployRepoError:  # not a full blob id, or the cache cannot be read yet
            found = None
        if found is not None:
            return found
    return None


def _error(status_code: int, message: str, fix: str) -> JSONResponse:
    if len(message) > 200:  # a reason, not an echo of the request
        message = message[:197] + "..."
    return JSONResponse({"error": message, "fix": fix}, status_code=status_code)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, a method the route does not take) in the
    API's Error shape, not as plain text."""
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    path = request.url.path
    if code == 404:
        return _error(404, f"no such path: {path}", "GET /openapi.json lists the API")
    if code == 405:
        response = _error(
            405,
            f"{request.method} is not allowed on {path}",
            "GET /openapi.json lists each path's methods",
        )
        allow = exc.headers.get("Allow") if isinstance(exc, HTTPException) and exc.headers else None
        if allow:
            response.headers["Allow"] = allow
        return response
    detail = exc.detail if isinstance(exc, HTTPException) else ""
    return _error(code, f"{path}: {detail}", "fix the request (GET /openapi.json lists the API)")


def _server_error(engine: Engine) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        text = engine.redactor.redact(f"{type(exc).__name__}: {exc}")
        log.error("%s %s: %s", request.method, request.url.path, text)
        return JSONResponse(
            {"error": text, "fix": "see the serve log; the request changed nothing"},
            status_code=500,
        )

    return handle
