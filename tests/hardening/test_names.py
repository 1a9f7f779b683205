"""Bullet 2: environment and service names follow one documented pattern, checked at load."""

from __future__ import annotations

import pytest

from configcenter.core.schema import NAME_PATTERN, name_problem
from tests.support.configrepo import ConfigRepo, only_problem
from tests.support.e2e_fixtures import World


@pytest.mark.parametrize(
    "name", ["../../outside", ".git", "dev ", "-x", "--help", "x;rm -rf", "Dev", "a" * 41, ""]
)
def test_bad_environment_names_are_refused_with_a_hint(repo: ConfigRepo, name: str) -> None:
    repo.write("configcenter.yaml", f'project: shop\nenvironments: [dev, "{name}"]\n')
    problem = only_problem([p for p in repo.problems() if p.source.file == "configcenter.yaml"])
    assert problem.source.line == 2
    assert "cannot be a name" in problem.message
    assert "lowercase letters, digits and '-'" in problem.message
    assert problem.hint.startswith("for example '")
    suggestion = problem.hint.split("'")[1]
    assert name_problem(suggestion) is None, suggestion


def test_traversing_environment_reads_nothing_outside(world: World) -> None:
    outside = world.root / "outside"
    outside.mkdir()
    (outside / "_env.yaml").write_text("values: [SENTINEL-outside-the-repo\n")
    world.config.write(
        "configcenter.yaml",
        world.config.read("configcenter.yaml").replace(
            "environments: [dev, prod]", 'environments: [dev, prod, "../../outside"]'
        ),
    )
    result = world.cc("validate")
    assert result.code == 1
    assert "cannot be a name" in result.output
    assert "SENTINEL-outside-the-repo" not in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("stem", ["state.yaml", "Api", "-api", "api_v2", "head"])
def test_bad_service_file_names_are_refused(repo: ConfigRepo, stem: str) -> None:
    repo.write(f"environments/dev/{stem}.yaml", "template: 1.0.0\n")
    problem = only_problem(repo.problems())
    assert problem.source.file == f"environments/dev/{stem}.yaml"
    assert "cannot be a service name" in problem.message
    assert problem.hint.startswith("rename the file")


def test_bad_depends_on_name_is_refused(repo: ConfigRepo) -> None:
    repo.release(
        "api",
        "1.1.0",
        {"template.yaml": "outputs: [app.env]\nenv: [LOG_LEVEL]\ndepends_on: [../db]\n"},
    )
    repo.write("environments/dev/api.yaml", "template: 1.1.0\n")
    messages = [p.message for p in repo.problems() if p.severity == "error"]
    assert any("'../db' cannot be a name" in m for m in messages), messages


def test_pattern_is_dns_label_like() -> None:
    for good in ("dev", "prod-eu-1", "a", "x9", "a" * 40):
        assert NAME_PATTERN.match(good) and name_problem(good) is None
    assert name_problem("state") is not None, "reserved"
