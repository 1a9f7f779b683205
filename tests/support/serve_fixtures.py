"""Worlds for reconcile and serve tests: a real config repo, a bare deploy remote, private dirs.

`shop_world` builds the smallest config repo that really rolls out (one `api`
Deployment + Service per environment) against a platform given by the test:
the `k8s_namespace` fixture's namespace, or none at all (commit-only envs).
`ServeProcess` runs `configcenter serve` in a child process on a free port,
exactly as an operator would, and stops it (by its own pid) afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from configcenter.usecases.workspace import Workspace
from tests.support.configrepo import ConfigRepo, git
from tests.support.helpers import free_port, poll

T = TypeVar("T")

API_TEMPLATE = {
    "template.yaml": """\
        outputs: [app.env, deployment.yaml]
        env: [LOG_LEVEL]
    """,
    "app.env.j2": """\
        LOG_LEVEL={{ LOG_LEVEL }}
    """,
    "deployment.yaml.j2": """\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {{ service }}
          labels: {app: {{ service }}}
        spec:
          replicas: {{ replicas }}
          progressDeadlineSeconds: 60
          selector:
            matchLabels: {app: {{ service }}}
          template:
            metadata:
              labels: {app: {{ service }}}
            spec:
              containers:
              - name: app
                image: {{ image }}
                ports:
                - containerPort: 8080
        ---
        apiVersion: v1
        kind: Service
        metadata:
          name: {{ service }}
        spec:
          selector: {app: {{ service }}}
          ports:
          - port: 80
            targetPort: 8080
    """,
}


@dataclass
class ShopWorld:
    """A config repo (a clone of `origin`), its bare origin, a bare deploy repo, XDG dirs."""

    root: Path
    config: ConfigRepo
    origin: Path
    deploy: Path
    run_store_url: str
    env: dict[str, str] = field(default_factory=dict)

    def workspace(self) -> Workspace:
        return Workspace(self.config.root, run_store_url=self.run_store_url)

    def push_config(self) -> str:
        """Push the config clone's main (and tags) to its origin; returns the new sha."""
        self.config.git("push", "-q", "--tags", "origin", "main")
        return self.config.git("rev-parse", "HEAD").strip()


def make_shop_world(
    root: Path,
    *,
    namespace: str | None = None,
    kubeconfig: Path | None = None,
    envs: Mapping[str, str] | None = None,
    serve: str = "",
    run_store_url: str | None = None,
) -> ShopWorld:
    """`api` released as 1.0.0; each env in `envs` gets `_env.yaml` extra text.

    With `namespace`, every environment rolls out to a Kubernetes platform `k8s`
    in that namespace (literally); without, environments only commit.
    """
    root.mkdir(parents=True, exist_ok=True)
    origin = root / "config.git"
    git(root, "init", "-q", "--bare", "-b", "main", str(origin))
    config = ConfigRepo.init(root / "config")
    envs = dict(envs or {"dev": ""})
    project = [
        "project: shop",
        f"environments: [{', '.join(envs)}]",
        "deploy_repo: {url: ../deploy.git, branch: main}",
    ]
    if namespace is not None:
        settings = f'kind: kubernetes, namespace: "{namespace}"'
        if kubeconfig is not None:
            settings += f', kubeconfig: "{kubeconfig}"'
        project += ["platforms:", f"  k8s: {{{settings}}}"]
    config.write("configcenter.yaml", "\n".join(project) + "\n" + serve)
    for name, text in API_TEMPLATE.items():
        config.write(f"templates/api/{name}", text)
    config.commit("templates 1.0.0")
    config.tag("api/1.0.0")
    config.write("environments/_defaults.yaml", "values:\n  LOG_LEVEL: info\n")
    for env, extra in envs.items():
        lines = ["platform: k8s"] if namespace is not None else []
        lines += ["rollout: {timeout: 90s}"]
        config.write(f"environments/{env}/_env.yaml", "\n".join(lines) + "\n" + extra)
        config.write(
            f"environments/{env}/api.yaml",
            "template: 1.0.0\nimage: {ref: registry.test/shop/api:1.0}\nreplicas: 2\n",
        )
    config.commit("environments")
    config.git("remote", "add", "origin", str(origin))
    config.git("push", "-q", "--tags", "-u", "origin", "main")
    deploy = root / "deploy.git"
    git(root, "init", "-q", "--bare", "-b", "main", str(deploy))
    url = run_store_url or f"sqlite:///{root / 'runs.sqlite3'}"
    return ShopWorld(root, config, origin, deploy, url)


@pytest.fixture
def private_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """XDG state and cache dirs of the test's own: nothing touches ~/.cache or ~/.local."""
    base = tmp_path / "xdg"
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))
    return base


@dataclass
class HttpResult:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> HttpResult:
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResult(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as error:
        return HttpResult(error.code, error.read(), dict(error.headers))


class ServeProcess:
    """`configcenter -C CONFIG serve ...` in a child process, on 127.0.0.1:<free port>."""

    def __init__(
        self,
        world: ShopWorld,
        *args: str,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        self.world = world
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or world.root / f"serve-{self.port}.log"
        child_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "CONFIGCENTER_"))
        }
        child_env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_AUTHOR_NAME": "configcenter serve",
                "GIT_AUTHOR_EMAIL": "serve@configcenter.invalid",
                "GIT_COMMITTER_NAME": "configcenter serve",
                "GIT_COMMITTER_EMAIL": "serve@configcenter.invalid",
            }
        )
        child_env.update(world.env)
        child_env.update(env or {})
        command = [
            sys.executable,
            "-m",
            "configcenter",
            "-C",
            str(world.config.root),
            "--run-store",
            world.run_store_url,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=child_env, cwd=world.root
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"serve exited with {self.process.returncode}:\n{self.log()[-4000:]}"
                )
            try:
                return http("GET", f"{self.url}/healthz", timeout=2).status == 200
            except OSError:
                return False

        poll(ready, timeout, f"serve on {self.url} to answer /healthz", every=0.2)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def serve_processes() -> Iterator[list[ServeProcess]]:
    """A list tests append their ServeProcess objects to; each is stopped afterwards."""
    started: list[ServeProcess] = []
    yield started
    for proc in started:
        proc.stop()
