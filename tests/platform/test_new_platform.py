"""A new platform is one module plus one registry entry: config, schema and use cases follow."""

from __future__ import annotations

from pathlib import Path

from configcenter.core import kinds
from configcenter.core.redact import Redactor
from configcenter.usecases.platforms import open_platform
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
