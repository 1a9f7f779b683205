"""The run store on PostgreSQL (psycopg 3), for several `serve` replicas.

Same tables and migrations as the SQLite store. Replicas that start together
serialize their migrations on a transaction-scoped advisory lock, so exactly
one of them creates the schema and the others find it done.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from configcenter.adapters.runstores import (
    MIGRATIONS,
    Migration,
    check_migrations,
    clean_text,
    dump_details,
    load_details,
    mask_url,
    migration_failed,
    newer_schema_error,
)
from configcenter.core.redact import Redactor
from configcenter.ports.runstore import (
    Run,
    RunNotFoundError,
    RunStoreError,
    check_kind,
    check_limit,
    check_outcome,
    check_start,
    new_run_id,
)

if TYPE_CHECKING:
    import psycopg

#: pg_advisory_xact_lock key held while migrating ("ccRuns" in ASCII).
MIGRATION_LOCK_KEY = 0x636352756E73

_RUN_COLUMNS = (
    "r.id, r.kind, r.env, r.trigger, r.actor, r.started_at, r.ended_at, r.outcome, r.details"
)


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

        known = migrations[-1].version if migrations else 0
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
            )
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
            found = int(row[0]) if row else 0
            if found > known:
                raise newer_schema_error(self.where, found, known)
            for step in migrations:
                if step.version <= found:
                    continue
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
        check_kind(kind)
        names = check_start(env, services, trigger, actor)
        run_id, started = new_run_id()
        details_json = dump_details(run_id, details or {}, self._redactor)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO runs (id, kind, env, trigger, actor, started_at, ended_at, outcome,"
                " details) VALUES (%s, %s, %s, %s, %s, %s, NULL, 'running', %s::jsonb)",
                (
                    run_id,
                    kind,
                    env,
                    clean_text(trigger, self._redactor),
                    clean_text(actor, self._redactor),
                    started,
                    details_json,
                ),
            )
            if names:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO run_services (run_id, position, service) VALUES (%s, %s, %s)",
                        [(run_id, i, name) for i, name in enumerate(names)],
                    )
        run = self.get(run_id)
        assert run is not None  # just written by this process
        return run

    def append_log(self, run_id: str, text: str) -> None:
        if not isinstance(text, str):
            raise RunStoreError(f"log text for run {run_id} must be str, got {type(text).__name__}")
        with self._tx() as conn:
            cursor = conn.execute(
                "INSERT INTO run_log (run_id, text) SELECT id, %s FROM runs WHERE id = %s",
                (clean_text(text, self._redactor), run_id),
            )
            if cursor.rowcount == 0:
                raise RunNotFoundError(run_id)

    def finish(self, run_id: str, outcome: str, details: dict[str, object] | None = None) -> Run:
        check_outcome(outcome)
        extra = json.loads(dump_details(run_id, details or {}, self._redactor))
        with self._tx() as conn:
            row = conn.execute(
                "SELECT outcome, details FROM runs WHERE id = %s FOR UPDATE", (run_id,)
            ).fetchone()
            if row is None:
                raise RunNotFoundError(run_id)
            if row[0] != "running":
                raise RunStoreError(
                    f"run {run_id} already finished with outcome {row[0]!r}: a run ends "
                    "once; start a new run for a new attempt"
                )
            merged = load_details(row[1])
            merged.update(extra)
            conn.execute(
                "UPDATE runs SET outcome = %s, ended_at = %s, details = %s::jsonb WHERE id = %s",
                (outcome, datetime.now(UTC), json.dumps(merged, sort_keys=True), run_id),
            )
        run = self.get(run_id)
        assert run is not None
        return run

    def get(self, run_id: str) -> Run | None:
        with self._tx() as conn:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs r WHERE r.id = %s", (run_id,)
            ).fetchone()
            if row is None:
                return None
            services = self._services(conn, [run_id])
            logs = self._logs(conn, [run_id])
        return self._run(row, services.get(run_id, []), logs.get(run_id, ""))

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
        found: dict[str, list[str]] = {}
        if not ids:
            return found
        rows = conn.execute(
            "SELECT run_id, service FROM run_services WHERE run_id = ANY(%s) "
            "ORDER BY run_id, position",
            (list(ids),),
        )
        for run_id, service in rows:
            found.setdefault(run_id, []).append(service)
        return found

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

    def _run(self, row: Sequence[Any], services: list[str], log: str) -> Run:
        run_id, kind, env, trigger, actor, started, ended, outcome, details = row
        return Run(
            id=run_id,
            kind=kind,
            env=env,
            services=services,
            trigger=trigger,
            actor=actor,
            started_at=started.astimezone(UTC),
            ended_at=ended.astimezone(UTC) if ended is not None else None,
            outcome=outcome,
            # Also masks secrets registered after the text was stored.
            log=self._redact(log),
            details=load_details(details),
        )

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
        check_limit(limit)
        if kind is not None:
            check_kind(kind)
        where: list[str] = []
        params: list[object] = []
        if env is not None:
            where.append("r.env = %s")
            params.append(env)
        if kind is not None:
            where.append("r.kind = %s")
            params.append(kind)
        if service is not None:
            where.append(
                "EXISTS (SELECT 1 FROM run_services s WHERE s.run_id = r.id AND s.service = %s)"
            )
            params.append(service)
        if before is not None:
            where.append("r.id < %s")
            params.append(before)
        sql = f"SELECT {_RUN_COLUMNS} FROM runs r"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.id DESC LIMIT %s"
        params.append(limit)
        with self._tx() as conn:
            rows = conn.execute(sql, params).fetchall()
            ids = [row[0] for row in rows]
            services = self._services(conn, ids)
            logs = self._logs(conn, ids) if with_log else {}
        return [self._run(row, services.get(row[0], []), logs.get(row[0], "")) for row in rows]
