"""Marathon's documented bodies through the adapter's readers, and the double held to them
(tests/fixtures/README.md names the RAML and source each one follows)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from configcenter.adapters.marathon_client import (
    LABEL_DIGEST,
    LABEL_RELEASE,
    MarathonAuthError,
    MarathonBusyError,
    MarathonConflictError,
    MarathonError,
    MarathonSecretError,
    MarathonValidationError,
)
from configcenter.adapters.marathon_diff import READ_ONLY, definition_drifts, runs
from configcenter.adapters.marathon_observe import _image
from configcenter.adapters.marathon_wait import _task_healthy
from configcenter.ports.platform import Deployable
from tests.marathon.test_marathon_double import settle
from tests.support.marathon_double import MarathonDouble
from tests.support.marathon_fixtures import MarathonFactory
from tests.support.payloads import load, missing_fields


def real_app() -> dict[str, Any]:
    app: dict[str, Any] = load("marathon/app.json")["body"]["app"]
    return app


def deployable(release: str = "r1", digest: str = "sha256:d1") -> Deployable:
    return Deployable(
        env="dev",
        service="my-app",
        release_id=release,
        image="nginx:1.11",
        config_digest=digest,
        files={"marathon.json": b"{}"},
        values={},
        secrets={},
        replicas=2,
    )


def test_a_real_app_with_passing_checks_is_healthy(marathon_platform: MarathonFactory) -> None:
    platform = marathon_platform()
    app = real_app()
    app["labels"] = {**app["labels"], LABEL_RELEASE: "r1", LABEL_DIGEST: "sha256:d1"}

    status = platform._waiter._status("/my-app", app, deployable(), None, set())

    assert (status.state, status.desired, status.ready) == ("healthy", 2, 2)
    assert _image(app) == "nginx:1.11"
    assert all(_task_healthy(t) for t in app["tasks"])


def test_a_real_app_in_a_deployment_is_progressing(marathon_platform: MarathonFactory) -> None:
    platform = marathon_platform()
    app = real_app()
    app["labels"] = {**app["labels"], LABEL_RELEASE: "r1", LABEL_DIGEST: "sha256:d1"}
    [running] = load("marathon/deployments.json")["body"]
    app["deployments"] = [{"id": running["id"]}]

    status = platform._waiter._status("/my-app", app, deployable(), running["id"], {running["id"]})

    assert (status.state, status.reason) == ("progressing", "DeploymentInProgress")


def test_fields_marathon_fills_in_are_not_a_difference() -> None:
    """GET returns defaults and assigned fields the PUT never sent: the app still 'runs' it."""
    app = real_app()
    sent = {
        "id": "/my-app",
        "cpus": 0.1,
        "mem": 64,
        "instances": 2,
        "container": {"type": "DOCKER", "docker": {"image": "nginx:1.11"}},
        "env": app["env"],
        "secrets": app["secrets"],
        "labels": app["labels"],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0}],
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1},
    }
    assert runs(app, sent)
    assert not runs(dict(app, constraints=[["hostname", "UNIQUE"]]), sent)
    assert not runs(app, {**sent, "env": {"LOG_LEVEL": "info"}})
    # reconcile's field-by-field drift agrees: nothing on the real app, each hand edit named
    live = {k: v for k, v in app.items() if k not in READ_ONLY}
    assert definition_drifts("my-app", live, sent) == []
    edited = definition_drifts("my-app", dict(live, constraints=[["hostname", "UNIQUE"]]), sent)
    assert [(d.field, d.desired) for d in edited] == [("app constraints", None)]


@pytest.mark.parametrize(
    ("rel", "kind", "words"),
    [
        ("marathon/error_409_locked.json", MarathonConflictError, "97c136bf"),
        ("marathon/error_422_invalid.json", MarathonValidationError, "/cpus: got 0.0"),
        ("marathon/error_403_deployments.json", MarathonBusyError, "wait for running"),
        ("marathon/error_403_forbidden.json", MarathonAuthError, "lacks the permission"),
        ("marathon/error_403_forbidden.json", MarathonAuthError, "Not Authorized to perform"),
        ("marathon/error_401_admin_router.json", MarathonAuthError, "valid, unexpired"),
        ("marathon/error_404_app.json", MarathonError, "does not exist"),
        ("marathon/error_503.json", MarathonError, "Could not determine the current"),
        ("marathon/error_503_timeout.json", MarathonError, "Futures timed out"),
    ],
)
def test_real_error_bodies_become_the_right_errors(
    marathon_platform: MarathonFactory, rel: str, kind: type[Exception], words: str
) -> None:
    fixture = load(rel)
    error = marathon_platform().client.http_error(
        fixture["status"], fixture["body"], "deploy /my-app"
    )
    assert type(error) is kind and words in str(error)
    assert "<html" not in str(error) and "<title" not in str(error)  # HTML said as text


def test_secret_store_codes_become_secret_errors(marathon_platform: MarathonFactory) -> None:
    platform = marathon_platform()
    for case in load("marathon/secret_store_errors.json")["cases"]:
        if case["status"] < 300 or case["status"] == 409:
            continue  # success, or PUT's "exists" that the adapter answers with PATCH
        error = platform.client.secret_error(
            case["status"], case["body"], case["method"], "a/b/KEY"
        )
        assert isinstance(error, MarathonSecretError), case
        said = str(error)
        assert f"(HTTP {case['status']});" in said and "marathon.json" not in said, said
        assert "None" not in said


def test_the_double_answers_with_the_real_shapes(marathon_server: MarathonDouble) -> None:
    url = marathon_server.url
    definition = {
        "container": {"type": "DOCKER", "docker": {"image": "nginx:1.11"}},
        "instances": 2,
        "env": {"LOG_LEVEL": "info"},
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/"}],
    }
    marathon_server.deploy_seconds = 30
    put = requests.put(f"{url}/v2/apps/my-app", json=definition, timeout=5)
    real_put = load("marathon/put_app_200.json")
    assert set(real_put["body"]) <= set(put.json())
    assert set(real_put["headers"]) <= set(put.headers)
    deployments = requests.get(f"{url}/v2/deployments", timeout=5).json()
    [real_deployment] = load("marathon/deployments.json")["body"]
    fields = [
        "id",
        "version",
        "affectedApps",
        "affectedPods",
        "steps[].actions[].action",
        "steps[].actions[].app",
        "currentActions[].action",
        "currentStep",
        "totalSteps",
    ]
    assert missing_fields(real_deployment, deployments[0], fields) == []

    locked = requests.put(f"{url}/v2/apps/my-app", json=definition, timeout=5)
    real_locked = load("marathon/error_409_locked.json")
    assert locked.status_code == real_locked["status"]
    assert missing_fields(real_locked["body"], locked.json(), ["message", "deployments[].id"]) == []
    invalid = requests.put(f"{url}/v2/apps/other", json=dict(definition, cpus=0), timeout=5)
    real_invalid = load("marathon/error_422_invalid.json")
    assert invalid.status_code == 422
    detail = ["message", "details[].path", "details[].errors"]
    assert missing_fields(real_invalid["body"], invalid.json(), detail) == []
    gone = requests.get(f"{url}/v2/apps/nope", timeout=5)
    assert gone.status_code == 404 and gone.json() == {"message": "App '/nope' does not exist"}

    marathon_server.deploy_seconds = 0.1
    marathon_server.fail_next("GET", "/v2/info", 503)
    unavailable = requests.get(f"{url}/v2/info", timeout=5)
    real_unavailable = load("marathon/error_503.json")
    assert unavailable.status_code == 503
    assert unavailable.headers["Content-Type"].startswith("text/html")
    assert "<title>Error 503 Could not determine the current leader</title>" in unavailable.text
    assert (
        "<title>Error 503 Could not determine the current leader</title>"
        in (real_unavailable["body"])
    )
    marathon_server.max_running_deployments = 0
    busy = requests.put(f"{url}/v2/apps/third", json=definition, timeout=5)
    real_busy = load("marathon/error_403_deployments.json")["body"]["message"]
    assert busy.status_code == 403
    assert busy.json()["message"] == real_busy.replace("(100)", "(0)")
    marathon_server.max_running_deployments = None
    settle(marathon_server)

    app = requests.get(
        f"{url}/v2/apps/my-app",
        params={"embed": ["app.tasks", "app.counts", "app.deployments", "app.lastTaskFailure"]},
        timeout=5,
    ).json()["app"]
    app_fields = [
        "id",
        "version",
        "versionInfo.lastConfigChangeAt",
        "versionInfo.lastScalingAt",
        "instances",
        "labels",
        "env",
        "container.docker.image",
        "healthChecks[].protocol",
        "tasksRunning",
        "tasksHealthy",
        "tasksStaged",
        "tasksUnhealthy",
        "deployments",
        "tasks[].id",
        "tasks[].state",
        "tasks[].version",
        "tasks[].healthCheckResults[].alive",
        "tasks[].stagedAt",
        "tasks[].startedAt",
    ]
    assert missing_fields(real_app(), app, app_fields) == []
    tasks = requests.get(f"{url}/v2/apps/my-app/tasks", timeout=5).json()
    real_tasks = load("marathon/app_tasks.json")["body"]
    assert missing_fields(real_tasks, tasks, ["tasks[].id", "tasks[].appId", "tasks[].state"]) == []


def test_the_doubles_secret_store_answers_with_the_documented_codes(
    marathon_server: MarathonDouble,
) -> None:
    base = f"{marathon_server.url}/secrets/v1/secret/default/a/b/KEY"
    answers = [
        requests.put(base, json={"value": "v"}, timeout=5).status_code,
        requests.put(base, json={"value": "v"}, timeout=5).status_code,
        requests.patch(base, json={"value": "w"}, timeout=5).status_code,
    ]
    marathon_server.secret_permissions = ["other/"]
    forbidden = requests.patch(base, json={"value": "x"}, timeout=5)
    marathon_server.secret_permissions = None
    missing = requests.patch(base + "-nope", json={"value": "x"}, timeout=5)
    marathon_server.token = "t"
    unauthorized = requests.put(base, json={"value": "x"}, timeout=5)

    documented = {
        (c["method"], c["status"]) for c in load("marathon/secret_store_errors.json")["cases"]
    }
    assert answers == [201, 409, 204]
    assert ("PUT", 201) in documented and ("PUT", 409) in documented
    assert ("PATCH", forbidden.status_code) in documented and forbidden.status_code == 403
    assert ("PATCH", missing.status_code) in documented and missing.status_code == 404
    assert unauthorized.status_code == load("marathon/error_401_admin_router.json")["status"]
    assert unauthorized.headers["WWW-Authenticate"] == "oauthjwt"
    assert marathon_server.secret_values[("default", "a/b/KEY")] == "w"
