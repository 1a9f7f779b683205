"""Config files for Marathon apps: served by `configcenter serve`, fetched by the Mesos fetcher.

A real serve process hands out the deploy repo's files by signed, content-addressed
URLs; the Marathon double downloads each `fetch` URI into the task's sandbox when a
task launches, as the Mesos fetcher does, so a task that could not get its files
never starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.helpers import free_port
from tests.support.marathon_double import MarathonDouble
from tests.support.rollout_fixtures import make_rollout_world, set_service
from tests.support.serve_fixtures import ServeProcess, ShopWorld, http

APP = "/shop/dev/worker"
FILES_KEY = "files-key-for-tests-3b1f"
TEMPLATE_YAML = (
    "outputs: [app.env, marathon.json, config/app.yaml]\nenv: [LOG_LEVEL, NEVER_READY]\n"
)
APP_YAML_J2 = "service: {{ service }}\nlog_level: {{ LOG_LEVEL }}\n"


def sandbox(server: MarathonDouble) -> dict[str, bytes]:
    """What the fetcher put into the sandbox of the app's newest task."""
    app = server.app_json(APP)
    newest = max(app["tasks"], key=lambda t: t["id"])
    return server.sandboxes[newest["id"]]


def test_a_marathon_task_starts_with_its_release_files_and_a_rollback_points_back(
    tmp_path: Path, marathon_server: MarathonDouble, serve_processes: list[ServeProcess]
) -> None:
    world = make_rollout_world(
        tmp_path / "world", kind="marathon", marathon_url=marathon_server.url, services=("worker",)
    )
    world.env["CC_FILES_KEY"] = FILES_KEY
    config = world.config
    config.write(
        "configcenter.yaml",
        config.read("configcenter.yaml") + 'serve:\n  files_key: {secret: "env:CC_FILES_KEY"}\n',
    )
    config.write("templates/worker/template.yaml", TEMPLATE_YAML)
    config.write("templates/worker/config/app.yaml.j2", APP_YAML_J2)
    config.commit("worker 1.1.0 renders config/app.yaml; serve hands out files")
    config.tag("worker/1.1.0")
    serve_world = ShopWorld(
        world.root,
        config,
        world.root / "unused-origin.git",
        world.deploy,
        f"sqlite:///{world.root / 'serve-runs.sqlite3'}",
        {
            "CC_FILES_KEY": FILES_KEY,
            "XDG_STATE_HOME": str(world.root / "serve-state"),
            "XDG_CACHE_HOME": str(world.root / "serve-cache"),
        },
    )
    serve = ServeProcess(serve_world)
    serve_processes.append(serve)
    serve.wait_ready()

    config.write(
        "environments/dev/worker.yaml",
        config.read("environments/dev/worker.yaml").replace("template: 1.0.0", "template: 1.1.0"),
    )
    config.commit("dev: worker 1.1.0")
    config.write(
        "configcenter.yaml",
        config.read("configcenter.yaml").replace(
            f'secrets_url: "{marathon_server.url}/secrets/v1"}}',
            f'secrets_url: "{marathon_server.url}/secrets/v1",\n'
            f'          files_url: "{serve.url}", files_key: {{secret: "env:CC_FILES_KEY"}}}}',
        ),
    )
    config.commit("mesos: files from serve")
    first = world.cc("apply", "dev")
    assert first.code == 0, first.output

    app = marathon_server.app_json(APP)
    [entry] = app["fetch"]
    assert entry["destPath"] == "config/app.yaml" and entry["uri"].startswith(serve.url + "/files/")
    assert (entry["extract"], entry["executable"], entry["cache"]) == (False, False, False)
    assert sandbox(marathon_server) == {"config/app.yaml": b"service: worker\nlog_level: info\n"}
    assert FILES_KEY not in json.dumps(app)
    first_uri = entry["uri"]

    set_service(world, "worker", LOG_LEVEL="debug")
    world.ok("apply", "dev")
    [changed] = marathon_server.app_json(APP)["fetch"]
    assert changed["uri"] != first_uri
    assert sandbox(marathon_server) == {"config/app.yaml": b"service: worker\nlog_level: debug\n"}

    back = world.cc("rollback", "dev", "worker")
    assert back.code == 0, back.output
    [restored] = marathon_server.app_json(APP)["fetch"]
    assert restored["uri"] == first_uri
    assert sandbox(marathon_server) == {"config/app.yaml": b"service: worker\nlog_level: info\n"}

    # The URL is the token: a changed signature, or another file under it, is refused.
    parts = urlsplit(first_uri)
    forged = f"{serve.url}{parts.path}?sig={'0' * 64}"
    assert http("GET", forged).status == 403
    other = first_uri.replace("config/app.yaml", "config/other.yaml")
    assert http("GET", other).status == 403
    assert http("GET", first_uri).status == 200


def test_a_task_that_cannot_fetch_its_files_never_starts(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    """No serve at files_url: the fetch fails, the task fails, the rollout fails."""
    world = make_rollout_world(
        tmp_path / "world",
        kind="marathon",
        marathon_url=marathon_server.url,
        services=("worker",),
        timeout="3s",
    )
    world.env["CC_FILES_KEY"] = FILES_KEY
    config = world.config
    config.write("templates/worker/template.yaml", TEMPLATE_YAML)
    config.write("templates/worker/config/app.yaml.j2", APP_YAML_J2)
    config.commit("worker 1.1.0")
    config.tag("worker/1.1.0")
    port = free_port()  # nothing listens there
    config.write(
        "configcenter.yaml",
        config.read("configcenter.yaml").replace(
            f'secrets_url: "{marathon_server.url}/secrets/v1"}}',
            f'secrets_url: "{marathon_server.url}/secrets/v1",\n'
            f'          files_url: "http://127.0.0.1:{port}", '
            'files_key: {secret: "env:CC_FILES_KEY"}}',
        ),
    )
    config.write(
        "environments/dev/worker.yaml",
        config.read("environments/dev/worker.yaml").replace("template: 1.0.0", "template: 1.1.0"),
    )
    config.commit("dev: worker 1.1.0, files from nowhere")

    result = world.cc("apply", "dev")

    assert result.code == 1, result.output
    assert "last task failure: Failed to fetch all URIs" in result.output
    failure = marathon_server.apps[APP].last_task_failure
    assert failure is not None and failure["state"] == "TASK_FAILED"
    assert failure["message"].startswith("Failed to fetch all URIs")


def test_validate_says_when_a_marathon_service_has_files_but_no_files_url(
    tmp_path: Path, marathon_server: MarathonDouble
) -> None:
    world = make_rollout_world(
        tmp_path / "world", kind="marathon", marathon_url=marathon_server.url, services=("worker",)
    )
    config = world.config
    config.write("templates/worker/template.yaml", TEMPLATE_YAML)
    config.write("templates/worker/config/app.yaml.j2", APP_YAML_J2)
    config.commit("worker 1.1.0")
    config.tag("worker/1.1.0")
    config.write(
        "environments/dev/worker.yaml",
        config.read("environments/dev/worker.yaml").replace("template: 1.0.0", "template: 1.1.0"),
    )
    config.commit("dev: worker 1.1.0")

    result = world.cc("validate")

    assert result.code != 0, result.output
    assert "environments/dev/" in result.output
    assert "worker renders config files (config/app.yaml) for Marathon platform 'mesos'" in (
        result.output
    )
    assert "files_url" in result.output and "Traceback" not in result.output
