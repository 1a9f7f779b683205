"""Plan digests kept between plans (`core.plan.PlanDigests`): a kept entry is used only for
exactly the inputs it was computed from, so a plan with kept digests is the plan without.

Each test plans once to fill the digests, changes one input of one service the way a
user would, and compares a plan that uses the kept digests with one that computes them.
"""

from __future__ import annotations

import pytest

from configcenter.adapters.plan_digests import PlanDigestFile
from configcenter.core.plan import Plan, make_plan
from configcenter.core.render import Renderer
from configcenter.core.state import EnvState
from tests.support.configrepo import ConfigRepo, deploy_files, state_after

API_DEV = "environments/dev/api.yaml"


def _summary(plan: Plan) -> list[tuple[str, str, list[str], str, str]]:
    return [
        (s.service, s.action, s.reasons, s.values_digest, s.inputs_digest) for s in plan.services
    ]


def _plan(repo: ConfigRepo, state: EnvState, files: dict[str, bytes], digests: object) -> Plan:
    return make_plan(
        repo.load(),
        "dev",
        state,
        Renderer(),
        files.get,
        digests=digests,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "change",
    [
        ("a value", lambda text: text + "values:\n  LOG_LEVEL: warn\n"),
        ("the replicas", lambda text: text.replace("replicas: 1", "replicas: 3")),
        ("the image", lambda text: text.replace("api:1.0", "api:1.1")),
    ],
    ids=lambda change: change[0],
)
def test_kept_digests_follow_an_edited_service_file(repo: ConfigRepo, change: tuple) -> None:
    deployed = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), {}.get)
    state, files = state_after(deployed), deploy_files(deployed)
    digests: dict[str, tuple[str, str, bool]] = {}
    before = _plan(repo, state, files, digests)
    assert [s.action for s in before.services] == ["noop", "noop"]
    assert len(digests) == 2
    kept = dict(digests)
    assert _summary(_plan(repo, state, files, digests)) == _summary(before)
    assert digests == kept  # every digest was taken from the kept ones

    repo.write(API_DEV, change[1](repo.read(API_DEV)))
    with_kept = _plan(repo, state, files, digests)
    without = _plan(repo, state, files, None)
    assert _summary(with_kept) == _summary(without)
    assert {s.service: s.action for s in with_kept.services} == {"db": "noop", "api": "update"}


def test_kept_digests_follow_a_shared_layer(repo: ConfigRepo) -> None:
    deployed = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), {}.get)
    state, files = state_after(deployed), deploy_files(deployed)
    digests: dict[str, tuple[str, str, bool]] = {}
    _plan(repo, state, files, digests)
    env_file = "environments/dev/_env.yaml"
    repo.write(env_file, repo.read(env_file).replace("LOG_LEVEL: debug", "LOG_LEVEL: error"))
    with_kept = _plan(repo, state, files, digests)
    assert _summary(with_kept) == _summary(_plan(repo, state, files, None))
    assert "update" in [s.action for s in with_kept.services]


def test_the_digest_file_keeps_entries_for_the_next_command(tmp_path: object) -> None:
    directory = tmp_path / "plans"  # type: ignore[operator]
    kept = PlanDigestFile(directory, "repo\0dev")
    kept["k"] = ("sha256:v", "sha256:i", False)
    kept.save()
    again = PlanDigestFile(directory, "repo\0dev")
    assert again.get("k") == ("sha256:v", "sha256:i", False)
    assert PlanDigestFile(directory, "repo\0prod").get("k") is None  # another environment
    next(directory.iterdir()).write_bytes(b"garbled")
    assert PlanDigestFile(directory, "repo\0dev").get("k") is None
