"""Two serve replicas on one PostgreSQL: the real engines, job queue and locks, in-process.

Each replica has its own clone of the config repo (as pods do); they share the
job table, the run store and the per-environment advisory locks.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from configcenter.ports.jobstore import Job
from configcenter.serve import ServeOptions, build
from configcenter.serve.engine import Engine
from configcenter.serve.handlers import gitlab_job, run_job
from configcenter.usecases.webhooks import parse_gitlab_event
from configcenter.usecases.workspace import Workspace
from tests.serve.conftest import PROJECT_PATH, SERVE_SECTION
from tests.support.configrepo import ConfigRepo, git
from tests.support.gitlab_double import GitLabDouble, WebhookDelivery
from tests.support.helpers import poll
from tests.support.serve_fixtures import ShopWorld, make_shop_world


@dataclass
class Cluster:
    world: ShopWorld
    a: Engine
    b: Engine
    gitlab: GitLabDouble
    ops: ConfigRepo
    url: str

    def push(self, tag: str) -> WebhookDelivery:
        before = self.ops.git("rev-parse", "HEAD").strip()
        self.ops.write(
            "environments/dev/api.yaml",
            f"template: 1.0.0\nimage: {{ref: registry.test/shop/api:{tag}}}\nreplicas: 2\n",
        )
        self.ops.commit(f"api {tag}")
        self.ops.git("push", "-q", "origin", "HEAD:refs/heads/main")
        return self.gitlab.push_event(PROJECT_PATH, "main", before)

    def queue(self, delivery: WebhookDelivery) -> str:
        event = parse_gitlab_event(delivery.headers, delivery.body)
        job = gitlab_job(event, delivery.headers, delivery.body)
        assert self.a.submit(job)
        return job.id

    def deployed(self) -> str:
        deploy = f"--git-dir={self.world.deploy}"
        record = json.loads(git(self.world.root, deploy, "show", "main:dev/.state/api.json"))
        image = str(record.get("image", ""))
        assert "registry.test/shop/api" in image, record
        return image


def carry_out(engine: Engine, job: Job) -> None:
    state, runs, note = run_job(engine, job)
    engine.jobs.finish(job.id, state, runs, note)


@pytest.fixture
def cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> Iterator[Cluster]:
    for name, value in (
        ("CC_WEBHOOK_TOKEN", "whsec-test"),
        ("CC_REGISTRY_TOKEN", "regsec-test"),
        ("CC_API_TOKEN", "apisec-test"),
        ("XDG_STATE_HOME", str(tmp_path / "xdg-state")),
        ("XDG_CACHE_HOME", str(tmp_path / "xdg-cache")),
    ):
        monkeypatch.setenv(name, value)
    world = make_shop_world(
        tmp_path / "world",
        envs={"dev": "auto_apply: true\n"},
        serve=SERVE_SECTION,
        run_store_url=postgres_url,
    )
    gitlab = GitLabDouble(token="glpat-unused", webhook_token="whsec-test")
    gitlab.start()
    gitlab.add_project(PROJECT_PATH, world.origin)
    git(world.root, "clone", "-q", str(world.origin), str(world.root / "ops"))
    git(world.root, "clone", "-q", str(world.origin), str(world.root / "replica-b"))
    ops = ConfigRepo(world.root / "ops")
    ops.git("config", "user.name", "ops")
    ops.git("config", "user.email", "ops@configcenter.invalid")
    a, _ = build(
        Workspace(world.config.root, run_store_url=postgres_url),
        ServeOptions(workers=1, identity="replica-a"),
    )
    b, _ = build(
        Workspace(world.root / "replica-b", run_store_url=postgres_url),
        ServeOptions(workers=1, identity="replica-b"),
    )
    try:
        yield Cluster(world, a, b, gitlab, ops, postgres_url)
    finally:
        a.jobs.close()
        b.jobs.close()
        gitlab.stop()


def test_a_job_that_waited_for_the_lock_applies_the_newest_push(cluster: Cluster) -> None:
    """Hold dev's advisory lock; replica a's job for push X waits; Z is pushed meanwhile;
    once the lock is free, a must apply Z (what main holds then), never the older X."""
    x = cluster.queue(cluster.push("x"))
    job_x = cluster.a.jobs.claim("replica-a")
    assert job_x is not None and job_x.id == x
    holder = psycopg.connect(cluster.url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(hashtext(%s))", ("configcenter:env:dev",))
    worker = threading.Thread(target=carry_out, args=(cluster.a, job_x), daemon=True)
    try:
        worker.start()

        def waiting() -> bool:
            row = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            return bool(row and row[0] >= 1)

        poll(waiting, 60, "replica a's job to wait for dev's lock")
        z = cluster.queue(cluster.push("z"))
    finally:
        holder.close()  # releases the advisory lock
    worker.join(timeout=120)
    assert not worker.is_alive()

    assert cluster.deployed() == "registry.test/shop/api:z"
    done_x = cluster.a.jobs.get(x)
    assert done_x is not None and done_x.state == "done", done_x
    # Z's own job, on replica b, finds Z applied (or was covered): dev stays on Z.
    job_z = cluster.b.jobs.claim("replica-b")
    if job_z is not None:
        assert job_z.id == z
        carry_out(cluster.b, job_z)
    final = cluster.b.jobs.get(z)
    assert final is not None and final.state == "done", final
    assert cluster.deployed() == "registry.test/shop/api:z"


def test_runs_and_jobs_of_a_replica_that_stopped_beating_are_closed_and_requeued(
    cluster: Cluster,
) -> None:
    """Replica b dies mid-run (on another host, as pods do): its pid means nothing to a,
    so a (the leader) recognises it by its missing heartbeat in the shared store."""
    job_id = cluster.queue(cluster.push("y"))
    cluster.b.jobs.heartbeat("replica-b", False)
    claimed = cluster.b.jobs.claim("replica-b")
    assert claimed is not None and claimed.id == job_id
    run = cluster.b.fresh_workspace().start_run("apply", "dev", ["api"], "webhook:gitlab", "t")
    assert run.details["replica"] == "replica-b"
    # b is gone from here on: no more heartbeats. a keeps beating.
    cluster.a.jobs.heartbeat("replica-a", True)
    assert cluster.a.reap_dead_replicas(stale_after=60) == ([], [])

    def reaped() -> tuple[list[str], list[str]] | None:
        cluster.a.jobs.heartbeat("replica-a", True)
        found = cluster.a.reap_dead_replicas(stale_after=0.5)
        return found if found[1] else None

    jobs, runs = poll(reaped, 30, "replica b's run to be closed")

    assert runs == [run.id] and jobs == [job_id]
    closed = cluster.a.run_store.get(run.id)
    assert closed is not None and closed.outcome == "failed"
    assert "serve replica replica-b stopped" in str(closed.details.get("error"))
    again = cluster.a.jobs.get(job_id)
    assert again is not None and again.state == "queued" and again.claimed_by is None
    # The requeued job runs on a and applies what main holds.
    job = cluster.a.jobs.claim("replica-a")
    assert job is not None and job.id == job_id
    carry_out(cluster.a, job)
    assert cluster.deployed() == "registry.test/shop/api:y"
