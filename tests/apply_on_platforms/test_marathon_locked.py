"""`rollback`, `deploy` and `plan` on a Marathon app that a deployment in progress holds
(Marathon answers 409 to a PUT of it without `force=true`), on the REST double.

`rollback` and `deploy` refuse it as `apply` does, before anything is recorded or rolled
out, and `--force` cancels that deployment; `plan` says apply will refuse the service.
"""

from __future__ import annotations

import json
from pathlib import Path

import requests

from tests.apply_on_platforms.test_marathon import APP, mesos_world, record
from tests.support.e2e_fixtures import World
from tests.support.marathon_double import MarathonDouble
from tests.support.rollout_fixtures import set_service

HOTFIX = "ops/hotfix:never-ready"


def lock_app(server: MarathonDouble, app_id: str = APP) -> str:
    """Someone else's rollout of the app that never finishes (its image never passes its
    health checks): it holds the app's lock. Returns its deployment id."""
    other = dict(server.app_json(app_id))
    definition = {k: other[k] for k in ("id", "cpus", "mem", "container", "env", "labels")}
    definition["container"] = {"type": "DOCKER", "docker": {"image": HOTFIX}}
    definition["healthChecks"] = other["healthChecks"]
    definition["secrets"] = other.get("secrets") or {}
    response = requests.put(f"{server.url}/v2/apps{app_id}", json=definition, timeout=10)
    assert response.status_code == 200, response.text
    deployment = response.json()["deploymentId"]
    assert isinstance(deployment, str)
    return deployment


def running_deployments(server: MarathonDouble) -> set[str]:
    listed = requests.get(f"{server.url}/v2/deployments", timeout=10).json()
    return {d["id"] for d in listed}


def changing_requests(server: MarathonDouble, since: int) -> list[str]:
    return [
        f"{r.method} {r.path}"
        for r in server.requests[since:]
        if r.method in ("PUT", "POST", "DELETE", "PATCH")
    ]


def two_releases(world: World) -> tuple[str, str]:
    """Two healthy releases of worker (LOG_LEVEL info, then debug): (older, current)."""
    world.ok("apply", "dev")
    older = record(world)["release"]["id"]
    set_service(world, "worker", LOG_LEVEL="debug")
    world.ok("apply", "dev")
    current = record(world)["release"]["id"]
    assert current != older
    return older, current


def test_rollback_of_a_locked_app_is_refused_before_anything_and_force_cancels_it(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    world = mesos_world(tmp_path, marathon_server)
    older, current = two_releases(world)
    lock = lock_app(marathon_server)
    commits = world.commit_count()
    since = len(marathon_server.requests)

    refused = world.cc("rollback", "dev", "worker")

    assert refused.code == 1, refused.output
    assert f"worker: {APP} on platform 'mesos' is locked by deployment {lock} in progress" in (
        refused.output
    )
    assert "nothing was rolled out, committed or changed" in refused.output
    assert "`configcenter rollback dev worker --force` cancels it" in refused.output
    assert "`--no-rollout` to restore the deploy repo only" in refused.output
    assert "Traceback" not in refused.output
    assert world.commit_count() == commits
    assert record(world)["release"]["id"] == current
    assert record(world)["release"]["outcome"] == "healthy"
    assert changing_requests(marathon_server, since) == []
    assert lock in running_deployments(marathon_server)
    assert marathon_server.app_json(APP)["container"]["docker"]["image"] == HOTFIX
    as_json = world.cc("rollback", "dev", "worker", "--json")
    assert as_json.code == 1
    problems = json.loads(as_json.stdout)["problems"]
    assert lock in problems[0]["message"] and "--force" in problems[0]["message"]

    forced = world.cc("rollback", "dev", "worker", "--force")

    assert forced.code == 0, forced.output
    assert "--force cancels it at rollout" in forced.output
    assert lock not in running_deployments(marathon_server)
    app = marathon_server.app_json(APP)
    assert app["container"]["docker"]["image"] != HOTFIX
    assert app["env"]["LOG_LEVEL"] == "info"
    assert app["labels"]["configcenter.io/release"] == older
    assert record(world)["release"]["id"] == older
    assert world.commit_count() == commits + 1


def test_deploy_of_a_locked_app_is_refused_before_anything_and_force_cancels_it(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    world = mesos_world(tmp_path, marathon_server)
    _, current = two_releases(world)
    lock = lock_app(marathon_server)
    commits = world.commit_count()
    since = len(marathon_server.requests)

    refused = world.cc("deploy", "dev", "worker")

    assert refused.code == 1, refused.output
    assert f"worker: {APP} on platform 'mesos' is locked by deployment {lock} in progress" in (
        refused.output
    )
    assert "nothing was rolled out, committed or changed" in refused.output
    assert "`configcenter deploy dev worker --force` cancels it" in refused.output
    assert "--no-rollout" not in refused.output  # deploy has none
    assert "Traceback" not in refused.output
    assert world.commit_count() == commits
    assert record(world)["release"]["id"] == current
    assert record(world)["release"]["outcome"] == "healthy"
    assert changing_requests(marathon_server, since) == []
    assert lock in running_deployments(marathon_server)

    forced = world.cc("deploy", "dev", "worker", "--force")

    assert forced.code == 0, forced.output
    assert "--force cancels it at rollout" in forced.output
    assert lock not in running_deployments(marathon_server)
    app = marathon_server.app_json(APP)
    assert app["container"]["docker"]["image"] != HOTFIX
    assert app["labels"]["configcenter.io/release"] == current
    assert record(world)["release"]["outcome"] == "healthy"


def test_plan_warns_that_apply_will_refuse_a_locked_app_with_one_deployments_listing(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    world = mesos_world(tmp_path, marathon_server, services=("db", "worker"))
    world.ok("apply", "dev")
    lock = lock_app(marathon_server)
    set_service(world, "worker", LOG_LEVEL="debug")
    set_service(world, "db", LOG_LEVEL="debug")
    since = len(marathon_server.requests)

    planned = world.ok("plan", "dev", "--json")

    warnings = json.loads(planned.stdout)["warnings"]
    locked = [w for w in warnings if lock in w["message"]]
    assert len(locked) == 1, warnings
    assert locked[0]["severity"] == "warning"
    assert locked[0]["message"].startswith(f"worker: {APP} on platform 'mesos' is locked by")
    assert "apply will refuse it" in locked[0]["message"]
    assert "--force" in locked[0]["hint"]
    assert locked[0]["file"].endswith("worker.yaml")
    listings = [r for r in marathon_server.requests[since:] if r.path == "/v2/deployments"]
    assert [r.method for r in listings] == ["GET"]
    text = world.ok("plan", "dev")
    assert f"{APP} on platform 'mesos' is locked by deployment {lock}" in text.output
    assert "apply will refuse it" in text.output

    # Once that deployment is gone, plan says nothing of it.
    assert requests.delete(f"{marathon_server.url}/v2/deployments/{lock}?force=true", timeout=10).ok
    warnings = json.loads(world.ok("plan", "dev", "--json").stdout)["warnings"]
    assert not [w for w in warnings if "locked" in w["message"]], warnings

    # A Marathon that cannot be reached is not asked: plan says it was not observed.
    lock_app(marathon_server)
    marathon_server.stop()
    warnings = json.loads(world.ok("plan", "dev", "--json").stdout)["warnings"]
    assert [w for w in warnings if "not observed" in w["message"]], warnings
    assert not [w for w in warnings if "locked" in w["message"]], warnings
