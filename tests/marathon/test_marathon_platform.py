"""MarathonPlatform against the Marathon REST double: apply, wait, rollback, observe, delete.

What every platform does is the contract suite in tests/platform (it runs on this
double too); this file keeps what is Marathon's own.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from configcenter.adapters.marathon_client import (
    LABEL_DIGEST,
    LABEL_ENV,
    LABEL_RELEASE,
    LABEL_SERVICE,
    MarathonAuthError,
    MarathonBusyError,
    MarathonConflictError,
    MarathonSecretError,
    MarathonSettingsError,
    MarathonUnavailableError,
    MarathonValidationError,
)
from configcenter.ports.platform import Deployable, PlatformError, RolloutStatus, SecretsRotated
from tests.support.helpers import free_port
from tests.support.marathon_double import MarathonDouble
from tests.support.marathon_fixtures import MarathonFactory

HEALTHY_IMAGE = "127.0.0.1:5000/shop/api@sha256:" + "a" * 64
BROKEN_IMAGE = "127.0.0.1:5000/shop/api:never-ready"
APP_TEMPLATE: dict[str, Any] = {
    "id": "api",
    "cpus": 0.1,
    "mem": 64,
    "container": {"type": "DOCKER", "docker": {"image": "placeholder"}},
    "env": {"STATIC": "from-template"},
    "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0}],
    "labels": {"team": "shop"},
    "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1},
}


def release(
    release_id: str,
    *,
    service: str = "api",
    env: str = "dev",
    image: str = HEALTHY_IMAGE,
    values: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    replicas: int = 2,
    app: dict[str, Any] | None = None,
) -> Deployable:
    values = {"LOG_LEVEL": "info"} if values is None else values
    return Deployable(
        env=env,
        service=service,
        release_id=release_id,
        image=image,
        config_digest=f"sha256:{release_id}-" + json.dumps(values, sort_keys=True),
        files={"marathon.json": json.dumps(app or APP_TEMPLATE).encode()},
        values=values,
        secrets=secrets or {},
        replicas=replicas,
    )


def test_new_app_becomes_healthy(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    platform = marathon_platform()
    seen: list[RolloutStatus] = []
    r1 = release("r1")

    platform.apply(r1)
    status = platform.wait(r1, timeout=10, progress=seen.append)

    assert status.state == "healthy", status
    assert (status.desired, status.ready, status.available) == (2, 2, 2)
    assert seen[0].state == "progressing" and seen[-1] == status
    app = marathon_server.app_json("/shop/dev/api")
    assert app["id"] == "/shop/dev/api"
    assert app["container"]["docker"]["image"] == HEALTHY_IMAGE
    assert app["env"] == {"STATIC": "from-template", "LOG_LEVEL": "info"}
    assert app["labels"] == {
        "team": "shop",
        LABEL_ENV: "dev",
        LABEL_SERVICE: "api",
        LABEL_RELEASE: "r1",
        LABEL_DIGEST: r1.config_digest,
    }
    assert app["instances"] == app["tasksRunning"] == app["tasksHealthy"] == 2
    assert {t["version"] for t in app["tasks"]} == {app["version"]}
    assert marathon_server.deployments == {}


def test_value_change_rolls_a_new_version(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    platform = marathon_platform()
    r1, r2 = release("r1"), release("r2", values={"LOG_LEVEL": "debug"})
    platform.apply(r1)
    assert platform.wait(r1, timeout=10).state == "healthy"
    before = marathon_server.app_json("/shop/dev/api")

    platform.apply(r2)
    status = platform.wait(r2, timeout=10)

    after = marathon_server.app_json("/shop/dev/api")
    assert status.state == "healthy", status
    assert after["env"]["LOG_LEVEL"] == "debug"
    assert after["versionInfo"]["lastConfigChangeAt"] > before["versionInfo"]["lastConfigChangeAt"]
    assert {t["version"] for t in after["tasks"]} == {after["version"]}
    versions = platform.app_versions("api")
    assert [v.release_id for v in versions] == ["r2", "r1"]
    found = platform.find_version("api", release_id="r1")
    assert found is not None and found.version == before["version"]
    assert found.config_digest == r1.config_digest and found.image == HEALTHY_IMAGE


def test_failing_image_fails_and_reapplying_the_last_good_release_heals(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    platform = marathon_platform()
    good, bad = release("r1"), release("r2", image=BROKEN_IMAGE)
    platform.apply(good)
    assert platform.wait(good, timeout=10).state == "healthy"

    platform.apply(bad)
    failed = platform.wait(bad, timeout=1.0)

    assert failed.state == "failed"
    assert failed.reason == "ProgressDeadlineExceeded"
    assert "not healthy after 1s" in failed.message and "0 healthy" in failed.message
    stuck = marathon_server.app_json("/shop/dev/api")
    assert stuck["deployments"], "Marathon keeps trying the broken rollout"
    assert stuck["tasksHealthy"] == 2, "the old tasks keep serving"

    # The use case rolls back by re-applying the last good release: no force needed,
    # the adapter knows the lock belongs to the rollout it reported failed.
    platform.apply(good)
    healed = platform.wait(good, timeout=10)

    assert healed.state == "healthy", healed
    app = marathon_server.app_json("/shop/dev/api")
    assert app["labels"][LABEL_RELEASE] == "r1"
    assert app["container"]["docker"]["image"] == HEALTHY_IMAGE
    assert app["tasksHealthy"] == app["tasksRunning"] == 2
    assert {t["version"] for t in app["tasks"]} == {app["version"]}
    assert marathon_server.deployments == {}


def test_rolling_back_removes_what_the_failed_release_added(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    """Marathon's PUT merges unless `partialUpdate=false`: a rollback must replace the app."""
    platform = marathon_platform()
    good = release("r1", app={k: v for k, v in APP_TEMPLATE.items() if k != "healthChecks"})
    added = dict(
        APP_TEMPLATE,
        constraints=[["hostname", "UNIQUE"]],
        env={"STATIC": "from-template", "EXTRA": "only-in-r2"},
        fetch=[{"uri": "https://example.com/r2.tgz"}],
    )
    bad = release("r2", image=BROKEN_IMAGE, app=added, values={"LOG_LEVEL": "debug"})
    platform.apply(good)
    assert platform.wait(good, timeout=10).state == "healthy"
    platform.apply(bad)
    assert platform.wait(bad, timeout=0.5).state == "failed"

    platform.apply(good)
    healed = platform.wait(good, timeout=10)

    assert healed.state == "healthy", healed
    app = marathon_server.app_json("/shop/dev/api")
    assert app["labels"][LABEL_RELEASE] == "r1"
    assert app["healthChecks"] == [] and app["constraints"] == [] and "fetch" not in app
    assert app["env"] == {"STATIC": "from-template", "LOG_LEVEL": "info"}
    puts = [r for r in marathon_server.requests if r.method == "PUT" and r.path.startswith("/v2")]
    assert puts and all("partialUpdate=false" in r.query for r in puts)


def test_a_field_added_by_hand_is_drift_that_the_next_apply_removes(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    platform = marathon_platform()
    r1 = release("r1")
    platform.apply(r1)
    assert platform.wait(r1, timeout=10).state == "healthy"
    url = f"{marathon_server.url}/v2/apps/shop/dev/api"
    hand = requests.put(url, json={"constraints": [["hostname", "UNIQUE"]]}, timeout=5)
    assert hand.status_code == 200
    assert platform.wait(r1, timeout=10).state == "healthy"

    platform.apply(r1)
    assert platform.wait(r1, timeout=10).state == "healthy"

    app = marathon_server.app_json("/shop/dev/api")
    assert app["constraints"] == []
    assert app["env"] == {"STATIC": "from-template", "LOG_LEVEL": "info"}


def test_fields_added_or_changed_by_hand_are_drift_reconcile_names(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    """`reconcile` said "no drift" for an env var, a constraint or a health check added
    to the app by hand (only image, instances and the release labels were compared)."""
    platform = marathon_platform()
    r1 = release("r1")
    platform.apply(r1)
    assert platform.wait(r1, timeout=10).state == "healthy"
    assert platform.diff(r1, platform.observe()["api"]).drifts == ()
    url = f"{marathon_server.url}/v2/apps/shop/dev/api"
    app = marathon_server.app_json("/shop/dev/api")
    hand = {
        "constraints": [["hostname", "UNIQUE"]],
        "env": {**app["env"], "EXTRA": "1", "LOG_LEVEL": "debug"},
        "labels": {**app["labels"], "owner": "someone"},
    }
    assert requests.put(url, json=hand, timeout=5).status_code == 200
    assert platform.wait(r1, timeout=10).state == "healthy"

    drifts = platform.diff(r1, platform.observe()["api"]).drifts

    found = {d.field: (d.desired, d.live, d.kind) for d in drifts}
    assert found == {
        "app constraints": (None, '[["hostname", "UNIQUE"]]', "changed"),
        "app env.EXTRA": (None, '"1"', "changed"),
        "app env.LOG_LEVEL": ('"info"', '"debug"', "changed"),
        "app labels.owner": (None, '"someone"', "changed"),
    }, found


def test_locked_app_gives_a_clear_error_and_force_overrides(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    marathon_server.deploy_seconds = 30
    platform = marathon_platform()
    r1, r2 = release("r1"), release("r2", values={"LOG_LEVEL": "warn"})
    platform.apply(r1)

    with pytest.raises(MarathonConflictError) as caught:
        platform.apply(r2)

    running = list(marathon_server.deployments)
    assert caught.value.deployment_ids == running
    message = str(caught.value)
    assert "locked" in message and running[0] in message and "force" in message
    assert isinstance(caught.value, PlatformError)

    marathon_server.deploy_seconds = 0.2
    platform.apply(r2, force=True)
    status = platform.wait(r2, timeout=10)
    assert status.state == "healthy", status
    assert marathon_server.app_json("/shop/dev/api")["env"]["LOG_LEVEL"] == "warn"


def test_force_can_be_the_platform_default(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    marathon_server.deploy_seconds = 30
    platform = marathon_platform(force=True)
    platform.apply(release("r1"))
    marathon_server.deploy_seconds = 0.2
    r2 = release("r2", values={"LOG_LEVEL": "warn"})
    platform.apply(r2)
    assert platform.wait(r2, timeout=10).state == "healthy"


def test_validation_error_shows_marathons_message(marathon_platform: MarathonFactory) -> None:
    platform = marathon_platform()
    app = dict(APP_TEMPLATE, upgradeStrategy={"minimumHealthCapacity": 2})

    with pytest.raises(MarathonValidationError) as caught:
        platform.apply(release("r1", app=app))

    assert caught.value.marathon_message == "Object is not valid"
    assert caught.value.details == [
        {"path": "/upgradeStrategy/minimumHealthCapacity", "errors": ["is greater than 1"]}
    ]
    message = str(caught.value)
    assert "/upgradeStrategy/minimumHealthCapacity: is greater than 1" in message
    assert "marathon.json.j2" in message


def test_observe_lists_the_env_groups_apps_with_digests(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    dev, prod = marathon_platform("dev"), marathon_platform("prod")
    api, web = release("r1"), release("r7", service="web", replicas=1)
    other = release("r3", env="prod")
    for platform, deployable in ((dev, api), (dev, web), (prod, other)):
        platform.apply(deployable)
    for platform, deployable in ((dev, api), (dev, web), (prod, other)):
        assert platform.wait(deployable, timeout=10).state == "healthy"
    before = len(marathon_server.requests)

    observed = dev.observe()

    assert len(marathon_server.requests) == before + 1, "one list call"
    assert sorted(observed) == ["api", "web"]
    assert observed["api"].image == HEALTHY_IMAGE
    assert observed["api"].replicas == 2 and observed["web"].replicas == 1
    assert observed["api"].config_digest == api.config_digest
    assert observed["web"].release_id == "r7"
    assert observed["api"].objects["app"]["id"] == "/shop/dev/api"
    assert prod.observe()["api"].release_id == "r3"


def test_secrets_go_through_marathon_secrets_never_in_plain_text(
    marathon_server: MarathonDouble,
    marathon_platform: MarathonFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password, api_key = "s3cr3t-db-password", "key-from-a-file-42"
    monkeypatch.setenv("SHOP_DB_PASSWORD", password)
    key_file = tmp_path / "api-key"
    key_file.write_text(api_key + "\n")
    platform = marathon_platform()
    r1 = release(
        "r1", secrets={"DB_PASSWORD": "env:SHOP_DB_PASSWORD", "API_KEY": f"file:{key_file}"}
    )
    caplog.set_level(logging.DEBUG)

    platform.apply(r1)
    status = platform.wait(r1, timeout=10)

    assert status.state == "healthy", status
    app = marathon_server.app_json("/shop/dev/api")
    assert app["env"]["DB_PASSWORD"] == {"secret": "DB_PASSWORD"}
    assert app["env"]["API_KEY"] == {"secret": "API_KEY"}
    assert app["secrets"] == {
        "API_KEY": {"source": "shop/dev/api/1/API_KEY"},
        "DB_PASSWORD": {"source": "shop/dev/api/1/DB_PASSWORD"},
    }
    assert marathon_server.secret_values == {
        ("default", "shop/dev/api/1/API_KEY"): api_key,
        ("default", "shop/dev/api/1/DB_PASSWORD"): password,
    }
    visible = [
        json.dumps(app),
        *marathon_server.marathon_bodies(),
        caplog.text,
        json.dumps(platform.app_definition(r1)),
        repr(platform.observe()),
    ]
    for text in visible:
        assert password not in text and api_key not in text
    assert platform.secrets_match(r1, [1]) == 1, "the store holds what the refs resolve to"

    # A rotation: generation 1 keeps the values it was made with (a rollback reads them);
    # the store tells the plan they differ now, and generation 2 carries the new value.
    monkeypatch.setenv("SHOP_DB_PASSWORD", "rotated-password")
    # Only DB_PASSWORD's value changed; API_KEY, read back from the store, did not.
    assert platform.secrets_match(r1, [1]) == SecretsRotated(("env:SHOP_DB_PASSWORD",))
    platform.apply(r1)
    assert marathon_server.secret_values[("default", "shop/dev/api/1/DB_PASSWORD")] == password
    r2 = replace(release("r2", secrets=dict(r1.secrets)), secrets_generation=2)
    assert platform.secrets_match(r2, [2]) == (
        "generation 2 has no API_KEY, DB_PASSWORD in the secret store yet"
    )
    platform.apply(r2)
    assert platform.wait(r2, timeout=10).state == "healthy"
    assert marathon_server.app_json("/shop/dev/api")["secrets"]["DB_PASSWORD"] == {
        "source": "shop/dev/api/2/DB_PASSWORD"
    }
    assert marathon_server.secret_values[("default", "shop/dev/api/2/DB_PASSWORD")] == (
        "rotated-password"
    )
    assert platform.secrets_match(r2, [2, 1]) == 2
    monkeypatch.setenv("SHOP_DB_PASSWORD", password)
    assert platform.secrets_match(r2, [2, 1]) == 1, "back to generation 1's values"


def test_a_secret_under_another_key_of_an_env_output_goes_through_the_store(
    marathon_server: MarathonDouble,
    marathon_platform: MarathonFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_DB_PASSWORD", "pw-9f2c")
    platform = marathon_platform()
    base = release("r1", secrets={"DB_PASSWORD": "env:SHOP_DB_PASSWORD"})
    env_file = b"POSTGRES_PASSWORD=${secret:env:SHOP_DB_PASSWORD}\nDSN=pg://app:${secret:env:SHOP_DB_PASSWORD}@db\nMODE=fast\n"
    r1 = replace(base, files={**base.files, "app.env": env_file})
    platform.apply(r1)
    assert platform.wait(r1, timeout=10).state == "healthy"
    app = marathon_server.app_json("/shop/dev/api")
    assert app["env"]["MODE"] == "fast", ".env outputs reach the app's environment"
    for key in ("DB_PASSWORD", "POSTGRES_PASSWORD", "DSN"):
        assert app["env"][key] == {"secret": key}
    stored = marathon_server.secret_values
    assert stored[("default", "shop/dev/api/1/POSTGRES_PASSWORD")] == "pw-9f2c"
    assert stored[("default", "shop/dev/api/1/DSN")] == "pg://app:pw-9f2c@db"
    assert "pw-9f2c" not in json.dumps(app) and "${secret:" not in json.dumps(app)


def test_secret_problems_are_named_without_values(
    marathon_server: MarathonDouble,
    marathon_platform: MarathonFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    platform = marathon_platform()
    monkeypatch.delenv("SHOP_MISSING", raising=False)

    with pytest.raises(MarathonSecretError, match=r"DB_PASSWORD: .*k8s:.*env:NAME or file:"):
        platform.apply(release("r1", secrets={"DB_PASSWORD": "k8s:shop/db/password"}))
    with pytest.raises(MarathonSecretError, match="SHOP_MISSING is not set; export SHOP_MISSING"):
        platform.apply(release("r1", secrets={"DB_PASSWORD": "env:SHOP_MISSING"}))
    with pytest.raises(MarathonSecretError, match="SHOP_MISSING is not set"):
        platform.apply(release("r1", secrets={"DB_PASSWORD": "env:SHOP_MISSING"}), dry_run=True)
    assert not [r for r in marathon_server.requests if r.method == "PUT"], "nothing was deployed"

    monkeypatch.setenv("SHOP_DB_PASSWORD", "value-1234")
    no_store = marathon_platform(settings={"secrets_url": ""})
    with pytest.raises(MarathonSettingsError, match="no secrets_url; set it"):
        no_store.apply(release("r1", secrets={"DB_PASSWORD": "env:SHOP_DB_PASSWORD"}))


def test_cancelled_deployment_is_reported_as_superseded(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    platform = marathon_platform()
    good, bad = release("r1"), release("r2", image=BROKEN_IMAGE)
    platform.apply(good)
    assert platform.wait(good, timeout=10).state == "healthy"
    platform.apply(bad)
    (deployment_id,) = marathon_server.deployments
    # An operator reverts the rollout in Marathon itself (DELETE without force = rollback).
    reverted = requests.delete(f"{marathon_server.url}/v2/deployments/{deployment_id}", timeout=5)
    assert reverted.status_code == 200

    status = platform.wait(bad, timeout=10)

    assert status.state == "failed" and status.reason == "Superseded"
    assert "'r1'" in status.message


def test_delete_removes_the_app_and_its_secrets(
    marathon_server: MarathonDouble,
    marathon_platform: MarathonFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_DB_PASSWORD", "value-1234")
    platform = marathon_platform()
    r1 = release("r1", secrets={"DB_PASSWORD": "env:SHOP_DB_PASSWORD"})
    platform.apply(r1)
    assert platform.wait(r1, timeout=10).state == "healthy"

    platform.delete("api")
    platform.delete("api")  # already gone: nothing to do

    assert platform.observe() == {}
    assert marathon_server.secret_values == {}
    assert platform.app_versions("api") == []


def test_unreachable_marathon_is_named_after_retries(marathon_platform: MarathonFactory) -> None:
    port = free_port()  # nothing listens there
    platform = marathon_platform(settings={"url": f"http://127.0.0.1:{port}"}, retries=2)
    started = time.monotonic()

    with pytest.raises(MarathonUnavailableError) as caught:
        platform.observe()
    with pytest.raises(MarathonUnavailableError, match=f"Marathon at http://127.0.0.1:{port}"):
        platform.wait(release("r1"), timeout=1)

    assert f"http://127.0.0.1:{port}/v2/apps" in str(caught.value)
    assert "after 2 attempts" in str(caught.value)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": ""}, "has no 'url'"),
        ({"url": "marathon:8080"}, "is not an http"),
        ({"group": "Shop Dev"}, "not a Marathon group path"),
    ],
)
def test_bad_settings_are_named(
    marathon_platform: MarathonFactory, settings: dict[str, str], message: str
) -> None:
    with pytest.raises(MarathonSettingsError, match=message):
        marathon_platform(settings=settings)


def test_bad_rendered_files_are_named(marathon_platform: MarathonFactory) -> None:
    platform = marathon_platform()
    base = release("r1")
    no_file = Deployable(**{**base.__dict__, "files": {"app.env": b"A=1\n"}})
    broken = Deployable(**{**base.__dict__, "files": {"marathon.json": b'{\n  "cpus": ,\n}'}})

    with pytest.raises(MarathonSettingsError, match=r"add marathon\.json to outputs"):
        platform.apply(no_file)
    with pytest.raises(MarathonSettingsError, match=r"dev/api/marathon\.json:2:\d+: invalid JSON"):
        platform.apply(broken)
    with pytest.raises(MarathonSettingsError, match="cannot be a Marathon app id"):
        platform.apply(release("r1", service="Bad_Name"))


def test_apps_without_health_checks_are_healthy_when_all_tasks_run(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    # Marathon reports tasksHealthy == 0 without health checks; running tasks count instead.
    app = {k: v for k, v in APP_TEMPLATE.items() if k != "healthChecks"}
    platform = marathon_platform()
    good, bad = release("r1", app=app), release("r2", app=app, image=BROKEN_IMAGE)

    platform.apply(good)
    status = platform.wait(good, timeout=10)
    assert status.state == "healthy", status
    assert marathon_server.app_json("/shop/dev/api")["tasksHealthy"] == 0

    platform.apply(bad)
    assert platform.wait(bad, timeout=0.6).state == "failed"


def test_importing_the_adapter_leaves_heavy_clients_unloaded() -> None:
    import subprocess
    import sys

    code = (
        "import sys, configcenter.adapters.marathon, configcenter.adapters.secrets;"
        "print(sorted(m for m in ('marathon', 'requests') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_put_answered_503_after_it_took_effect_follows_its_own_deployment(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    """A leader proxy timing out answers 503 although the deployment started: no 409."""
    platform = marathon_platform()
    r1, r2 = release("r1"), release("r2", values={"LOG_LEVEL": "debug"})
    platform.apply(r1)
    assert platform.wait(r1, timeout=10).state == "healthy"
    marathon_server.deploy_seconds = 1.0
    marathon_server.fail_next("PUT", "/v2/apps", 503, after_effect=True)

    platform.apply(r2)
    status = platform.wait(r2, timeout=10)

    assert status.state == "healthy", status
    puts = [r for r in marathon_server.requests if r.method == "PUT" and r.path.startswith("/v2")]
    assert len(puts) == 2, "one PUT for r1, one for r2: the 503'd one was not repeated"
    assert marathon_server.app_json("/shop/dev/api")["labels"][LABEL_RELEASE] == "r2"


def test_a_put_answered_503_before_it_took_effect_is_repeated(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    platform = marathon_platform()
    r1 = release("r1")
    marathon_server.fail_next("PUT", "/v2/apps", 503, times=2)

    platform.apply(r1)

    assert platform.wait(r1, timeout=10).state == "healthy"
    puts = [r for r in marathon_server.requests if r.method == "PUT" and r.path.startswith("/v2")]
    assert len(puts) == 3


def test_403_is_told_apart_too_many_deployments_or_permission(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    platform = marathon_platform()
    marathon_server.deploy_seconds = 30
    other = release("r1", service="web")
    platform.apply(other)
    marathon_server.max_running_deployments = 1

    with pytest.raises(MarathonBusyError) as busy:
        platform.apply(release("r1"))
    assert "Max number (1) of running deployments is achieved" in str(busy.value)
    assert "token" not in str(busy.value) and "/shop/dev/api" not in marathon_server.apps

    marathon_server.max_running_deployments = None
    marathon_server.token = "the-right-token"
    with pytest.raises(MarathonAuthError, match="HTTP 401") as unauthorized:
        platform.apply(release("r1"))
    assert "platforms.mesos.token" in str(unauthorized.value)


def test_secret_store_refusals_name_the_store_not_the_template(
    marathon_server: MarathonDouble,
    marathon_platform: MarathonFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("API_DB_PASSWORD", "s3cret-value-42")
    platform = marathon_platform()
    marathon_server.secret_permissions = ["shop/prod/"]
    r1 = release("r1", secrets={"DB_PASSWORD": "env:API_DB_PASSWORD"})

    with pytest.raises(MarathonSecretError) as refused:
        platform.apply(r1)

    message = str(refused.value)
    assert "HTTP 403" in message and "dcos:secrets:default:shop/dev/api/" in message
    assert "marathon.json" not in message and "s3cret-value-42" not in message
    assert "/shop/dev/api" not in marathon_server.apps


def test_a_timeout_names_the_last_task_failure(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    platform = marathon_platform()
    good, bad = release("r1"), release("r2", image=BROKEN_IMAGE)
    platform.apply(good)
    assert platform.wait(good, timeout=10).state == "healthy"
    platform.apply(bad)

    failed = platform.wait(bad, timeout=1.0)

    assert failed.state == "failed"
    assert "last task failure: Task was killed since health check failed" in failed.message
    app = requests.get(
        f"{marathon_server.url}/v2/apps/shop/dev/api",
        params={"embed": "app.lastTaskFailure"},
        timeout=5,
    ).json()["app"]
    assert app["lastTaskFailure"]["state"] == "TASK_KILLED"
    assert app["lastTaskFailure"]["version"] == app["version"]


def test_config_files_need_files_url_and_never_carry_secrets(
    marathon_server: MarathonDouble,
    marathon_platform: MarathonFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CC_TEST_FILES_KEY", "k3y-for-files")
    with_files = replace(
        release("r1"),
        files={
            "marathon.json": json.dumps(APP_TEMPLATE).encode(),
            "app.env": b"LOG_LEVEL=info\n",
            "config/app.yaml": b"log_level: info\n",
        },
    )
    with pytest.raises(MarathonSettingsError, match=r"config files \(config/app.yaml\)"):
        marathon_platform().apply(with_files)
    assert "/shop/dev/api" not in marathon_server.apps

    platform = marathon_platform(
        settings={"files_url": "https://cc.example.com", "files_key": "env:CC_TEST_FILES_KEY"}
    )
    fetch = platform.app_definition(with_files)["fetch"]
    assert [f["destPath"] for f in fetch] == ["config/app.yaml"]
    assert fetch[0]["uri"].startswith("https://cc.example.com/files/dev/")
    secret_file = replace(
        with_files,
        files={**with_files.files, "config/app.yaml": b"password: ${secret:env:X}\n"},
    )
    with pytest.raises(MarathonSecretError, match=r"app\.yaml contains a secret placeholder"):
        platform.app_definition(secret_file)


def test_readiness_checks_hold_the_rollout_until_the_tasks_are_ready(
    marathon_server: MarathonDouble, marathon_platform: MarathonFactory
) -> None:
    """Without health checks, a running task is not done: the deployment waits for
    its readiness check, and the adapter waits for the deployment."""
    platform = marathon_platform()
    ready_app = {k: v for k, v in APP_TEMPLATE.items() if k != "healthChecks"}
    ready_app["readinessChecks"] = [{"name": "readiness", "protocol": "HTTP", "path": "/ready"}]
    good = release("r1", app=ready_app)
    bad = release("r2", app=ready_app, image=BROKEN_IMAGE)
    platform.apply(good)
    assert platform.wait(good, timeout=10).state == "healthy"

    platform.apply(bad)
    failed = platform.wait(bad, timeout=1.0)

    assert failed.state == "failed" and "2/2 tasks of the new config running" in failed.message
    [deployment] = requests.get(f"{marathon_server.url}/v2/deployments", timeout=5).json()
    results = [r for a in deployment["currentActions"] for r in a["readinessCheckResults"]]
    assert results and not any(r["ready"] for r in results)
    assert {r["lastResponse"]["status"] for r in results} == {503}


def test_old_secret_generations_are_collected_once_a_release_is_healthy(
    marathon_server: MarathonDouble,
    marathon_platform: MarathonFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    platform = marathon_platform()
    secrets = {"DB_PASSWORD": "env:CC_GEN_PASSWORD", "API_KEY": "env:CC_GEN_KEY"}
    monkeypatch.setenv("CC_GEN_KEY", "k3y")
    monkeypatch.setenv("CC_GEN_PASSWORD", "w3b")
    web = replace(release("w1", service="web", secrets=secrets), secrets_generation=1)
    platform.apply(web)
    assert platform.wait(web, timeout=10).state == "healthy"
    for generation in range(1, 9):
        monkeypatch.setenv("CC_GEN_PASSWORD", f"pa55-{generation}")
        item = replace(release(f"r{generation}", secrets=secrets), secrets_generation=generation)
        platform.apply(item)
        assert platform.wait(item, timeout=10).state == "healthy"
        platform.prune(item)

    def stored(service: str) -> list[tuple[int, str]]:
        prefix = f"shop/dev/{service}/"
        return sorted(
            (int(path.removeprefix(prefix).split("/")[0]), path.rsplit("/", 1)[1])
            for _, path in marathon_server.secret_values
            if path.startswith(prefix)
        )

    # The newest five generations stay (a rollback finds its own values); older ones go.
    assert stored("api") == [(g, k) for g in range(4, 9) for k in ("API_KEY", "DB_PASSWORD")]
    assert stored("web") == [(1, "API_KEY"), (1, "DB_PASSWORD")], "another app's are its own"

    # A rollback to a kept generation needs no value: it reads what that generation holds.
    monkeypatch.delenv("CC_GEN_PASSWORD")
    back = replace(release("r4", secrets=secrets), secrets_generation=4)
    platform.apply(back)
    assert platform.wait(back, timeout=10).state == "healthy"
    platform.prune(back)
    sources = marathon_server.app_json("/shop/dev/api")["secrets"]
    assert sources["DB_PASSWORD"]["source"] == "shop/dev/api/4/DB_PASSWORD"
    assert marathon_server.secret_values[("default", "shop/dev/api/4/DB_PASSWORD")] == "pa55-4"
    assert stored("api") == [(g, k) for g in range(4, 9) for k in ("API_KEY", "DB_PASSWORD")]

    # A service that leaves takes every generation it had with it, and nothing else.
    platform.delete("api")
    assert stored("api") == [] and len(stored("web")) == 2
