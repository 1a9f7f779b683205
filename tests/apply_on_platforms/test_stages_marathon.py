"""HTTP verification on Marathon: configcenter GETs the release's tasks itself.

Marathon has no Jobs, so `verify: {http: {path, expect_status, timeout}}` is how a
release is verified there. The Marathon double reports each task's fixed host port
(`portDefinitions[].port`); two real HTTP servers on 127.0.0.1 play the tasks: one
answers 200, one 503. A release whose app points at the 503 one deploys healthy,
fails verification and is rolled back to the last good version, exit 3.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from configcenter.usecases.apply import ApplyOptions, apply_env
from tests.support.e2e_fixtures import World
from tests.support.loopback_http import LoopbackServer
from tests.support.marathon_double import MarathonDouble
from tests.support.rollout_fixtures import make_rollout_world, set_service, workspace

APP = "/shop/dev/worker"

WORKER_TEMPLATE = {
    "template.yaml": """\
outputs: [app.env, marathon.json]
env: [LOG_LEVEL, NEVER_READY]
verify:
  http: {path: /healthz, expect_status: 200, timeout: 2s}
""",
    "marathon.json.j2": """\
{"id": "{{ service }}", "cpus": 0.1, "mem": 64,
 "container": {"type": "DOCKER", "docker": {"image": "{{ image }}"}},
 "portDefinitions": [{"port": {{ APP_PORT }}, "protocol": "tcp"}],
 "requirePorts": true,
 "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0}],
 "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1}}
""",
}


def task_server(status: int, seen: list[str]) -> LoopbackServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = b"ok\n" if status == 200 else b"orders table missing\n"
            self.send_response(status if self.path == "/healthz" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = LoopbackServer(f"task-{status}")
    server.start(Handler)
    return server


@pytest.fixture
def tasks() -> Iterator[tuple[int, int, list[str]]]:
    seen: list[str] = []
    good, bad = task_server(200, seen), task_server(503, seen)
    assert good.port is not None and bad.port is not None
    yield good.port, bad.port, seen
    good.stop()
    bad.stop()


def worker_world(tmp_path: Path, server: MarathonDouble, port: int) -> World:
    world = make_rollout_world(
        tmp_path / "world",
        kind="marathon",
        marathon_url=server.url,
        services=("worker",),
        timeout="6s",
    )
    config = world.config
    config.release("worker", "2.0.0", WORKER_TEMPLATE)
    set_worker(world, port, LOG_LEVEL="info")
    return world


def set_worker(world: World, port: int, **values: str) -> None:
    set_service(world, "worker", APP_PORT=str(port), **values)
    rel = "environments/dev/worker.yaml"
    text = world.config.read(rel).replace("template: 1.0.0", "template: 2.0.0")
    # APP_PORT is a number in the JSON: write it unquoted.
    world.config.write(rel, text.replace(f'APP_PORT: "{port}"', f"APP_PORT: {port}"))
    world.config.commit("worker on 2.0.0")


def test_http_verification_fails_after_a_healthy_rollout_and_rolls_back(
    tmp_path: Path,
    marathon_server: MarathonDouble,
    tasks: tuple[int, int, list[str]],
    rollout_xdg: Path,
) -> None:
    good_port, bad_port, seen = tasks
    world = worker_world(tmp_path, marathon_server, good_port)
    plan = world.ok("plan", "dev").output
    assert "verify http GET /healthz -> 200 (within 2s)" in plan

    first = apply_env(workspace(world), "dev", ApplyOptions())
    assert [(r.service, r.outcome) for r in first.results] == [("worker", "healthy")]
    assert "/healthz" in seen, "configcenter itself asked the task"
    good = world.state("dev")["services"]["worker"]["release"]["id"]
    good_app = marathon_server.app_json(APP)
    assert good_app["portDefinitions"][0]["port"] == good_port

    set_worker(world, bad_port, LOG_LEVEL="debug")
    failed = apply_env(workspace(world), "dev", ApplyOptions())

    assert failed.exit_code == 3
    [result] = failed.results
    assert result.outcome == "rolled_back"
    assert result.reason.startswith("VerificationFailed: verify http GET /healthz -> 200")
    assert f"127.0.0.1:{bad_port} answered HTTP 503" in result.reason
    record = world.state("dev")["services"]["worker"]
    assert record["release"]["id"] == good and record["release"]["outcome"] == "healthy"
    assert record["last_failed"]["outcome"] == "rolled_back"
    assert "answered HTTP 503" in record["last_failed"]["reason"]
    # Marathon runs the last good definition again: its port and its config.
    app = marathon_server.app_json(APP)
    assert app["portDefinitions"][0]["port"] == good_port
    assert app["env"]["LOG_LEVEL"] == "info"
    assert app["labels"]["configcenter.io/release"] == good
    history = world.ok("history", "dev", "--service", "worker").output
    assert "answered HTTP 503" in history


def test_http_verification_cannot_be_asked_of_kubernetes(tmp_path: Path) -> None:
    """verify.http on a platform without task endpoints fails the release before any change."""
    from configcenter.core.errors import UserError
    from configcenter.core.stages import HttpCheck, ReleaseStages
    from configcenter.usecases.stages import check_platform

    with pytest.raises(UserError, match=r"verify\.http checks need a platform"):
        check_platform(ReleaseStages(http=HttpCheck("/healthz")), "kubernetes", "web")
    with pytest.raises(UserError, match="need a platform that runs Jobs"):
        check_platform(ReleaseStages(verify=("smoke.yaml",)), "marathon", "web")


def test_verification_jobs_on_marathon_are_refused_before_anything_is_committed(
    tmp_path: Path, marathon_server: MarathonDouble, tasks: tuple[int, int, list[str]]
) -> None:
    good_port, _bad, _seen = tasks
    world = worker_world(tmp_path, marathon_server, good_port)
    files = dict(WORKER_TEMPLATE)
    files["template.yaml"] = (
        "outputs: [app.env, marathon.json, smoke.yaml]\nenv: [LOG_LEVEL, NEVER_READY]\n"
        "verify: [smoke.yaml]\n"
    )
    files["smoke.yaml.j2"] = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: smoke}\n"
    world.config.release("worker", "3.0.0", files)
    rel = "environments/dev/worker.yaml"
    world.config.write(rel, world.config.read(rel).replace("template: 2.0.0", "template: 3.0.0"))
    world.config.commit("worker 3.0.0: a verification Job")

    refused = world.cc("apply", "dev")

    assert refused.code != 0
    assert "need a platform that runs Jobs" in refused.output
    assert "nothing was committed" in refused.output
    assert "Traceback" not in refused.output
    assert world.head() is None
    assert marathon_server.apps == {}
