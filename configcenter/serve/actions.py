"""Console actions: apply, retry, roll back, heal, promote, each a recorded run.

An action is asked for in two steps. GET /actions/confirm computes its plan
with the CLI's own functions (`converged_plan`, `release_snapshot`, the last
reconcile's drift, `promote --dry-run`) and shows it with a form that carries
the plan's digest. POST /actions computes the plan again and refuses (409,
with the new plan) when the digest differs; otherwise it queues a `console`
job on serve's job queue. The worker that claims it takes the environment's
lock, fetches the config repo like a webhook job does, computes the plan a
third time and refuses when it changed; only then does it call the use case
(`apply_env`, `rollback_service`, `reconcile --heal`, `promote`), whose runs
are recorded in the run store with the job's id in their details so the
job's page can stream the run's log (serve/stream.py).

Actions need serve's authentication (`serve.api_token` or `serve.basic_auth`)
and are refused when `serve.actions` is false. Forms are protected against
cross-site requests twice: a per-browser token (double-submit: a random
HttpOnly SameSite=Strict cookie, and in the form an HMAC of it bound to the
authenticated user) and the request's Origin (or Referer) must be this
server. Digests and tokens are HMACs under a key derived from the auth
secrets, so every replica computes the same ones and none of them is a
plain hash of anything.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from configcenter.core.errors import ConfigError, UserError
from configcenter.ports.deploy_repo import DeployRepoError
from configcenter.ports.jobstore import Job
from configcenter.ports.platform import RolloutStatus
from configcenter.serve import action_pages
from configcenter.serve import page as page_module
from configcenter.serve.stream import JOB_DETAIL
from configcenter.usecases.apply import ApplyError, Reporter

if TYPE_CHECKING:
    from configcenter.core.redact import Redactor
    from configcenter.serve.engine import Engine, ServeWorkspace
    from configcenter.serve.handlers import JobOutcome
    from configcenter.serve.settings import ServeSettings

log = logging.getLogger(__name__)

#: What the console can do, in the order the actions page offers them.
ACTION_KINDS = ("apply", "retry", "rollback", "heal", "promote")
#: Why a plan cannot be made: a bad request (UserError), a config or deploy repo that
#: cannot be read, a config repo that cannot be fetched (RuntimeError from the engine).
PLAN_ERRORS = (UserError, ConfigError, DeployRepoError, ApplyError, RuntimeError)
CSRF_COOKIE = "cc_csrf"
MAX_FORM = 64 * 1024
NO_FRAMING = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


class ActionError(UserError):
    """An action that cannot be asked for as given; the message names what and the fix."""


@dataclass(frozen=True)
class ActionRequest:
    kind: str
    env: str
    service: str | None = None
    release: str | None = None  # rollback: the release to go back to
    target: str | None = None  # promote: the environment to promote to

    def to_json(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "env": self.env,
            "service": self.service,
            "release": self.release,
            "target": self.target,
        }

    def query(self) -> str:
        return urlencode({k: v for k, v in self.to_json().items() if v})


@dataclass
class Proposal:
    """An action's plan as the confirmation page shows it, and its digest."""

    request: ActionRequest
    title: str
    verb: str  # the confirm button
    plan: dict[str, Any]
    digest: str
    warnings: list[str] = field(default_factory=list)


def parse_request(params: Mapping[str, str], ws: ServeWorkspace) -> ActionRequest:
    """The action the query or form names, checked against the config (ActionError if not)."""
    kind = params.get("kind", "")
    if kind not in ACTION_KINDS:
        raise ActionError(f"unknown action {kind!r}: use one of {', '.join(ACTION_KINDS)}")
    config = ws.config
    envs = list(config.project.environments)
    env = params.get("env", "")
    if env not in envs:
        raise ActionError(f"no environment {env!r}: use one of {', '.join(envs)}")
    service = params.get("service") or None
    if service is not None:
        known = set(config.environment(env).services) | set(ws.read_state(env).services)
        if service not in known:
            raise ActionError(f"no service {service!r} in {env}: use one of "
                              + ", ".join(sorted(known)))  # fmt: skip
    if kind in ("retry", "rollback") and service is None:
        raise ActionError(f"{kind} needs a service: pass service=NAME")
    if kind == "heal" and service is not None:
        raise ActionError("heal works on a whole environment: leave out service")
    release = params.get("release") or None
    if kind == "rollback" and release is None:
        raise ActionError("rollback needs the release to go back to: pick one on /actions/rollback")
    target = params.get("target") or None
    if kind == "promote" and (target not in envs or target == env):
        raise ActionError(
            f"promote needs a target environment other than {env}: use one of "
            + ", ".join(e for e in envs if e != env)
        )
    return ActionRequest(
        kind,
        env,
        service,
        release if kind == "rollback" else None,
        target if kind == "promote" else None,
    )


# -- plans and digests -------------------------------------------------------------------------


def masked(value: Any, redactor: Redactor) -> Any:
    """`value` (JSON-shaped) with every string, keys included, through the secret masker:
    string by string, so a secret JSON would escape is masked too."""
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, dict):
        return {redactor.redact(str(k)): masked(v, redactor) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v, redactor) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redactor.redact(str(value))


def secret_key(settings: ServeSettings) -> bytes | None:
    """The HMAC key of digests and CSRF tokens, from the auth secrets (None: no auth set)."""
    if not settings.api_protected:
        return None
    material = "\0".join(
        (settings.api_token or "", settings.basic_user or "", settings.basic_password or "")
    )
    return hashlib.sha256(b"configcenter console actions\0" + material.encode()).digest()


def _mac(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\0".join(parts).encode(), hashlib.sha256).hexdigest()


def plan_digest(key: bytes, request: ActionRequest, plan: Mapping[str, Any]) -> str:
    body = json.dumps({"request": request.to_json(), "plan": plan}, sort_keys=True, default=str)
    return _mac(key, "plan", body)


def propose(ws: ServeWorkspace, request: ActionRequest, key: bytes) -> Proposal:
    """The plan the action would carry out now (the CLI's functions compute it)."""
    warnings: list[str] = []
    if request.kind in ("apply", "retry"):
        title, verb, plan = _apply_plan(ws, request, warnings)
    elif request.kind == "rollback":
        title, verb, plan = _rollback_plan(ws, request)
    elif request.kind == "heal":
        title, verb, plan = _heal_plan(ws, request)
    else:
        title, verb, plan = _promote_plan(ws, request)
    plan = masked(plan, ws.redactor)
    warnings = [ws.redactor.redact(w) for w in warnings]
    return Proposal(request, title, verb, plan, plan_digest(key, request, plan), warnings)


def _apply_plan(
    ws: ServeWorkspace, request: ActionRequest, warnings: list[str]
) -> tuple[str, str, dict[str, Any]]:
    from configcenter.usecases.observe import converged_plan

    only = [request.service] if request.service else None
    retry = [request.service] if request.kind == "retry" and request.service else []
    plan = converged_plan(ws, request.env, only=only, retry=retry, warn=warnings.append).plan
    data = plan.to_json()
    changes = [s for s in data["services"] if s["action"] not in ("noop", "blocked")]
    data["summary"] = {
        "changes": len(changes),
        "unchanged": [s["service"] for s in data["services"] if s["action"] == "noop"],
        "blocked": [s["service"] for s in data["services"] if s["action"] == "blocked"],
    }
    what = f"{request.service} in {request.env}" if request.service else request.env
    if request.kind == "retry":
        return f"Retry {what}", f"Retry {request.service}", data
    return f"Apply {what}", f"Apply {what}", data


def _rollback_plan(ws: ServeWorkspace, request: ActionRequest) -> tuple[str, str, dict[str, Any]]:
    from configcenter.usecases.apply import release_snapshot

    assert request.service is not None and request.release is not None
    current = ws.read_state(request.env).services.get(request.service)
    if current is None or current.release is None:
        raise ActionError(f"{request.service} has no release in {request.env} to roll back from")
    if current.release.id == request.release:
        raise ActionError(
            f"{request.service} in {request.env} already runs {request.release}: pick an "
            "older release"
        )
    try:
        snapshot, _files = release_snapshot(
            ws.deploy_repo, request.env, request.service, request.release
        )
    except ApplyError as exc:
        raise ActionError(str(exc)) from None

    def side(state: Any) -> dict[str, Any]:
        release = state.release
        return {
            "release": release.id if release else None,
            "outcome": release.outcome if release else None,
            "at": release.at if release else None,
            "template": state.template_tag,
            "image": state.image,
            "replicas": state.replicas,
            "inputs": state.inputs_digest,
            "rendered": state.rendered_digest,
            "platform": state.platform,
        }

    keys = sorted(set(current.values) | set(snapshot.values))
    values = {
        k: {"from": current.values.get(k), "to": snapshot.values.get(k)}
        for k in keys
        if current.values.get(k) != snapshot.values.get(k)
    }
    files = sorted(
        name
        for name in set(current.files) | set(snapshot.files)
        if current.files.get(name) != snapshot.files.get(name)
    )
    data = {
        "service": request.service,
        "from": side(current),
        "to": {**side(snapshot), "release": request.release},
        "values": values,
        "files": files,
        "rollout": bool(snapshot.platform),
    }
    title = f"Roll back {request.service} in {request.env} to {request.release}"
    return title, f"Roll back to {request.release}", data


def _heal_plan(ws: ServeWorkspace, request: ActionRequest) -> tuple[str, str, dict[str, Any]]:
    from configcenter.serve import status

    cells = status.services(ws, request.env)
    drift = [
        {k: item.get(k) for k in ("service", "field", "desired", "live")}
        | {"service": c["service"]}
        for c in cells
        if c["drift"]["state"] == "known"
        for item in c["drift"]["items"]
    ]
    unknown = {c["service"]: c["drift"]["why"] for c in cells if c["drift"]["state"] == "unknown"}
    releases = {c["service"]: (c["release"] or {}).get("id") for c in cells if c["release"]}
    data = {
        "env": request.env,
        "releases": releases,
        "drift": drift,
        "unknown": {k: unknown[k] for k in sorted(unknown) if k in releases},
    }
    return f"Heal drift in {request.env}", f"Heal {request.env}", data


def _promote_plan(ws: ServeWorkspace, request: ActionRequest) -> tuple[str, str, dict[str, Any]]:
    from configcenter.usecases.promote import promote

    assert request.target is not None
    result = promote(ws, request.env, request.target, service=request.service, dry_run=True)
    full = result.to_json()
    keep = ("from", "to", "branch", "target_branch", "title", "labels", "services", "skipped")
    data = {k: full[k] for k in keep}
    data["missing_env_keys"] = full["missing_env_keys"]
    data["nothing"] = result.status == "nothing"
    data["message"] = result.message
    what = f"{request.service} " if request.service else ""
    title = f"Promote {what}{request.env} → {request.target}"
    return title, f"Open the promotion to {request.target}", data


# -- who and CSRF -------------------------------------------------------------------------------


def principal(request: Request) -> str:
    """Who sent the request, as serve's auth middleware let it in: the basic-auth user
    or `api-token` (a bearer token names nobody)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value.strip()).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return "unknown"
        return user or "unknown"
    if scheme.lower() == "bearer":
        return "api-token"
    return "unknown"


def csrf_nonce(request: Request) -> tuple[str, bool]:
    """The browser's CSRF cookie value, or a new one (True: set it on the response)."""
    nonce = request.cookies.get(CSRF_COOKIE, "")
    if len(nonce) >= 32 and nonce.isascii() and nonce.replace("-", "").replace("_", "").isalnum():
        return nonce, False
    return secrets.token_urlsafe(32), True


def csrf_token(key: bytes, nonce: str, who: str) -> str:
    return _mac(key, "csrf", nonce, who)


def same_origin(request: Request, public_url: str | None) -> str | None:
    """None when the request came from a page of this server, else why not."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if not referer:
            return "the request has neither an Origin nor a Referer header"
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    netloc = urlsplit(origin).netloc.lower()
    allowed = {request.headers.get("host", "").lower()}
    if public_url:
        allowed.add(urlsplit(public_url).netloc.lower())
    if netloc and netloc in allowed:
        return None
    return f"the request came from {origin}, not from this server"


def check_csrf(
    request: Request, form: Mapping[str, str], key: bytes, public_url: str | None
) -> str | None:
    """None when the form was posted from this server's confirmation page, else why not."""
    why = same_origin(request, public_url)
    if why is not None:
        return why
    nonce = request.cookies.get(CSRF_COOKIE)
    if not nonce:
        return "the CSRF cookie is missing (cookies off, or it expired)"
    expected = csrf_token(key, nonce, principal(request))
    if not hmac.compare_digest(form.get("csrf", "").encode(), expected.encode()):
        return "the form's CSRF token does not match this browser's"
    return None


# -- the worker side ---------------------------------------------------------------------------


def run_action(engine: Engine, job: Job) -> JobOutcome:
    """Carry out a console job: under the env locks, the plan again, then the use case."""
    request = ActionRequest(
        kind=str(job.payload.get("kind")),
        env=str(job.payload.get("env")),
        service=job.payload.get("service"),
        release=job.payload.get("release"),
        target=job.payload.get("target"),
    )
    actor = str(job.payload.get("actor") or "console")
    key = engine.action_key
    if key is None:
        return "failed", [], "refused: this replica has no serve.api_token or serve.basic_auth"
    envs = sorted({request.env, request.target or request.env})
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        for env in envs:
            stack.enter_context(engine.env_lock(env))
        engine.update_config_repo()
        ws = engine.fresh_workspace({JOB_DETAIL: job.id})
        serve_section = (ws.config.project.doc.data or {}).get("serve") or {}
        if serve_section.get("actions") is False:
            return "failed", [], "refused: serve.actions is false now (the console is read-only)"
        try:
            parsed = parse_request({k: v for k, v in request.to_json().items() if v}, ws)
            now = propose(ws, parsed, key)
        except PLAN_ERRORS as exc:
            return "failed", [], f"refused: {engine.redactor.redact(str(exc))}"
        if not hmac.compare_digest(now.digest, str(job.payload.get("digest"))):
            return (
                "failed",
                [],
                "refused: the plan changed since it was confirmed; open the action again "
                "to see the new plan",
            )
        try:
            state, runs, note, outcome = _carry_out(engine, ws, parsed, actor, job.id)
        except Exception:
            engine.record_run(_metric_kind(parsed.kind), "failed", time.monotonic() - started)
            raise
    engine.record_run(_metric_kind(parsed.kind), outcome, time.monotonic() - started)
    return state, runs, note


class _ProgressToLog(Reporter):
    """What the CLI prints of a rollout's progress, written to the action's run log too:
    the use cases log their messages there, rollout progress only goes to the reporter,
    and the console's log stream is all its user sees."""

    def __init__(self, engine: Engine, env: str, job_id: str) -> None:
        self.engine = engine
        self.env = env
        self.job_id = job_id
        self._run_id: str | None = None
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()
        self._broken = False

    def rollout(self, service: str, status: RolloutStatus) -> None:
        line = (
            f"{service}: {status.state} {status.updated}/{status.desired} updated, "
            f"{status.ready} ready, {status.available} available"
            + (f" ({status.reason})" if status.reason else "")
        )
        with self._lock:
            if self._last.get(service) == line or self._broken:
                return
            self._last[service] = line
            try:
                if self._run_id is None:
                    runs = self.engine.run_store.list(env=self.env, limit=20)
                    mine = [r.id for r in runs if r.details.get(JOB_DETAIL) == self.job_id]
                    self._run_id = mine[0] if mine else None
                if self._run_id is not None:
                    text = self.engine.redactor.redact(line)
                    self.engine.run_store.append_log(self._run_id, text + "\n")
            except Exception as exc:
                # A run store that fails never stops a rollout: said once, then skipped.
                self._broken = True
                log.warning(
                    "console job %s: rollout progress not logged: %s",
                    self.job_id,
                    self.engine.redactor.redact(f"{type(exc).__name__}: {exc}"),
                )


def _metric_kind(kind: str) -> str:
    """The run kind an action records (configcenter_runs_total{kind})."""
    return {"retry": "apply", "heal": "reconcile"}.get(kind, kind)


def _carry_out(
    engine: Engine, ws: ServeWorkspace, request: ActionRequest, actor: str, job_id: str
) -> tuple[str, list[str], str, str]:
    """(job state, runs, note, run outcome) of the use case the action names."""
    if request.kind in ("apply", "retry"):
        from configcenter.usecases.apply import ApplyOptions, apply_env

        only = [request.service] if request.service else None
        options = ApplyOptions(
            services=only,
            retry=only if request.kind == "retry" and only else (),
            trigger="console",
            actor=actor,
        )
        result = apply_env(ws, request.env, options, _ProgressToLog(engine, request.env, job_id))
        runs = [result.run_id] if result.run_id else []
        failed = result.outcome in ("failed", "rolled_back")
        state = "failed" if failed else "done"
        return state, runs, f"{request.env}: {result.outcome}", result.outcome
    if request.kind == "rollback":
        from configcenter.usecases.apply import rollback_service

        assert request.service is not None
        rolled = rollback_service(
            ws,
            request.env,
            request.service,
            request.release,
            trigger="console",
            actor=actor,
            reporter=_ProgressToLog(engine, request.env, job_id),
        )
        runs = [
            r.id
            for r in engine.run_store.list(env=request.env, kind="rollback", limit=20)
            if r.details.get(JOB_DETAIL) == job_id
        ]
        note = f"{rolled.service}: rolled back to {rolled.release} ({rolled.outcome})"
        return "done", runs, note, "succeeded"
    if request.kind == "heal":
        from configcenter.usecases.reconcile import reconcile

        report = reconcile(
            ws,
            request.env,
            heal=True,
            trigger="console",
            actor=actor,
            reporter=_ProgressToLog(engine, request.env, job_id),
        )
        runs = [report.run_id] if report.run_id else []
        state = "failed" if report.outcome == "failed" else "done"
        note = f"{len(report.drifts)} drift(s), healed {len(report.healed)}"
        return state, runs, note, report.outcome
    return _promote(ws, request, actor)


def _promote(
    ws: ServeWorkspace, request: ActionRequest, actor: str
) -> tuple[str, list[str], str, str]:
    """promote records no run of its own; the console's promotion is one (kind promote)."""
    from configcenter.usecases.promote import promote

    assert request.target is not None
    services = [request.service] if request.service else []
    run = ws.start_run("promote", request.target, services, "console", actor, {"from": request.env})
    store = ws.run_store
    store.append_log(run.id, f"promote {request.env} -> {request.target}: started by {actor}\n")
    try:
        # The person confirmed the plan page, which shows any downgrade (and its digest
        # is checked): that is the explicit go-ahead the CLI asks as --allow-downgrade.
        result = promote(
            ws, request.env, request.target, service=request.service, allow_downgrade=True
        )
    except Exception as exc:
        text = ws.redactor.redact(f"{type(exc).__name__}: {exc}")
        store.append_log(run.id, text + "\n")
        store.finish(run.id, "failed", {"error": text})
        if isinstance(exc, UserError):
            return "failed", [run.id], text, "failed"
        raise
    message = ws.redactor.redact(result.message)
    store.append_log(run.id, message + "\n")
    outcome = "noop" if result.status == "nothing" else "succeeded"
    details = masked(result.to_json(), ws.redactor)
    store.finish(run.id, outcome, {"promotion": details})
    return "done", [run.id], message[:300], outcome


# -- the HTTP side -----------------------------------------------------------------------------


def _root(request: Request) -> str:
    """The relative way back to serve's root from this page (serve may sit under a prefix)."""
    depth = request.url.path.count("/") - 1
    return "../" * depth if depth > 0 else "./"


def routes(engine: Engine, settings: ServeSettings) -> list[Route]:
    """The console's action pages; also gives the engine the key its workers check with."""
    key = secret_key(settings)
    engine.action_key = key

    def disabled() -> str | None:
        if not settings.actions:
            return "The console is read-only here: serve.actions is false in configcenter.yaml."
        if key is None:
            return (
                "Actions need authentication: set serve.api_token or serve.basic_auth in "
                "configcenter.yaml."
            )
        return None

    # The console's pages link actions only where they can run (serve/page.py).
    page_module.set_global("actions_enabled", disabled() is None)

    def page(request: Request, body: str, status_code: int = 200) -> HTMLResponse:
        # Never inside another site's frame: a confirm button there could be clicked
        # through a decoy (clickjacking), which no CSRF token stops.
        return HTMLResponse(body, status_code=status_code, headers=NO_FRAMING)

    def refused(request: Request, why: str, status_code: int) -> HTMLResponse:
        root = _root(request)
        return page(request, action_pages.render_refused(root=root, why=why), status_code)

    def cannot_plan(request: Request, exc: Exception) -> HTMLResponse:
        """400 for an action asked for wrongly; 503 when the config or deploy repo cannot
        be read or fetched now (nothing is queued either way)."""
        text = engine.redactor.redact(str(exc))
        if isinstance(exc, UserError):
            return refused(request, text, 400)
        return refused(request, f"The plan cannot be made now, so nothing runs: {text}", 503)

    def with_cookie(request: Request, response: Response, nonce: str, new: bool) -> Response:
        if new:
            response.set_cookie(
                CSRF_COOKIE,
                nonce,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
                path="/",
            )
        return response

    def index(request: Request) -> Response:
        """
        summary: Console actions (HTML)
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: html}}
        """
        from configcenter.serve import status

        ws = engine.page_workspace()
        config = ws.config
        envs = list(config.project.environments)
        matrix = status.matrix(ws)
        return page(
            request,
            action_pages.render_index(
                root=_root(request),
                project=config.project.name,
                disabled=disabled(),
                envs=envs,
                matrix=matrix,
                promotions=list(itertools.pairwise(envs)),
            ),
        )

    def releases(request: Request) -> Response:
        """
        summary: The releases a service can be rolled back to (HTML)
        parameters:
          - {name: env, in: query, required: true, schema: {type: string}}
          - {name: service, in: query, required: true, schema: {type: string}}
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: html}, 400: {description: no such environment or service}}
        """
        from configcenter.usecases.history import history

        ws = engine.page_workspace()
        q = request.query_params
        try:
            wanted = parse_request(
                {"kind": "rollback", "env": q.get("env", ""), "service": q.get("service", ""),
                 "release": "-"}, ws)  # fmt: skip
        except ActionError as exc:
            return refused(request, str(exc), 400)
        assert wanted.service is not None
        current = ws.read_state(wanted.env).services.get(wanted.service)
        entries = history(ws, wanted.env, wanted.service, limit=50)
        return page(
            request,
            action_pages.render_releases(
                root=_root(request),
                env=wanted.env,
                service=wanted.service,
                current=current.release.id if current and current.release else None,
                entries=entries,
                disabled=disabled(),
            ),
        )

    def confirm(request: Request) -> Response:
        """
        summary: An action's plan and its confirmation form (HTML)
        parameters:
          - name: kind
            in: query
            required: true
            schema: {type: string, enum: [apply, retry, rollback, heal, promote]}
          - {name: env, in: query, required: true, schema: {type: string}}
          - {name: service, in: query, schema: {type: string}}
          - {name: release, in: query, schema: {type: string}, description: rollback's release}
          - {name: target, in: query, schema: {type: string}, description: promote's target}
        security: [{bearer: []}, {basic: []}]
        responses:
          200: {description: html}
          400: {description: not an action that can be asked for}
          403: {description: "actions are off (serve.actions: false) or no auth is set"}
        """
        why = disabled()
        if why is not None:
            return refused(request, why, 403)
        assert key is not None
        try:
            engine.update_config_repo()
            ws = engine.page_workspace()
            proposal = propose(ws, parse_request(dict(request.query_params), ws), key)
        except PLAN_ERRORS as exc:
            return cannot_plan(request, exc)
        nonce, new = csrf_nonce(request)
        body = action_pages.render_confirm(
            root=_root(request),
            proposal=proposal,
            csrf=csrf_token(key, nonce, principal(request)),
            form_id=secrets.token_urlsafe(16),
            changed=False,
        )
        return with_cookie(request, page(request, body), nonce, new)

    async def submit(request: Request) -> Response:
        """
        summary: Run a confirmed action (form post from the confirmation page)
        description: >-
          Checks the CSRF token and Origin, computes the plan again and refuses with
          409 (showing the new plan) when its digest is not the confirmed one; else
          queues the action as a console job and redirects (303) to its page.
        security: [{bearer: []}, {basic: []}]
        responses:
          303: {description: queued; Location is the job's page}
          400: {description: not an action that can be asked for}
          403: {description: "CSRF check failed, or actions are off"}
          409: {description: the plan changed since it was shown}
        requestBody:
          required: true
          content:
            application/x-www-form-urlencoded:
              schema:
                type: object
                required: [kind, env, digest, csrf, form]
                properties:
                  kind: {type: string, enum: [apply, retry, rollback, heal, promote]}
                  env: {type: string}
                  service: {type: string}
                  release: {type: string}
                  target: {type: string}
                  digest: {type: string, description: the plan digest the page showed}
                  csrf: {type: string, description: "the page's token for the cc_csrf cookie"}
                  form: {type: string, description: "the form's id: a second post is the same"}
        """
        why = disabled()
        if why is not None:
            return refused(request, why, 403)
        assert key is not None
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_FORM:
                return refused(request, "the form is too large", 400)
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        bad = check_csrf(request, form, key, settings.public_url)
        if bad is not None:
            return refused(
                request,
                f"Refused (CSRF protection): {bad}. Open the action from serve's own pages "
                "and confirm it there.",
                403,
            )
        return await run_in_threadpool(_queue, request, form)

    def _queue(request: Request, form: dict[str, str]) -> Response:
        assert key is not None
        # One confirmation form is one action: posting it again (a double click, a reload)
        # shows the action it started, whatever its plan says now.
        job_id = f"console:{form.get('kind', '')}:{_mac(key, 'form', form.get('form', ''))[:24]}"
        if form.get("form") and engine.jobs.get(job_id) is not None:
            return RedirectResponse(f"{_root(request)}actions/jobs/{job_id}", status_code=303)
        try:
            engine.update_config_repo()
            ws = engine.page_workspace()
            proposal = propose(ws, parse_request(form, ws), key)
        except PLAN_ERRORS as exc:
            return cannot_plan(request, exc)
        if not hmac.compare_digest(proposal.digest, form.get("digest", "")):
            body = action_pages.render_confirm(
                root=_root(request),
                proposal=proposal,
                csrf=form.get("csrf", ""),
                form_id=secrets.token_urlsafe(16),
                changed=True,
            )
            return page(request, body, 409)
        who = principal(request)
        if not form.get("form"):
            return refused(request, "the form has no id: confirm from the confirmation page", 400)
        job = Job(
            id=job_id,
            source="console",
            kind=proposal.request.kind,
            env=proposal.request.target or proposal.request.env,
            payload={
                **proposal.request.to_json(),
                "digest": proposal.digest,
                "actor": f"{who} (console)",
                "title": proposal.title,
            },
        )
        engine.submit(job)  # a second post of one form is a duplicate: the same job
        return RedirectResponse(f"{_root(request)}actions/jobs/{job.id}", status_code=303)

    def job_page(request: Request) -> Response:
        """
        summary: A console action's progress, its run's log streaming live (HTML)
        parameters: [{name: job, in: path, required: true, schema: {type: string}}]
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: html}, 404: {description: no such action}}
        """
        job = engine.jobs.get(request.path_params["job"])
        if job is None or job.source != "console":
            return refused(request, "no such action", 404)
        return page(request, action_pages.render_job(root=_root(request), job=job))

    return [
        Route("/actions", index, methods=["GET"]),
        Route("/actions", submit, methods=["POST"]),
        Route("/actions/confirm", confirm, methods=["GET"]),
        Route("/actions/rollback", releases, methods=["GET"]),
        Route("/actions/jobs/{job}", job_page, methods=["GET"]),
    ]


__all__ = [
    "ACTION_KINDS",
    "ActionError",
    "ActionRequest",
    "Proposal",
    "propose",
    "routes",
    "run_action",
]
