"""The default run store: one SQLite file in the user's state directory.

Several processes (two CLI applies and a `serve`) share the file: WAL mode lets
readers run beside the one writer, every write takes the write lock up front
(`BEGIN IMMEDIATE`) so no transaction has to upgrade its lock and deadlock, and
the busy timeout makes a writer wait its turn instead of failing.
"""

from __future__ import annotations

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
    RUN_COLUMNS,
    SELECT_RUNS,
    Migration,
    check_migrations,
    default_sqlite_path,
    details_to_add,
    finished_details,
    group_by_run,
    list_query,
    log_chunk,
    migration_failed,
    new_run,
    pending_migrations,
    run_from_row,
)
from configcenter.core.redact import Redactor
from configcenter.ports.runstore import Run, RunNotFoundError, RunStoreError, check_outcome


def _to_datetime(value: object) -> datetime:
    """Timestamps are stored as ISO 8601 text with their UTC offset."""
    return datetime.fromisoformat(str(value))


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
        try:
            self._conn = self._connect()
        except sqlite3.DatabaseError as exc:  # not a database at all: garbage in the file
            raise self._unreadable(exc) from None
        try:
            self._migrate(migrations)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise self._unreadable(exc) from None
        except BaseException:
            self._conn.close()
            raise

    def _unreadable(self, exc: sqlite3.DatabaseError) -> RunStoreError:
        return RunStoreError(
            f"the run store {self.path} is not a SQLite database, or is corrupt ({exc}); "
            "move it aside (configcenter starts a new one) or restore it from a backup"
        )

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
        with self._write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            found = int(current.fetchone()[0])
            for step in pending_migrations(migrations, found, str(self.path)):
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
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, 'running', ?)",
                new.row(new.started.isoformat()),
            )
            conn.executemany(
                "INSERT INTO run_services (run_id, position, service) VALUES (?, ?, ?)",
                new.service_rows(),
            )
        run = self.get(new.id)
        assert run is not None  # just written in this process
        return run

    def append_log(self, run_id: str, text: str) -> None:
        chunk = log_chunk(run_id, text, self._redactor)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO run_log (run_id, text) SELECT id, ? FROM runs WHERE id = ?",
                (chunk, run_id),
            )
            if cursor.rowcount == 0:
                raise RunNotFoundError(run_id)

    def finish(self, run_id: str, outcome: str, details: dict[str, object] | None = None) -> Run:
        check_outcome(outcome)
        extra = details_to_add(run_id, details, self._redactor)
        with self._write() as conn:
            row = conn.execute(
                "SELECT outcome, details FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            merged = finished_details(run_id, row, extra)
            conn.execute(
                "UPDATE runs SET outcome = ?, ended_at = ?, details = ? WHERE id = ?",
                (outcome, datetime.now(UTC).isoformat(), merged, run_id),
            )
        run = self.get(run_id)
        assert run is not None
        return run

    def get(self, run_id: str) -> Run | None:
        with self._lock:
            row = self._conn.execute(f"{SELECT_RUNS} WHERE r.id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            services = self._services([run_id])
            logs = self._logs([run_id])
        return run_from_row(row, services, logs, self._redactor, _to_datetime)

    def has(self, run_id: str) -> bool:
        with self._lock:
            row = self._conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row is not None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteRunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading helpers (call with the lock held) ----------------------------

    def _services(self, ids: Sequence[str]) -> dict[str, list[str]]:
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        rows = self._conn.execute(
            f"SELECT run_id, service FROM run_services WHERE run_id IN ({marks}) "
            "ORDER BY run_id, position",
            list(ids),
        )
        return group_by_run(rows)

    def _logs(self, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        rows = self._conn.execute(
            f"SELECT run_id, text FROM run_log WHERE run_id IN ({marks}) ORDER BY seq",
            list(ids),
        )
        return {run_id: "".join(parts) for run_id, parts in group_by_run(rows).items()}

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
        sql, params = list_query("?", env, kind, limit, service, before)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
            ids = [row[0] for row in rows]
            services = self._services(ids)
            logs = self._logs(ids) if with_log else {}
        return [run_from_row(row, services, logs, self._redactor, _to_datetime) for row in rows]


def open_store(url: str | None, redactor: Redactor | None) -> SqliteRunStore:
    """The registry's factory (`configcenter.core.kinds`): `sqlite://PATH`, None for the default.

    `sqlite:///var/lib/cc/runs.sqlite3` is absolute; `~` is expanded.
    """
    if url is None:
        return SqliteRunStore(None, redactor)
    if not url.startswith("sqlite://") or not url[len("sqlite://") :]:
        raise RunStoreError(
            f"run store URL {url!r} has no file path: write sqlite:///path/to/runs.sqlite3"
        )
    return SqliteRunStore(Path(url[len("sqlite://") :]).expanduser(), redactor)
