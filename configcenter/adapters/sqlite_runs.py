"""The default run store: one SQLite file in the user's state directory.

Several processes (two CLI applies and a `serve`) share the file: WAL mode lets
readers run beside the one writer, every write takes the write lock up front
(`BEGIN IMMEDIATE`) so no transaction has to upgrade its lock and deadlock, and
the busy timeout makes a writer wait its turn instead of failing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from configcenter.adapters.runstores import (
    MIGRATIONS,
    Migration,
    check_migrations,
    clean_text,
    default_sqlite_path,
    dump_details,
    load_details,
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

_RUN_COLUMNS = "id, kind, env, trigger, actor, started_at, ended_at, outcome, details"


class SqliteRunStore:
    """Runs in a SQLite file; one connection per store, shared by its threads."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        redactor: Redactor | None = None,
        *,
        busy_timeout: float = 30.0,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = Path(path) if path is not None else default_sqlite_path()
        self._redactor = redactor
        self._lock = threading.RLock()
        self._busy_timeout = busy_timeout
        check_migrations(migrations)
        self._conn = self._connect()
        try:
            self._migrate(migrations)
        except BaseException:
            self._conn.close()
            raise

    # -- setup ---------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            # Run logs can say a lot about a system: keep them to their owner.
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise RunStoreError(
                f"cannot open the run store file {self.path}: {exc}; check the directory "
                "exists and is writable, or choose another with sqlite:///path"
            ) from exc
        try:
            self._set_wal(conn)
            conn.execute("PRAGMA foreign_keys = ON")
            # In WAL mode NORMAL never corrupts; a power cut may lose the last commits.
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL, waiting out another process that holds the file meanwhile."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise RunStoreError(
                        f"cannot switch the run store {self.path} to WAL mode: {exc}"
                    ) from exc
                time.sleep(0.05)
                continue
            if str(mode).lower() != "wal":
                raise RunStoreError(
                    f"the run store {self.path} cannot use WAL mode (got {mode!r}); "
                    "put it on a local file system, not a network share"
                )
            return

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        known = migrations[-1].version if migrations else 0
        with self._write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            found = int(current.fetchone()[0])
            if found > known:
                raise newer_schema_error(str(self.path), found, known)
            for step in migrations:
                if step.version <= found:
                    continue
                try:
                    for statement in step.sqlite:
                        conn.execute(statement)
                except sqlite3.Error as exc:
                    raise migration_failed(str(self.path), step, found, str(exc)) from exc
                conn.execute(
                    "INSERT INTO schema_version (version, description, applied_at) "
                    "VALUES (?, ?, ?)",
                    (step.version, step.description, datetime.now(UTC).isoformat()),
                )

    def schema_version(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the file's write lock from its start."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise RunStoreError(
                    f"the run store {self.path} stayed locked by another process for "
                    f"{self._busy_timeout:g}s: {exc}"
                ) from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

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
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, 'running', ?)",
                (
                    run_id,
                    kind,
                    env,
                    clean_text(trigger, self._redactor),
                    clean_text(actor, self._redactor),
                    started.isoformat(),
                    details_json,
                ),
            )
            conn.executemany(
                "INSERT INTO run_services (run_id, position, service) VALUES (?, ?, ?)",
                [(run_id, i, name) for i, name in enumerate(names)],
            )
        run = self.get(run_id)
        assert run is not None  # just written in this process
        return run

    def append_log(self, run_id: str, text: str) -> None:
        if not isinstance(text, str):
            raise RunStoreError(f"log text for run {run_id} must be str, got {type(text).__name__}")
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO run_log (run_id, text) SELECT id, ? FROM runs WHERE id = ?",
                (clean_text(text, self._redactor), run_id),
            )
            if cursor.rowcount == 0:
                raise RunNotFoundError(run_id)

    def finish(self, run_id: str, outcome: str, details: dict[str, object] | None = None) -> Run:
        check_outcome(outcome)
        extra = json.loads(dump_details(run_id, details or {}, self._redactor))
        with self._write() as conn:
            row = conn.execute(
                "SELECT outcome, details FROM runs WHERE id = ?", (run_id,)
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
                "UPDATE runs SET outcome = ?, ended_at = ?, details = ? WHERE id = ?",
                (
                    outcome,
                    datetime.now(UTC).isoformat(),
                    json.dumps(merged, sort_keys=True),
                    run_id,
                ),
            )
        run = self.get(run_id)
        assert run is not None
        return run

    def get(self, run_id: str) -> Run | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            if row is None:
                return None
            services = self._services([run_id])
            logs = self._logs([run_id])
        return self._run(row, services.get(run_id, []), logs.get(run_id, ""))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteRunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading helpers (call with the lock held) ----------------------------

    def _services(self, ids: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        if not ids:
            return found
        marks = ", ".join("?" * len(ids))
        rows = self._conn.execute(
            f"SELECT run_id, service FROM run_services WHERE run_id IN ({marks}) "
            "ORDER BY run_id, position",
            list(ids),
        )
        for run_id, service in rows:
            found.setdefault(run_id, []).append(service)
        return found

    def _logs(self, ids: Sequence[str]) -> dict[str, str]:
        chunks: dict[str, list[str]] = {}
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        rows = self._conn.execute(
            f"SELECT run_id, text FROM run_log WHERE run_id IN ({marks}) ORDER BY seq",
            list(ids),
        )
        for run_id, text in rows:
            chunks.setdefault(run_id, []).append(text)
        return {run_id: "".join(parts) for run_id, parts in chunks.items()}

    def _run(self, row: Sequence[object], services: list[str], log: str) -> Run:
        run_id, kind, env, trigger, actor, started, ended, outcome, details = row
        return Run(
            id=str(run_id),
            kind=str(kind),
            env=str(env),
            services=services,
            trigger=str(trigger),
            actor=str(actor),
            started_at=datetime.fromisoformat(str(started)),
            ended_at=datetime.fromisoformat(str(ended)) if ended is not None else None,
            outcome=str(outcome),
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
            where.append("r.env = ?")
            params.append(env)
        if kind is not None:
            where.append("r.kind = ?")
            params.append(kind)
        if service is not None:
            where.append(
                "EXISTS (SELECT 1 FROM run_services s WHERE s.run_id = r.id AND s.service = ?)"
            )
            params.append(service)
        if before is not None:
            where.append("r.id < ?")
            params.append(before)
        sql = f"SELECT {', '.join('r.' + c for c in _RUN_COLUMNS.split(', '))} FROM runs r"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.id DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
            ids = [row[0] for row in rows]
            services = self._services(ids)
            logs = self._logs(ids) if with_log else {}
        return [self._run(row, services.get(row[0], []), logs.get(row[0], "")) for row in rows]
