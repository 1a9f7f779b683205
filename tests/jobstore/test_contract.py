"""The job store contract: every adapter passes the same tests (serve's durable queue)."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from configcenter.adapters.runstores import Migration
from configcenter.adapters.sql_jobs import MIGRATIONS, SqlJobStore
from configcenter.ports.jobstore import Job, JobStore, JobStoreError
from configcenter.wiring import open_job_store
from tests.support.helpers import poll


def push(job_id: str, ref: str = "refs/heads/main", source: str = "gitlab") -> Job:
    return Job(id=job_id, source=source, kind="push", payload={"ref": ref, "after": "abc"})


def schema_version(store: JobStore) -> int:
    """The adapter's own schema_version (not part of the port)."""
    assert isinstance(store, SqlJobStore)
    return store.schema_version()


@contextmanager
def opened(url: str, migrations: tuple[Migration, ...] = MIGRATIONS) -> Iterator[SqlJobStore]:
    store = SqlJobStore(url, migrations)
    try:
        yield store
    finally:
        store.close()


# -- adding, claiming, finishing ----------------------------------------------


def test_a_job_is_stored_once_by_its_delivery_id(store: JobStore) -> None:
    assert store.add(push("gitlab:k1")) is True
    assert store.add(push("gitlab:k1", ref="refs/heads/other")) is False  # a redelivery

    got = store.get("gitlab:k1")
    assert got is not None
    assert (got.source, got.kind, got.state, got.payload["ref"]) == (
        "gitlab",
        "push",
        "queued",
        "refs/heads/main",
    )
    assert got.seq > 0 and got.received_at.endswith("Z")
    assert store.get("gitlab:nope") is None
    assert store.counts() == {"queued": 1}


def test_a_retry_with_another_subset_of_the_delivery_keys_is_the_same_job(
    store: JobStore,
) -> None:
    """A job is known by its id and its event key: a delivery without a key of its own
    matches any job of its event; one with a key matches a key-less job of its event, not a
    job with another key (two keys, two deliveries)."""
    event = "gitlab:push:1:refs/heads/main:a:b"

    def job(job_id: str, keyed: bool) -> Job:
        return Job(id=job_id, source="gitlab", kind="push", event_key=event, keyed=keyed)

    assert store.add(job("gitlab:k1", True)) is True
    assert store.add(job(event, False)) is False  # the key lost on the retry
    assert store.add(job("gitlab:k2", True)) is True  # another key: another delivery
    got = store.get("gitlab:k1")
    assert got is not None and (got.event_key, got.keyed) == (event, True)

    other = "gitlab:push:1:refs/heads/main:b:c"
    assert store.add(Job(id=other, source="gitlab", kind="push", event_key=other)) is True
    keyed = Job(id="gitlab:k3", source="gitlab", kind="push", event_key=other, keyed=True)
    assert store.add(keyed) is False  # the key there only on the retry
    assert store.get("gitlab:k3") is None
    claimed = [store.claim("w1"), store.claim("w1"), store.claim("w1")]
    assert [c.id for c in claimed if c] == ["gitlab:k1", "gitlab:k2", other]
    store.finish(other, "failed", [], "no")
    assert store.add(keyed, again_if_failed=True) is True  # a resend after it failed
    again = store.get(other)
    assert again is not None and again.state == "queued"
    assert store.counts() == {"running": 2, "queued": 1}


def test_a_failed_job_delivered_again_is_queued_again_only_when_asked(store: JobStore) -> None:
    assert store.add(push("gitlab:k1")) is True
    assert store.add(push("gitlab:k1"), again_if_failed=True) is False  # queued: a duplicate
    claimed = store.claim("w1")
    assert claimed is not None and claimed.id == "gitlab:k1"
    store.finish("gitlab:k1", "failed", ["r1"], "ApplyRefused: no")
    assert store.add(push("gitlab:k1")) is False  # without asking: still a duplicate

    assert store.add(push("gitlab:k1"), again_if_failed=True) is True

    got = store.get("gitlab:k1")
    assert got is not None
    assert (got.state, got.claimed_by, got.note) == (
        "queued",
        None,
        "delivered again after it failed",
    )
    assert store.add(push("gitlab:k1"), again_if_failed=True) is False  # queued again
    again = store.claim("w2")
    assert again is not None and again.id == "gitlab:k1"
    store.finish("gitlab:k1", "done", ["r2"], "ok")
    assert store.add(push("gitlab:k1"), again_if_failed=True) is False  # done: a duplicate
    assert store.counts() == {"done": 1}


def test_claim_takes_the_oldest_queued_job_and_scheduled_ones_only_when_asked(
    store: JobStore,
) -> None:
    store.add(Job(id="schedule:dev:1", source="schedule", kind="reconcile", env="dev"))
    store.add(push("gitlab:a"))
    store.add(push("gitlab:b"))

    first = store.claim("w1", schedule=False)
    assert first is not None and first.id == "gitlab:a"
    assert (first.state, first.claimed_by) == ("running", "w1") and first.claimed_at
    second = store.claim("w2")
    assert second is not None and second.id == "schedule:dev:1" and second.env == "dev"
    third = store.claim("w1")
    assert third is not None and third.id == "gitlab:b"
    assert store.claim("w1") is None
    assert store.counts() == {"running": 3}


def test_finish_records_the_outcome_and_refuses_unknown_states(store: JobStore) -> None:
    store.add(push("gitlab:a"))
    claimed = store.claim("w1")
    assert claimed is not None
    with pytest.raises(JobStoreError, match="unknown job state 'lost': use one of queued"):
        store.finish("gitlab:a", "lost")
    assert store.counts() == {"running": 1}  # nothing changed

    store.finish("gitlab:a", "done", ["r1", "r2"], "dev: succeeded")
    done = store.get("gitlab:a")
    assert done is not None
    assert (done.state, done.runs, done.note) == ("done", ["r1", "r2"], "dev: succeeded")
    assert done.finished_at is not None
    assert done.to_json()["runs"] == ["r1", "r2"]


def test_one_apply_covers_the_queued_pushes_to_its_ref_only(store: JobStore) -> None:
    for job in (
        push("gitlab:a"),
        push("gitlab:b"),
        push("gitlab:other-branch", ref="refs/heads/feature"),
        Job(id="registry:x", source="registry", kind="push", payload={"ref": "refs/heads/main"}),
    ):
        store.add(job)
    covered_up_to = store.last_seq()
    store.add(push("gitlab:late"))  # arrived after the apply fetched: not covered

    covered = store.finish_covered(
        "gitlab", "push", covered_up_to, ["r9"], "covered by r9", ref="refs/heads/main"
    )
    assert sorted(covered) == ["gitlab:a", "gitlab:b"]
    states = {job.id: job.state for job in store.recent()}
    assert states == {
        "gitlab:a": "done",
        "gitlab:b": "done",
        "gitlab:other-branch": "queued",
        "registry:x": "queued",
        "gitlab:late": "queued",
    }
    a = store.get("gitlab:a")
    assert a is not None and (a.runs, a.note) == (["r9"], "covered by r9")


def test_recent_is_newest_first_filters_by_source_and_bounds_the_limit(store: JobStore) -> None:
    assert store.last_seq() == 0 and store.recent() == []
    for index in range(3):
        store.add(push(f"gitlab:{index}"))
    store.add(Job(id="registry:1", source="registry", kind="image"))

    assert [j.id for j in store.recent()] == ["registry:1", "gitlab:2", "gitlab:1", "gitlab:0"]
    assert [j.id for j in store.recent(2)] == ["registry:1", "gitlab:2"]
    assert [j.id for j in store.recent(0)] == ["registry:1"]  # at least one
    assert [j.id for j in store.recent(source="gitlab")] == ["gitlab:2", "gitlab:1", "gitlab:0"]
    assert store.last_seq() == store.recent(1)[0].seq


# -- replicas -----------------------------------------------------------------


def test_jobs_of_a_replica_that_stopped_beating_are_queued_again(store: JobStore) -> None:
    store.heartbeat("alive", leader=True)
    store.heartbeat("gone", leader=False)
    for job_id, worker in (("gitlab:a", "alive"), ("gitlab:b", "gone"), ("gitlab:c", "never")):
        store.add(push(job_id))
        claimed = store.claim(worker)
        assert claimed is not None and claimed.id == job_id

    assert store.silent_replicas(3600) == set()
    assert store.requeue_orphaned(3600) == ["gitlab:c"]  # its replica never beat at all
    # A negative age puts the cutoff in the future: every heartbeat is older than it.
    assert store.silent_replicas(-60) == {"alive", "gone"}
    assert sorted(store.requeue_orphaned(-60)) == ["gitlab:a", "gitlab:b"]
    requeued = store.get("gitlab:b")
    assert requeued is not None
    assert (requeued.state, requeued.claimed_by) == ("queued", None)
    assert requeued.note == "requeued: the replica running it stopped"


def test_a_restarted_replica_requeues_what_it_was_running(store: JobStore) -> None:
    store.add(push("gitlab:a"))
    store.add(push("gitlab:b"))
    assert store.claim("me") is not None
    assert store.claim("someone-else") is not None

    assert store.requeue_mine("me") == ["gitlab:a"]
    assert store.requeue_mine("me") == []
    states = {job.id: (job.state, job.claimed_by) for job in store.recent()}
    assert states == {"gitlab:a": ("queued", None), "gitlab:b": ("running", "someone-else")}


def test_env_lock_holds_off_other_replicas_while_a_run_lasts(store_url: str) -> None:
    """Shared stores lock across processes; a store only one process uses need not."""
    with opened(store_url) as first, opened(store_url) as second:
        if not first.shared:
            with first.env_lock("dev"), second.env_lock("dev"):
                return
        got_it = threading.Event()

        def other_replica() -> None:
            with second.env_lock("dev"):
                got_it.set()

        with first.env_lock("dev"):
            with first.env_lock("prod"):
                pass  # another environment is not held off
            thread = threading.Thread(target=other_replica, daemon=True)
            thread.start()
            poll(lambda: _advisory_waiters(store_url) == 1, timeout=30, what="second replica waits")
            assert not got_it.is_set()
        poll(got_it.is_set, timeout=30, what="the lock passed to the second replica")
        thread.join(timeout=30)


def _advisory_waiters(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
        return int(row[0]) if row else 0


# -- migrations ---------------------------------------------------------------


def test_reopening_migrates_nothing_and_keeps_the_jobs(store_url: str) -> None:
    with opened(store_url) as store:
        assert schema_version(store) == len(MIGRATIONS)
        store.add(push("gitlab:a"))
    with opened(store_url) as again:
        assert schema_version(again) == len(MIGRATIONS)
        assert [j.id for j in again.recent()] == ["gitlab:a"]


def test_a_queue_from_before_migrations_is_adopted_as_it_is(store_url: str) -> None:
    """serve created its tables with CREATE TABLE IF NOT EXISTS before it had migrations."""
    old = MIGRATIONS[0]
    with _raw(store_url) as execute:
        for statement in old.sqlite if store_url.startswith("sqlite") else old.postgres:
            execute(statement)
        execute(
            "INSERT INTO serve_jobs (id, source, kind, received_at, state) "
            "VALUES ('gitlab:old', 'gitlab', 'push', '2026-01-01T00:00:00.000000Z', 'queued')"
        )
        # A delivery without an Idempotency-Key was named by its event.
        execute(
            "INSERT INTO serve_jobs (id, source, kind, payload, received_at, state) VALUES "
            "('gitlab:push:1:refs/heads/main:a:b', 'gitlab', 'push', "
            """'{"after": "b", "idempotency_key": null}', '2026-01-01T00:00:01.000000Z', 'done')"""
        )
    with opened(store_url) as store:
        assert schema_version(store) == len(MIGRATIONS)
        old_job = store.get("gitlab:old")
        assert old_job is not None and old_job.state == "queued" and old_job.keyed
        store.add(push("gitlab:new"))
        assert [j.id for j in store.recent()][:1] == ["gitlab:new"]
        # A retry of the key-less one that carries a key now is still that delivery.
        event = "gitlab:push:1:refs/heads/main:a:b"
        retry = Job(id="gitlab:k9", source="gitlab", kind="push", event_key=event, keyed=True)
        assert store.add(retry) is False


def test_a_newer_configcenter_applies_only_its_new_steps(store_url: str) -> None:
    with opened(store_url) as store:
        store.add(push("gitlab:a"))
    step = Migration(
        len(MIGRATIONS) + 1,
        "jobs remember their delivery's host",
        sqlite=("ALTER TABLE serve_jobs ADD COLUMN host TEXT",),
        postgres=("ALTER TABLE serve_jobs ADD COLUMN host TEXT",),
    )
    with opened(store_url, (*MIGRATIONS, step)) as newer:
        assert schema_version(newer) == len(MIGRATIONS) + 1
        assert [j.id for j in newer.recent()] == ["gitlab:a"]
    newer_text = f"schema version {len(MIGRATIONS) + 1}, newer than this configcenter"
    with pytest.raises(JobStoreError, match=newer_text):
        SqlJobStore(store_url)


def test_a_failing_step_leaves_the_schema_as_it_was(store_url: str) -> None:
    with opened(store_url):
        pass
    version = len(MIGRATIONS) + 1
    broken = Migration(
        version,
        "a second jobs table",
        sqlite=("CREATE TABLE serve_jobs (x TEXT)",),
        postgres=("CREATE TABLE serve_jobs (x TEXT)",),
    )
    with pytest.raises(JobStoreError) as error:
        SqlJobStore(store_url, (*MIGRATIONS, broken))
    assert f"job store migration {version} (a second jobs table) failed" in str(error.value)
    assert f"the schema is still at version {len(MIGRATIONS)}" in str(error.value)
    with opened(store_url) as store:
        assert schema_version(store) == len(MIGRATIONS)


def test_migration_lists_must_count_up_from_one(store_url: str) -> None:
    gap = len(MIGRATIONS) + 2
    skipped = Migration(gap, "a gap", sqlite=(), postgres=())
    listed = ", ".join(str(n) for n in (*range(1, len(MIGRATIONS) + 1), gap))
    with pytest.raises(JobStoreError, match=re.escape(f"; got [{listed}]")):
        SqlJobStore(store_url, (*MIGRATIONS, skipped))


def test_the_queue_sits_beside_the_run_store(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'state' / 'runs.sqlite3'}"
    store = open_job_store(url)
    try:
        assert store.where == str(tmp_path / "state" / "runs-serve.sqlite3")
        assert not store.shared
    finally:
        store.close()


@contextmanager
def _raw(url: str) -> Iterator[Callable[..., object]]:
    """Plain SQL on the database the store would use, bypassing the adapter."""
    if url.startswith("sqlite://"):
        path = Path(url.removeprefix("sqlite://")).with_name("runs-serve.sqlite3")
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            yield conn.execute
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        yield pg.execute
