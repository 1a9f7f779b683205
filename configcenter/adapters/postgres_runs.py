"""The run store on PostgreSQL (psycopg 3), for several `serve` replicas.

Same tables and migrations as the SQLite store. Replicas that start together
serialize their migrations on a transaction-scoped advisory lock, so exactly
one of them creates the schema and the others find it done.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from configcenter.adapters.runstores import (
    MIGRATIONS,
    RUN_COLUMNS,
    SELECT_RUNS,
    Migration,
    check_migrations,
    details_to_add,
    finished_details,
    group_by_run,
    list_query,
    log_chunk,
    mask_url,
    migration_failed,
    new_run,
    pending_migrations,
    run_from_row,
)
from configcenter.core.redact import Redactor
from configcenter.ports.runstore import Run, RunNotFoundError, RunStoreError, check_outcome

if TYPE_CHECKING:
    import psycopg

#: pg_advisory_xact_lock key held while migrating ("ccRuns" in ASCII).
MIGRATION_LOCK_KEY = 0x636352756E73


def _to_datetime(value: datetime) -> datetime:
    """TIMESTAMPTZ comes back in the session's time zone; runs are in UTC."""
    return value.astimezone(UTC)


class PostgresRunStore:
    """Runs in a PostgreSQL database; one connection per store, shared by its threads."""

    def __init__(
        self,
        url: str,
        redactor: Redactor | None = None,
        *,
        connect_timeout: int = 10,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self._url = url
        self.where = mask_url(url)
        self._redactor = redactor
        self._connect_timeout = connect_timeout
        self._lock = threading.RLock()
        check_migrations(migrations)
        self._conn: psycopg.Connection[Any] = self._connect()
        try:
            self._migrate(migrations)
        except BaseException:
            self._conn.close()
            raise

    # -- setup ---------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """Error text without the URL's password, whatever libpq chose to echo."""
        from urllib.parse import unquote, urlsplit

        try:
            password = urlsplit(self._url).password
        except ValueError:
            password = None
        if password:
            for form in {password, unquote(password)}:
                text = text.replace(form, "***")
        return self._redact(text)

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        try:
            return psycopg.connect(
                self._url,
                autocommit=True,  # transactions are explicit: conn.transaction()
                connect_timeout=self._connect_timeout,
                application_name="configcenter",
            )
        except psycopg.Error as exc:
            raise RunStoreError(
                f"cannot connect to the run store at {self.where}: {self._scrub(str(exc))}; "
                "check the URL, that the server runs, and the credentials"
            ) from None

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a live connection.

        A connection the server dropped (restart, failover, idle timeout) shows up
        as a failed BEGIN; nothing was sent yet, so reconnecting and beginning again
        is safe. A failure after BEGIN is reported, never retried: a write may
        have committed.
        """
        import psycopg

        with self._lock:
            if self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            stack = ExitStack()
            try:
                stack.enter_context(self._conn.transaction())
            except psycopg.OperationalError as exc:
                if not self._conn.broken:
                    raise self._failed(exc) from None
                self._conn.close()
                self._conn = self._connect()
                try:
                    stack.enter_context(self._conn.transaction())
                except psycopg.OperationalError as again:
                    raise self._failed(again) from None
            try:
                with stack:
                    yield self._conn
            except psycopg.OperationalError as exc:
                raise self._failed(exc) from None

    def _failed(self, exc: Exception) -> RunStoreError:
        return RunStoreError(f"the run store at {self.where} failed: {self._scrub(str(exc))}")

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        import psycopg

        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
            )
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
            found = int(row[0]) if row else 0
            for step in pending_migrations(migrations, found, self.where):
                try:
                    for statement in step.postgres:
                        conn.execute(statement)
                except psycopg.Error as exc:
                    reason = self._scrub(str(exc))
                    raise migration_failed(self.where, step, found, reason) from None
                conn.execute(
                    "INSERT INTO schema_version (version, description, applied_at) "
                    "VALUES (%s, %s, now())",
                    (step.version, step.description),
                )

    def schema_version(self) -> int:
        with self._tx() as conn:
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0) if row else 0

    # -- the port ------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return self._redactor.redact(text) if self._redactor is not None else text

    def start(
        self,
        kind: str,
        env: str,
        services: Sequence[str],
        trigger: str,
        actor: str,
        details: dict[str, object] | None = None,
    ) -> Run:
        new = new_run(kind, env, services, trigger, actor, details, self._redactor)
        with self._tx() as conn:
            conn.execute(
                f"INSERT INTO runs ({RUN_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, NULL, 'running', %s::jsonb)",
                new.row(new.started),
            )
            if new.services:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO run_services (run_id, position, service) VALUES (%s, %s, %s)",
                        new.service_rows(),
                    )
        run = self.get(new.id)
        assert run is not None  # just written by this process
        return run

    def append_log(self, run_id: str, text: str) -> None:
        chunk = log_chunk(run_id, text, self._redactor)
        with self._tx() as conn:
            cursor = conn.execute(
                "INSERT INTO run_log (run_id, text) SELECT id, %s FROM runs WHERE id = %s",
                (chunk, run_id),
            )
            if cursor.rowcount == 0:
                raise RunNotFoundError(run_id)

    def finish(self, run_id: str, outcome: str, details: dict[str, object] | None = None) -> Run:
        check_outcome(outcome)
        extra = details_to_add(run_id, details, self._redactor)
        with self._tx() as conn:
            row = conn.execute(
                "SELECT outcome, details FROM runs WHERE id = %s FOR UPDATE", (run_id,)
            ).fetchone()
            merged = finished_details(run_id, row, extra)
            conn.execute(
                "UPDATE runs SET outcome = %s, ended_at = %s, details = %s::jsonb WHERE id = %s",
                (outcome, datetime.now(UTC), merged, run_id),
            )
        run = self.get(run_id)
        assert run is not None
        return run

    def get(self, run_id: str) -> Run | None:
        with self._tx() as conn:
            row = conn.execute(f"{SELECT_RUNS} WHERE r.id = %s", (run_id,)).fetchone()
            if row is None:
                return None
            services = self._services(conn, [run_id])
            logs = self._logs(conn, [run_id])
        return run_from_row(row, services, logs, self._redactor, _to_datetime)

    def has(self, run_id: str) -> bool:
        with self._tx() as conn:
            row = conn.execute("SELECT 1 FROM runs WHERE id = %s", (run_id,)).fetchone()
        return row is not None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> PostgresRunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading helpers -----------------------------------------------------

    @staticmethod
    def _services(conn: psycopg.Connection[Any], ids: Sequence[str]) -> dict[str, list[str]]:
        if not ids:
            return {}
        rows = conn.execute(
            "SELECT run_id, service FROM run_services WHERE run_id = ANY(%s) "
            "ORDER BY run_id, position",
            (list(ids),),
        )
        return group_by_run(rows)

    @staticmethod
    def _logs(conn: psycopg.Connection[Any], ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        rows = conn.execute(
            "SELECT run_id, string_agg(text, '' ORDER BY seq) FROM run_log "
            "WHERE run_id = ANY(%s) GROUP BY run_id",
            (list(ids),),
        )
        return {run_id: text for run_id, text in rows}

    # Last in the class: below this, `list` would name the method, not the type.
    def list(
        self,
        env: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        service: str | None = None,
        before: str | None = None,
        with_log: bool = False,
    ) -> list[Run]:
        sql, params = list_query("%s", env, kind, limit, service, before)
        with self._tx() as conn:
            rows = conn.execute(sql, params).fetchall()
            ids = [row[0] for row in rows]
            services = self._services(conn, ids)
            logs = self._logs(conn, ids) if with_log else {}
        return [run_from_row(row, services, logs, self._redactor, _to_datetime) for row in rows]


def open_store(url: str | None, redactor: Redactor | None) -> PostgresRunStore:
    """The registry's factory (`configcenter.core.kinds`): libpq's URL form."""
    if url is None:
        raise RunStoreError("a PostgreSQL run store needs a URL: postgresql://user@host/dbname")
    return PostgresRunStore(url, redactor)
