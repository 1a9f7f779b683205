"""serve's job store on SQL: SQLite for one process, PostgreSQL shared by replicas.

The tables sit next to the runs: the same PostgreSQL database when the run store
is PostgreSQL (so every replica shares one queue), else a SQLite file beside the
run store's. Both are created by the same ordered migrations, recorded in
`serve_schema_version` (the run store keeps its own `schema_version`); version 1
is the schema serve created before it had migrations, so such a database is
adopted as it is.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from configcenter.adapters.runstores import Migration, default_sqlite_path, mask_url
from configcenter.ports.jobstore import JOB_STATES, Job, JobStoreError, now_text

# The job tables are the same on both databases but for how `seq` counts up.
_JOBS_TABLE = """CREATE TABLE IF NOT EXISTS serve_jobs (
        seq {seq},
        id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        env TEXT NOT NULL DEFAULT '',
        payload TEXT NOT NULL DEFAULT '{{}}',
        received_at TEXT NOT NULL,
        state TEXT NOT NULL,
        claimed_by TEXT,
        claimed_at TEXT,
        finished_at TEXT,
        runs TEXT NOT NULL DEFAULT '[]',
        note TEXT NOT NULL DEFAULT ''
    )"""
_SHARED_SCHEMA = (
    "CREATE INDEX IF NOT EXISTS serve_jobs_state ON serve_jobs (state, seq)",
    """CREATE TABLE IF NOT EXISTS serve_replicas (
        identity TEXT PRIMARY KEY,
        seen_at TEXT NOT NULL,
        leader INTEGER NOT NULL DEFAULT 0
    )""",
)

# Jobs from before version 2: a GitLab job without an Idempotency-Key was named by its
# event (its id is its event key); one with a key was named by it (its event unknown).
_EVENT_KEY = (
    "ALTER TABLE serve_jobs ADD COLUMN event_key TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE serve_jobs ADD COLUMN keyed INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS serve_jobs_event_key ON serve_jobs (event_key)",
    "UPDATE serve_jobs SET event_key = id WHERE source = 'gitlab' "
    "AND payload LIKE '%\"idempotency_key\": null%'",
    "UPDATE serve_jobs SET keyed = 1 WHERE source = 'gitlab' AND event_key = ''",
)

#: Applied once each, in version order, inside one transaction. Version 1 uses
#: IF NOT EXISTS: databases from before migrations already hold these tables.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="serve_jobs (the queue) and serve_replicas (heartbeats)",
        sqlite=(_JOBS_TABLE.format(seq="INTEGER PRIMARY KEY AUTOINCREMENT"), *_SHARED_SCHEMA),
        postgres=(
            _JOBS_TABLE.format(seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
            *_SHARED_SCHEMA,
        ),
    ),
    Migration(
        version=2,
        description="serve_jobs.event_key and keyed: a retry with another subset of a "
        "delivery's identifiers is the same job",
        sqlite=_EVENT_KEY,
        postgres=_EVENT_KEY,
    ),
)
_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS serve_schema_version (version INTEGER PRIMARY KEY, "
    "description TEXT NOT NULL, applied_at TEXT NOT NULL)"
)
_COLUMNS = (
    "seq, id, source, kind, env, payload, received_at, state, claimed_by, claimed_at, "
    "finished_at, runs, note, event_key, keyed"
)


class SqlJobStore:
    """Jobs in SQLite (one process) or PostgreSQL (replicas); safe to share between threads."""

    def __init__(
        self, run_store_url: str | None, migrations: Sequence[Migration] = MIGRATIONS
    ) -> None:
        self._lock = threading.RLock()
        self.postgres = bool(run_store_url) and str(run_store_url).split(":", 1)[0].lower() in (
            "postgresql",
            "postgres",
        )
        self.shared = self.postgres  # replicas share a PostgreSQL queue
        self._url = run_store_url or ""
        if self.postgres:
            self.where = mask_url(self._url)
            self._conn: Any = self._pg_connect()
        else:
            path = _sqlite_path(run_store_url)
            self.where = str(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._migrate(migrations)

    # -- plumbing --------------------------------------------------------------------------

    def _pg_connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=10,
                application_name="configcenter-serve",
            )
        except psycopg.Error as exc:
            raise JobStoreError(
                f"cannot connect to {self.where} for serve's job queue: "
                f"{type(exc).__name__}; check the run store URL and that the server runs"
            ) from None

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        versions = [m.version for m in migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise JobStoreError(
                f"job store migrations must be numbered 1, 2, 3, ...; got {versions}"
            )
        known = versions[-1] if versions else 0
        with self._tx() as cur:
            if self.postgres:
                # Replicas starting together must not race on CREATE TABLE.
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('configcenter:serve_schema'))")
            cur.execute(_VERSION_TABLE)
            found = int(
                self._run(
                    cur, "SELECT COALESCE(MAX(version), 0) FROM serve_schema_version"
                ).fetchone()[0]
            )
            if found > known:
                raise JobStoreError(
                    f"serve's job store at {self.where} has schema version {found}, newer than "
                    f"this configcenter knows (up to {known}): upgrade configcenter, or point "
                    "it at another run store"
                )
            for step in migrations:
                if step.version <= found:
                    continue
                try:
                    for statement in step.postgres if self.postgres else step.sqlite:
                        cur.execute(statement)
                except Exception as exc:
                    if not _database_error(exc):
                        raise
                    raise JobStoreError(
                        f"job store migration {step.version} ({step.description}) failed on "
                        f"{self.where}: {type(exc).__name__}: {exc}; nothing was changed, the "
                        f"schema is still at version {found}"
                    ) from None
                self._run(
                    cur,
                    "INSERT INTO serve_schema_version (version, description, applied_at) "
                    "VALUES (?, ?, ?)",
                    (step.version, step.description, now_text()),
                )

    def schema_version(self) -> int:
        with self._tx() as cur:
            row = self._run(cur, "SELECT MAX(version) FROM serve_schema_version").fetchone()
            return int(row[0] or 0)

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.postgres else text

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock:
            if self.postgres:
                if self._conn.closed:
                    self._conn = self._pg_connect()
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur
            else:
                cur = self._conn.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")

    def _run(self, cur: Any, text: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(text), tuple(params))
        return cur

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- jobs ------------------------------------------------------------------------------

    def add(self, job: Job, *, again_if_failed: bool = False) -> bool:
        """Store a new queued job; False when it is a duplicate (the port says when).

        `again_if_failed`: the failed job it duplicates is queued again (its runs are kept).
        """
        with self._tx() as cur:
            if self.postgres and job.event_key:
                # Two replicas adding deliveries of one event must not both find none.
                self._run(cur, "SELECT pg_advisory_xact_lock(hashtext(?))", (job.event_key,))
            found = self._run(
                cur, "SELECT id, state FROM serve_jobs WHERE id = ?", (job.id,)
            ).fetchone()
            if found is None and job.event_key:
                same = "event_key = ?" + (" AND keyed = 0" if job.keyed else "")
                found = self._run(
                    cur,
                    f"SELECT id, state FROM serve_jobs WHERE {same} ORDER BY seq LIMIT 1",
                    (job.event_key,),
                ).fetchone()
            if found is not None:
                if not again_if_failed or found[1] != "failed":
                    return False
                self._run(
                    cur,
                    "UPDATE serve_jobs SET state = 'queued', claimed_by = NULL, "
                    "claimed_at = NULL, finished_at = NULL, received_at = ?, "
                    "note = 'delivered again after it failed' WHERE id = ? AND state = 'failed'",
                    (job.received_at or now_text(), found[0]),
                )
                return bool(cur.rowcount == 1)
            self._run(
                cur,
                "INSERT INTO serve_jobs (id, source, kind, env, payload, received_at, state, "
                "note, event_key, keyed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (
                    job.id,
                    job.source,
                    job.kind,
                    job.env,
                    json.dumps(job.payload, sort_keys=True),
                    job.received_at or now_text(),
                    job.state,
                    job.note,
                    job.event_key,
                    1 if job.keyed else 0,
                ),
            )
            return bool(cur.rowcount == 1)

    def claim(self, worker: str, *, schedule: bool = True) -> Job | None:
        """Take the oldest queued job (scheduled ones only when `schedule`): now it is ours."""
        only = "" if schedule else " AND source <> 'schedule'"
        skip = " FOR UPDATE SKIP LOCKED" if self.postgres else ""
        with self._tx() as cur:
            row = self._run(
                cur,
                f"SELECT seq FROM serve_jobs WHERE state = 'queued'{only} "
                f"ORDER BY seq LIMIT 1{skip}",
            ).fetchone()
            if row is None:
                return None
            self._run(
                cur,
                "UPDATE serve_jobs SET state = 'running', claimed_by = ?, claimed_at = ? "
                "WHERE seq = ?",
                (worker, now_text(), row[0]),
            )
            got = self._run(
                cur, f"SELECT {_COLUMNS} FROM serve_jobs WHERE seq = ?", (row[0],)
            ).fetchone()
            return _job(got)

    def finish(self, job_id: str, state: str, runs: Sequence[str] = (), note: str = "") -> None:
        if state not in JOB_STATES:
            raise JobStoreError(f"unknown job state {state!r}: use one of {', '.join(JOB_STATES)}")
        with self._tx() as cur:
            self._run(
                cur,
                "UPDATE serve_jobs SET state = ?, finished_at = ?, runs = ?, note = ? WHERE id = ?",
                (state, now_text(), json.dumps(list(runs)), note, job_id),
            )

    def last_seq(self) -> int:
        with self._tx() as cur:
            row = self._run(cur, "SELECT COALESCE(MAX(seq), 0) FROM serve_jobs").fetchone()
            return int(row[0])

    def finish_covered(
        self,
        source: str,
        kind: str,
        up_to_seq: int,
        runs: Sequence[str],
        note: str,
        *,
        ref: str,
    ) -> list[str]:
        """Queued pushes to `ref` up to `up_to_seq` recorded as done (the port says why)."""
        with self._tx() as cur:
            rows = self._run(
                cur,
                "SELECT id, payload FROM serve_jobs WHERE state = 'queued' AND source = ? "
                "AND kind = ? AND seq <= ?" + (" FOR UPDATE SKIP LOCKED" if self.postgres else ""),
                (source, kind, up_to_seq),
            ).fetchall()
            ids = [str(r[0]) for r in rows if json.loads(r[1] or "{}").get("ref") == ref]
            for job_id in ids:
                self._run(
                    cur,
                    "UPDATE serve_jobs SET state = 'done', finished_at = ?, runs = ?, note = ? "
                    "WHERE id = ?",
                    (now_text(), json.dumps(list(runs)), note, job_id),
                )
            return ids

    def get(self, job_id: str) -> Job | None:
        with self._tx() as cur:
            row = self._run(
                cur, f"SELECT {_COLUMNS} FROM serve_jobs WHERE id = ?", (job_id,)
            ).fetchone()
            return None if row is None else _job(row)

    def recent(self, limit: int = 50, source: str | None = None) -> list[Job]:
        where, params = ("WHERE source = ?", [source]) if source else ("", [])
        with self._tx() as cur:
            rows = self._run(
                cur,
                f"SELECT {_COLUMNS} FROM serve_jobs {where} ORDER BY seq DESC LIMIT ?",
                [*params, max(1, min(limit, 1000))],
            ).fetchall()
            return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._tx() as cur:
            rows = self._run(
                cur, "SELECT state, COUNT(*) FROM serve_jobs GROUP BY state"
            ).fetchall()
            return {str(state): int(n) for state, n in rows}

    # -- replicas --------------------------------------------------------------------------

    def heartbeat(self, identity: str, leader: bool) -> None:
        with self._tx() as cur:
            self._run(
                cur,
                "INSERT INTO serve_replicas (identity, seen_at, leader) VALUES (?, ?, ?) "
                "ON CONFLICT (identity) DO UPDATE SET seen_at = excluded.seen_at, "
                "leader = excluded.leader",
                (identity, now_text(), 1 if leader else 0),
            )

    def requeue_orphaned(self, stale_after: float) -> list[str]:
        """Jobs left running by a replica that stopped beating: queued again, not lost."""
        cutoff = now_text(datetime.now(UTC) - timedelta(seconds=stale_after))
        with self._tx() as cur:
            rows = self._run(
                cur,
                "SELECT j.id FROM serve_jobs j LEFT JOIN serve_replicas r "
                "ON r.identity = j.claimed_by WHERE j.state = 'running' "
                "AND (r.seen_at IS NULL OR r.seen_at < ?)",
                (cutoff,),
            ).fetchall()
            ids = [str(r[0]) for r in rows]
            for job_id in ids:
                self._run(
                    cur,
                    "UPDATE serve_jobs SET state = 'queued', claimed_by = NULL, claimed_at = NULL,"
                    " note = 'requeued: the replica running it stopped' WHERE id = ?",
                    (job_id,),
                )
            return ids

    def silent_replicas(self, stale_after: float) -> set[str]:
        """Identities whose last heartbeat is older than `stale_after` seconds."""
        cutoff = now_text(datetime.now(UTC) - timedelta(seconds=stale_after))
        with self._tx() as cur:
            rows = self._run(
                cur, "SELECT identity FROM serve_replicas WHERE seen_at < ?", (cutoff,)
            ).fetchall()
            return {str(r[0]) for r in rows}

    def requeue_mine(self, identity: str) -> list[str]:
        """On start: jobs this identity was running when it last stopped."""
        with self._tx() as cur:
            rows = self._run(
                cur,
                "SELECT id FROM serve_jobs WHERE state = 'running' AND claimed_by = ?",
                (identity,),
            ).fetchall()
            ids = [str(r[0]) for r in rows]
            self._run(
                cur,
                "UPDATE serve_jobs SET state = 'queued', claimed_by = NULL, claimed_at = NULL "
                "WHERE state = 'running' AND claimed_by = ?",
                (identity,),
            )
            return ids

    # -- one run per environment across replicas ------------------------------------------

    @contextmanager
    def env_lock(self, env: str) -> Iterator[None]:
        """Across replicas (PostgreSQL): a session advisory lock held for the whole run."""
        if not self.postgres:
            yield
            return
        conn = self._pg_connect()
        try:
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"configcenter:env:{env}",))
            yield
        finally:
            conn.close()  # closing the session releases its advisory locks


def _sqlite_path(url: str | None) -> Path:
    legacy = default_sqlite_path()
    if url and url.startswith("sqlite://"):
        runs = Path(url[len("sqlite://") :]).expanduser()
        if runs != legacy:
            return runs.with_name(runs.stem + "-serve.sqlite3")
    return legacy.with_name("serve.sqlite3")  # beside the store from before per-project ones


def _job(row: Sequence[Any]) -> Job:
    (seq, job_id, source, kind, env, payload, received, state, by, at, done, runs, note) = row[:13]
    event_key, keyed = row[13:15]
    return Job(
        id=str(job_id),
        source=str(source),
        kind=str(kind),
        env=str(env or ""),
        payload=json.loads(payload or "{}"),
        seq=int(seq),
        received_at=str(received),
        state=str(state),
        claimed_by=by,
        claimed_at=at,
        finished_at=done,
        runs=list(json.loads(runs or "[]")),
        note=str(note or ""),
        event_key=str(event_key or ""),
        keyed=bool(keyed),
    )


def _database_error(exc: Exception) -> bool:
    """A failure the database reported (not a bug of ours)."""
    if isinstance(exc, sqlite3.Error):
        return True
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, psycopg.Error)


def open_job_store(run_store_url: str | None) -> SqlJobStore:
    """The job store beside the run store `run_store_url` names (None: the default SQLite)."""
    return SqlJobStore(run_store_url)
