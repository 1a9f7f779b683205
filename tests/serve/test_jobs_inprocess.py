"""serve's job handling in-process: the real engine, job store and use cases, no threads.

Jobs are queued and carried out one by one in a chosen order, so orderings that
a running server produces only by chance (a push queued behind an ignored one)
are reproduced exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from configcenter.serve import ServeOptions, build
from configcenter.serve.engine import Engine
from configcenter.serve.handlers import gitlab_job, run_job
from configcenter.usecases.webhooks import parse_gitlab_event
from configcenter.usecases.workspace import Workspace
from tests.serve.conftest import PROJECT_PATH, SERVE_SECTION
from tests.support.configrepo import ConfigRepo, git
from tests.support.gitlab_double import GitLabDouble, WebhookDelivery
from tests.support.serve_fixtures import ShopWorld, make_shop_world


@dataclass
class Bed:
    world: ShopWorld
    engine: Engine
    gitlab: GitLabDouble
    ops: ConfigRepo

    def push(self, rel: str, text: str, branch: str = "main") -> WebhookDelivery:
        """Commit on `branch` in the operator's clone, push it; the Push Hook GitLab sends."""
        exists = f"origin/{branch}" in self.ops.git("branch", "-r").split()
        self.ops.git(
            "checkout", "-q", "-B", branch, f"origin/{branch}" if exists else "origin/main"
        )
        before = self.ops.git("rev-parse", "HEAD").strip() if exists else "0" * 40
        self.ops.write(rel, text)
        self.ops.commit(f"{branch}: {rel}")
        self.ops.git("push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        self.ops.git("fetch", "-q", "origin")
        return self.gitlab.push_event(PROJECT_PATH, branch, before)

    def queue(self, delivery: WebhookDelivery) -> bool:
        event = parse_gitlab_event(delivery.headers, delivery.body)
        return self.engine.submit(gitlab_job(event, delivery.headers, delivery.body))

    def run_next(self) -> tuple[str, str]:
        """Claim the oldest queued job and carry it out as a worker would: (job id, state)."""
        job = self.engine.jobs.claim(self.engine.identity)
        assert job is not None, "no queued job"
        state, runs, note = run_job(self.engine, job)
        self.engine.jobs.finish(job.id, state, runs, note)
        return job.id, state

    def deployed_api_image(self) -> str:
        state = git(
            self.world.root, f"--git-dir={self.world.deploy}", "show", "main:dev/.state/api.json"
        )
        image = json.loads(state).get("image", "")
        assert "registry.test/shop/api" in image, f"no api image in dev's state record:\n{state}"
        return str(image)


@pytest.fixture
def bed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bed]:
    for name, value in (
        ("CC_WEBHOOK_TOKEN", "whsec-test"),
        ("CC_REGISTRY_TOKEN", "regsec-test"),
        ("CC_API_TOKEN", "apisec-test"),
        ("XDG_STATE_HOME", str(tmp_path / "xdg-state")),
        ("XDG_CACHE_HOME", str(tmp_path / "xdg-cache")),
    ):
        monkeypatch.setenv(name, value)
    world = make_shop_world(
        tmp_path / "world", envs={"dev": "auto_apply: true\n"}, serve=SERVE_SECTION
    )
    gitlab = GitLabDouble(token="glpat-unused", webhook_token="whsec-test", idempotency_keys=False)
    gitlab.start()
    gitlab.add_project(PROJECT_PATH, world.origin)
    git(world.root, "clone", "-q", str(world.origin), str(world.root / "ops"))
    ops = ConfigRepo(world.root / "ops")
    ops.git("config", "user.name", "ops")
    ops.git("config", "user.email", "ops@configcenter.invalid")
    ws = Workspace(world.config.root, run_store_url=world.run_store_url)
    engine, _ = build(ws, ServeOptions(workers=1, identity="replica-a"))
    try:
        yield Bed(world, engine, gitlab, ops)
    finally:
        engine.jobs.close()
        gitlab.stop()


def api_yaml(tag: str) -> str:
    return f"template: 1.0.0\nimage: {{ref: registry.test/shop/api:{tag}}}\nreplicas: 2\n"


def test_a_push_it_ignores_never_covers_a_queued_push_to_main(bed: Bed) -> None:
    """push main A, push feature/x, push main B (one worker): B is applied, not 'covered'."""
    first = bed.push("environments/dev/api.yaml", api_yaml("a"))
    assert bed.queue(first)
    assert bed.run_next()[1] == "done"
    assert bed.deployed_api_image() == "registry.test/shop/api:a"

    feature = bed.push("notes.md", "work in progress\n", branch="feature/x")
    second = bed.push("environments/dev/api.yaml", api_yaml("b"))
    assert bed.queue(feature) and bed.queue(second)

    feature_id, feature_state = bed.run_next()
    ignored = bed.engine.jobs.get(feature_id)
    assert ignored is not None and feature_state == "ignored"
    assert "feature/x" in ignored.note
    main_id, main_state = bed.run_next()

    assert main_state == "done"
    job = bed.engine.jobs.get(main_id)
    assert job is not None and "covered" not in job.note and job.runs
    assert bed.deployed_api_image() == "registry.test/shop/api:b"


def test_a_resend_without_idempotency_key_is_a_duplicate(bed: Bed) -> None:
    """GitLab before 17.4 sends no Idempotency-Key; X-Gitlab-Event-UUID is new per request."""
    delivery = bed.push("environments/dev/api.yaml", api_yaml("c"))
    assert "Idempotency-Key" not in delivery.headers
    resent = delivery.resend()
    assert resent.headers["X-Gitlab-Event-UUID"] != delivery.headers["X-Gitlab-Event-UUID"]

    assert bed.queue(delivery)
    assert not bed.queue(resent), "a resend of the same push must not queue a second job"
    after = delivery.payload["after"]
    before = delivery.payload["before"]
    [job] = bed.engine.jobs.recent()
    assert job.id == f"gitlab:push:1:refs/heads/main:{before}:{after}"
    # A later push that moves main back to an older commit is a new event.
    bed.ops.git("push", "-q", "--force", "origin", f"{before}:refs/heads/main")
    back = bed.gitlab.push_event(PROJECT_PATH, "main", after, before)
    assert bed.queue(back)


def test_a_push_that_changes_no_service_says_no_changes_in_its_note(bed: Bed) -> None:
    """The job list is where ops look first: an apply that changed nothing must not read
    'dev: succeeded' there while its run says 'no changes'."""
    changed = bed.push("environments/dev/api.yaml", api_yaml("d"))
    assert bed.queue(changed)
    job_id, state = bed.run_next()
    job = bed.engine.jobs.get(job_id)
    assert state == "done" and job is not None and job.note.endswith("dev: succeeded"), job

    quiet = bed.push("notes.md", "nothing any service reads\n")
    assert bed.queue(quiet)
    job_id, state = bed.run_next()
    job = bed.engine.jobs.get(job_id)
    assert state == "done" and job is not None and job.note.endswith("dev: no changes"), job
    [run] = job.runs
    stored = bed.engine.run_store.get(run)
    assert stored is not None and stored.details.get("commit") is None
