"""A new platform is one module plus one registry entry: config, schema and use cases follow."""

from __future__ import annotations

from pathlib import Path

import pytest

from configcenter.core import kinds
from configcenter.core.errors import ConfigError
from configcenter.core.redact import Redactor
from configcenter.usecases.inspect import validate
from configcenter.usecases.platforms import open_platform
from configcenter.usecases.workspace import Workspace
from tests.platform import fake_platform
from tests.support.configrepo import ConfigRepo

PROJECT = """\
project: shop
environments: [dev, prod]
platforms:
  local: {kind: fake, world: "w-{{ env }}"}
"""


def test_a_registered_platform_is_accepted_by_the_schema_and_opened_by_the_use_cases(
    fake_kind: kinds.AdapterKind, tmp_path: Path
) -> None:
    repo = ConfigRepo.basic(tmp_path / "shop-config")
    repo.write("configcenter.yaml", PROJECT)
    fake_platform.WORLDS["w-dev"] = fake_platform.World()
    try:
        assert [p.message for p in repo.problems()] == []
        platform = open_platform(repo.load(), "dev", "local", Redactor())
        assert isinstance(platform, fake_platform.FakePlatform)
        assert platform.world is fake_platform.WORLDS["w-dev"]
    finally:
        fake_platform.WORLDS.pop("w-dev")


def test_without_its_registry_entry_the_kind_is_a_named_problem(tmp_path: Path) -> None:
    repo = ConfigRepo.basic(tmp_path / "shop-config")
    repo.write("configcenter.yaml", PROJECT)
    messages = [p.message for p in repo.problems()]
    assert "'kind' is 'fake', which is not one of: kubernetes, marathon" in messages
    assert "unknown key 'world'" in messages


def test_validation_asks_the_registered_platform_whether_it_can_deliver_config_files(
    fake_kind: kinds.AdapterKind, tmp_path: Path
) -> None:
    repo = ConfigRepo.basic(tmp_path / "shop-config")
    repo.write("configcenter.yaml", PROJECT)
    repo.write("templates/api/deployment.yaml.j2", "replicas: {{ replicas }}\n")
    repo.commit("fake platform")
    repo.tag("api/1.0.0", force=True)

    with pytest.raises(ConfigError) as refused:
        validate(Workspace(repo.root))

    messages = [p.message for p in refused.value.problems]
    assert (
        "api renders config files (deployment.yaml) for fake platform 'local', "
        "which keeps no files" in messages
    )
    assert next(p.hint for p in refused.value.problems) == "set platforms.local.files: true"

    repo.write("configcenter.yaml", PROJECT.replace('"w-{{ env }}"', '"w-{{ env }}", files: true'))
    repo.commit("the fake keeps files")
    assert validate(Workspace(repo.root)).renders == 4
