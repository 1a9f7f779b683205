"""Bullet 10: every duration goes through one parser and is checked at load, at its line."""

from __future__ import annotations

import pytest

from configcenter.core.schema import parse_duration
from tests.support.configrepo import ConfigRepo, only_problem
from tests.support.e2e_fixtures import World


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("90", 90), (45, 45)],
)
def test_durations_parse(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["5 minutes", "soon", "", "-5s", "0s", "1d", "5m30", True])
def test_bad_durations_are_refused(raw: object) -> None:
    with pytest.raises(ValueError, match="30s, 5m, 1h30m or 500ms"):
        parse_duration(raw)


@pytest.mark.parametrize(
    ("setting", "expect"),
    [
        ("rollout: {timeout: 5 minutes}", "'timeout': '5 minutes' is not a duration"),
        ("rollout: {timeout: 500ms}", "'timeout' is 0.5s; it must be between 1s and 86400s"),
        ("reconcile: {interval: soon}", "'interval': 'soon' is not a duration"),
    ],
)
def test_bad_duration_settings_are_load_errors_at_their_line(
    repo: ConfigRepo, setting: str, expect: str
) -> None:
    rel = "environments/dev/_env.yaml"
    repo.write(rel, repo.read(rel) + setting + "\n")
    problem = only_problem(repo.problems())
    assert problem.source.file == rel
    assert problem.source.line == repo.line_of(rel, setting.split(":")[0])
    assert expect in problem.message


def test_apply_with_a_bad_timeout_commits_nothing(world: World) -> None:
    rel = "environments/dev/_env.yaml"
    world.config.write(rel, world.config.read(rel) + "rollout: {timeout: 5 minutes}\n")
    world.config.commit("a timeout written in words")
    result = world.cc("apply", "dev", "--no-rollout")
    assert result.code == 1
    assert "environments/dev/_env.yaml:" in result.output and "'5 minutes'" in result.output
    assert "0 problem(s)" not in result.output
    assert world.head() is None, "nothing was committed"
