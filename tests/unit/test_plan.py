"""Planning against a deploy state: every action and reason, JSON shape, masking, ordering."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import pytest

from configcenter.core.errors import ConfigError, Source
from configcenter.core.order import CycleError, dependency_order, dependents_of
from configcenter.core.plan import Plan, ServicePlan, make_plan
from configcenter.core.render import Renderer
from configcenter.core.state import EnvState, Release
from tests.support.configrepo import ConfigRepo, deploy_files, legacy_state_yaml, state_after

API_DEV = "environments/dev/api.yaml"
SENTINEL = "s3nt1nel-Pa55w0rd-never-shown"


class Deployed:
    """What the deploy repo holds after applying a plan: its state and its rendered files."""

    def __init__(self, plan: Plan) -> None:
        self.state = state_after(plan)
        self.files = deploy_files(plan)

    def previous_file(self) -> Callable[[str], bytes | None]:
        return self.files.get


def plan_of(repo: ConfigRepo, state: EnvState | None = None, **kwargs: object) -> Plan:
    deployed_files: dict[str, bytes] = kwargs.pop("files", {})  # type: ignore[assignment]
    return make_plan(
        repo.load(),
        "dev",
        state or EnvState("dev"),
        Renderer(),
        deployed_files.get,
        **kwargs,  # type: ignore[arg-type]
    )


def applied(repo: ConfigRepo) -> Deployed:
    return Deployed(plan_of(repo))


def replan(repo: ConfigRepo, deployed: Deployed, **kwargs: object) -> dict[str, ServicePlan]:
    plan = plan_of(repo, deployed.state, files=deployed.files, **kwargs)
    return {s.service: s for s in plan.services}


def test_create(repo: ConfigRepo) -> None:
    plan = plan_of(repo)
    assert [(s.service, s.action) for s in plan.services] == [("db", "create"), ("api", "create")]
    api = plan.services[1]
    assert api.reasons == ["template", "values", "image"]
    assert (api.template_from, api.template_to) == (None, "1.0.0")
    assert (api.image_from, api.image_to) == (None, "registry.example.com/shop/api:1.0")
    assert api.added["LOG_LEVEL"].after == "debug"
    assert api.added["LOG_LEVEL"].source == "environments/dev/_env.yaml:4"
    assert api.added["DB_PASSWORD"].after == "***"
    assert sorted(api.diffs) == ["app.env", "deployment.yaml"]
    assert api.diffs["app.env"].startswith(
        "--- /dev/null\n+++ b/dev/api/app.env\n@@ -0,0 +1,4 @@\n"
    )
    assert plan.changes == plan.services


def test_noop_renders_nothing(repo: ConfigRepo) -> None:
    deployed = applied(repo)
    renderer = Renderer()
    plan = make_plan(repo.load(), "dev", deployed.state, renderer, deployed.previous_file())
    assert [(s.service, s.action, s.reasons) for s in plan.services] == [
        ("db", "noop", []),
        ("api", "noop", []),
    ]
    for service in plan.services:
        assert service.files is None  # decided from digests alone
        assert service.diffs == {}
        assert service.rendered_digest == deployed.state.services[service.service].rendered_digest
    assert plan.changes == []


def test_noop_survives_a_round_trip_through_state_yaml(repo: ConfigRepo) -> None:
    deployed = applied(repo)
    deployed.state = EnvState.from_yaml("dev", legacy_state_yaml(deployed.state))
    assert {s.action for s in replan(repo, deployed).values()} == {"noop"}


def test_values_change(repo: ConfigRepo) -> None:
    deployed = applied(repo)
    repo.write(
        API_DEV,
        "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\nreplicas: 1\n"
        "values:\n  LOG_LEVEL: trace\n",
    )
    plans = replan(repo, deployed)
    assert plans["db"].action == "noop"
    api = plans["api"]
    assert (api.action, api.reasons) == ("update", ["values"])
    (key,) = api.changed
    change = api.changed[key]
    assert (key, change.before, change.after) == ("LOG_LEVEL", "debug", "trace")
    assert change.source == f"{API_DEV}:5"
    assert (api.added, api.removed) == ({}, {})
    assert list(api.diffs) == ["app.env"]  # deployment.yaml renders the same
    assert "-LOG_LEVEL=debug\n+LOG_LEVEL=trace\n" in api.diffs["app.env"]
    assert api.diffs["app.env"].startswith("--- a/dev/api/app.env\n+++ b/dev/api/app.env\n")


def test_a_shared_value_no_template_reads_is_no_change(repo: ConfigRepo) -> None:
    defaults = "values:\n  LOG_LEVEL: info\n  DB_HOST: db\n  DB_NAME: shop\n"
    repo.write("environments/_defaults.yaml", defaults + "  LEGACY: old\n")
    deployed = applied(repo)
    assert "LEGACY" not in deployed.state.services["api"].values  # the record: consumed only
    repo.write("environments/_defaults.yaml", defaults + "  EXTRA: 1\n")
    plan = replan(repo, deployed)
    assert [(s.action, s.reasons, s.added, s.removed) for s in plan.values()] == [
        ("noop", [], {}, {}),
        ("noop", [], {}, {}),
    ]


def test_values_a_template_reads_are_added_and_removed(repo: ConfigRepo) -> None:
    defaults = "values:\n  LOG_LEVEL: info\n  DB_HOST: db\n  DB_NAME: shop\n"
    repo.write("environments/_defaults.yaml", defaults + "  LEGACY: old\n")
    repo.release(
        "api",
        "1.1.0",
        {
            "app.env.j2": "LOG_LEVEL={{ LOG_LEVEL }}\n"
            "{{ EXTRA | default('') }}{{ LEGACY | default('') }}\n"
        },
    )
    repo.write(API_DEV, "template: 1.1.0\nimage: {ref: registry.example.com/shop/api:1.0}\n")
    deployed = applied(repo)
    repo.write("environments/_defaults.yaml", defaults + "  EXTRA: 1\n")
    api = replan(repo, deployed)["api"]
    assert api.reasons == ["values"]
    assert api.added["EXTRA"].after == 1
    assert api.added["EXTRA"].source == "environments/_defaults.yaml:5"
    assert api.removed["LEGACY"].before == "old"
    assert list(api.diffs) == ["app.env"]


def test_a_template_that_reads_values_whole_consumes_everything(repo: ConfigRepo) -> None:
    repo.release("api", "1.1.0", {"app.env.j2": "{{ values | tojson_compact | length }}\n"})
    repo.write(API_DEV, "template: 1.1.0\nimage: {ref: registry.example.com/shop/api:1.0}\n")
    deployed = applied(repo)
    repo.write("environments/dev/_env.yaml", repo.read("environments/dev/_env.yaml") + "  NEW: x\n")
    plan = replan(repo, deployed)
    assert (plan["api"].action, list(plan["api"].added)) == ("update", ["NEW"])
    assert plan["db"].action == "noop"


def test_replicas_change_is_a_scale_not_a_values_change(repo: ConfigRepo) -> None:
    deployed = applied(repo)
    repo.write(
        API_DEV, "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\nreplicas: 4\n"
    )
    api = replan(repo, deployed)["api"]
    assert (api.action, api.reasons, api.replicas) == ("update", ["replicas"], (1, 4))
    assert (api.changed, api.added, api.removed) == ({}, {}, {})
    assert api.to_json()["replicas"] == {"from": 1, "to": 4}
    assert "-  replicas: 1\n+  replicas: 4\n" in api.diffs["deployment.yaml"]


def test_template_change(repo: ConfigRepo) -> None:
    deployed = applied(repo)
    repo.release("api", "1.1.0", {"app.env.j2": "LOG_LEVEL={{ LOG_LEVEL }}\n"})
    repo.write(API_DEV, "template: 1.1.0\nimage: {ref: registry.example.com/shop/api:1.0}\n")
    api = replan(repo, deployed)["api"]
    assert (api.action, api.reasons) == ("update", ["template"])
    assert (api.template_from, api.template_to) == ("1.0.0", "1.1.0")
    assert list(api.diffs) == ["app.env"]


def test_image_change(repo: ConfigRepo) -> None:
    deployed = applied(repo)
    repo.write(API_DEV, "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.1}\n")
    api = replan(repo, deployed)["api"]
    assert (api.action, api.reasons) == ("update", ["image"])
    assert api.image_from == "registry.example.com/shop/api:1.0"
    assert api.image_to == "registry.example.com/shop/api:1.1"
    assert "+  image: registry.example.com/shop/api:1.1\n" in api.diffs["deployment.yaml"]


def test_several_reasons_at_once(repo: ConfigRepo) -> None:
    deployed = applied(repo)
    repo.release("api", "1.1.0", {"app.env.j2": "LOG_LEVEL={{ LOG_LEVEL }}\n"})
    repo.write(
        API_DEV,
        "template: 1.1.0\nimage: {ref: registry.example.com/shop/api:2}\nvalues: {LOG_LEVEL: x}\n",
    )
    assert replan(repo, deployed)["api"].reasons == ["template", "values", "image"]


def test_delete(repo: ConfigRepo) -> None:
    deployed = applied(repo)
    repo.remove(API_DEV)
    plans = replan(repo, deployed)
    api = plans["api"]
    assert (api.action, api.template_from, api.template_to) == ("delete", "1.0.0", None)
    assert sorted(api.diffs) == ["app.env", "deployment.yaml"]
    assert api.diffs["app.env"].startswith("--- a/dev/api/app.env\n+++ /dev/null\n")
    assert api.removed["DB_PASSWORD"].before == "***"
    assert plans["db"].action == "noop"


def test_blocked_after_a_failed_release_and_retry_unblocks(repo: ConfigRepo) -> None:
    deployed = applied(repo)
    repo.write(API_DEV, "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:2.0}\n")
    wanted = replan(repo, deployed)["api"]
    assert wanted.action == "update"
    failed = Release(
        id="r7",
        outcome="rolled_back",
        at="2024-05-01T10:00:00Z",
        inputs_digest=wanted.inputs_digest,
        reason="readiness probe failed",
    )
    deployed.state.services["api"] = replace(deployed.state.services["api"], last_failed=failed)
    api = replan(repo, deployed)["api"]
    assert api.action == "blocked"
    assert api.blocked == (
        "release r7 (released 2024-05-01T10:00:00Z) with these inputs was rolled back: "
        "readiness probe failed; "
        "change its inputs or run apply --retry api"
    )
    assert api.to_json()["blocked"] == api.blocked
    assert replan(repo, deployed, retry=["api"])["api"].action == "update"
    # Any change to its inputs unblocks it too.
    repo.write(API_DEV, "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:2.1}\n")
    assert replan(repo, deployed)["api"].action == "update"


def test_failed_release_does_not_block_a_noop(repo: ConfigRepo) -> None:
    deployed = applied(repo)
    api_state = deployed.state.services["api"]
    failed = Release(id="r2", outcome="failed", at="t", inputs_digest=api_state.inputs_digest)
    deployed.state.services["api"] = replace(api_state, last_failed=failed)
    assert replan(repo, deployed)["api"].action == "noop"


def test_moved_tag_is_an_error(repo: ConfigRepo) -> None:
    deployed = applied(repo)
    recorded = deployed.state.services["api"].template_commit
    assert recorded is not None
    repo.write("templates/api/app.env.j2", "MOVED=1\n")
    moved = repo.commit("rewrite 1.0.0")
    repo.tag("api/1.0.0", force=True)
    with pytest.raises(ConfigError) as caught:
        plan_of(repo, deployed.state, files=deployed.files)
    (problem,) = caught.value.problems
    assert problem.source == Source(API_DEV, 1)
    assert problem.message == (
        f"template tag api/1.0.0 moved: the deploy repo recorded commit {recorded[:12]}, "
        f"the tag now points at {moved[:12]}"
    )
    assert problem.hint == "released tags must not move; release a new version instead"


def test_json_shape_is_the_documented_one(repo: ConfigRepo) -> None:
    deployed = applied(repo)
    repo.write(
        API_DEV,
        "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\nreplicas: 1\n"
        "values:\n  LOG_LEVEL: trace\n",
    )
    data = json.loads(json.dumps(plan_of(repo, deployed.state, files=deployed.files).to_json()))
    assert set(data) == {"env", "services"}
    assert data["env"] == "dev"
    db, api = data["services"]
    assert set(api) == {"service", "action", "reasons", "template", "image", "values", "files"}
    assert api["service"] == "api"
    assert api["action"] == "update"
    assert api["reasons"] == ["values"]
    assert api["template"] == {"from": "1.0.0", "to": "1.0.0"}
    assert api["image"] == {
        "from": "registry.example.com/shop/api:1.0",
        "to": "registry.example.com/shop/api:1.0",
    }
    assert api["values"] == {
        "changed": {"LOG_LEVEL": {"from": "debug", "to": "trace", "source": f"{API_DEV}:5"}},
        "added": {},
        "removed": {},
    }
    assert list(api["files"]) == ["app.env"]
    assert api["files"]["app.env"].startswith("--- a/dev/api/app.env\n+++ b/dev/api/app.env\n")
    assert db["action"] == "noop"
    assert db["values"] == {"changed": {}, "added": {}, "removed": {}}
    assert db["files"] == {}


def test_secrets_are_masked_and_never_resolved(
    repo: ConfigRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_DB_PASSWORD", SENTINEL)
    monkeypatch.setenv("SHOP_DB_PASSWORD_V2", SENTINEL + "-v2")
    deployed = applied(repo)
    repo.write(
        API_DEV,
        "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\n"
        "values:\n  DB_PASSWORD: {secret: 'env:SHOP_DB_PASSWORD_V2'}\n",
    )
    plan = plan_of(repo, deployed.state, files=deployed.files)
    text = json.dumps(plan.to_json())
    api = plan.services[1]
    assert api.changed["DB_PASSWORD"].before == "***"
    assert api.changed["DB_PASSWORD"].after == "***"
    assert "+DB_PASSWORD=${secret:env:SHOP_DB_PASSWORD_V2}" in api.diffs["app.env"]
    stored = b"".join(deployed.files.values()) + legacy_state_yaml(deployed.state)
    assert SENTINEL not in text
    assert SENTINEL.encode() not in stored
    assert SENTINEL.encode() not in b"".join((api.files or {}).values())


def test_services_in_dependency_order(repo: ConfigRepo) -> None:
    repo.write("templates/alpha/template.yaml", "outputs: [app.env]\ndepends_on: [api]\n")
    repo.write("templates/alpha/app.env.j2", "A=1\n")
    repo.write("templates/zeta/template.yaml", "outputs: [app.env]\n")
    repo.write("templates/zeta/app.env.j2", "Z=1\n")
    repo.write("environments/dev/alpha.yaml", "template: HEAD\n")
    repo.write("environments/dev/zeta.yaml", "template: HEAD\n")
    names = [s.service for s in plan_of(repo).services]
    assert names == ["db", "api", "alpha", "zeta"]


def test_only_some_services(repo: ConfigRepo) -> None:
    assert [s.service for s in plan_of(repo, only=["api"]).services] == ["api"]
    with pytest.raises(ConfigError) as caught:
        plan_of(repo, only=["nope"])
    assert caught.value.problems[0].message == "service 'nope' is not deployed in dev"


def test_dependency_order_function() -> None:
    deps = {"web": ["api"], "api": ["db", "cache"], "db": [], "cache": [], "batch": ["db", "x"]}
    assert dependency_order(deps) == ["cache", "db", "api", "batch", "web"]
    assert dependents_of(deps, "db") == {"api", "web", "batch"}
    with pytest.raises(CycleError) as caught:
        dependency_order({"a": ["b"], "b": ["c"], "c": ["a"]})
    assert caught.value.cycle == ["a", "b", "c", "a"]
    assert str(caught.value) == "dependency cycle: a -> b -> c -> a"


def test_a_release_left_failed_is_blocked_not_noop(repo: ConfigRepo) -> None:
    """A first deploy that failed (nothing to roll back to) leaves the deploy repo holding
    exactly the failed inputs; planning them again is `blocked`, and --retry redeploys."""
    deployed = applied(repo)
    api_state = deployed.state.services["api"]
    failed = Release(
        id="r3",
        outcome="failed",
        at="2024-05-01T10:00:00Z",
        inputs_digest=api_state.inputs_digest,
        reason="ProgressDeadlineExceeded",
    )
    deployed.state.services["api"] = replace(api_state, release=failed, last_failed=failed)
    api = replan(repo, deployed)["api"]
    assert api.action == "blocked"
    assert api.blocked == (
        "release r3 (released 2024-05-01T10:00:00Z) with these inputs failed: "
        "ProgressDeadlineExceeded; change its inputs or run apply --retry api"
    )
    retried = replan(repo, deployed, retry=["api"])["api"]
    assert retried.action == "update"
    assert retried.files is not None


def test_each_platform_settings_enter_the_digest_of_the_services_on_it(repo: ConfigRepo) -> None:
    """A plan renders each platform's settings once per environment: a service's digest
    holds its own platform's, as a plan of that service alone has it."""
    repo.write(
        "configcenter.yaml",
        repo.read("configcenter.yaml")
        + '  other: {kind: kubernetes, context: kind-other, namespace: "b-{{ env }}"}\n',
    )
    db_file = "environments/dev/db.yaml"
    repo.write(db_file, repo.read(db_file) + "platform: other\n")
    repo.commit("db on another platform")
    whole = {s.service: s for s in plan_of(repo).services}
    assert repo.load().environment("dev").services["db"].platform == "other"
    for name in ("db", "api"):
        assert plan_of(repo, only=[name]).services[0].inputs_digest == whole[name].inputs_digest

    repo.write(db_file, repo.read(db_file).replace("platform: other\n", ""))
    repo.commit("db back on local")
    moved = {s.service: s for s in plan_of(repo).services}
    assert moved["db"].inputs_digest != whole["db"].inputs_digest
    assert moved["api"].inputs_digest == whole["api"].inputs_digest


def test_the_digests_are_those_of_the_values_and_inputs_as_digest_encodes_them(
    repo: ConfigRepo,
) -> None:
    """The plan encodes consumed values once for both digests: the same as `digest` of the
    values, and of every input with the values under their key, secrets by reference."""
    from configcenter.core.render import platform_settings
    from configcenter.core.values import digest

    repo.write(
        "environments/dev/api.yaml",
        "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\nreplicas: 2\n"
        'values: {LOG_LEVEL: "dé\\u00e9bug", DB_HOST: {nested: [1, 2.5, true, null]}}\n',
    )
    repo.commit("values of every kind")
    config = repo.load()
    plan = plan_of(repo)
    assert any(s.consumption is not None and s.consumed_values for s in plan.services)
    for item in plan.services:
        service = config.environment("dev").services[item.service]
        assert item.image is not None
        consumed = item.consumed_values
        assert item.values_digest == digest(consumed)
        expected = digest(
            {
                "v": 2,
                "project": config.project.name,
                "env": "dev",
                "service": service.name,
                "template": service.template.tree_id,
                "tag": service.template.tag,
                "values": consumed,
                "replicas": service.replicas,
                "image": item.image.ref,
                "platform": platform_settings(config, service),
                "secrets": item.secrets_generation,
            }
        )
        assert item.inputs_digest == expected
    api = {s.service: s for s in plan.services}["api"]
    assert "DB_PASSWORD" in api.consumed_values, "a secret is among the values digested"
