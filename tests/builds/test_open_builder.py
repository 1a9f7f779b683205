"""Which builder `configcenter.yaml` asks for, built with its settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from configcenter.adapters.buildah import BuildahBuilder
from configcenter.adapters.kaniko import KanikoBuilder
from configcenter.core.redact import Redactor
from configcenter.usecases.images import open_builder
from tests.support.configrepo import BASIC_PROJECT, ConfigRepo


def config_with(tmp_path: Path, extra: str) -> ConfigRepo:
    repo = ConfigRepo.basic(tmp_path / "config")
    repo.write("configcenter.yaml", BASIC_PROJECT + extra)
    repo.commit("builder settings")
    return repo


def test_buildah_is_the_default_and_trusts_an_insecure_registry(tmp_path: Path) -> None:
    repo = config_with(tmp_path, "registry: {url: 127.0.0.1:5000, insecure: true}\n")
    builder = open_builder(repo.load(), Redactor())
    assert isinstance(builder, BuildahBuilder)
    assert builder.insecure_registries == frozenset({"127.0.0.1:5000"})
    assert (builder.storage_driver, builder.isolation) == ("vfs", "chroot")


def test_kaniko_runs_jobs_in_the_configured_namespace(tmp_path: Path) -> None:
    repo = config_with(
        tmp_path,
        "registry: {url: registry.example.com}\n"
        "builder: {kind: kaniko, namespace: builds, push_secret: regcred, context: ci}\n",
    )
    builder = open_builder(repo.load(), Redactor())
    assert isinstance(builder, KanikoBuilder)
    assert (builder.namespace, builder.push_secret, builder.kube_context) == (
        "builds",
        "regcred",
        "ci",
    )
    assert builder.insecure_registries == frozenset()
    assert builder.registry is not None  # asked for the digest when the pod does not say


def test_kaniko_without_a_namespace_says_what_to_add(tmp_path: Path) -> None:
    repo = config_with(tmp_path, "registry: {url: registry.example.com}\nbuilder: {kind: kaniko}\n")
    with pytest.raises(ValueError, match=r"needs namespace: \(where the build Jobs run\)"):
        open_builder(repo.load(), Redactor())


def built_api(tmp_path: Path, build: str) -> ConfigRepo:
    repo = config_with(tmp_path, "registry: {url: 127.0.0.1:5000, insecure: true}\n")
    repo.release(
        "api",
        "2.0.0",
        {
            "template.yaml": f"outputs: [deployment.yaml, Dockerfile]\nbuild: {build}\n",
            "Dockerfile.j2": "FROM scratch\n",
        },
    )
    repo.write(
        "environments/dev/api.yaml",
        "template: 2.0.0\nimage: {source: {repo: ../src, ref: main}}\nreplicas: 1\n",
    )
    repo.commit("api built from source")
    return repo


@pytest.mark.parametrize(
    ("build", "cache"),
    [("{dockerfile: Dockerfile}", True), ("{dockerfile: Dockerfile, cache: false}", False)],
)
def test_the_layer_cache_is_on_unless_the_template_turns_it_off(
    tmp_path: Path, build: str, cache: bool
) -> None:
    from configcenter.core.plan import make_plan
    from configcenter.core.render import Renderer
    from configcenter.core.state import EnvState
    from configcenter.usecases.images import build_spec

    config = built_api(tmp_path, build).load()
    plan = make_plan(config, "dev", EnvState("dev"), Renderer(), {}.get)
    api = next(p for p in plan.services if p.service == "api")
    spec = build_spec(config, api)
    assert spec.cache is cache
    assert spec.cache_repository == "shop/build-cache/layers"  # one per project, never a service's
