"""Choosing a run store by URL, and the schema both run store adapters share.

SQLite serves one machine (the default); PostgreSQL serves several `serve`
replicas. Both keep the same tables, created by the same ordered migrations, so
a store can move from one to the other without a new data model.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from configcenter.ports.runstore import RunStore, RunStoreError

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


def default_sqlite_path() -> Path:
    """`$XDG_STATE_HOME/configcenter/runs.sqlite3`, `~/.local/state` when unset.

    The XDG spec says a relative XDG_STATE_HOME is invalid and must be ignored.
    """
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "configcenter" / SQLITE_FILE_NAME


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


def open_run_store(url: str | None = None, redactor: Redactor | None = None) -> RunStore:
    """Open the run store a URL names; None means the SQLite file in the state dir.

    `sqlite://PATH` (so `sqlite:///var/lib/cc/runs.sqlite3` is absolute; `~` is
    expanded) or `postgresql://user:password@host:port/dbname` (libpq's URL
    form; `postgres://` works too). The adapters are imported only when asked for.
    """
    if url is None:
        from configcenter.adapters.sqlite_runs import SqliteRunStore

        return SqliteRunStore(None, redactor)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        if not url.startswith("sqlite://") or not url[len("sqlite://") :]:
            raise RunStoreError(
                f"run store URL {url!r} has no file path: write sqlite:///path/to/runs.sqlite3"
            )
        from configcenter.adapters.sqlite_runs import SqliteRunStore

        return SqliteRunStore(Path(url[len("sqlite://") :]).expanduser(), redactor)
    if scheme in ("postgresql", "postgres"):
        from configcenter.adapters.postgres_runs import PostgresRunStore

        return PostgresRunStore(url, redactor)
    raise RunStoreError(
        f"unsupported run store URL {mask_url(url)!r}: use sqlite:///path/to/runs.sqlite3 "
        "or postgresql://user:password@host:5432/dbname (or omit it for the default "
        f"SQLite file {default_sqlite_path()})"
    )
