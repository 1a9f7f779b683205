"""A served shop: config origin behind the GitLab double, `configcenter serve` over real HTTP."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.configrepo import ConfigRepo, git
from tests.support.gitlab_double import GitLabDouble, WebhookDelivery
from tests.support.helpers import poll
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


__all__ = ["Served", "poll", "start_served"]
