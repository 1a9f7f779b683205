"""Console actions over real HTTP: confirm, CSRF, plan digests, read-only mode, live streams.

The app runs in uvicorn with its lifespan (so the engine's workers carry out the queued
actions) on real config and deploy repos and the real run store; commit-only
environments (no platform), so rollbacks and applies end as `committed`. The
browser test with a platform is test_actions_browser.py.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html import unescape
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from configcenter.ports.jobstore import Job
from configcenter.serve import ServeOptions, build
from configcenter.serve.engine import Engine
from configcenter.usecases.apply import ApplyOptions, apply_env
from configcenter.usecases.workspace import Workspace
from tests.serve.conftest import SERVE_SECTION, serving
from tests.support.helpers import poll
from tests.support.serve_fixtures import HttpResult, ShopWorld, http, make_shop_world

API_TOKEN = "apisec-actions"
BASIC = SERVE_SECTION + '  basic_auth: {username: ops, password: {secret: "env:CC_API_TOKEN"}}\n'
API_11 = "template: 1.0.0\nimage: {ref: registry.test/shop/api:1.1}\nreplicas: 2\n"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post_no_redirect(url: str, body: bytes, headers: dict[str, str]) -> HttpResult:
    """A POST whose 303 is the answer (urllib would follow it)."""
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with opener.open(request, timeout=60) as response:
            return HttpResult(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as error:
        return HttpResult(error.code, error.read(), dict(error.headers))


@dataclass
class Console:
    world: ShopWorld
    engine: Engine
    url: str
    basic: str

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Basic {self.basic}", **extra}

    def get(self, path: str, status: int = 200, **headers: str) -> HttpResult:
        result = http("GET", self.url + path, headers=self.headers(**headers))
        assert result.status == status, (path, result.status, result.body[:800])
        return result

    def post(self, form: dict[str, str], cookie: str | None, **headers: str) -> HttpResult:
        extra = {"Content-Type": "application/x-www-form-urlencoded", **headers}
        if cookie is not None:
            extra["Cookie"] = f"cc_csrf={cookie}"
        return post_no_redirect(
            self.url + "/actions", urlencode(form).encode(), self.headers(**extra)
        )

    def confirm(self, **query: str) -> tuple[dict[str, str], str, str]:
        """The confirmation page's form fields, its CSRF cookie and the page."""
        page = self.get("/actions/confirm?" + urlencode(query))
        html = page.body.decode()
        form = {
            unescape(name): unescape(value)
            for name, value in re.findall(
                r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html
            )
        }
        jar = SimpleCookie(page.headers.get("set-cookie", ""))
        return form, jar["cc_csrf"].value, html

    def console_jobs(self) -> list[Job]:
        return [j for j in self.engine.jobs.recent(100) if j.source == "console"]


def _world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: str) -> ShopWorld:
    for name, value in (
        ("CC_WEBHOOK_TOKEN", "whsec-test"),
        ("CC_REGISTRY_TOKEN", "regsec-test"),
        ("CC_API_TOKEN", API_TOKEN),
        ("XDG_STATE_HOME", str(tmp_path / "xdg-state")),
        ("XDG_CACHE_HOME", str(tmp_path / "xdg-cache")),
    ):
        monkeypatch.setenv(name, value)
    world = make_shop_world(tmp_path / "world", envs={"dev": "", "prod": ""}, serve=serve)
    ws = world.workspace()
    assert apply_env(ws, "dev", ApplyOptions(actor="ops@test")).outcome == "succeeded"
    world.config.write("environments/dev/api.yaml", API_11)
    world.config.commit("dev: api 1.1")
    world.push_config()
    assert apply_env(world.workspace(), "dev", ApplyOptions(actor="ops@test")).outcome == (
        "succeeded"
    )
    return world


@contextmanager
def console_for(world: ShopWorld) -> Iterator[Console]:
    import base64

    ws = Workspace(world.config.root, run_store_url=world.run_store_url)
    engine, app = build(ws, ServeOptions(workers=1, identity="replica-a"))
    basic = base64.b64encode(f"ops:{API_TOKEN}".encode()).decode()
    with serving(app, lifespan=True) as url:
        yield Console(world, engine, url, basic)


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    with console_for(_world(tmp_path, monkeypatch, BASIC)) as c:
        yield c


def releases(world: ShopWorld) -> list[str]:
    from configcenter.usecases.history import history

    return [e.release for e in history(world.workspace(), "dev", "api")]


def events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in body.decode().split("\n\n"):
        name = next((x[7:] for x in block.splitlines() if x.startswith("event: ")), None)
        data = next((x[6:] for x in block.splitlines() if x.startswith("data: ")), None)
        if name and data:
            out.append((name, json.loads(data)))
    return out


def test_rollback_from_the_console_is_a_recorded_run_with_a_live_log(console: Console) -> None:
    newest, older = releases(console.world)[:2]
    listing = console.get("/actions/rollback?env=dev&service=api").body.decode()
    assert f'data-release="{older}"' in listing and "current" in listing

    form, cookie, html = console.confirm(kind="rollback", env="dev", service="api", release=older)
    assert f"Roll back api in dev to {older}" in html
    framing = console.get(
        "/actions/confirm?"
        + urlencode({"kind": "rollback", "env": "dev", "service": "api", "release": older})
    ).headers
    assert framing["x-frame-options"] == "DENY"  # no confirm button in another site's frame
    assert framing["content-security-policy"] == "frame-ancestors 'none'"
    assert "registry.test/shop/api:1.1" in html and "registry.test/shop/api:1.0" in html
    assert form["digest"] and form["csrf"] and form["release"] == older
    assert API_TOKEN not in html

    queued = console.post(form, cookie, Origin=console.url)
    assert queued.status == 303, queued.body[:500]
    location = queued.headers["location"]
    job_id = location.rsplit("/", 1)[1].replace("%3A", ":")
    assert console.get("/" + location.lstrip("./")).status == 200

    # The stream ends when the action does: job state, its run, the log, the end.
    stream = console.get(f"/events/jobs/{job_id}")
    assert stream.headers["content-type"].startswith("text/event-stream")
    got = events(stream.body)
    names = [n for n, _ in got]
    assert names[0] == "job" and "run" in names and names[-1] == "end", names
    log = "".join(d["text"] for n, d in got if n == "log")
    assert f"api: rolled back to {older}" in log
    end = got[-1][1]
    assert end["state"] == "done" and end["outcome"] == "succeeded", end

    run = console.engine.run_store.get(end["run"])
    assert run is not None and run.kind == "rollback" and run.trigger == "console"
    assert run.actor == "ops (console)" and run.details["job"] == job_id
    state = console.world.workspace().read_state("dev").services["api"]
    assert state.image == "registry.test/shop/api:1.0" and state.release is not None
    assert state.release.id == older
    assert state.last_failed is not None and state.last_failed.id == newest

    # A second post of the same form is the same action, not a second rollback.
    again = console.post(form, cookie, Origin=console.url)
    assert again.status == 303 and again.headers["location"] == location
    assert len(console.console_jobs()) == 1

    # The run's own stream replays its log and ends at once (the run is over).
    replay = events(console.get(f"/events/runs/{run.id}").body)
    assert replay[-1] == ("end", {"outcome": "succeeded", "run": run.id})


def test_csrf_origin_and_token_are_checked_and_refusals_change_nothing(console: Console) -> None:
    older = releases(console.world)[1]
    form, cookie, _ = console.confirm(kind="rollback", env="dev", service="api", release=older)
    cases = {
        "no cookie": console.post(form, None, Origin=console.url),
        "another browser's cookie": console.post(form, "x" * 43, Origin=console.url),
        "forged token": console.post({**form, "csrf": "0" * 64}, cookie, Origin=console.url),
        "cross-site origin": console.post(form, cookie, Origin="https://evil.example"),
        "no origin or referer": console.post(form, cookie),
        "cross-site referer": console.post(form, cookie, Referer="https://evil.example/x"),
    }
    for what, result in cases.items():
        assert result.status == 403, (what, result.status)
        assert "CSRF protection" in result.body.decode(), what
    assert console.console_jobs() == []
    assert releases(console.world)[1] == older
    ok = console.post(form, cookie, Referer=console.url + "/actions/confirm")
    assert ok.status == 303


def test_a_plan_that_changed_since_it_was_shown_is_refused(console: Console) -> None:
    form, cookie, html = console.confirm(kind="apply", env="dev", service="api")
    assert "No changes" in html
    world = console.world
    world.config.write("environments/dev/api.yaml", API_11.replace("replicas: 2", "replicas: 3"))
    world.config.commit("dev: api replicas 3")
    world.push_config()

    refused = console.post(form, cookie, Origin=console.url)
    assert refused.status == 409
    page = refused.body.decode()
    assert "The plan changed since it was shown" in page and "replicas 2 → 3" in page
    assert console.console_jobs() == []
    fresh = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
    assert fresh["digest"] != form["digest"]

    # The new plan, confirmed, runs: an apply of one service, recorded as the CLI's is.
    done = console.post({**form, "digest": fresh["digest"], "form": fresh["form"]}, cookie,
                        Origin=console.url)  # fmt: skip
    assert done.status == 303
    job_id = done.headers["location"].rsplit("/", 1)[1].replace("%3A", ":")
    end = events(console.get(f"/events/jobs/{job_id}").body)[-1][1]
    assert end["outcome"] == "succeeded", end
    assert world.workspace().read_state("dev").services["api"].replicas == 3


def test_the_worker_refuses_a_job_whose_plan_changed(console: Console) -> None:
    """Between the post and the worker, the plan may change too: the worker checks again."""
    job = Job(
        id="console:apply:stale",
        source="console",
        kind="apply",
        env="dev",
        payload={"kind": "apply", "env": "dev", "digest": "0" * 64, "actor": "ops (console)"},
    )
    before = len(console.engine.run_store.list(env="dev", limit=100))
    console.engine.submit(job)
    done = poll(
        lambda: (j := console.engine.jobs.get(job.id)) and j.state != "queued"
        and j.state != "running" and j,
        60,
        "the worker to take the job",
    )  # fmt: skip
    assert done.state == "failed" and "the plan changed since it was confirmed" in done.note
    assert len(console.engine.run_store.list(env="dev", limit=100)) == before


def test_actions_page_offers_each_action_and_the_status_stream_says_change(
    console: Console,
) -> None:
    html = console.get("/actions").body.decode()
    for href in (
        "actions/confirm?kind=apply&amp;env=dev",
        "actions/confirm?kind=heal&amp;env=dev",
        "actions/confirm?kind=promote&amp;env=dev&amp;target=prod",
        "actions/confirm?kind=apply&amp;env=dev&amp;service=api",
        "actions/rollback?env=dev&amp;service=api",
    ):
        assert href in html, href
    for path, link in (
        ("/environments/dev", "actions/confirm?kind=heal&amp;env=dev"),
        ("/environments/dev/services/api", "actions/rollback?env=dev&amp;service=api"),
    ):
        assert link in console.get(path).body.decode(), path
    index = console.get("/").body.decode()
    assert 'href="./actions"' in index and 'src="./assets/live.js"' in index
    assert "EventSource" in console.get("/assets/live.js").body.decode()

    heal = console.confirm(kind="heal", env="dev")[2]
    assert "Heal drift in dev" in heal and "no reconcile has run" in heal
    promote = console.confirm(kind="promote", env="dev", target="prod")[2]
    assert "promote/dev-to-prod" in promote and "registry.test/shop/api:1.1" in promote
    for query, why in (
        ("kind=nuke&env=dev", "unknown action"),
        ("kind=retry&env=dev", "retry needs a service"),
        ("kind=apply&env=qa", "no environment"),
        ("kind=rollback&env=dev&service=api&release=r0", "r0"),
    ):
        assert why in console.get(f"/actions/confirm?{query}", status=400).body.decode()
    # Everything behind serve's auth.
    assert http("GET", console.url + "/actions").status == 401
    assert http("GET", console.url + "/events/status").status == 401


def test_read_only_mode_and_no_auth_refuse_actions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path, monkeypatch, BASIC + "  actions: false\n")
    with console_for(world) as console:
        html = console.get("/actions").body.decode()
        assert "read-only here: serve.actions is false" in html
        assert "actions/confirm" not in html
        for path in ("/environments/dev", "/environments/dev/services/api"):
            assert "actions/" not in console.get(path).body.decode(), path
        page = console.get("/actions/confirm?kind=apply&env=dev", status=403).body.decode()
        assert "serve.actions is false" in page
        posted = console.post({"kind": "apply", "env": "dev"}, "x" * 43, Origin=console.url)
        assert posted.status == 403 and console.console_jobs() == []


def test_actions_need_authentication(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = _world(tmp_path / "open", monkeypatch, "")
    with console_for(world) as console:
        html = http("GET", console.url + "/actions").body.decode()
        assert "Actions need authentication: set serve.api_token or serve.basic_auth" in html
        refused = http("GET", console.url + "/actions/confirm?kind=apply&env=dev")
        assert refused.status == 403


def test_promotion_from_the_console_is_a_recorded_promote_run(console: Console) -> None:
    form, cookie, html = console.confirm(kind="promote", env="dev", target="prod")
    assert "promote/dev-to-prod" in html
    queued = console.post(form, cookie, Origin=console.url)
    assert queued.status == 303, queued.body[:300]
    job_id = queued.headers["location"].rsplit("/", 1)[1].replace("%3A", ":")
    got = events(console.get(f"/events/jobs/{job_id}").body)
    end = got[-1][1]
    assert end["state"] == "done" and end["outcome"] == "succeeded", end
    run = console.engine.run_store.get(end["run"])
    assert run is not None and run.kind == "promote" and run.env == "prod"
    assert run.trigger == "console" and run.details["from"] == "dev"
    assert "promote dev -> prod: started by ops (console)" in run.log
    # The branch is on the config repo's origin, pinning dev's release of api for prod.
    from tests.support.configrepo import git

    shown = git(console.world.root, "--git-dir", str(console.world.origin), "show",
                "promote/dev-to-prod:environments/prod/api.yaml")  # fmt: skip
    assert "registry.test/shop/api:1.1" in shown


def test_a_running_runs_log_streams_until_it_ends(console: Console) -> None:
    """The run page's stream: what is new after the offset the page drew, then the end."""
    store = console.engine.run_store
    run = store.start("deploy", "dev", ["api"], "cli", "ops@test")
    store.append_log(run.id, "api: first line\n")
    page = console.get(f"/runs/{run.id}").body.decode()
    assert f'data-stream="../events/runs/{run.id}"' in page and 'data-offset="16"' in page

    result: list[HttpResult] = []
    reader = threading.Thread(
        target=lambda: result.append(console.get(f"/events/runs/{run.id}?offset=16"))
    )
    reader.start()
    store.append_log(run.id, "api: second line\n")
    store.finish(run.id, "succeeded", {})
    reader.join(timeout=60)
    got = events(result[0].body)
    assert "".join(d["text"] for n, d in got if n == "log") == "api: second line\n"
    assert got[-1] == ("end", {"outcome": "succeeded", "run": run.id})
    # A reconnect (Last-Event-ID: the offset it had) gets nothing twice.
    again = events(console.get(f"/events/runs/{run.id}", **{"Last-Event-ID": "33"}).body)
    assert [n for n, _ in again] == ["end"]


def test_heal_from_the_console_is_a_recorded_reconcile_run(console: Console) -> None:
    form, cookie, html = console.confirm(kind="heal", env="dev")
    assert "Heal drift in dev" in html
    queued = console.post(form, cookie, Origin=console.url)
    assert queued.status == 303, queued.body[:300]
    job_id = queued.headers["location"].rsplit("/", 1)[1].replace("%3A", ":")
    end = events(console.get(f"/events/jobs/{job_id}").body)[-1][1]
    run = console.engine.run_store.get(end["run"])
    assert run is not None, end
    assert run.kind == "reconcile" and run.trigger == "console" and run.details["heal"] is True
    assert run.details["job"] == job_id and end["outcome"] == run.outcome
    # No platform here: nothing to compare, so nothing drifted and nothing was healed.
    assert run.outcome == "noop", (run.outcome, run.details)


def test_retry_of_a_failed_release_from_the_console(console: Console) -> None:
    """The deploy repo records api's release as failed (as a failed rollout leaves it):
    a plain apply refuses it (blocked), the console's retry deploys it again."""
    from tests.support.configrepo import git

    world = console.world
    clone = world.root / "deploy-edit"
    git(world.root, "clone", "-q", str(world.deploy), str(clone))
    state_file = clone / "dev" / ".state" / "api.json"
    record = json.loads(state_file.read_text())
    release = {**record["release"], "outcome": "failed", "reason": "ProgressDeadlineExceeded"}
    record.update(release=release, last_failed=release)
    state_file.write_text(json.dumps(record, indent=1))
    git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "api failed")
    git(clone, "push", "-q", "origin", "HEAD:main")

    assert "kind=retry&amp;env=dev&amp;service=api" in console.get("/actions").body.decode()
    form, cookie, html = console.confirm(kind="retry", env="dev", service="api")
    assert "Retry api in dev" in html and "api</span>: update" in html
    queued = console.post(form, cookie, Origin=console.url)
    assert queued.status == 303, queued.body[:300]
    job_id = queued.headers["location"].rsplit("/", 1)[1].replace("%3A", ":")
    end = events(console.get(f"/events/jobs/{job_id}").body)[-1][1]
    assert end["state"] == "done" and end["outcome"] == "succeeded", end
    run = console.engine.run_store.get(end["run"])
    assert run is not None and run.kind == "apply" and run.services == ["api"]
    state = world.workspace().read_state("dev").services["api"]
    assert state.release is not None and state.release.outcome == "committed"
    assert state.release.id != release["id"]


def test_open_console_pages_do_not_hold_up_a_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`configcenter serve` on SIGTERM ends its live streams (browsers reconnect), instead
    of waiting out the 30 s graceful timeout for a status page left open."""
    import base64
    import signal

    from tests.support.serve_fixtures import ServeProcess

    world = _world(tmp_path, monkeypatch, BASIC)
    proc = ServeProcess(world, "--workers", "1")
    connected = threading.Event()
    body: list[bytes] = []

    def read_stream() -> None:
        token = base64.b64encode(f"ops:{API_TOKEN}".encode()).decode()
        request = urllib.request.Request(
            proc.url + "/events/status", headers={"Authorization": f"Basic {token}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            while not connected.is_set():  # up to the first event: the stream is open
                line = response.readline()
                body.append(line)
                if line.startswith(b"event: change") or not line:
                    connected.set()
            body.append(response.read())  # until serve ends the stream

    try:
        proc.wait_ready()
        reader = threading.Thread(target=read_stream, daemon=True)
        reader.start()
        assert connected.wait(30), "the status stream did not open"
        proc.process.send_signal(signal.SIGTERM)
        # Well inside uvicorn's 30 s graceful timeout: the stream ended, the process exited.
        poll(lambda: proc.process.poll() is not None, 20, "serve to exit")
        reader.join(timeout=10)
        assert not reader.is_alive() and b"event: change" in b"".join(body)
    finally:
        proc.stop()


SENTINEL = "sentinel-actions-5f19e0"


def test_no_secret_value_on_any_action_page_stream_or_run(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOG_LEVEL comes from a secret: its plan, the apply, a rollback across it and their
    pages, streams and runs show the reference or a mask, never the value."""
    monkeypatch.setenv("CC_LOG_LEVEL", SENTINEL)
    world = console.world
    world.config.write(
        "environments/dev/api.yaml",
        API_11 + 'values:\n  LOG_LEVEL: {secret: "env:CC_LOG_LEVEL"}\n',
    )
    world.config.commit("dev: LOG_LEVEL from a secret")
    world.push_config()
    seen: list[bytes] = []

    def run_action(**query: str) -> dict[str, Any]:
        form, cookie, html = console.confirm(**query)
        seen.append(html.encode())
        queued = console.post(form, cookie, Origin=console.url)
        assert queued.status == 303, queued.body[:300]
        job_id = queued.headers["location"].rsplit("/", 1)[1].replace("%3A", ":")
        seen.append(console.get(f"/actions/jobs/{job_id}").body)
        stream = console.get(f"/events/jobs/{job_id}").body
        seen.append(stream)
        end: dict[str, Any] = events(stream)[-1][1]
        run = console.engine.run_store.get(end["run"])
        assert run is not None
        seen.append(json.dumps([run.log, run.details]).encode())
        seen.append(console.get(f"/runs/{run.id}").body)
        return end

    assert run_action(kind="apply", env="dev")["outcome"] == "succeeded"
    before = releases(world)[1]
    assert run_action(kind="rollback", env="dev", service="api", release=before)["outcome"] == (
        "succeeded"
    )
    seen.append(console.get("/actions").body)
    assert any(b"LOG_LEVEL" in page for page in seen)
    assert not [page[:200] for page in seen if SENTINEL.encode() in page]


def test_open_status_pages_share_one_store_read(console: Console) -> None:
    """However many status streams are open, a replica reads the stores once a tick."""
    from configcenter.serve.stream import SharedVersion, status_version

    shared = SharedVersion(console.engine, ttl=3600)
    versions = {shared() for _ in range(200)}
    assert shared.reads == 1 and versions == {status_version(console.engine)}
    # A new run changes the version the next read sees.
    every = SharedVersion(console.engine, ttl=0)
    first = every()
    console.engine.run_store.start("deploy", "dev", ["api"], "cli", "ops@test")
    assert every() != first and every.reads == 2


def test_a_config_that_does_not_load_refuses_the_action_and_says_why(console: Console) -> None:
    form, cookie, _ = console.confirm(kind="apply", env="dev")
    world = console.world
    world.config.write("environments/dev/api.yaml", "template: [1.0.0\n")
    world.config.commit("dev: broken api.yaml")
    world.push_config()
    page = console.get("/actions/confirm?kind=apply&env=dev", status=503).body.decode()
    assert "The plan cannot be made now, so nothing runs" in page
    assert "environments/dev/api.yaml" in page
    refused = console.post(form, cookie, Origin=console.url)
    assert refused.status == 503 and console.console_jobs() == []
