"""Helpers for the run store tests that reach past the port: other schemas, raw storage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from configcenter.adapters.runstores import MIGRATIONS, Migration
from configcenter.ports.runstore import RunStore


def open_with_migrations(url: str, migrations: Sequence[Migration] = MIGRATIONS) -> RunStore:
    """Open a store as a configcenter that knows a different list of migrations would."""
    if url.startswith("sqlite://"):
        from configcenter.adapters.sqlite_runs import SqliteRunStore

        return SqliteRunStore(url[len("sqlite://") :], migrations=migrations)
    from configcenter.adapters.postgres_runs import PostgresRunStore

    return PostgresRunStore(url, migrations=migrations)


def raw_contents(url: str) -> str:
    """Everything the store holds, as stored: the SQLite files' bytes or every table's rows."""
    if url.startswith("sqlite://"):
        path = Path(url[len("sqlite://") :])
        parts = [path, path.with_name(path.name + "-wal")]
        return "".join(p.read_bytes().decode("utf-8", "replace") for p in parts if p.exists())
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT row_to_json(t)::text FROM runs t UNION ALL "
            "SELECT row_to_json(t)::text FROM run_log t UNION ALL "
            "SELECT row_to_json(t)::text FROM run_services t"
        ).fetchall()
    return "\n".join(row[0] for row in rows)
