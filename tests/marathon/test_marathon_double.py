"""The double keeps Marathon's published contract: checked with the `marathon` client and raw HTTP.

Adapter tests are only worth as much as the double's fidelity, so these pin the
REST semantics the adapter relies on (see the RAML cited in marathon_double.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from marathon import MarathonClient
from marathon.exceptions import ConflictError, MarathonHttpError, NotFoundError

from tests.support.helpers import poll
from tests.support.marathon_double import MarathonDouble

APP: dict[str, Any] = {
    "id": "/shop/dev/api",
    "instances": 2,
    "container": {"type": "DOCKER", "docker": {"image": "shop/api:1"}},
    "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health"}],
}


def settle(server: MarathonDouble, deadline: float = 10.0) -> None:
    """Poll /v2/deployments until it is empty, like any Marathon client would."""
    url = f"{server.url}/v2/deployments"
    poll(lambda: not requests.get(url, timeout=5).json(), deadline, "deployments to finish", 0.02)


def test_ping_info_and_the_marathon_client(marathon_server: MarathonDouble) -> None:
    client = MarathonClient(marathon_server.url)
    assert requests.get(f"{marathon_server.url}/ping", timeout=5).text == "pong"
    assert client.get_info().name == "marathon"
    put = requests.put(f"{marathon_server.url}/v2/apps/shop/dev/api", json=APP, timeout=5)
    assert put.status_code == 201
    assert put.headers["Marathon-Deployment-Id"] == put.json()["deploymentId"]
    (deployment,) = client.list_deployments()
    assert deployment.id == put.json()["deploymentId"]
    assert deployment.affected_apps == ["/shop/dev/api"]
    assert deployment.total_steps == 2 and deployment.current_step in (1, 2)
    settle(marathon_server)
    assert client.list_versions("/shop/dev/api") == [put.json()["version"]]
    with pytest.raises(NotFoundError):
        client.list_versions("/shop/dev/nope")


def test_version_info_separates_scaling_from_config_changes(
    marathon_server: MarathonDouble,
) -> None:
    url = f"{marathon_server.url}/v2/apps/shop/dev/api"
    requests.put(url, json=APP, timeout=5)
    settle(marathon_server)
    first = requests.get(url, timeout=5).json()["app"]

    requests.put(url, json=dict(APP, instances=3), timeout=5)
    settle(marathon_server)
    scaled = requests.get(url, timeout=5).json()["app"]
    requests.put(url, json=dict(APP, instances=3, env={"A": "1"}), timeout=5)
    settle(marathon_server)
    changed = requests.get(url, params={"embed": "app.tasks"}, timeout=5).json()["app"]

    assert scaled["version"] > first["version"]
    assert scaled["versionInfo"]["lastScalingAt"] == scaled["version"]
    assert scaled["versionInfo"]["lastConfigChangeAt"] == first["version"]
    assert changed["versionInfo"]["lastConfigChangeAt"] == changed["version"]
    assert [t["version"] for t in changed["tasks"]] == [changed["version"]] * 3
    assert changed["tasksHealthy"] == changed["tasksRunning"] == 3
    versions = requests.get(f"{url}/versions", timeout=5).json()["versions"]
    assert versions == [changed["version"], scaled["version"], first["version"]]
    old = requests.get(f"{url}/versions/{first['version']}", timeout=5).json()
    assert old["instances"] == 2 and old["version"] == first["version"]
    assert requests.get(f"{url}/versions/1999-01-01T00:00:00.000Z", timeout=5).status_code == 404


def test_locks_conflicts_and_validation(marathon_server: MarathonDouble) -> None:
    marathon_server.deploy_seconds = 30
    url = f"{marathon_server.url}/v2/apps/shop/dev/api"
    first = requests.put(url, json=APP, timeout=5).json()

    locked = requests.put(url, json=dict(APP, instances=1), timeout=5)
    forced = requests.put(url, params={"force": "true"}, json=dict(APP, instances=1), timeout=5)
    invalid = requests.put(url, json=dict(APP, cpus=0, env={"X": {"secret": "nope"}}), timeout=5)
    duplicate = requests.post(f"{marathon_server.url}/v2/apps", json=APP, timeout=5)

    assert locked.status_code == 409
    assert locked.json()["deployments"] == [{"id": first["deploymentId"]}]
    assert "?force=true" in locked.json()["message"]
    assert forced.status_code == 200
    assert list(marathon_server.deployments) == [forced.json()["deploymentId"]]
    assert invalid.status_code == 422
    assert invalid.json()["message"] == "Object is not valid"
    assert {d["path"] for d in invalid.json()["details"]} == {"/cpus", "/env/X"}
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.json()["message"]
    client = MarathonClient(marathon_server.url)
    with pytest.raises(ConflictError):
        client.delete_app("/shop/dev/api")
    bad_id = requests.post(
        f"{marathon_server.url}/v2/apps", json=dict(APP, id="/Bad App"), timeout=5
    )
    assert bad_id.status_code == 422
    assert bad_id.json()["details"][0]["path"] == "/id"
    with pytest.raises(MarathonHttpError) as caught:
        client.delete_deployment("no-such-deployment")
    assert caught.value.status_code == 404


def test_never_ready_images_keep_the_deployment_and_the_old_tasks(
    marathon_server: MarathonDouble,
) -> None:
    url = f"{marathon_server.url}/v2/apps/shop/dev/api"
    requests.put(url, json=APP, timeout=5)
    settle(marathon_server)
    broken = dict(APP, container={"type": "DOCKER", "docker": {"image": "shop/api:never-ready"}})
    deployment = requests.put(url, json=broken, timeout=5).json()["deploymentId"]

    def two_unhealthy() -> dict[str, Any] | None:
        reply = requests.get(url, params={"embed": "app.tasks"}, timeout=5)
        app: dict[str, Any] = reply.json()["app"]
        return app if app["tasksUnhealthy"] == 2 else None

    app = poll(two_unhealthy, 10, "two unhealthy tasks of the new version", 0.02)

    assert app["tasksRunning"] == 4 and app["tasksHealthy"] == 2 and app["tasksUnhealthy"] == 2
    assert app["deployments"] == [{"id": deployment}]
    # DELETE without force rolls back: a new deployment restores the previous definition.
    rollback = requests.delete(f"{marathon_server.url}/v2/deployments/{deployment}", timeout=5)
    assert rollback.status_code == 200
    settle(marathon_server)
    app = requests.get(url, timeout=5).json()["app"]
    assert app["container"]["docker"]["image"] == "shop/api:1"
    assert app["tasksHealthy"] == 2


def test_groups_and_app_listing(marathon_server: MarathonDouble) -> None:
    for app_id in ("/shop/dev/api", "/shop/dev/web", "/shop/prod/api"):
        requests.put(f"{marathon_server.url}/v2/apps{app_id}", json=dict(APP, id=app_id), timeout=5)
    root = requests.get(f"{marathon_server.url}/v2/groups", timeout=5).json()
    dev = requests.get(f"{marathon_server.url}/v2/groups/shop/dev", timeout=5).json()
    listed = requests.get(
        f"{marathon_server.url}/v2/apps", params={"id": "/shop/dev/"}, timeout=5
    ).json()

    assert [g["id"] for g in root["groups"]] == ["/shop"]
    assert [g["id"] for g in root["groups"][0]["groups"]] == ["/shop/dev", "/shop/prod"]
    assert [a["id"] for a in dev["apps"]] == ["/shop/dev/api", "/shop/dev/web"]
    assert [a["id"] for a in listed["apps"]] == ["/shop/dev/api", "/shop/dev/web"]
    assert all("tasks" not in a for a in listed["apps"])
    missing = requests.get(f"{marathon_server.url}/v2/groups/nope", timeout=5)
    assert missing.status_code == 404 and "does not exist" in missing.json()["message"]


def test_put_is_a_partial_update_unless_partial_update_is_false(
    marathon_server: MarathonDouble,
) -> None:
    """apps.raml, PUT /v2/apps/{app_id}: `partialUpdate` defaults to true ("values not
    defined in the JSON will not change"); a field the body sets replaces the old one whole."""
    url = f"{marathon_server.url}/v2/apps/shop/dev/api"
    added = dict(APP, constraints=[["hostname", "UNIQUE"]], env={"A": "1", "B": "2"})
    requests.put(url, json=added, timeout=5)
    settle(marathon_server)

    requests.put(url, json={"instances": 1, "env": {"A": "3"}}, timeout=5)
    settle(marathon_server)
    partial = requests.get(url, timeout=5).json()["app"]
    requests.put(
        url,
        params={"partialUpdate": "false"},
        json={"container": APP["container"], "instances": 1},
        timeout=5,
    )
    settle(marathon_server)
    replaced = requests.get(url, timeout=5).json()["app"]

    assert partial["instances"] == 1 and partial["env"] == {"A": "3"}
    assert partial["constraints"] == [["hostname", "UNIQUE"]]
    assert partial["healthChecks"] == APP["healthChecks"]
    assert replaced["constraints"] == [] and replaced["healthChecks"] == []
    assert replaced["env"] == {} and replaced["container"] == APP["container"]
    # The list form takes the same parameter.
    listed = requests.put(
        f"{marathon_server.url}/v2/apps",
        json=[{"id": "/shop/dev/api", "constraints": [["hostname", "UNIQUE"]]}],
        timeout=5,
    )
    assert listed.status_code == 200
    settle(marathon_server)
    again = requests.get(url, timeout=5).json()["app"]
    assert again["constraints"] == [["hostname", "UNIQUE"]]
    assert again["container"] == APP["container"]
