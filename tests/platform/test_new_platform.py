"""A new platform is one module plus one registry entry: config, schema, validation, apply
and reconcile follow."""

from __future__ import annotations

from pathlib import Path

import pytest

from configcenter.core import kinds
from configcenter.core.errors import ConfigError
from configcenter.core.redact import Redactor
from configcenter.usecases.apply import ApplyOptions, apply_env
from configcenter.usecases.inspect import validate
from configcenter.usecases.platforms import open_platform
from configcenter.usecases.reconcile import reconcile
from configcenter.usecases.workspace import Workspace
from tests.platform import fake_platform
from tests.support.configrepo import ConfigRepo
from tests.support.rollout_fixtures import make_rollout_world, workspace

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


def test_apply_and_reconcile_roll_out_and_heal_on_a_registered_platform(
    fake_kind: kinds.AdapterKind, tmp_path: Path, rollout_xdg: Path
) -> None:
    """The use cases need nothing but the registry entry: apply rolls the shop's worker out
    on the fake platform, reconcile sees a hand-made change and heal undoes it."""
    world = make_rollout_world(
        tmp_path / "world", kind="marathon", marathon_url="http://unused", services=("worker",)
    )
    head = world.config.read("configcenter.yaml").split("platforms:")[0]
    world.config.write(
        "configcenter.yaml", head + "platforms:\n  mesos: {kind: fake, world: shop, files: true}\n"
    )
    world.config.commit("the shop on the fake platform")
    fake_platform.WORLDS["shop"] = fake = fake_platform.World()
    try:
        applied = apply_env(workspace(world), "dev", ApplyOptions())

        assert [(r.service, r.outcome) for r in applied.results] == [("worker", "healthy")]
        app = fake.apps[("dev", "worker")]
        assert app.spec["image"] == "registry.test/shop/worker:1.0"
        assert app.spec["env"]["LOG_LEVEL"] == "info"
        assert not reconcile(workspace(world), "dev").has_drift

        app.spec["env"]["BY_HAND"] = "1"
        drifted = reconcile(workspace(world), "dev")
        assert [(d.field, d.desired, d.live) for d in drifted.drifts] == [
            ("App/worker env.BY_HAND", None, "1")
        ]

        healed = reconcile(workspace(world), "dev", heal=True)
        assert [(r.service, r.outcome) for r in healed.healed] == [("worker", "healthy")]
        assert "BY_HAND" not in fake.apps[("dev", "worker")].spec["env"]
        assert not reconcile(workspace(world), "dev").has_drift
    finally:
        fake_platform.WORLDS.pop("shop")
