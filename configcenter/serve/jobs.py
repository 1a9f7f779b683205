"""serve's durable queue: every webhook delivery and scheduled reconcile, exactly once.

A job's id is the delivery's own id (GitLab's Idempotency-Key, a registry
event id, `schedule:<env>:<slot>`), and it is the table's primary key: a
duplicate, a GitLab retry or a redelivery after a restart inserts nothing. A
job is answered (202) once stored; workers claim queued jobs one at a time.
The table sits next to the runs: the same PostgreSQL database when the run
store is PostgreSQL (so every replica shares one queue), else a SQLite file
beside the run store's.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from configcenter.adapters.runstores import default_sqlite_path, mask_url
from configcenter.core.errors import UserError

JOB_STATES = ("queued", "running", "done", "failed", "ignored")

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
_SQLITE_SCHEMA = (_JOBS_TABLE.format(seq="INTEGER PRIMARY KEY AUTOINCREMENT"), *_SHARED_SCHEMA)
_POSTGRES_SCHEMA = (
    _JOBS_TABLE.format(seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    *_SHARED_SCHEMA,
)
_COLUMNS = (
    "seq, id, source, kind, env, payload, received_at, state, claimed_by, claimed_at, "
    "finished_at, runs, note"
)


class JobStoreError(UserError):
    """The job store could not be opened or used; the message names where and the fix.

    A UserError so the CLI prints it as one message, like other bad-input errors.
    """


@dataclass
class Job:
    id: str
    source: str  # gitlab | registry | schedule
    kind: str  # push | merge_request | image | reconcile
    env: str = ""  # "" when the job decides its environments itself
    payload: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    received_at: str = ""
    state: str = "queued"
    claimed_by: str | None = None
    claimed_at: str | None = None
    finished_at: str | None = None
    runs: list[str] = field(default_factory=list)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "kind": self.kind,
            "env": self.env or None,
            "received_at": self.received_at,
            "state": self.state,
            "claimed_by": self.claimed_by,
            "finished_at": self.finished_at,
            "runs": self.runs,
            "note": self.note,
        }


def now_text(now: datetime | None = None) -> str:
    """UTC, microseconds, sortable as text on both databases."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class JobStore:
    """Jobs in SQLite (one process) or PostgreSQL (replicas); safe to share between threads."""

    def __init__(self, run_store_url: str | None) -> None:
        self._lock = threading.RLock()
        self.postgres = bool(run_store_url) and str(run_store_url).split(":", 1)[0].lower() in (
            "postgresql",
            "postgres",
        )
        self._url = run_store_url or ""
        if self.postgres:
            self.where = mask_url(self._url)
            self._conn: Any = self._pg_connect()
            schema = _POSTGRES_SCHEMA
        else:
            path = _sqlite_path(run_store_url)
            self.where = str(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            schema = _SQLITE_SCHEMA
        with self._tx() as cur:
            if self.postgres:
                # Replicas starting together must not race on CREATE TABLE.
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('configcenter:serve_schema'))")
            for statement in schema:
                cur.execute(statement)

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

    def add(self, job: Job) -> bool:
        """Store a new queued job; False when a job with this id exists (a duplicate)."""
        with self._tx() as cur:
            self._run(
                cur,
                "INSERT INTO serve_jobs (id, source, kind, env, payload, received_at, state, note) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (
                    job.id,
                    job.source,
                    job.kind,
                    job.env,
                    json.dumps(job.payload, sort_keys=True),
                    job.received_at or now_text(),
                    job.state,
                    job.note,
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
        """Mark queued jobs of this kind and `ref`, received before `up_to_seq`, done by `runs`.

        A push applies the config repo's head, so one apply covers every push
        to the same branch that had arrived before it fetched: they are
        recorded, not re-run. Only a job that applied something may call this;
        pushes to other refs are never covered.
        """
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
    if url and url.startswith("sqlite://"):
        runs = Path(url[len("sqlite://") :]).expanduser()
        return runs.with_name(runs.stem + "-serve.sqlite3")
    return default_sqlite_path().with_name("serve.sqlite3")


def _job(row: Sequence[Any]) -> Job:
    (seq, job_id, source, kind, env, payload, received, state, by, at, done, runs, note) = row
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
    )
