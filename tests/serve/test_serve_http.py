"""`configcenter serve` over real HTTP: webhooks, queue, schedule, API, metrics, auth."""

from __future__ import annotations

import json
import random
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.serve.conftest import Console, Served, start_served
from tests.support.helpers import poll
from tests.support.serve_fixtures import ServeProcess, http


def test_push_webhook_with_valid_token_starts_exactly_one_run(served: Served) -> None:
    delivery = served.push_change(
        "environments/dev/api.yaml",
        "template: 1.0.0\nimage: {ref: registry.test/shop/api:1.1}\nreplicas: 2\n",
        "api 1.1 in dev",
    )
    status, body = delivery.post(served.url + "/hooks/gitlab")
    assert status == 202, body
    assert json.loads(body)["accepted"] == 1
    done = poll(served.settled, 120, "the push job to finish")
    [job] = done["jobs"]
    assert (job["source"], job["kind"], job["state"]) == ("gitlab", "push", "done"), job
    runs = served.runs(kind="apply")
    assert len(runs) == 1, runs
    assert runs[0]["trigger"].startswith("webhook") and runs[0]["outcome"] == "succeeded"
    assert job["runs"] == [runs[0]["id"]]
    # The apply used the pushed config: the deploy repo now says 1.1.
    state = subprocess.run(
        ["git", f"--git-dir={served.world.deploy}", "show", "main:dev/.state/api.json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "registry.test/shop/api:1.1" in state
    # The same delivery again (a GitLab retry) is a duplicate and runs nothing.
    status, body = delivery.post(served.url + "/hooks/gitlab")
    assert (status, json.loads(body)["duplicate"]) == (202, True)
    assert len(served.runs(kind="apply")) == 1

    matrix = served.get("/api/matrix")
    cell = matrix["cells"]["dev"]["api"]
    assert (cell["template"], cell["image"]) == ("1.0.0", "registry.test/shop/api:1.1")
    assert cell["release"]["outcome"] == "committed"
    [service] = served.get("/api/environments/dev/services")
    assert service["service"] == "api" and service["health"] == "committed"
    assert served.get("/api/environments")[0]["auto_apply"] is True
    log = served.get(f"/api/runs/{runs[0]['id']}")["log"]
    assert "committed" in log


def test_invalid_token_gets_401_and_starts_nothing(served: Served) -> None:
    delivery = served.push_change("environments/dev/_env.yaml", "auto_apply: true\n", "touch")
    forged = replace(delivery, headers={**delivery.headers, "X-Gitlab-Token": "wrong-token"})
    status, body = forged.post(served.url + "/hooks/gitlab")
    assert status == 401, body
    missing = {k: v for k, v in delivery.headers.items() if k != "X-Gitlab-Token"}
    assert replace(delivery, headers=missing).post(served.url + "/hooks/gitlab")[0] == 401
    assert served.jobs()["jobs"] == []
    assert served.runs() == []
    assert served.tokens["webhook"] not in body.decode()
    metrics = http("GET", served.url + "/metrics", headers=served.auth()).body.decode()
    assert 'configcenter_webhook_deliveries_total{result="unauthorized",source="gitlab"} 2' in (
        metrics
    )


def test_burst_of_200_deliveries_records_each_distinct_one_once(served: Served) -> None:
    first = served.push_change("environments/dev/_env.yaml", "auto_apply: true\n# 1\n", "one")
    distinct = []
    for _ in range(120):
        key = str(uuid.uuid4())
        headers = {**first.headers, "Idempotency-Key": key, "X-Gitlab-Event-UUID": key}
        distinct.append(replace(first, headers=headers))
    burst = distinct + [random.choice(distinct) for _ in range(80)]
    random.Random(7).shuffle(burst)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda d: d.post(served.url + "/hooks/gitlab", 60), burst))
    assert {status for status, _ in answers} == {202}
    accepted = sum(json.loads(body)["accepted"] for _, body in answers)
    assert accepted == 120

    done = poll(served.settled, 300, "every delivery to be carried out")
    ids = [job["id"] for job in done["jobs"]]
    assert len(ids) == len(set(ids)) == 120
    assert set(ids) == {f"gitlab:{d.headers['Idempotency-Key']}" for d in distinct}
    assert {job["state"] for job in done["jobs"]} == {"done"}
    runs = served.runs(kind="apply")
    assert 1 <= len(runs) <= 120
    assert {run["id"] for run in runs} == {r for job in done["jobs"] for r in job["runs"]}
    metrics = http("GET", served.url + "/metrics", headers=served.auth()).body.decode()
    assert 'configcenter_webhook_deliveries_total{result="accepted",source="gitlab"} 120' in (
        metrics
    )
    assert 'configcenter_webhook_deliveries_total{result="duplicate",source="gitlab"} 80' in (
        metrics
    )
    assert 'configcenter_runs_total{kind="apply",outcome="succeeded"}' in metrics
    assert "configcenter_run_duration_seconds_bucket" in metrics


def test_restart_does_not_rerun_a_delivery(
    tmp_path: Path, serve_processes: list[ServeProcess]
) -> None:
    served = start_served(tmp_path, serve_processes)
    try:
        delivery = served.push_change("environments/dev/_env.yaml", "auto_apply: true\n", "x")
        assert delivery.post(served.url + "/hooks/gitlab")[0] == 202
        poll(served.settled, 120, "the push job to finish")
        served.proc.stop()
        again = ServeProcess(served.world)
        serve_processes.append(again)
        again.wait_ready()
        served.proc = again
        status, body = delivery.post(again.url + "/hooks/gitlab")
        assert (status, json.loads(body)["duplicate"]) == (202, True)
        assert len(served.runs(kind="apply")) == 1
    finally:
        served.gitlab.stop()


def test_schedule_runs_reconcile(tmp_path: Path, serve_processes: list[ServeProcess]) -> None:
    served = start_served(tmp_path, serve_processes, "reconcile: {interval: 1s}\n")
    try:
        runs = poll(
            lambda: [r for r in served.runs(kind="reconcile") if r["outcome"] != "running"][1:],
            120,
            "two scheduled reconcile runs",
        )
        assert {r["trigger"] for r in runs} == {"schedule"}
        jobs = served.jobs(source="schedule")["jobs"]
        assert jobs and all(j["id"].startswith("schedule:dev:") for j in jobs)
        metrics = http("GET", served.url + "/metrics", headers=served.auth()).body.decode()
        assert 'configcenter_runs_total{kind="reconcile",outcome="noop"}' in metrics
        assert "configcenter_leader 1" in metrics
    finally:
        served.gitlab.stop()


def test_api_needs_the_token_and_never_echoes_secrets(served: Served) -> None:
    for path in ("/", "/api/matrix", "/api/runs", "/metrics"):
        assert http("GET", served.url + path).status == 401, path
        wrong = http("GET", served.url + path, headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        assert "WWW-Authenticate" in wrong.headers or "www-authenticate" in wrong.headers
    assert http("GET", served.url + "/healthz").status == 200
    schema = http("GET", served.url + "/openapi.json", headers=served.auth()).json()
    assert {"/hooks/gitlab", "/hooks/registry", "/api/matrix", "/api/runs", "/metrics"} <= set(
        schema["paths"]
    )
    seen = "".join(
        http("GET", served.url + p, headers=served.auth()).body.decode()
        for p in ("/", "/api/matrix", "/api/runs?log=1", "/api/jobs", "/metrics", "/openapi.json")
    )
    for token in served.tokens.values():
        assert token not in seen
        assert token not in served.proc.log()


def test_registry_notification_applies_environments_using_the_image(served: Served) -> None:
    envelope = {
        "events": [
            {
                "id": str(uuid.uuid4()),
                "timestamp": "2026-11-23T04:00:00Z",
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:" + "a" * 64,
                    "repository": "shop/api",
                    "tag": "1.0",
                },
                "request": {"host": "registry.test", "method": "PUT"},
                "actor": {"name": "ci"},
            },
            {
                "id": str(uuid.uuid4()),
                "action": "push",
                "target": {
                    "mediaType": "application/octet-stream",
                    "repository": "shop/api",
                    "digest": "sha256:" + "b" * 64,
                },
            },
        ]
    }
    body = json.dumps(envelope).encode()
    headers = {"Content-Type": "application/vnd.docker.distribution.events.v2+json"}
    denied = http("POST", served.url + "/hooks/registry", body, headers)
    assert denied.status == 401
    auth = {**headers, "Authorization": f"Bearer {served.tokens['registry']}"}
    first = http("POST", served.url + "/hooks/registry", body, auth)
    assert (first.status, first.json()["accepted"]) == (202, 1)
    assert http("POST", served.url + "/hooks/registry", body, auth).json()["duplicates"] == 1
    done = poll(served.settled, 120, "the image job to finish")
    [job] = done["jobs"]
    assert (job["source"], job["state"]) == ("registry", "done"), job
    [run] = served.runs(kind="apply")
    assert (run["trigger"], run["services"]) == ("webhook:registry", ["api"])
    bad = http("POST", served.url + "/hooks/registry", b"{not json", auth)
    assert bad.status == 400 and "not JSON" in bad.json()["error"]


def test_merged_promotion_request_applies_its_target(
    tmp_path: Path, serve_processes: list[ServeProcess]
) -> None:
    from configcenter.usecases.promote import branch_name

    served = start_served(tmp_path, serve_processes, envs={"dev": "auto_apply: true\n", "prod": ""})
    try:
        branch = branch_name("dev", "prod")
        served.ops.git("checkout", "-q", "-b", branch)
        served.ops.write(
            "environments/prod/api.yaml",
            "template: 1.0.0\nimage: {ref: registry.test/shop/api:3.0}\nreplicas: 2\n",
        )
        served.ops.commit("promote dev to prod")
        served.ops.git("push", "-q", "origin", branch)
        mr = served.gitlab.insert_open_merge_request(
            "ops/shop-config", branch, "main", "Promote dev to prod"
        )
        delivery = served.gitlab.merge("ops/shop-config", mr["iid"])
        assert delivery.headers["X-Gitlab-Event"] == "Merge Request Hook"
        assert delivery.post(served.url + "/hooks/gitlab")[0] == 202
        done = poll(served.settled, 120, "the merge request job to finish")
        [job] = done["jobs"]
        assert (job["kind"], job["state"]) == ("merge_request", "done"), job
        [run] = served.runs(kind="apply")
        assert (run["env"], run["outcome"]) == ("prod", "succeeded")
        state = subprocess.run(
            ["git", f"--git-dir={served.world.deploy}", "show", "main:prod/.state/api.json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "registry.test/shop/api:3.0" in state
    finally:
        served.gitlab.stop()


def test_unknown_paths_and_methods_answer_the_documented_error_shape(console: Console) -> None:
    """A typo in an API path or method gets `{error, fix}` JSON like every other refusal
    (the Error schema of /openapi.json), not Starlette's plain-text page."""
    auth = {"Authorization": "Bearer apisec-test"}
    for method, path, code in (
        ("GET", "/api/nope", 404),
        ("GET", "/api/environments/dev/nope", 404),
        ("POST", "/hooks/nope", 404),
        ("GET", "/hooks/gitlab", 405),
        ("DELETE", "/api/jobs", 405),
    ):
        answer = http(method, console.url + path, headers=auth)
        assert answer.status == code, (method, path, answer.status)
        assert answer.headers.get("content-type", "").startswith("application/json"), path
        body = answer.json()
        assert set(body) == {"error", "fix"} and body["fix"], (path, body)
        assert path in body["error"]
    assert http("GET", console.url + "/api/nope").status == 401  # auth still comes first


def test_a_body_over_the_limit_is_413_whether_declared_or_chunked(console: Console) -> None:
    """GitLab caps payloads at 25 MB; more is refused with HTTP's own status, named, and
    queues nothing, whether Content-Length says so up front or a chunked body runs over."""
    from http.client import HTTPConnection
    from urllib.parse import urlsplit

    from configcenter.serve.app import MAX_BODY

    where = urlsplit(console.url)
    headers = {"X-Gitlab-Token": "whsec-test", "X-Gitlab-Event": "Push Hook"}
    before = len(console.engine.jobs.recent(1000))
    chunk = b"x" * (1024 * 1024)

    def refused(framing: dict[str, str], body: list[bytes]) -> dict[str, Any]:
        conn = HTTPConnection(str(where.hostname), where.port, timeout=60)
        conn.putrequest("POST", "/hooks/gitlab")
        for name, value in {**headers, **framing}.items():
            conn.putheader(name, value)
        conn.endheaders()
        try:
            for part in body:
                conn.send(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while the rest was still being sent
        answer = conn.getresponse()
        data: dict[str, Any] = json.loads(answer.read())
        conn.close()
        assert answer.status == 413, (answer.status, data)
        assert str(MAX_BODY) in data["error"] and data["fix"], data
        return data

    refused({"Content-Length": str(MAX_BODY + 1)}, [chunk])
    steps = MAX_BODY // len(chunk) + 2
    refused(
        {"Transfer-Encoding": "chunked"},
        [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * steps + [b"0\r\n\r\n"],
    )
    assert len(console.engine.jobs.recent(1000)) == before
