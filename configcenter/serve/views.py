"""What the console's service, plan, diff and run list pages show, as JSON-shaped data.

Each view calls the use case the CLI calls for the same question, so the page and
the terminal never disagree: `history` (configcenter history), `diff_releases`
(history --diff A B), `plan_env_checked` + `converge_observed` (configcenter plan).
Values are masked by those use cases; rendered files hold secret references only.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from configcenter.core.errors import ConfigError, Problem, UserError
from configcenter.ports.runstore import MAX_LIST_LIMIT, Run, RunStore
from configcenter.serve import status
from configcenter.usecases.workspace import Workspace

#: How many releases the service page lists (the diff form picks among them).
HISTORY_LIMIT = 50


class NotFound(LookupError):
    """The environment, service or release the request names does not exist."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def check_env(ws: Workspace, env: str) -> None:
    if env not in ws.config.environments:
        raise NotFound(
            f"no environment {env!r}", "use one of " + ", ".join(ws.config.project.environments)
        )


def _problem(p: Problem) -> dict[str, Any]:
    return {
        "file": p.source.file or None,
        "line": p.source.line or None,
        "message": p.message,
        "hint": p.hint,
        "severity": p.severity,
    }


def _masked(ws: Workspace, data: dict[str, Any]) -> dict[str, Any]:
    """Every string in `data` (keys too) through the secret masker, as a last guard: the use
    cases mask values already, this catches a resolved secret anywhere else."""
    out = ws.redactor.redact_data(data)
    assert isinstance(out, dict)
    return out


def error_text(ws: Workspace, exc: BaseException) -> str:
    """A use case's refusal as the CLI would print it, secrets masked."""
    return ws.redactor.redact(str(exc))


# -- plan -------------------------------------------------------------------------------------


def env_plan(ws: Workspace, env: str, only: Collection[str] | None = None) -> dict[str, Any]:
    """What `configcenter plan ENV [--service S]` says: the plan an apply would carry out.

    The JSON is the CLI's `plan --json` object, plus `config_commit` and `summary`.
    A config that does not plan raises ConfigError/UserError (the caller shows it).
    """
    from configcenter.usecases.inspect import plan_env_checked
    from configcenter.usecases.observe import converge_observed

    check_env(ws, env)
    ws.read_only = True  # git network steps use deploy_repo.plan_timeout, as `plan` does
    notes: list[str] = []
    checked = plan_env_checked(ws, env, only=only)
    plan = converge_observed(ws, env, checked.plan, only=only, warn=notes.append).plan
    services = [s.to_json() for s in plan.services]
    counts = {"change": len(plan.changes), "blocked": 0, "unchanged": 0}
    for s in plan.services:
        if s.action == "blocked":
            counts["blocked"] += 1
        elif s.action == "noop":
            counts["unchanged"] += 1
    return _masked(
        ws,
        {
            "env": env,
            "config_commit": plan.config_commit,
            "summary": counts,
            "services": services,
            "unverified": dict(checked.unverified),
            "warnings": [_problem(w) for w in checked.warnings]
            + [
                {"file": None, "line": None, "message": n, "hint": "", "severity": "warning"}
                for n in notes
            ],
        },
    )


def _plan_or_error(
    ws: Workspace, env: str, only: Collection[str] | None
) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return env_plan(ws, env, only), None
    except (ConfigError, UserError) as exc:
        return None, error_text(ws, exc)


# -- one service ------------------------------------------------------------------------------


def service_detail(
    ws: Workspace, env: str, service: str, limit: int = HISTORY_LIMIT
) -> dict[str, Any]:
    """The service page: its matrix cell, its `limit` newest releases, its pending plan."""
    from configcenter.usecases.history import history

    check_env(ws, env)
    cells = {c["service"]: c for c in status.services(ws, env)}
    if service not in cells:
        raise NotFound(
            f"no service {service!r} in {env}",
            "services: " + (", ".join(sorted(cells)) or "none yet"),
        )
    warnings: list[str] = []
    releases = [
        {**entry.__dict__, "by": " ".join(x for x in (entry.trigger, entry.actor) if x)}
        for entry in history(ws, env, service, limit, warn=warnings.append)
    ]
    plan: dict[str, Any] | None = None
    plan_error: str | None = None
    if cells[service]["in_config"]:
        whole, plan_error = _plan_or_error(ws, env, [service])
        if whole is not None:
            plan = next((s for s in whole["services"] if s["service"] == service), None)
            warnings += [w["message"] for w in whole["warnings"]]
            if plan is not None:
                plan["config_commit"] = whole["config_commit"]
                plan["unverified"] = whole["unverified"].get(service)
    else:
        plan_error = f"{service} is no longer in the config repo's {env}: apply deletes it"
    return _masked(
        ws,
        {
            "env": env,
            "service": service,
            "status": cells[service],
            "releases": releases,
            "plan": plan,
            "plan_error": plan_error,
            "warnings": warnings,
        },
    )


def release_diff(ws: Workspace, env: str, service: str, a: str, b: str) -> dict[str, Any]:
    """What `configcenter history ENV --diff A B` says, for two releases of one service,
    with where the config repo set each differing value (at each release's config commit)."""
    from configcenter.usecases.compare import UnknownRelease, diff_releases

    check_env(ws, env)
    try:
        diff = diff_releases(ws, env, a, b, with_sources=True)
    except UnknownRelease as exc:
        raise NotFound(ws.redactor.redact(exc.message), ws.redactor.redact(exc.hint)) from None
    except ConfigError as exc:
        raise NotFound(error_text(ws, exc), f"pick releases listed on {env}/{service}") from None
    for side in (diff.before, diff.after):
        if side.service != service:
            raise NotFound(
                f"release {side.release!r} is of {side.service}, not {service}",
                f"pick releases listed on {env}/{service}",
            )
    return _masked(ws, diff.to_json())


# -- runs -------------------------------------------------------------------------------------

#: What a run list may be filtered by, and the words the filter form offers.
RUN_FILTERS = ("env", "kind", "outcome", "service")
#: What `new_run_id` makes: r + UTC time to the microsecond + Z + 10 hex digits.
_RUN_ID = re.compile(r"r\d{8}T\d{12}Z[0-9a-f]{10}")
#: Runs read from the store per page while filtering by outcome or service.
_SCAN_PAGE = 200
#: At most this many runs are read for one page of a filtered list; the page then
#: says where it stopped (`next`), so a rare match never makes one request unbounded.
SCAN_LIMIT = 5000


class BadCursor(ValueError):
    """`before` names no run in this run store (answered 400, never the newest page)."""

    def __init__(self, before: str) -> None:
        self.message = f"before={before!r} names no run in this run store"
        self.fix = (
            'page with the URL in the previous page\'s Link: <...>; rel="next" header (its '
            "`before` is a run id from that page), or leave `before` out for the newest runs"
        )
        super().__init__(self.message)


@dataclass
class RunsPage:
    runs: list[Run]
    next: str | None  # a run id: the `before` of the next (older) page
    scanned: int


def list_runs(
    store: RunStore,
    *,
    env: str | None = None,
    kind: str | None = None,
    outcome: str | None = None,
    service: str | None = None,
    before: str | None = None,
    limit: int = 50,
    with_log: bool = False,
) -> RunsPage:
    """Runs newest first, filtered by env and kind (in the store) and by shown outcome and
    changed service (what the console shows for each run), `limit` per page.

    `before` must be the id of a run in `store` (BadCursor otherwise): an unknown cursor
    would page from wherever it sorts, mostly the newest runs, and a client would loop. It
    is looked up in the runs' primary key (`RunStore.has`), never by reading the run.
    """
    if before is not None and (not _RUN_ID.fullmatch(before) or not store.has(before)):
        raise BadCursor(before)
    if not outcome and not service:
        runs = store.list(
            env=env, kind=kind, limit=min(limit + 1, MAX_LIST_LIMIT), before=before,
            with_log=with_log,
        )  # fmt: skip
        # A full page of the store's largest size may have more behind it.
        more = len(runs) > limit or len(runs) == MAX_LIST_LIMIT
        runs = runs[:limit]
        return RunsPage(runs, runs[-1].id if more and runs else None, len(runs))

    def wanted(run: Run) -> bool:
        if outcome and status.run_outcome(run)["outcome"] != outcome:
            return False
        return not service or service in status.changed_services(run) or service in run.services

    found: list[Run] = []
    scanned = 0
    cursor = before
    while scanned < SCAN_LIMIT:
        batch = store.list(env=env, kind=kind, limit=_SCAN_PAGE, before=cursor, with_log=False)
        for run in batch:
            scanned += 1
            cursor = run.id
            if wanted(run):
                if len(found) == limit:  # one more match: there is a next page
                    return RunsPage(_with_logs(store, found, with_log), found[-1].id, scanned)
                found.append(run)
        if len(batch) < _SCAN_PAGE:
            return RunsPage(_with_logs(store, found, with_log), None, scanned)
    # Stopped scanning: the next page starts where this one stopped looking.
    return RunsPage(_with_logs(store, found, with_log), cursor, scanned)


def _with_logs(store: RunStore, runs: list[Run], with_log: bool) -> list[Run]:
    if not with_log:
        return runs
    return [store.get(r.id) or r for r in runs]
