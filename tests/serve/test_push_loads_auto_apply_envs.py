"""serve's push job loads whole only the environments it applies (`auto_apply: true`):
which they are comes from their `_env.yaml`, so a broken file in another environment
does not stop a push from applying dev."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from configcenter.serve import ServeOptions, build
from configcenter.usecases.workspace import Workspace
from tests.serve.conftest import PROJECT_PATH, SERVE_SECTION
from tests.serve.test_jobs_inprocess import Bed, api_yaml
from tests.support.configrepo import ConfigRepo, git
from tests.support.gitlab_double import GitLabDouble
from tests.support.serve_fixtures import make_shop_world


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
        tmp_path / "world", envs={"dev": "auto_apply: true\n", "prod": ""}, serve=SERVE_SECTION
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


def test_a_push_applies_dev_while_prod_has_a_broken_file(bed: Bed) -> None:
    bed.ops.write("environments/prod/api.yaml", "template: [unclosed\n")
    bed.ops.commit("prod: broken by hand")
    bed.ops.git("push", "-q", "origin", "HEAD:main")
    bed.ops.git("fetch", "-q", "origin")
    assert bed.queue(bed.push("environments/dev/api.yaml", api_yaml("2.0")))
    _, state = bed.run_next()
    assert state == "done"
    assert bed.deployed_api_image().endswith(":2.0")


def test_a_broken_auto_apply_env_still_fails_the_push(bed: Bed) -> None:
    assert bed.queue(bed.push("environments/dev/api.yaml", "template: [unclosed\n"))
    job = bed.engine.jobs.claim(bed.engine.identity)
    assert job is not None
    with pytest.raises(Exception, match=r"environments/dev/api\.yaml"):
        from configcenter.serve.handlers import run_job

        run_job(bed.engine, job)
