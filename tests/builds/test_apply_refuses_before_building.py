"""apply refuses a release it cannot commit before building its image: nothing is built or
pushed for it (a real buildah build, pushed to a real Distribution registry of its own)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.configrepo import ConfigRepo
from tests.support.e2e_fixtures import SECRET_ENV, World, make_world
from tests.support.marathon_double import MarathonDouble
from tests.support.registry_fixtures import RegistryServer, start_registry, stop_registry

API_DEV = "environments/dev/api.yaml"


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry no other test pushes to: what it holds is what this test's applies pushed."""
    server = start_registry(tmp_path / "registry")
    yield server
    stop_registry(server)


def repositories(registry: RegistryServer) -> list[str]:
    got = requests.get(f"{registry.url}/v2/_catalog", timeout=10)
    got.raise_for_status()
    return sorted(got.json().get("repositories") or [])


def tags(registry: RegistryServer, repository: str) -> list[str]:
    got = requests.get(f"{registry.url}/v2/{repository}/tags/list", timeout=10)
    if got.status_code == 404:
        return []
    got.raise_for_status()
    return sorted(got.json().get("tags") or [])


def built_api_world(
    root: Path, registry: RegistryServer, marathon_url: str | None = None, hooks: str = ""
) -> World:
    """The shop world with dev's api built from a source repo (FROM scratch, COPY a file)
    and pushed to `registry`; api reads DB_PASSWORD from env:SHOP_DB_PASSWORD, unset.
    With `marathon_url`, dev runs on that Marathon; `hooks`: template.yaml's hooks line."""
    if shutil.which("buildah") is None:
        pytest.skip("buildah not installed (apt-get install buildah)")
    world = make_world(root, marathon_url=marathon_url)
    if marathon_url is not None:
        env = "environments/dev/_env.yaml"
        world.config.write(
            env, world.config.read(env).replace("platform: local", "platform: mesos")
        )
    source = ConfigRepo.init(root / "api-src")
    source.write("main.txt", "hello\n")
    source.commit("source")
    config = world.config
    config.write(
        "configcenter.yaml",
        config.read("configcenter.yaml")
        + f"registry: {{url: '{registry.host}', insecure: true}}\n",
    )
    config.release(
        "api",
        "2.0.0",
        {
            "template.yaml": "outputs: [app.env, Dockerfile, migrate.yaml]\n"
            "env: [LOG_LEVEL, DB_HOST, DB_PASSWORD]\ndepends_on: [db]\n"
            f"build: {{dockerfile: Dockerfile}}\n{hooks}",
            "Dockerfile.j2": "FROM scratch\nCOPY main.txt /\n",
            "migrate.yaml.j2": "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}\n",
        },
    )
    config.write(
        API_DEV, f"template: 2.0.0\nimage: {{source: {{repo: {source.root}, ref: main}}}}\n"
    )
    config.commit("dev: api built from its source")
    return world


def test_an_unresolvable_secret_is_refused_before_the_image_is_built(
    tmp_path: Path, own_registry: RegistryServer
) -> None:
    """--no-rollout: the secrets are checked all the same (the next apply rolls the release
    out), and the test world's cluster (context kind-local) is not there."""
    world = built_api_world(tmp_path / "world", own_registry)
    args = ("apply", "dev", "--service", "api", "--no-rollout")
    assert SECRET_ENV not in world.env

    refused = world.cc(*args)

    assert refused.code == 1, refused.output
    said = f"api: value DB_PASSWORD: secret 'env:{SECRET_ENV}' cannot be resolved"
    line = world.config.line_of("environments/dev/_env.yaml", "DB_PASSWORD")
    assert f"environments/dev/_env.yaml:{line}: {said}" in refused.stderr, refused.output
    assert "nothing was built, committed or changed" in refused.stderr
    assert "looking up 1 image(s)" not in refused.output  # no build was started
    assert world.head() is None  # the deploy repo is untouched
    assert tags(own_registry, "shop/api") == []
    assert repositories(own_registry) == []  # nor the build cache's layers

    world.env[SECRET_ENV] = "dev-password-not-secret-in-tests"
    world.ok(*args)

    (tag,) = tags(own_registry, "shop/api")
    assert tag.startswith("cc-")
    api = world.state()["services"]["api"]
    assert api["release"]["image"].startswith(f"{own_registry.host}/shop/api@sha256:")
    assert world.head() is not None


def test_a_dirty_config_work_tree_is_refused_before_the_image_is_built(
    tmp_path: Path, own_registry: RegistryServer
) -> None:
    world = built_api_world(tmp_path / "world", own_registry)
    world.env[SECRET_ENV] = "dev-password-not-secret-in-tests"
    args = ("apply", "dev", "--service", "api", "--no-rollout")
    world.config.write(API_DEV, world.config.read(API_DEV) + "values: {LOG_LEVEL: warn}\n")

    refused = world.cc(*args)

    assert refused.code == 1, refused.output
    assert "the config work tree has uncommitted changes in files apply reads" in refused.stderr
    assert API_DEV in refused.stderr
    assert "looking up 1 image(s)" not in refused.output  # no build was started
    assert world.head() is None
    assert repositories(own_registry) == []

    world.config.commit("dev: api logs warnings")
    world.ok(*args)

    (tag,) = tags(own_registry, "shop/api")
    assert tag.startswith("cc-")
    image = world.state()["services"]["api"]["release"]["image"]
    assert image.startswith(f"{own_registry.host}/shop/api@sha256:")


def test_stages_the_platform_cannot_run_are_refused_before_the_image_is_built(
    tmp_path: Path, own_registry: RegistryServer, marathon_server: MarathonDouble
) -> None:
    """api's template has a pre-deploy Job and dev runs on Marathon, which runs no Jobs."""
    world = built_api_world(
        tmp_path / "world",
        own_registry,
        marathon_server.url,
        hooks="hooks: {pre_deploy: [migrate.yaml]}\n",
    )
    world.env[SECRET_ENV] = "dev-password-not-secret-in-tests"

    refused = world.cc("apply", "dev", "--service", "api")

    assert refused.code == 1, refused.output
    assert "pre-deploy and verification Jobs need a platform that runs Jobs" in refused.stderr
    assert "nothing was committed" in refused.stderr
    assert "looking up 1 image(s)" not in refused.output  # no build was started
    assert world.head() is None
    assert repositories(own_registry) == []
