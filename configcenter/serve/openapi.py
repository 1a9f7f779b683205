"""serve's OpenAPI 3 document: the routes' docstrings, plus what every response returns.

Starlette's generator reads each endpoint's docstring (summary, parameters,
responses); this module adds a `content` schema to every response, from the
media type each endpoint answers with and the shapes below, so the document
says what a client gets, errors included.
"""

from __future__ import annotations

import json
from typing import Any

from configcenter.serve.status import DRIFT_STATES, RUN_OUTCOMES, STATUSES

_STR = {"type": "string"}
_NSTR = {"type": "string", "nullable": True}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:  # OpenAPI 3.0: a `required` list may not be empty
        schema["required"] = required
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _map(values: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": values}


_STRS = {"type": "array", "items": _STR}
_ANY: dict[str, Any] = {"description": "any JSON value (secrets masked as ***)"}
_FROM_TO = _obj([], **{"from": {**_ANY, "nullable": True}, "to": {**_ANY, "nullable": True}})
_CHANGE = _obj([], **{"from": _ANY, "to": _ANY, "source": _STR})
#: One service's part of a plan, as `configcenter plan --json` gives it.
SERVICE_PLAN = _obj(
    ["service", "action", "reasons", "template", "image", "values", "files"],
    service=_STR,
    action={"type": "string", "enum": ["create", "update", "delete", "noop", "blocked"]},
    reasons=_STRS,
    template=_FROM_TO,
    image=_FROM_TO,
    values=_obj(
        ["changed", "added", "removed"],
        changed=_map(_CHANGE),
        added=_map(_CHANGE),
        removed=_map(_CHANGE),
    ),
    files={**_map(_STR), "description": "output name -> unified diff"},
    replicas=_FROM_TO,
    secrets=_obj(
        [],
        rotated=_STRS,
        cannot_separate=_obj(["keys", "why"], keys=_STRS, why=_STR),
        unknown=_STR,
    ),
    blocked=_STR,
    platform=_obj([], step=_STR, platform=_STR, why=_STR, release=_NSTR),
)
_PROBLEM = _obj(
    ["message"],
    file=_NSTR,
    line={"type": "integer", "nullable": True},
    message=_STR,
    hint=_STR,
    severity=_STR,
)
_RELEASE_VIEW = _obj(
    ["release", "service", "outcome", "commit"],
    env=_STR,
    service=_STR,
    release=_STR,
    outcome=_STR,
    at=_STR,
    commit={**_STR, "description": "the deploy repo commit that made the release"},
    config_commit=_NSTR,
    reason=_STR,
    template=_STR,
    image=_STR,
    replicas={"type": "integer", "nullable": True},
    values={**_map(_ANY), "description": "flat keys, secrets masked"},
)


SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _obj(["error", "fix"], error=_STR, fix=_STR),
    "Accepted": _obj(
        [],
        accepted={"oneOf": [_INT, _BOOL]},
        duplicates=_INT,
        duplicate=_BOOL,
        jobs={"type": "array", "items": _STR},
        ignored=_STR,
    ),
    "Health": _obj(
        ["ok", "leader", "can_lead", "identity"],
        ok=_BOOL,
        leader=_BOOL,
        can_lead=_BOOL,
        identity=_STR,
        problem=_STR,
    ),
    "Environment": _obj(
        ["name", "auto_apply", "services"],
        name=_STR,
        platform=_NSTR,
        auto_apply=_BOOL,
        reconcile=_obj([], interval=_NSTR, heal=_BOOL),
        services={"type": "array", "items": _STR},
    ),
    "Drift": _obj(
        ["state", "why", "count", "items"],
        state={"type": "string", "enum": list(DRIFT_STATES)},
        status=_STR,
        why={**_NSTR, "description": "why drift is unknown (null when it is known or none)"},
        count=_INT,
        items={"type": "array", "items": {"type": "object"}},
        checked_at=_NSTR,
        run=_NSTR,
    ),
    "Service": _obj(
        ["service", "status", "drift"],
        service=_STR,
        template=_NSTR,
        image=_NSTR,
        image_short=_NSTR,
        image_digest=_NSTR,
        replicas={"type": "integer", "nullable": True},
        platform=_NSTR,
        release={"type": "object", "nullable": True},
        status={"type": "string", "enum": sorted(STATUSES)},
        status_why=_NSTR,
        status_run={
            **_NSTR,
            "description": "the run that explains the status: the apply that refused a "
            "blocked service, a failed release's run, the running run, else the release's",
        },
        health=_STR,
        last_failed=_NSTR,
        failure={
            "type": "object",
            "nullable": True,
            "description": "the newest release when it failed after the current one (rolled "
            "back, or stopped by a pre-deploy job): id, outcome, at, run, reason",
        },
        drift=_ref("Drift"),
        in_config=_BOOL,
    ),
    "Matrix": _obj(
        ["environments", "services", "cells"],
        environments={"type": "array", "items": _STR},
        services={"type": "array", "items": _STR},
        cells={
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": _ref("Service")},
        },
    ),
    "Run": _obj(
        ["id", "kind", "env", "outcome", "started_at", "changed", "shown"],
        id=_STR,
        kind=_STR,
        env=_STR,
        services={**_STRS, "description": "the services the run was started for (--service)"},
        changed={**_STRS, "description": "the services the run changed (or tried to)"},
        shown=_obj(
            ["outcome", "label"],
            outcome={"type": "string", "enum": list(RUN_OUTCOMES)},
            label=_STR,
        ),
        trigger=_STR,
        actor=_STR,
        started_at=_STR,
        ended_at=_NSTR,
        outcome=_STR,
        details={"type": "object"},
        log=_STR,
    ),
    "Plan": _obj(
        ["env", "summary", "services", "unverified", "warnings"],
        env=_STR,
        config_commit=_NSTR,
        summary=_obj(["change", "blocked", "unchanged"], change=_INT, blocked=_INT, unchanged=_INT),
        services={"type": "array", "items": _ref("ServicePlan")},
        unverified={**_map(_STR), "description": "service -> why its image is not pinned"},
        warnings={"type": "array", "items": _PROBLEM},
    ),
    "ServicePlan": SERVICE_PLAN,
    "Release": _obj(
        ["release", "service", "at", "outcome", "commit", "config_commit", "by"],
        release=_STR,
        service=_STR,
        at=_STR,
        outcome=_STR,
        template_tag=_STR,
        image=_STR,
        values_digest=_STR,
        commit={**_STR, "description": "the deploy repo commit that made the release"},
        config_commit={**_STR, "description": "the config repo commit it was made from"},
        run=_STR,
        trigger=_STR,
        actor=_STR,
        by=_STR,
        reason=_STR,
    ),
    "ServiceDetail": _obj(
        ["env", "service", "status", "releases", "plan", "plan_error", "warnings"],
        env=_STR,
        service=_STR,
        status=_ref("Service"),
        releases={"type": "array", "items": _ref("Release")},
        plan={
            **SERVICE_PLAN,
            "nullable": True,
            "description": "the service's pending plan (action noop: nothing to do)",
        },
        plan_error=_NSTR,
        warnings=_STRS,
    ),
    "ReleaseDiff": _obj(
        ["env", "from", "to", "fields", "values", "files"],
        env=_STR,
        **{"from": _RELEASE_VIEW, "to": _RELEASE_VIEW},
        fields=_map(_FROM_TO),
        values=_obj(
            ["changed", "added", "removed"],
            changed=_map(_FROM_TO),
            added=_map(_FROM_TO),
            removed=_map(_FROM_TO),
        ),
        files={**_map(_STR), "description": "output name -> unified diff"},
        sources={
            **_map(_obj([], **{"from": _NSTR, "to": _NSTR})),
            "description": "key -> the file:line that set it at each release's config commit",
        },
        sources_note=_NSTR,
    ),
    "Jobs": _obj(
        ["counts", "jobs"],
        counts={"type": "object", "additionalProperties": _INT},
        jobs={"type": "array", "items": {"type": "object"}},
    ),
}

#: (path, status) -> schema of a JSON body; other JSON responses are errors.
JSON_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("/healthz", "200"): _ref("Health"),
    ("/healthz", "503"): _ref("Health"),
    ("/hooks/gitlab", "202"): _ref("Accepted"),
    ("/hooks/registry", "202"): _ref("Accepted"),
    ("/api/environments", "200"): {"type": "array", "items": _ref("Environment")},
    ("/api/environments/{env}/services", "200"): {"type": "array", "items": _ref("Service")},
    ("/api/matrix", "200"): _ref("Matrix"),
    ("/api/runs", "200"): {"type": "array", "items": _ref("Run")},
    ("/api/runs/{run}", "200"): _ref("Run"),
    ("/api/jobs", "200"): _ref("Jobs"),
    ("/api/environments/{env}/plan", "200"): _ref("Plan"),
    ("/api/environments/{env}/services/{service}", "200"): _ref("ServiceDetail"),
    ("/api/environments/{env}/services/{service}/diff", "200"): _ref("ReleaseDiff"),
}
#: Paths that answer 200 with something other than JSON.
OTHER_MEDIA = {
    "/": "text/html",
    "/runs": "text/html",
    "/runs/{run}": "text/html",
    "/environments/{env}": "text/html",
    "/environments/{env}/services/{service}": "text/html",
    "/environments/{env}/services/{service}/diff": "text/html",
    "/metrics": "text/plain",
    "/files/{env}/{blob}/{path}": "application/octet-stream",
    # The console's actions (serve/actions.py): pages, refusals included.
    "/actions": "text/html",
    "/actions/confirm": "text/html",
    "/actions/rollback": "text/html",
    "/actions/jobs/{job}": "text/html",
    # Live (serve/stream.py).
    "/assets/live.js": "text/javascript",
    "/events/status": "text/event-stream",
    "/events/runs/{run}": "text/event-stream",
    "/events/jobs/{job}": "text/event-stream",
}


#: What every protected operation answers without valid credentials (serve's auth layer).
UNAUTHORIZED = {"description": "missing or wrong serve.api_token (or serve.basic_auth)"}
#: Who may call an operation the auth layer guards, when its docstring does not say.
PROTECTED: list[dict[str, list[str]]] = [{"bearer": []}, {"basic": []}]


def document(generated: dict[str, Any], open_paths: tuple[str, ...] = ()) -> dict[str, Any]:
    """The generated document, JSON-shaped (status codes as strings), with response bodies.

    Operations outside `open_paths` sit behind serve's auth layer: they declare
    its security schemes and its `401` (a JSON Error, whatever the page's type).
    """
    doc: dict[str, Any] = json.loads(json.dumps(generated))
    doc.setdefault("components", {})["schemas"] = SCHEMAS
    for path, operations in doc.get("paths", {}).items():
        for operation in operations.values():
            if not path.startswith(open_paths):
                operation.setdefault("security", PROTECTED)
                operation.setdefault("responses", {}).setdefault("401", dict(UNAUTHORIZED))
            for code, response in operation.get("responses", {}).items():
                response["content"] = _content(path, code)
            _path_parameters(path, operation)
    return doc


def _content(path: str, code: str) -> dict[str, Any]:
    if code == "401":
        return {"application/json": {"schema": _ref("Error")}}
    media = OTHER_MEDIA.get(path)
    if media is not None and code == "200":
        fmt = {"format": "binary"} if media == "application/octet-stream" else {}
        return {media: {"schema": {"type": "string", **fmt}}}
    if media == "text/html":
        return {"text/html": {"schema": _STR}}
    return {"application/json": {"schema": JSON_BODIES.get((path, code), _ref("Error"))}}


def _path_parameters(path: str, operation: dict[str, Any]) -> None:
    """Declare every {name} of the path that the docstring did not."""
    given = {p.get("name") for p in operation.get("parameters", []) if p.get("in") == "path"}
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    for name in names:
        if name not in given:
            operation.setdefault("parameters", []).append(
                {"name": name, "in": "path", "required": True, "schema": _STR}
            )
