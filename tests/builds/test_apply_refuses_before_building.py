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


def built_api_world(root: Path, registry: RegistryServer) -> World:
    """The shop world with dev's api built from a source repo (FROM scratch, COPY a file)
    and pushed to `registry`; api reads DB_PASSWORD from env:SHOP_DB_PASSWORD, unset."""
    if shutil.which("buildah") is None:
        pytest.skip("buildah not installed (apt-get install buildah)")
    world = make_world(root)
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
            "template.yaml": "outputs: [app.env, Dockerfile]\n"
            "env: [LOG_LEVEL, DB_HOST, DB_PASSWORD]\ndepends_on: [db]\n"
            "build: {dockerfile: Dockerfile}\n",
            "Dockerfile.j2": "FROM scratch\nCOPY main.txt /\n",
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
