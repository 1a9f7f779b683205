"""Worlds for rollout tests: a config repo whose services really roll out, end to end.

`make_rollout_world` writes a small shop (db <- api <- web, and an independent
worker) whose templates render Kubernetes Deployments or Marathon apps, releases
every template as 1.0.0 and returns an e2e `World` (CLI runner, deploy remote
and run store readers). Two knobs make a release fail on purpose:

* `NEVER_READY: "true"` puts the test bed's never-ready label on the pods, so
  they never become ready and the Deployment misses `progressDeadlineSeconds`;
* an image whose reference contains `never-ready` fails fast on Kubernetes
  (ImagePullBackOff) and never passes its health checks on the Marathon double.

`rollout_xdg` points XDG_STATE_HOME/XDG_CACHE_HOME (and the secret the config
names) of this process at the world's own dirs, so in-process `apply_env` calls
and CLI children share one run store and one deploy repo cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from configcenter.usecases.workspace import Workspace
from tests.support.configrepo import ConfigRepo, git
from tests.support.e2e_fixtures import SECRET_ENV, World

#: service -> the services it depends on (admin is released but not deployed at first).
SHOP: dict[str, list[str]] = {
    "db": [],
    "api": ["db"],
    "web": ["api"],
    "worker": [],
    "admin": ["api"],
}
DEPLOYED = ("db", "api", "web", "worker")
SENTINEL = "s3ntinel-Pa55w0rd-7f3a9c"  # the secret value: must only reach the platform
GOOD_IMAGE = "registry.test/shop/{service}:1.0"

DEPLOYMENT_J2 = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ service }}
  labels: {app: {{ service }}}
spec:
  replicas: {{ replicas }}
  progressDeadlineSeconds: {{ PROGRESS_DEADLINE }}
  selector:
    matchLabels: {app: {{ service }}}
  template:
    metadata:
      labels:
        app: {{ service }}
        testbed.configcenter.io/never-ready: "{{ NEVER_READY }}"
    spec:
      containers:
      - name: app
        image: {{ image }}
"""

MARATHON_J2 = """\
{"id": "{{ service }}", "cpus": {{ CPUS }}, "mem": 64,
 "container": {"type": "DOCKER", "docker": {"image": "{{ image }}"}},
 "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0}],
 "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1}}
"""


def _template_files(service: str, needs: list[str], kind: str) -> dict[str, str]:
    env = ["LOG_LEVEL", "NEVER_READY"] + (["DB_PASSWORD"] if service == "api" else [])
    manifest = "deployment.yaml" if kind == "kubernetes" else "marathon.json"
    meta = [f"outputs: [app.env, {manifest}]", f"env: [{', '.join(env)}]"]
    if needs:
        meta.append(f"depends_on: [{', '.join(needs)}]")
    return {
        "template.yaml": "\n".join(meta) + "\n",
        "app.env.j2": "".join(f"{key}={{{{ {key} }}}}\n" for key in env),
        f"{manifest}.j2": DEPLOYMENT_J2 if kind == "kubernetes" else MARATHON_J2,
    }


def make_rollout_world(
    root: Path,
    *,
    kind: str = "kubernetes",
    namespace: str = "",
    kubeconfig: Path | None = None,
    marathon_url: str = "",
    services: tuple[str, ...] = DEPLOYED,
    progress_deadline: int = 600,
    timeout: str = "120s",
    replicas: Mapping[str, int] | None = None,
) -> World:
    """The shop's dev env on one platform (`kind`), each service pinned to 1.0.0.

    `services` picks which of `SHOP` are deployed; the templates of all of them
    are released, so a test can add one later with `add_service`.
    """
    root.mkdir(parents=True, exist_ok=True)
    config = ConfigRepo.init(root / "config")
    if kind == "kubernetes":
        settings = f'kind: kubernetes, namespace: "{namespace}"'
        if kubeconfig is not None:
            settings += f', kubeconfig: "{kubeconfig}"'
        platform = f"  k8s: {{{settings}}}\n"
    else:
        platform = (
            f'  mesos: {{kind: marathon, url: "{marathon_url}", group: "/shop/{{{{ env }}}}",\n'
            f'          secrets_url: "{marathon_url}/secrets/v1"}}\n'
        )
    config.write(
        "configcenter.yaml",
        "project: shop\nenvironments: [dev]\ndeploy_repo: {url: ../deploy.git, branch: main}\n"
        "platforms:\n" + platform,
    )
    for service, needs in SHOP.items():
        for name, text in _template_files(service, needs, kind).items():
            config.write(f"templates/{service}/{name}", text)
    config.commit("templates 1.0.0")
    for service in SHOP:
        config.tag(f"{service}/1.0.0")
    config.write(
        "environments/_defaults.yaml",
        'values:\n  LOG_LEVEL: info\n  NEVER_READY: "false"\n  CPUS: 0.1\n',
    )
    config.write(
        "environments/dev/_env.yaml",
        f"platform: {'k8s' if kind == 'kubernetes' else 'mesos'}\n"
        f"rollout: {{timeout: {timeout}}}\n"
        "values:\n"
        f"  PROGRESS_DEADLINE: {progress_deadline}\n"
        f'  DB_PASSWORD: {{secret: "env:{SECRET_ENV}"}}\n',
    )
    for service in services:
        add_service(config, service, replicas=(replicas or {}).get(service, 1))
    config.commit("environments: dev")
    deploy = root / "deploy.git"
    git(root, "init", "-q", "--bare", "-b", "main", str(deploy))
    world = World(root, config, deploy, root / "state", root / "cache")
    world.env[SECRET_ENV] = SENTINEL
    return world


def add_service(config: ConfigRepo, service: str, *, replicas: int = 1) -> None:
    """Deploy `service` (its template is released already) in dev; the caller commits."""
    config.write(
        f"environments/dev/{service}.yaml",
        f"template: 1.0.0\nimage: {{ref: {GOOD_IMAGE.format(service=service)}}}\n"
        f"replicas: {replicas}\n",
    )


def set_service(world: World, service: str, *, image: str | None = None, **values: str) -> str:
    """Rewrite dev/<service>.yaml with a new image and/or values; commits, returns the sha."""
    rel = f"environments/dev/{service}.yaml"
    lines = [
        line
        for line in world.config.read(rel).splitlines()
        if not line.startswith(("image:", "values:", "  "))
    ]
    lines.append(f"image: {{ref: {image or GOOD_IMAGE.format(service=service)}}}")
    if values:
        lines.append("values:")
        lines += [f'  {key}: "{value}"' for key, value in values.items()]
    world.config.write(rel, "\n".join(lines) + "\n")
    return world.config.commit(f"dev: {service} {image or ''} {values}")


def workspace(world: World) -> Workspace:
    return Workspace(world.config.root)


@pytest.fixture
def rollout_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process's XDG dirs and the config's secret, for in-process applies."""
    root = tmp_path / "world"
    monkeypatch.setenv("XDG_STATE_HOME", str(root / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    monkeypatch.setenv(SECRET_ENV, SENTINEL)
    return root
