"""apply end to end on Marathon: the REST double, driven through apply_env and the CLI.

The double follows Marathon's published REST contract (apps, versions,
deployments, 409 locks, 422 validation); images containing `never-ready` run
but never pass their health checks, so their deployment never completes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests

from configcenter.usecases.apply import ApplyOptions, apply_env
from tests.support.e2e_fixtures import SECRET_ENV, CliResult, World
from tests.support.helpers import free_port
from tests.support.marathon_double import MarathonDouble
from tests.support.rollout_fixtures import SENTINEL, make_rollout_world, set_service, workspace

APP = "/shop/dev/worker"
#: What a scale moves on an app: its count, version, tasks and their bookkeeping.
VOLATILE = {
    "instances",
    "version",
    "versionInfo",
    "tasks",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
}


def mesos_world(tmp_path: Path, server: MarathonDouble, **kwargs: Any) -> World:
    kwargs.setdefault("services", ("worker",))
    kwargs.setdefault("timeout", "6s")
    return make_rollout_world(
        tmp_path / "world", kind="marathon", marathon_url=server.url, **kwargs
    )


def record(world: World, service: str = "worker") -> dict[str, Any]:
    found = world.state("dev")["services"][service]
    assert isinstance(found, dict)
    return found


def healthy_tasks(app: dict[str, Any]) -> list[dict[str, Any]]:
    """Running tasks of the app's current config version whose health checks pass."""
    version = app["versionInfo"]["lastConfigChangeAt"]
    return [
        t
        for t in app.get("tasks") or []
        if t["state"] == "TASK_RUNNING"
        and t["version"] >= version
        and all(r["alive"] for r in t.get("healthCheckResults") or [{"alive": False}])
    ]


def test_new_app_rolls_out_healthy_and_a_value_change_deploys_a_new_version(
    tmp_path: Path, marathon_server: MarathonDouble, rollout_xdg: Path
) -> None:
    world = mesos_world(tmp_path, marathon_server, replicas={"worker": 2})

    first = apply_env(workspace(world), "dev", ApplyOptions())

    assert [(r.service, r.outcome) for r in first.results] == [("worker", "healthy")]
    good = record(world)["release"]
    assert good["outcome"] == "healthy" and record(world)["last_good"]["id"] == good["id"]
    app = marathon_server.app_json(APP)
    assert app["labels"]["configcenter.io/release"] == good["id"]
    assert app["env"]["LOG_LEVEL"] == "info" and app["instances"] == 2
    assert len(healthy_tasks(app)) == 2
    version = app["version"]

    set_service(world, "worker", LOG_LEVEL="debug")
    changed = apply_env(workspace(world), "dev", ApplyOptions())

    assert [(r.service, r.outcome) for r in changed.results] == [("worker", "healthy")]
    app = marathon_server.app_json(APP)
    assert app["version"] != version and app["env"]["LOG_LEVEL"] == "debug"
    assert app["labels"]["configcenter.io/release"] == record(world)["release"]["id"]
    assert len(healthy_tasks(app)) == 2

    again = apply_env(workspace(world), "dev", ApplyOptions())
    assert again.commit is None and marathon_server.app_json(APP)["version"] == app["version"]


def test_failing_image_rolls_back_to_the_old_version_healthy_exit_3(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    world = mesos_world(tmp_path, marathon_server)
    world.ok("apply", "dev")
    good = record(world)["release"]["id"]
    good_app = marathon_server.app_json(APP)

    set_service(world, "worker", image="registry.test/shop/worker:1.1-never-ready")
    failed = world.cc("apply", "dev")

    assert failed.code == 3, failed.output
    assert (
        "ProgressDeadlineExceeded" in failed.output and f"rolling back to {good}" in failed.output
    )
    app = marathon_server.app_json(APP)
    assert app["container"]["docker"]["image"] == "registry.test/shop/worker:1.0"
    assert app["labels"]["configcenter.io/release"] == good
    assert app["env"] == good_app["env"]
    assert len(healthy_tasks(app)) == 1 and not app["deployments"]
    state = record(world)
    assert state["release"]["id"] == good and state["release"]["outcome"] == "healthy"
    assert state["last_failed"]["outcome"] == "rolled_back"
    assert state["last_failed"]["image"] == "registry.test/shop/worker:1.1-never-ready"
    assert world.cc("plan", "dev").stdout.count("blocked") >= 1


def test_app_locked_by_another_deployment_is_refused_before_anything_is_committed(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    """Marathon answers 409 to a PUT of an app a deployment in progress holds: apply asks
    /v2/deployments first and refuses (exit 1) naming the app, the deployment and the fix,
    with nothing committed or cancelled (nor, for a release committed with --no-rollout,
    rolled out and failed); `apply --force` cancels it and rolls out."""
    world = mesos_world(tmp_path, marathon_server)
    world.ok("apply", "dev")
    good = record(world)["release"]["id"]
    # Someone else's rollout that never finishes holds the app's lock.
    other = dict(marathon_server.app_json(APP))
    definition = {k: other[k] for k in ("id", "cpus", "mem", "container", "env", "labels")}
    definition["container"] = {"type": "DOCKER", "docker": {"image": "ops/hotfix:never-ready"}}
    definition["healthChecks"] = other["healthChecks"]
    definition["secrets"] = other.get("secrets") or {}
    response = requests.put(f"{marathon_server.url}/v2/apps{APP}", json=definition, timeout=10)
    assert response.status_code == 200, response.text
    lock = response.json()["deploymentId"]
    set_service(world, "worker", LOG_LEVEL="debug")
    commits = world.commit_count()
    puts = len(marathon_server.requests)

    result = world.cc("apply", "dev")

    assert result.code == 1, result.output
    assert f"worker: {APP} on platform 'mesos' is locked by deployment {lock} in progress" in (
        result.output
    )
    assert "nothing was committed" in result.output
    assert "Wait for that deployment to finish" in result.output
    assert "`configcenter apply dev --force` cancels it" in result.output
    assert "Traceback" not in result.output
    assert world.commit_count() == commits
    assert record(world)["release"]["id"] == good
    assert record(world)["release"]["outcome"] == "healthy"
    assert not [r for r in marathon_server.requests[puts:] if r.method in ("PUT", "DELETE", "POST")]
    running = requests.get(f"{marathon_server.url}/v2/deployments", timeout=10).json()
    assert lock in {d["id"] for d in running}
    assert marathon_server.app_json(APP)["container"]["docker"]["image"] == "ops/hotfix:never-ready"
    assert json.loads(world.cc("apply", "dev", "--json").stdout)["ok"] is False
    # Nothing was blocked: the plan still shows the change, not a failed release.
    [worker] = json.loads(world.ok("plan", "dev", "--json").stdout)["services"]
    assert worker["action"] == "update"

    # Committed without a rollout, the release's catch-up is refused the same way: it is
    # still committed (not failed, not blocked), and nothing was cancelled.
    world.ok("apply", "dev", "--no-rollout")
    assert record(world)["release"]["outcome"] == "committed"
    caught = world.cc("apply", "dev")
    assert caught.code == 1, caught.output
    assert f"is locked by deployment {lock} in progress" in caught.output
    assert "nothing was rolled out, committed or changed" in caught.output
    assert record(world)["release"]["outcome"] == "committed"
    running = requests.get(f"{marathon_server.url}/v2/deployments", timeout=10).json()
    assert lock in {d["id"] for d in running}

    forced = world.cc("apply", "dev", "--force")

    assert forced.code == 0, forced.output
    assert "--force cancels it at rollout" in forced.output
    running = requests.get(f"{marathon_server.url}/v2/deployments", timeout=10).json()
    assert lock not in {d["id"] for d in running}
    app = marathon_server.app_json(APP)
    assert app["container"]["docker"]["image"] != "ops/hotfix:never-ready"
    assert app["env"]["LOG_LEVEL"] == "debug"
    assert record(world)["release"]["outcome"] == "healthy"
    assert record(world)["release"]["id"] != good


def test_invalid_app_definition_shows_marathons_422_message(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    world = mesos_world(tmp_path, marathon_server)
    world.ok("apply", "dev")
    good = record(world)["release"]["id"]
    version = marathon_server.app_json(APP)["version"]

    set_service(world, "worker", CPUS="0")
    result = world.cc("apply", "dev")

    assert result.code == 3, result.output
    assert "rejected the app definition: Object is not valid" in result.output
    assert "/cpus: got 0, expected 0.001 or more" in result.output
    assert "fix the service's marathon.json.j2" in result.output
    assert marathon_server.app_json(APP)["version"] == version
    state = record(world)
    assert state["release"]["id"] == good
    assert "Object is not valid" in state["last_failed"]["reason"]


def test_secret_goes_to_the_secret_store_only(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    world = mesos_world(tmp_path, marathon_server, services=("db", "api"))
    result = world.ok("apply", "dev")

    assert marathon_server.secret_values[("default", "shop/dev/api/1/DB_PASSWORD")] == SENTINEL
    assert all(SENTINEL not in body for body in marathon_server.marathon_bodies())
    assert SENTINEL not in result.output
    assert SENTINEL.encode() not in world.all_objects()
    assert SENTINEL not in world.run_store_dump()


def test_a_service_without_a_platform_is_committed_while_the_others_roll_out(
    tmp_path: Path, marathon_server: MarathonDouble, rollout_xdg: Path
) -> None:
    world = mesos_world(tmp_path, marathon_server, services=("db", "worker"))
    env_file = "environments/dev/_env.yaml"
    world.config.write(env_file, world.config.read(env_file).replace("platform: mesos\n", ""))
    worker = "environments/dev/worker.yaml"
    world.config.write(worker, world.config.read(worker) + "platform: mesos\n")
    world.config.commit("only worker runs on Marathon; db is config only")

    result = world.cc("apply", "dev")

    assert result.code == 0, result.output
    assert record(world, "worker")["release"]["outcome"] == "healthy"
    db = record(world, "db")
    assert db["release"]["outcome"] == "committed"
    assert db["last_good"]["id"] == db["release"]["id"]  # never rolled out: committed is good
    assert healthy_tasks(marathon_server.app_json(APP))
    apps = requests.get(f"{marathon_server.url}/v2/apps", timeout=10).json()["apps"]
    assert [a["id"] for a in apps] == [APP]  # nothing was deployed for db


def test_an_unreachable_platform_stops_apply_before_anything_is_committed(
    tmp_path: Path, rollout_xdg: Path
) -> None:

    closed = free_port()  # nothing listens there
    world = make_rollout_world(
        tmp_path / "world",
        kind="marathon",
        marathon_url=f"http://127.0.0.1:{closed}",
        services=("worker",),
    )

    result = world.cc("apply", "dev")

    assert result.code == 1, result.output
    assert "platform 'mesos' for dev cannot be reached" in result.output
    assert "nothing was committed" in result.output
    assert world.commit_count() == 0
    # Once it is reachable the same inputs are a plain create, not a blocked release.
    plan = world.cc("plan", "dev", "--json")
    assert '"action": "create"' in plan.output


def _set_replicas(world: World, service: str, replicas: int) -> None:
    rel = f"environments/dev/{service}.yaml"
    lines = [
        f"replicas: {replicas}" if line.startswith("replicas:") else line
        for line in world.config.read(rel).splitlines()
    ]
    world.config.write(rel, "\n".join(lines) + "\n")
    world.config.commit(f"dev: {service} x{replicas}")


def _task_ids(app: dict[str, Any]) -> set[str]:
    return {t["id"] for t in app.get("tasks") or []}


@pytest.mark.parametrize("renders_instances", [False, True], ids=["adapter-owned", "rendered"])
def test_a_replicas_only_change_scales_the_app_without_restarting_a_task(
    tmp_path: Path, marathon_server: MarathonDouble, renders_instances: bool
) -> None:
    world = mesos_world(tmp_path, marathon_server, replicas={"worker": 2})
    if renders_instances:
        # A template may render the count itself: it is still only a scale.
        template = "templates/worker/marathon.json.j2"
        text = world.config.read(template).replace(
            '"mem": 64,', '"mem": 64, "instances": {{ replicas }},'
        )
        world.config.write(template, text)
        world.config.commit("worker renders its instances")
        world.config.tag("worker/1.0.1")
        rel = "environments/dev/worker.yaml"
        world.config.write(
            rel, world.config.read(rel).replace("template: 1.0.0", "template: 1.0.1")
        )
        world.config.commit("dev: worker 1.0.1")
    world.ok("apply", "dev")
    before = marathon_server.app_json(APP)
    first = record(world)["release"]["id"]
    assert len(healthy_tasks(before)) == 2

    _set_replicas(world, "worker", 3)
    planned = json.loads(world.ok("plan", "dev", "--json").stdout)["services"]
    assert [(s["service"], s["action"], s["reasons"]) for s in planned] == [
        ("worker", "update", ["replicas"])
    ]
    world.ok("apply", "dev")

    scaled = marathon_server.app_json(APP)
    assert scaled["instances"] == 3 and len(healthy_tasks(scaled)) == 3
    info = (
        scaled["versionInfo"]["lastConfigChangeAt"],
        before["versionInfo"]["lastConfigChangeAt"],
    )
    assert info[0] == info[1], "a scale is not a config change: the tasks were restarted"
    assert _task_ids(before) < _task_ids(scaled), "every task that ran before still runs"
    assert scaled["labels"] == before["labels"], "a label change restarts every task"
    assert {k: v for k, v in scaled.items() if k not in VOLATILE} == {
        k: v for k, v in before.items() if k not in VOLATILE
    }, "the PUT changed more than instances"
    state = record(world)
    assert state["release"]["outcome"] == "healthy" and state["release"]["id"] != first
    assert state["replicas"] == 3

    # The next apply converges: nothing to roll out again, nothing to commit.
    again = json.loads(world.ok("plan", "dev", "--json").stdout)["services"]
    assert [(s["service"], s["action"]) for s in again] == [("worker", "noop")]
    head = world.head()
    assert "Nothing to do" in world.ok("apply", "dev").output
    assert world.head() == head
    assert marathon_server.app_json(APP)["version"] == scaled["version"]

    # Down again: the tasks that stay are tasks that ran, none new.
    _set_replicas(world, "worker", 1)
    world.ok("apply", "dev")
    down = marathon_server.app_json(APP)
    assert down["instances"] == 1 and _task_ids(down) < _task_ids(scaled)
    assert down["versionInfo"]["lastConfigChangeAt"] == info[1]

    # A change the tasks consume still restarts them and the app carries its new release.
    set_service(world, "worker", LOG_LEVEL="debug")
    world.ok("apply", "dev")
    changed = marathon_server.app_json(APP)
    assert changed["versionInfo"]["lastConfigChangeAt"] > info[1]
    assert not _task_ids(changed) & _task_ids(down)
    assert changed["labels"]["configcenter.io/release"] == record(world)["release"]["id"]
    assert json.loads(world.ok("plan", "dev", "--json").stdout)["services"][0]["action"] == "noop"


def test_a_secret_that_cannot_be_resolved_is_refused_before_anything_is_committed(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    world = mesos_world(tmp_path, marathon_server, services=("db", "api"))
    del world.env[SECRET_ENV]  # DB_PASSWORD: {secret: "env:SHOP_DB_PASSWORD"}, not set

    planned = world.cc("plan", "dev")
    assert planned.code == 0, planned.output
    assert (
        "environments/dev/_env.yaml:5: warning: api: value DB_PASSWORD: secret "
        "'env:SHOP_DB_PASSWORD' cannot be resolved: environment variable SHOP_DB_PASSWORD "
        "is not set; apply will refuse this release"
    ) in " ".join(planned.output.split())
    as_json = json.loads(world.cc("plan", "dev", "--json").stdout)
    assert [w["message"] for w in as_json["warnings"] if "DB_PASSWORD" in w["message"]]

    result = world.cc("apply", "dev")

    assert result.code == 1, result.output
    assert "environments/dev/_env.yaml:5: api: value DB_PASSWORD: secret" in result.output
    assert "export SHOP_DB_PASSWORD" in result.output and "nothing was committed" in result.output
    assert "Traceback" not in result.output
    assert world.commit_count() == 0, "the deploy repo is unchanged"
    assert not any(r.method in ("PUT", "POST") for r in marathon_server.requests)
    assert marathon_server.apps == {} and marathon_server.secret_values == {}

    # A file: secret that is not there is refused the same way, naming its file and line.
    missing = tmp_path / "no-such-secret"
    env_file = "environments/dev/_env.yaml"
    text = world.config.read(env_file).replace('env:SHOP_DB_PASSWORD"', f'file:{missing}"')
    world.config.write(env_file, text)
    settings = world.config.read("configcenter.yaml")
    allow = f'secrets:\n  file: {{allow: ["{tmp_path}/*"]}}\n'
    world.config.write("configcenter.yaml", settings + allow)
    world.config.commit("db password from a file")
    result = world.cc("apply", "dev")
    assert result.code == 1, result.output
    assert f"{missing} does not exist" in result.output
    assert "environments/dev/_env.yaml:5" in result.output
    assert world.commit_count() == 0 and marathon_server.apps == {}

    # Once it resolves, the same apply rolls out, and the value reaches the secret store only.
    missing.write_text(SENTINEL + "\n")
    world.ok("apply", "dev")
    assert record(world, "api")["release"]["outcome"] == "healthy"
    assert SENTINEL in marathon_server.secret_values.values()


def test_a_release_whose_secrets_the_platform_holds_needs_no_value_to_roll_out(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    world = mesos_world(tmp_path, marathon_server, services=("db", "api"))
    world.ok("apply", "dev")
    stored = dict(marathon_server.secret_values)
    del world.env[SECRET_ENV]  # e.g. applied from a machine that cannot read the secret

    set_service(world, "api", image="registry.test/shop/api:1.1")
    planned = world.ok("plan", "dev")
    assert "apply will refuse" not in planned.output
    world.ok("apply", "dev")

    assert record(world, "api")["release"]["outcome"] == "healthy"
    app = marathon_server.app_json("/shop/dev/api")
    assert app["container"]["docker"]["image"] == "registry.test/shop/api:1.1"
    assert marathon_server.secret_values == stored, "generation 1 holds the verified value"


def test_a_rollback_that_fails_puts_the_release_that_ran_back_on_the_platform(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    """`rollback --to` a release that cannot become healthy (here the one that failed
    before) must not leave it running: the platform gets the deploy repo's current release
    back, so plan/apply/reconcile and the platform agree again."""
    world = mesos_world(tmp_path, marathon_server)
    world.ok("apply", "dev")
    good = record(world)["release"]["id"]
    set_service(world, "worker", image="registry.test/shop/worker:1.1-never-ready")
    assert world.cc("apply", "dev").code == 3
    bad = record(world)["last_failed"]["id"]
    assert record(world)["release"]["id"] == good

    back = world.cc("rollback", "dev", "worker", "--to", bad)

    assert back.code == 1, back.output
    assert f"rollback of worker to {bad} failed (" in back.output
    assert f"{good}, the release the deploy repo names, runs again" in back.output
    app = marathon_server.app_json(APP)
    assert app["labels"]["configcenter.io/release"] == good
    assert app["container"]["docker"]["image"] == "registry.test/shop/worker:1.0"
    assert len(healthy_tasks(app)) == 1 and not app["deployments"]
    assert record(world)["release"]["id"] == good


def test_a_catch_up_that_fails_does_not_unblock_the_failed_release(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    """dev's worker is blocked (its never-ready release was rolled back) and someone's
    hand-made rollout holds the app. apply sees the lock before putting the good release
    back, refuses, and stops there: never roll the blocked, known-bad inputs out again."""
    world = mesos_world(tmp_path, marathon_server)
    world.ok("apply", "dev")
    good = record(world)["release"]["id"]
    set_service(world, "worker", image="registry.test/shop/worker:1.1-never-ready")
    assert world.cc("apply", "dev").code == 3
    bad = record(world)["last_failed"]
    # Someone's rollout that never finishes holds the app, under the good release's labels.
    other = dict(marathon_server.app_json(APP))
    definition = {k: other[k] for k in ("id", "cpus", "mem", "container", "env", "labels")}
    definition["container"] = {"type": "DOCKER", "docker": {"image": "ops/hotfix:never-ready"}}
    definition["healthChecks"] = other["healthChecks"]
    definition["secrets"] = other.get("secrets") or {}
    response = requests.put(f"{marathon_server.url}/v2/apps{APP}", json=definition, timeout=10)
    assert response.status_code == 200, response.text

    again = world.cc("apply", "dev")

    assert again.code == 1, again.output
    assert f"worker: {APP} on platform 'mesos' is locked by deployment" in again.output
    assert "nothing was rolled out, committed or changed" in again.output
    state = record(world)
    assert state["release"]["id"] == good, state["release"]
    assert state["last_failed"]["id"] == bad["id"], state["last_failed"]
    images = [a["container"]["docker"]["image"] for a in [marathon_server.app_json(APP)]]
    assert images == ["ops/hotfix:never-ready"]
    assert "blocked" in world.cc("plan", "dev").stdout


def _refused_for_the_secret(result: CliResult) -> None:
    assert result.code == 1, result.output
    text = " ".join(result.output.split())
    assert "environments/dev/_env.yaml:5: api: value DB_PASSWORD: secret" in text
    assert "environment variable SHOP_DB_PASSWORD is not set" in text
    assert "export SHOP_DB_PASSWORD" in text
    assert "Traceback" not in result.output


def test_apply_no_rollout_refuses_a_secret_that_cannot_be_resolved_before_committing(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    world = mesos_world(tmp_path, marathon_server, services=("db", "api"))
    del world.env[SECRET_ENV]

    result = world.cc("apply", "dev", "--no-rollout")

    _refused_for_the_secret(result)
    assert "nothing was committed" in result.output
    assert world.commit_count() == 0, "the deploy repo is unchanged"
    assert marathon_server.apps == {} and marathon_server.secret_values == {}

    world.env[SECRET_ENV] = SENTINEL
    world.ok("apply", "dev", "--no-rollout")
    assert record(world, "api")["release"]["outcome"] == "committed"
    assert marathon_server.apps == {}, "--no-rollout touches no platform"


def test_the_catch_up_refuses_a_committed_release_whose_secret_cannot_be_resolved(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    world = mesos_world(tmp_path, marathon_server, services=("db", "api"))
    world.ok("apply", "dev", "--no-rollout")  # committed, not on Marathon yet
    head = world.head()
    committed = record(world, "api")["release"]["id"]
    del world.env[SECRET_ENV]  # the next apply runs where the secret cannot be read

    result = world.cc("apply", "dev")

    _refused_for_the_secret(result)
    assert "nothing was rolled out" in result.output
    assert world.head() == head, "no record or release commit"
    assert not any(r.method in ("PUT", "POST", "DELETE") for r in marathon_server.requests)
    assert marathon_server.apps == {} and marathon_server.secret_values == {}

    world.env[SECRET_ENV] = SENTINEL
    world.ok("apply", "dev")
    api = record(world, "api")["release"]
    assert api["id"] == committed and api["outcome"] == "healthy"
    assert marathon_server.app_json("/shop/dev/api")["labels"]["configcenter.io/release"] == (
        committed
    )
    assert SENTINEL in marathon_server.secret_values.values()


def test_the_catch_up_of_a_release_whose_secrets_the_platform_holds_needs_no_value(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    world = mesos_world(tmp_path, marathon_server, services=("db", "api"))
    world.ok("apply", "dev")  # generation 1 is in the secret store
    stored = dict(marathon_server.secret_values)
    del world.env[SECRET_ENV]
    set_service(world, "api", image="registry.test/shop/api:1.1")  # same secrets generation
    world.ok("apply", "dev", "--no-rollout")
    committed = record(world, "api")["release"]["id"]

    world.ok("apply", "dev")

    assert record(world, "api")["release"]["outcome"] == "healthy"
    app = marathon_server.app_json("/shop/dev/api")
    assert app["labels"]["configcenter.io/release"] == committed
    assert app["container"]["docker"]["image"] == "registry.test/shop/api:1.1"
    assert marathon_server.secret_values == stored, "generation 1 holds the verified value"


def test_reconcile_names_a_scale_release_as_the_one_that_runs(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    world = mesos_world(tmp_path, marathon_server, replicas={"worker": 1})
    world.ok("apply", "dev")
    first = record(world)["release"]["id"]
    _set_replicas(world, "worker", 2)
    world.ok("apply", "dev")
    scale = record(world)["release"]
    assert scale["id"] != first and scale["scale_of"] == first
    app = marathon_server.app_json(APP)
    assert app["instances"] == 2 and app["labels"]["configcenter.io/release"] == first

    report = json.loads(world.ok("reconcile", "dev", "--json").stdout)

    [worker] = report["services"]
    assert (worker["status"], worker["drifts"]) == ("in_sync", [])
    assert worker["release"] == scale["id"]
    assert worker["live_release"] == scale["id"], "the scale release is what runs"
    assert (worker["desired_replicas"], worker["live_replicas"]) == (2, 2)

    # Scaled by hand: what runs is the release it scales, at another count.
    requests.put(
        f"{marathon_server.url}/v2/apps{APP}", json={"instances": 3}, timeout=10
    ).raise_for_status()
    report = json.loads(world.ok("reconcile", "dev", "--json").stdout)
    [worker] = report["services"]
    assert worker["status"] == "drifted" and worker["live_release"] == first
    assert [(d["field"], d["desired"], d["live"]) for d in worker["drifts"]] == [
        ("replicas", "2", "3")
    ]


def test_an_app_edited_by_hand_is_a_plan_step_and_apply_puts_the_release_back(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    """Reconcile names fields changed in an app by hand; plan and apply agree with it: the
    plan says what differs (never the values set by hand) and apply PUTs the release's own
    definition back, with no new release and no commit."""
    world = mesos_world(tmp_path, marathon_server)
    world.ok("apply", "dev")
    released = record(world)["release"]["id"]
    before = marathon_server.app_json(APP)
    hand = {"env": {**before["env"], "EXTRA": "hand-v4lue-9c1", "LOG_LEVEL": "debug"}}
    url = f"{marathon_server.url}/v2/apps{APP}"
    requests.put(url, json=hand, timeout=10).raise_for_status()
    head = world.head()

    plan = json.loads(world.ok("plan", "dev", "--json").stdout)
    text = world.ok("plan", "dev").output

    [worker] = plan["services"]
    assert (worker["action"], worker["reasons"]) == ("update", ["platform"])
    assert {(f["field"], f["change"]) for f in worker["platform"]["edited"]} == {
        ("app env.EXTRA", "added"),
        ("app env.LOG_LEVEL", "changed"),
    }
    assert "app with env.EXTRA added" in text
    for output in (text, json.dumps(plan)):
        assert "hand-v4lue-9c1" not in output and SENTINEL not in output

    applied = world.ok("apply", "dev")

    assert "hand-v4lue-9c1" not in applied.output
    app = marathon_server.app_json(APP)
    assert app["env"] == before["env"]
    assert app["labels"]["configcenter.io/release"] == released == record(world)["release"]["id"]
    assert world.head() == head
    after = json.loads(world.ok("plan", "dev", "--json").stdout)
    assert [s["action"] for s in after["services"]] == ["noop"]
    report = json.loads(world.ok("reconcile", "dev", "--json").stdout)
    assert report["services"][0]["drifts"] == []


def test_an_apply_logs_no_line_of_the_marathon_client_per_request(
    tmp_path: Path, marathon_server: MarathonDouble, caplog: pytest.LogCaptureFixture
) -> None:
    """The `marathon` client logs "Got response from <url>" at INFO on every request (each
    poll of a rollout); with INFO logging on (as serve runs) an apply's log carries none of
    them, while configcenter's own Marathon lines and the client's warnings still show."""
    library = logging.getLogger("marathon")
    before = library.level
    library.setLevel(logging.NOTSET)  # as a fresh process starts
    try:
        caplog.set_level(logging.INFO)
        world = mesos_world(tmp_path, marathon_server)

        result = apply_env(workspace(world), "dev", ApplyOptions())

        assert [(r.service, r.outcome) for r in result.results] == [("worker", "healthy")]
        ours = [r for r in caplog.records if r.name == "configcenter.adapters.marathon"]
        assert any("-> deployment" in r.getMessage() for r in ours), caplog.text
        assert "Got response from" not in caplog.text
        assert [r for r in caplog.records if r.name == "marathon"] == []
        assert library.getEffectiveLevel() == logging.WARNING
    finally:
        library.setLevel(before)
