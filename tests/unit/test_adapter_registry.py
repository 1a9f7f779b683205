"""The adapter registry is the one list of kinds: the schema and the openers follow it."""

from __future__ import annotations

import inspect

import pytest

from configcenter import wiring
from configcenter.core import kinds
from tests.support.configrepo import BASIC_PROJECT, ConfigRepo

FACTORY_PARAMETERS = {
    "platform": ["target", "redactor", "force"],
    "builder": ["settings", "context"],
    "forge": ["settings", "context"],
    "run_store": ["url", "redactor"],
}


@pytest.mark.parametrize(
    "entry",
    [e for e in kinds.REGISTRY.entries if e.factory and e.port in FACTORY_PARAMETERS],
    ids=lambda e: f"{e.port}-{e.kind}",
)
def test_every_registered_factory_has_its_ports_one_signature(entry: kinds.AdapterKind) -> None:
    opener = wiring.factory(entry.port, entry.kind)
    assert list(inspect.signature(opener).parameters) == FACTORY_PARAMETERS[entry.port]


def test_a_kind_listed_nowhere_is_refused_with_the_registered_ones() -> None:
    with pytest.raises(wiring.UnknownKind, match=r"use buildah, docker or kaniko"):
        wiring.factory("builder", "podman")


def test_the_schema_takes_its_kinds_and_settings_from_the_registry(repo: ConfigRepo) -> None:
    repo.write(
        "configcenter.yaml",
        BASIC_PROJECT.replace("kind: kubernetes", "kind: nomad") + "builder: {kind: podman}\n",
    )
    messages = [p.message for p in repo.problems()]
    platforms = ", ".join(kinds.REGISTRY.kinds("platform"))
    assert f"'kind' is 'nomad', which is not one of: {platforms}" in messages
    assert "'kind' is 'podman', which is not one of: buildah, docker, kaniko" in messages
    # context: and namespace: are settings a registered platform reads: not unknown keys.
    assert not [m for m in messages if m.startswith("unknown key")]


def test_messages_name_the_platforms_that_have_a_capability() -> None:
    from configcenter.core.errors import UserError
    from configcenter.core.stages import HttpCheck, ReleaseStages
    from configcenter.usecases.stages import check_platform

    assert kinds.REGISTRY.having("platform", kinds.JOBS) == ("kubernetes",)
    assert kinds.REGISTRY.having("platform", kinds.TASK_ENDPOINTS) == ("marathon",)
    with pytest.raises(UserError, match=r"runs Jobs \(kubernetes\), and its platform is marathon"):
        check_platform(ReleaseStages(verify=("smoke.yaml",)), "marathon", "api")
    http = ReleaseStages(http=HttpCheck("/healthz"))
    with pytest.raises(UserError, match=r"endpoints \(marathon\), and its platform is kubernetes"):
        check_platform(http, "kubernetes", "api")


def test_every_platform_module_with_config_files_has_its_check() -> None:
    import importlib

    for entry in kinds.REGISTRY.entries:
        if entry.port == "platform" and kinds.CONFIG_FILES in entry.capabilities:
            module = importlib.import_module(entry.module)
            assert callable(getattr(module, "check_config_files", None)), entry.kind
