"""A served shop: config origin behind the GitLab double, `configcenter serve` over real HTTP;
and the console: the app in a thread (uvicorn) over the same real repos and run store."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from configcenter.ports.runstore import RunStore
from configcenter.serve import ServeOptions, build
from configcenter.serve.engine import Engine
from configcenter.usecases.apply import ApplyOptions, apply_env
from configcenter.usecases.workspace import Workspace
from configcenter.wiring import open_run_store
from tests.support.configrepo import ConfigRepo, git
from tests.support.gitlab_double import GitLabDouble, WebhookDelivery
from tests.support.helpers import free_port, poll
from tests.support.serve_fixtures import ServeProcess, ShopWorld, http, make_shop_world

SERVE_SECTION = """\
serve:
  webhook_token: {secret: "env:CC_WEBHOOK_TOKEN"}
  registry_token: {secret: "env:CC_REGISTRY_TOKEN"}
  api_token: {secret: "env:CC_API_TOKEN"}
"""
PROJECT_PATH = "ops/shop-config"


@dataclass
class Served:
    world: ShopWorld
    gitlab: GitLabDouble
    ops: ConfigRepo  # an operator's clone: edits are pushed from here
    proc: ServeProcess
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.proc.url

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['api']}"}

    def get(self, path: str) -> Any:
        result = http("GET", self.url + path, headers=self.auth())
        assert result.status == 200, (path, result.status, result.body[:500])
        return result.json()

    def push_change(self, rel: str, text: str, message: str) -> WebhookDelivery:
        """Commit and push from the operator's clone; the Push Hook GitLab would send."""
        before = self.ops.git("rev-parse", "HEAD").strip()
        self.ops.write(rel, text)
        self.ops.commit(message)
        self.ops.git("push", "-q", "origin", "main")
        return self.gitlab.push_event(PROJECT_PATH, "main", before)

    def jobs(self, **query: str) -> dict[str, Any]:
        params = "&".join(f"{k}={v}" for k, v in {"limit": "1000", **query}.items())
        data: dict[str, Any] = self.get(f"/api/jobs?{params}")
        return data

    def settled(self) -> dict[str, Any] | None:
        """The job listing once nothing is queued or running (None until then)."""
        data = self.jobs()
        busy = data["counts"].get("queued", 0) + data["counts"].get("running", 0)
        return None if busy else data

    def runs(self, **query: str) -> list[dict[str, Any]]:
        params = "&".join(f"{k}={v}" for k, v in {"limit": "1000", **query}.items())
        data: list[dict[str, Any]] = self.get(f"/api/runs?{params}")
        return data


def start_served(
    root: Path,
    processes: list[ServeProcess],
    env_text: str = "auto_apply: true\n",
    *extra_args: str,
    namespace: str | None = None,
    kubeconfig: Path | None = None,
    envs: dict[str, str] | None = None,
) -> Served:
    tokens = {
        "webhook": f"whsec-{secrets.token_urlsafe(12)}",
        "registry": f"regsec-{secrets.token_urlsafe(12)}",
        "api": f"apisec-{secrets.token_urlsafe(12)}",
    }
    world = make_shop_world(
        root,
        envs=envs or {"dev": env_text},
        serve=SERVE_SECTION,
        namespace=namespace,
        kubeconfig=kubeconfig,
    )
    world.env.update(
        {
            "CC_WEBHOOK_TOKEN": tokens["webhook"],
            "CC_REGISTRY_TOKEN": tokens["registry"],
            "CC_API_TOKEN": tokens["api"],
            "XDG_STATE_HOME": str(root / "xdg-state"),
            "XDG_CACHE_HOME": str(root / "xdg-cache"),
        }
    )
    gitlab = GitLabDouble(token="glpat-unused", webhook_token=tokens["webhook"])
    gitlab.start()
    gitlab.add_project(PROJECT_PATH, world.origin)
    git(root, "clone", "-q", str(world.origin), str(root / "ops"))
    ops = ConfigRepo(root / "ops")
    ops.git("config", "user.name", "ops")
    ops.git("config", "user.email", "ops@configcenter.invalid")
    proc = ServeProcess(world, *extra_args)
    processes.append(proc)
    proc.wait_ready()
    served = Served(world, gitlab, ops, proc, tokens)
    return served


@pytest.fixture
def served(tmp_path: Path, serve_processes: list[ServeProcess]) -> Iterator[Served]:
    """dev auto-applies on pushes (commit only: no platform); serve runs with two workers."""
    result = start_served(tmp_path, serve_processes)
    try:
        yield result
    finally:
        result.gitlab.stop()


DIGEST = "sha256:" + "ab" * 32
BASIC_SECTION = (
    SERVE_SECTION + '  basic_auth: {username: ops, password: {secret: "env:CC_API_TOKEN"}}\n'
)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Console:
    world: ShopWorld
    engine: Engine
    url: str
    store: RunStore

    def get(self, path: str) -> bytes:
        result = http("GET", self.url + path, headers={"Authorization": "Bearer apisec-test"})
        assert result.status == 200, (path, result.status, result.body[:500])
        return result.body

    def matrix(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.get("/api/matrix"))
        return data

    def page(self) -> str:
        return self.get("/").decode()

    def reconcile_run(self, outcome: str, details: dict[str, object]) -> str:
        run = self.store.start("reconcile", "dev", [], "schedule", "replica-a")
        self.store.finish(run.id, outcome, details)
        return run.id


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    for name, value in (
        ("CC_WEBHOOK_TOKEN", "whsec-test"),
        ("CC_REGISTRY_TOKEN", "regsec-test"),
        ("CC_API_TOKEN", "apisec-test"),
        ("XDG_STATE_HOME", str(tmp_path / "xdg-state")),
        ("XDG_CACHE_HOME", str(tmp_path / "xdg-cache")),
    ):
        monkeypatch.setenv(name, value)
    world = make_shop_world(
        tmp_path / "world", envs={"dev": "auto_apply: true\n", "prod": ""}, serve=BASIC_SECTION
    )
    world.config.write(
        "environments/dev/api.yaml",
        f"template: 1.0.0\nimage: {{ref: registry.test/shop/api@{DIGEST}}}\nreplicas: 2\n",
    )
    world.config.commit("dev: api pinned by digest")
    ws = Workspace(world.config.root, run_store_url=world.run_store_url)
    result = apply_env(ws, "dev", ApplyOptions(actor="ops@test"))
    assert result.outcome == "succeeded", result.outcome
    engine, app = build(ws, ServeOptions(workers=1, identity="replica-a"))
    store = open_run_store(world.run_store_url)
    with serving(app) as url:
        try:
            yield Console(world, engine, url, store)
        finally:
            store.close()
            engine.jobs.close()


@contextmanager
def serving(app: Starlette, *, lifespan: bool = False) -> Iterator[str]:
    """The app on 127.0.0.1:<free port> (uvicorn in a thread), until the block ends; with
    `lifespan`, its start-up and shutdown run too (the engine's workers)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            lifespan="on" if lifespan else "off",
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        poll(lambda: server.started or None, 30, "uvicorn to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60 if lifespan else 30)


__all__ = ["Console", "Served", "poll", "serving", "start_served"]


@contextmanager
def chrome(width: int, height: int) -> Iterator[Any]:
    """Real headless Chromium through chromedriver, as a phone (< 600 px) or a desktop."""
    import shutil

    driver_path = shutil.which("chromedriver")
    if driver_path is None or shutil.which("chromium") is None:
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    """The whole page as test-artifacts/<name>.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    return shot
