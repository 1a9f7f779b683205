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
