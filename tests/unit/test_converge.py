"""core.converge: the plan adjusted to what the platform runs (pure, no platform needed)."""

from __future__ import annotations

from dataclasses import replace

from configcenter.core.converge import (
    PLATFORM_REASON,
    EditedField,
    HandEdit,
    PlatformServicePlan,
    converge,
)
from configcenter.core.plan import Plan, make_plan
from configcenter.core.render import Renderer
from configcenter.core.state import EnvState
from tests.support.configrepo import ConfigRepo, MemoryRepo, deploy_files, state_after


def deployed(repo: ConfigRepo) -> tuple[EnvState, dict[str, bytes]]:
    plan = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), {}.get)
    return state_after(plan, release_id="r1"), deploy_files(plan)


def replan(repo: ConfigRepo, state: EnvState, files: dict[str, bytes]) -> Plan:
    return make_plan(repo.load(), "dev", state, Renderer(), files.get)


def with_outcome(state: EnvState, outcome: str, *services: str) -> EnvState:
    out = EnvState(state.env, dict(state.services))
    for name in services or tuple(state.services):
        record = out.services[name]
        assert record.release is not None
        out.services[name] = replace(record, release=replace(record.release, outcome=outcome))
    return out


def actions(plan: Plan) -> dict[str, tuple[str, list[str]]]:
    return {s.service: (s.action, s.reasons) for s in plan.services}


def test_platform_running_the_recorded_releases_changes_nothing(repo: ConfigRepo) -> None:
    state, files = deployed(repo)
    state = with_outcome(state, "healthy")
    plan = replan(repo, state, files)

    result = converge(plan, state, {"local": {"db": "r1", "api": "r1"}})

    assert result.steps == {}
    assert actions(result.plan) == {"db": ("noop", []), "api": ("noop", [])}


def test_committed_but_not_live_is_rolled_out_with_reason_platform(repo: ConfigRepo) -> None:
    state, files = deployed(repo)  # committed (--no-rollout), nothing on the platform
    plan = replan(repo, state, files)

    result = converge(plan, state, {"local": {}})

    assert actions(result.plan) == {
        "db": ("update", [PLATFORM_REASON]),
        "api": ("update", [PLATFORM_REASON]),
    }
    assert [(s.service, s.kind) for s in result.catch_up()] == [
        ("db", "rollout"),
        ("api", "rollout"),
    ]
    assert "committed, not yet on the platform" in result.steps["api"].why
    api = result.plan.services[1]
    assert isinstance(api, PlatformServicePlan)
    assert api.to_json()["platform"]["step"] == "rollout"


def test_live_release_without_an_outcome_is_watched_and_recorded(repo: ConfigRepo) -> None:
    state, files = deployed(repo)
    state = with_outcome(state, "healthy", "db")  # api: applied, then the apply died
    plan = replan(repo, state, files)

    result = converge(plan, state, {"local": {"db": "r1", "api": "r1"}})

    assert {s.service: s.kind for s in result.catch_up()} == {"api": "record"}
    assert "never recorded" in result.steps["api"].why


def test_healthy_record_but_another_release_live_is_rolled_out_again(repo: ConfigRepo) -> None:
    state, files = deployed(repo)
    state = with_outcome(state, "healthy")
    plan = replan(repo, state, files)

    result = converge(plan, state, {"local": {"db": "r1", "api": "r0"}})

    step = result.steps["api"]
    assert (step.kind, step.release) == ("rollout", "r1")
    assert "local runs r0" in step.why


def test_failed_release_is_not_rolled_out_again(repo: ConfigRepo) -> None:
    state, files = deployed(repo)
    state = with_outcome(state, "failed", "api")
    state = with_outcome(state, "healthy", "db")
    plan = replan(repo, state, files)

    result = converge(plan, state, {"local": {"db": "r1"}})

    assert result.steps == {}
    assert actions(result.plan)["api"][0] == "blocked"


def test_a_service_gone_from_the_environment_but_live_is_pruned(repo: ConfigRepo) -> None:
    state, files = deployed(repo)
    state = with_outcome(state, "healthy")
    plan = replan(repo, state, files)

    result = converge(plan, state, {"local": {"db": "r1", "api": "r1", "ghost": "g7"}})

    assert actions(result.plan)["ghost"] == ("delete", [PLATFORM_REASON])
    assert [(s.service, s.kind, s.platform) for s in result.catch_up()] == [
        ("ghost", "prune", "local")
    ]
    # --service limits pruning like everything else.
    assert "ghost" not in converge(plan, state, {"local": {"ghost": "g7"}}, only=["api"]).steps


def test_unobserved_platform_concludes_nothing(repo: ConfigRepo) -> None:
    state, files = deployed(repo)
    plan = replan(repo, state, files)

    assert converge(plan, state, {}).steps == {}


def test_an_unrecorded_live_release_is_watched_before_a_new_one(repo: ConfigRepo) -> None:
    state, files = deployed(repo)
    state = with_outcome(state, "healthy", "db")
    text = repo.read("environments/dev/api.yaml")
    repo.write("environments/dev/api.yaml", text + "values: {LOG_LEVEL: warn}\n")
    plan = replan(repo, state, files)

    result = converge(plan, state, {"local": {"db": "r1", "api": "r1"}})

    assert actions(result.plan)["api"] == ("update", ["values"])
    assert [(s.service, s.kind) for s in result.catch_up()] == [("api", "watch")]


def test_a_platform_added_later_is_committed_then_rolled_out(memory_repo: MemoryRepo) -> None:
    env_file = "environments/dev/_env.yaml"
    with_platform = memory_repo.read(env_file)
    memory_repo.write(env_file, with_platform.replace("platform: local\n", ""))
    plan = make_plan(memory_repo.load(), "dev", EnvState("dev"), Renderer(), {}.get, only=["db"])
    state, files = state_after(plan, release_id="r1"), deploy_files(plan)
    assert state.services["db"].platform is None
    memory_repo.write(env_file, with_platform)
    plan = make_plan(memory_repo.load(), "dev", state, Renderer(), files.get, only=["db"])
    assert actions(plan)["db"] == ("noop", []), "the deploy repo alone sees nothing to do"

    result = converge(plan, state, {})

    assert actions(result.plan)["db"] == ("update", [PLATFORM_REASON])
    step = result.steps["db"]
    assert (step.kind, step.platform) == ("commit", "local")
    assert step.why == "platform none -> local"
    assert result.catch_up() == []


def scaled(state: EnvState, outcome: str, *, of: str = "r1") -> EnvState:
    """Each service's release as `r2`, one that only scales release `of`."""
    out = EnvState(state.env, dict(state.services))
    for name, record in out.services.items():
        assert record.release is not None
        release = replace(record.release, id="r2", outcome=outcome, scale_of=of)
        out.services[name] = replace(record, release=replace(release, scale_of_digest="d1"))
    return out


def test_a_workload_carrying_the_release_a_scale_scales_runs_that_scale(
    repo: ConfigRepo,
) -> None:
    state, files = deployed(repo)
    state = scaled(state, "healthy")
    plan = replan(repo, state, files)

    result = converge(plan, state, {"local": {"db": "r1", "api": "r2"}})

    assert result.steps == {}, "r2 only scales r1: a workload labelled r1 runs it"
    # Committed, never recorded: re-applied (which scales) and recorded.
    committed = scaled(state, "committed")
    result = converge(replan(repo, committed, files), committed, {"local": {"db": "r1"}})
    assert {s.service: s.kind for s in result.catch_up()} == {"db": "record", "api": "rollout"}
    # Any other release is not it.
    result = converge(plan, state, {"local": {"db": "r0", "api": "r2"}})
    assert {s.service: s.kind for s in result.catch_up()} == {"db": "rollout"}


def test_a_healthy_release_edited_by_hand_is_rolled_out_again(repo: ConfigRepo) -> None:
    """Its workload still carries the release id; what differs comes as `edited`."""
    state, files = deployed(repo)
    state = with_outcome(state, "healthy")
    plan = replan(repo, state, files)
    env = "Deployment/api spec.template.spec.containers[app].env[X].value"
    edit = HandEdit(
        "local runs image x:hacked (the release's: api:1)",
        (EditedField("image", "changed", "api:1", "x:hacked"), EditedField(env, "added")),
        ("Deployment/api",),
    )
    edited = {"local": {"api": edit}}

    result = converge(plan, state, {"local": {"db": "r1", "api": "r1"}}, edited=edited)

    assert actions(result.plan) == {"db": ("noop", []), "api": ("update", [PLATFORM_REASON])}
    assert [(s.service, s.kind, s.release) for s in result.catch_up()] == [("api", "rollout", "r1")]
    assert result.steps["api"].why == (
        "r1 recorded healthy, but local runs image x:hacked (the release's: api:1): "
        "roll it out again"
    )
    assert result.steps["api"].edit == edit  # what the rollout puts back first
    api = result.plan.services[1]
    assert isinstance(api, PlatformServicePlan)
    assert api.to_json()["platform"]["edited"] == [
        {"field": "image", "change": "changed", "desired": "api:1", "live": "x:hacked"},
        {"field": env, "change": "added"},  # no value: it may be a secret set by hand
    ]
    # An edit on a platform the service does not run on concludes nothing.
    other = converge(
        plan, state, {"local": {"db": "r1", "api": "r1"}}, edited={"m": edited["local"]}
    )
    assert other.steps == {}


def test_a_blocked_service_not_on_the_platform_gets_the_release_its_record_holds(
    repo: ConfigRepo,
) -> None:
    state, files = deployed(repo)
    state = with_outcome(state, "healthy")  # r1: the good release it was rolled back to
    plan = replan(repo, state, files)
    blocked = Plan(plan.env, [replace(s, action="blocked") for s in plan.services])

    gone = converge(blocked, state, {"local": {"db": "r1"}})  # api's workload is gone

    assert actions(gone.plan) == {"db": ("blocked", []), "api": ("update", [PLATFORM_REASON])}
    assert [(s.service, s.kind, s.release) for s in gone.catch_up()] == [("api", "rollout", "r1")]
    # Running it: nothing to do for the platform; the failed release stays blocked.
    assert converge(blocked, state, {"local": {"db": "r1", "api": "r1"}}).steps == {}
