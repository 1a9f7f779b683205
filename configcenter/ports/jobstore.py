"""The job store port: serve's durable queue of webhook deliveries and scheduled work.

A job's id is the delivery's own id (GitLab's Idempotency-Key, a registry
event id, `schedule:<env>:<slot>`), and it is unique: a duplicate, a GitLab
retry or a redelivery after a restart adds nothing. A GitLab job also keeps its
event's identity (`event_key`), so a retry that carries another subset of the
delivery's identifiers (its Idempotency-Key missing, or there only now) is the
same job. A job is answered (202)
once stored; workers claim queued jobs one at a time. Replicas beat a
heartbeat; jobs a silent replica held are queued again.

`configcenter.wiring.open_job_store` opens the adapter
(`configcenter.adapters.sql_jobs`: SQLite for one process, PostgreSQL shared by
replicas); tests/jobstore is the contract suite both pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from configcenter.core.errors import UserError

JOB_STATES = ("queued", "running", "done", "failed", "ignored")


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
    #: The id a delivery of the same event gets when it carries no key of its own (GitLab:
    #: `gitlab:<natural key>`); "" when the job has no such event identity.
    event_key: str = ""
    #: The id is the delivery's own key (GitLab's Idempotency-Key), not `event_key`.
    keyed: bool = False

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


class JobStore(Protocol):
    """Jobs and replica heartbeats; safe to share between threads."""

    #: Where the jobs are kept, fit for messages (a password is masked).
    where: str
    #: Whether several processes (replicas) may share this store; when not, whatever a
    #: previous start left running died with it.
    shared: bool

    def add(self, job: Job, *, again_if_failed: bool = False) -> bool:
        """Store a new queued job; False when it is a duplicate: a job with this id exists,
        or one with the same `event_key` where either of the two is not `keyed` (a retry
        that lost or gained its Idempotency-Key is the same delivery; two deliveries that
        both carry keys are told apart by them).

        `again_if_failed`: a job with this id that failed is queued again instead (a
        webhook delivered again on purpose after its job failed), True then.
        """
        ...

    def claim(self, worker: str, *, schedule: bool = True) -> Job | None:
        """Take the oldest queued job (scheduled ones only when `schedule`): now it is ours."""
        ...

    def finish(self, job_id: str, state: str, runs: Sequence[str] = (), note: str = "") -> None:
        """Record how a job ended; JobStoreError for a state not in JOB_STATES."""
        ...

    def last_seq(self) -> int:
        """The sequence number of the newest job (0 when there is none)."""
        ...

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
        """Mark queued jobs of this kind and `ref`, received up to `up_to_seq`, done by `runs`.

        A push applies the config repo's head, so one apply covers every push
        to the same branch that had arrived before it fetched: they are
        recorded, not re-run. Only a job that applied something may call this;
        pushes to other refs are never covered.
        """
        ...

    def get(self, job_id: str) -> Job | None: ...

    def recent(self, limit: int = 50, source: str | None = None) -> list[Job]:
        """Newest first; `limit` is kept within 1..1000."""
        ...

    def counts(self) -> dict[str, int]:
        """Jobs per state."""
        ...

    def heartbeat(self, identity: str, leader: bool) -> None: ...

    def requeue_orphaned(self, stale_after: float) -> list[str]:
        """Jobs left running by a replica that stopped beating: queued again, not lost."""
        ...

    def silent_replicas(self, stale_after: float) -> set[str]:
        """Identities whose last heartbeat is older than `stale_after` seconds."""
        ...

    def requeue_mine(self, identity: str) -> list[str]:
        """On start: jobs this identity was running when it last stopped."""
        ...

    def env_lock(self, env: str) -> AbstractContextManager[None]:
        """One run per environment across replicas, held for the whole run (a no-op where
        only one process uses the store)."""
        ...

    def close(self) -> None: ...
