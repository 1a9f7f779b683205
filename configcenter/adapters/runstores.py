"""What both run store adapters share (`configcenter.wiring` chooses one by URL).

SQLite serves one machine (the default); PostgreSQL serves several `serve`
replicas. Both keep the same tables, created by the same ordered migrations, so
a store can move from one to the other without a new data model. The checks,
row mapping and queries that do not depend on the database live here too, so
the two stores cannot drift apart; connections, locking and dialect-specific
SQL stay in each adapter.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from configcenter.ports.runstore import (
    Run,
    RunNotFoundError,
    RunStoreError,
    check_kind,
    check_limit,
    check_start,
    new_run_id,
)

if TYPE_CHECKING:
    from configcenter.core.redact import Redactor

SQLITE_FILE_NAME = "runs.sqlite3"


@dataclass(frozen=True)
class Migration:
    """One schema step; applied once, in version order, inside one transaction."""

    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="runs, the services each touched, and log chunks",
        sqlite=(
            """CREATE TABLE runs (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                env TEXT NOT NULL,
                trigger TEXT NOT NULL,
                actor TEXT NOT NULL,
                started_at TEXT NOT NULL,
                ended_at TEXT,
                outcome TEXT NOT NULL,
                details TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX runs_env_id ON runs (env, id DESC)",
            "CREATE INDEX runs_kind_id ON runs (kind, id DESC)",
            """CREATE TABLE run_services (
                run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                position INTEGER NOT NULL,
                service TEXT NOT NULL,
                PRIMARY KEY (run_id, position)
            )""",
            "CREATE INDEX run_services_service ON run_services (service, run_id DESC)",
            """CREATE TABLE run_log (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                text TEXT NOT NULL
            )""",
            "CREATE INDEX run_log_run ON run_log (run_id, seq)",
        ),
        postgres=(
            """CREATE TABLE runs (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                env TEXT NOT NULL,
                trigger TEXT NOT NULL,
                actor TEXT NOT NULL,
                started_at TIMESTAMPTZ NOT NULL,
                ended_at TIMESTAMPTZ,
                outcome TEXT NOT NULL,
                details JSONB NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX runs_env_id ON runs (env, id DESC)",
            "CREATE INDEX runs_kind_id ON runs (kind, id DESC)",
            """CREATE TABLE run_services (
                run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                position INTEGER NOT NULL,
                service TEXT NOT NULL,
                PRIMARY KEY (run_id, position)
            )""",
            "CREATE INDEX run_services_service ON run_services (service, run_id DESC)",
            """CREATE TABLE run_log (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                text TEXT NOT NULL
            )""",
            "CREATE INDEX run_log_run ON run_log (run_id, seq)",
        ),
    ),
)


def check_migrations(migrations: Sequence[Migration]) -> None:
    """Versions must run 1, 2, 3, ...: a gap or a repeat would skip or redo a step."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise RunStoreError(f"run store migrations must be numbered 1, 2, 3, ...; got {versions}")


def newer_schema_error(where: str, found: int, known: int) -> RunStoreError:
    return RunStoreError(
        f"the run store at {where} has schema version {found}, newer than this "
        f"configcenter knows (up to {known}): upgrade configcenter, or point it at "
        "another run store"
    )


def pending_migrations(
    migrations: Sequence[Migration], found: int, where: str
) -> Iterator[Migration]:
    """The steps a store at schema version `found` still needs; a newer schema is refused."""
    known = migrations[-1].version if migrations else 0
    if found > known:
        raise newer_schema_error(where, found, known)
    return (step for step in migrations if step.version > found)


def migration_failed(where: str, step: Migration, found: int, reason: str) -> RunStoreError:
    return RunStoreError(
        f"run store migration {step.version} ({step.description}) failed on {where}: "
        f"{reason}; nothing was changed, the schema is still at version {found}"
    )


def clean_text(text: str, redactor: Redactor | None) -> str:
    """Text as stored: secrets masked, NUL (which PostgreSQL text cannot hold) made U+FFFD."""
    if redactor is not None:
        text = redactor.redact(text)
    return text.replace("\x00", "\ufffd")


def _clean_data(data: object) -> object:
    if isinstance(data, str):
        return data.replace("\x00", "\ufffd")
    if isinstance(data, dict):
        return {_clean_data(k): _clean_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_clean_data(v) for v in data]
    return data


def dump_details(run_id: str, details: dict[str, object], redactor: Redactor | None) -> str:
    """JSON for the details column, every string redacted and cleaned like log text."""
    if not isinstance(details, dict):
        raise RunStoreError(
            f"details for run {run_id} must be a dict, got {type(details).__name__}"
        )
    data = _clean_data(redactor.redact_data(details) if redactor is not None else details)
    try:
        return json.dumps(data, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RunStoreError(
            f"details for run {run_id} must be JSON data (dicts, lists, str, int, float, "
            f"bool, None): {exc}; convert the value first, e.g. datetimes with .isoformat()"
        ) from None


def load_details(raw: object) -> dict[str, object]:
    data = json.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(data, dict):
        raise RunStoreError(f"stored run details are not a JSON object: {data!r}")
    return data


def details_to_add(
    run_id: str, details: dict[str, object] | None, redactor: Redactor | None
) -> dict[str, object]:
    """The details `finish` adds, checked and cleaned before any transaction opens."""
    loaded: dict[str, object] = json.loads(dump_details(run_id, details or {}, redactor))
    return loaded


def finished_details(run_id: str, current: Sequence[Any] | None, extra: dict[str, object]) -> str:
    """The details JSON a finished run stores, from its (outcome, details) row as read.

    The row is read in the finishing transaction, so a run ends once even when
    two processes finish it together.
    """
    if current is None:
        raise RunNotFoundError(run_id)
    if current[0] != "running":
        raise RunStoreError(
            f"run {run_id} already finished with outcome {current[0]!r}: a run ends "
            "once; start a new run for a new attempt"
        )
    merged = load_details(current[1])
    merged.update(extra)
    return json.dumps(merged, sort_keys=True)


def log_chunk(run_id: str, text: str, redactor: Redactor | None) -> str:
    """A log chunk as stored; anything but text is refused before it reaches the database."""
    if not isinstance(text, str):
        raise RunStoreError(f"log text for run {run_id} must be str, got {type(text).__name__}")
    return clean_text(text, redactor)


#: The runs columns in the order `run_from_row` reads them.
RUN_COLUMNS = "id, kind, env, trigger, actor, started_at, ended_at, outcome, details"
#: Every run column of `runs r`, the alias list queries and EXISTS filters use.
SELECT_RUNS = f"SELECT {', '.join('r.' + c for c in RUN_COLUMNS.split(', '))} FROM runs r"


@dataclass(frozen=True)
class NewRun:
    """A run checked and cleaned for its INSERT; `started` is bound as each database wants."""

    id: str
    started: datetime
    kind: str
    env: str
    services: list[str]
    trigger: str
    actor: str
    details_json: str

    def row(self, started: object) -> tuple[object, ...]:
        """Values for id, kind, env, trigger, actor, started_at and details, in that order."""
        return (self.id, self.kind, self.env, self.trigger, self.actor, started, self.details_json)

    def service_rows(self) -> list[tuple[str, int, str]]:
        """(run_id, position, service) rows keeping the order the services were given in."""
        return [(self.id, i, name) for i, name in enumerate(self.services)]


def new_run(
    kind: str,
    env: str,
    services: Sequence[str],
    trigger: str,
    actor: str,
    details: dict[str, object] | None,
    redactor: Redactor | None,
) -> NewRun:
    """Check a run's input and give it an id, so a bad run never opens a transaction."""
    check_kind(kind)
    names = check_start(env, services, trigger, actor)
    run_id, started = new_run_id()
    details_json = dump_details(run_id, details or {}, redactor)
    return NewRun(
        id=run_id,
        started=started,
        kind=kind,
        env=env,
        services=names,
        trigger=clean_text(trigger, redactor),
        actor=clean_text(actor, redactor),
        details_json=details_json,
    )


def list_query(
    mark: str,
    env: str | None,
    kind: str | None,
    limit: int,
    service: str | None,
    before: str | None,
) -> tuple[str, list[object]]:
    """The checked SELECT for `RunStore.list`, newest first, in the driver's `mark` style."""
    check_limit(limit)
    if kind is not None:
        check_kind(kind)
    where: list[str] = []
    params: list[object] = []
    if env is not None:
        where.append(f"r.env = {mark}")
        params.append(env)
    if kind is not None:
        where.append(f"r.kind = {mark}")
        params.append(kind)
    if service is not None:
        where.append(
            f"EXISTS (SELECT 1 FROM run_services s WHERE s.run_id = r.id AND s.service = {mark})"
        )
        params.append(service)
    if before is not None:
        where.append(f"r.id < {mark}")
        params.append(before)
    sql = SELECT_RUNS
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY r.id DESC LIMIT {mark}"
    params.append(limit)
    return sql, params


def group_by_run(rows: Iterable[Sequence[Any]]) -> dict[str, list[str]]:
    """(run_id, value) rows, in the order read, as lists per run."""
    found: dict[str, list[str]] = {}
    for run_id, value in rows:
        found.setdefault(run_id, []).append(value)
    return found


def run_from_row(
    row: Sequence[Any],
    services: Mapping[str, list[str]],
    logs: Mapping[str, str],
    redactor: Redactor | None,
    to_datetime: Callable[[Any], datetime],
) -> Run:
    """A `SELECT_RUNS` row as a Run; `to_datetime` reads the database's timestamps as UTC.

    `services` and `logs` are keyed by run id; a run missing from them has none.
    """
    run_id, kind, env, trigger, actor, started, ended, outcome, details = row
    log = logs.get(run_id, "")
    return Run(
        id=str(run_id),
        kind=str(kind),
        env=str(env),
        services=services.get(run_id, []),
        trigger=str(trigger),
        actor=str(actor),
        started_at=to_datetime(started),
        ended_at=to_datetime(ended) if ended is not None else None,
        outcome=str(outcome),
        # Also masks secrets registered after the text was stored.
        log=redactor.redact(log) if redactor is not None else log,
        details=load_details(details),
    )


def default_sqlite_path() -> Path:
    """`$XDG_STATE_HOME/configcenter/runs.sqlite3`, `~/.local/state` when unset: the one
    store of configcenter before stores were per project (see `project_sqlite_path`).

    The XDG spec says a relative XDG_STATE_HOME is invalid and must be ignored.
    """
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "configcenter" / SQLITE_FILE_NAME


def project_sqlite_path(project: str) -> Path:
    """The default run store of one project: `<state>/configcenter/projects/<project>/runs.sqlite3`.

    Runs, the console's drift and metrics, and serve's job queue (a file beside it) are
    per environment name; two projects sharing one store would see each other's. A store
    from before (`default_sqlite_path`) stays with the first project that opens it after
    the upgrade (recorded beside it), so its history is not lost; others get their own.
    """
    legacy = default_sqlite_path()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", project).strip(".") or "project"
    scoped = legacy.parent / "projects" / safe / SQLITE_FILE_NAME
    if scoped.exists() or not legacy.exists():
        return scoped
    marker = legacy.with_name(SQLITE_FILE_NAME + ".project")
    try:
        # The first project to get here claims it; a marker already there was claimed before.
        with contextlib.suppress(FileExistsError), marker.open("x", encoding="utf-8") as out:
            out.write(project + "\n")
    except OSError:
        return scoped
    try:
        owner = marker.read_text(encoding="utf-8").strip()
    except OSError:
        return scoped
    return legacy if owner == project else scoped


def mask_url(url: str) -> str:
    """The URL with any password replaced, fit for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.query:
        query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
        parts = parts._replace(query=query)
    if parts.password is None:
        return urlunsplit(parts)
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
