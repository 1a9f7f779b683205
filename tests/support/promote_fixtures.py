"""Fixtures for promotion tests: a config repo with a bare remote, a bare deploy repo, releases.

`promotion_bed` builds a real config repo (templates released as Git tags,
dev/demo/prod) pushed to a bare `origin`, and a bare deploy repo that states are
written to with the real `apply_env` (no rollout: those environments have no
platform, so every committed release is a good one). Loaded from the root
conftest through `pytest_plugins`.
"""

from __future__ import annotations

import json
import secrets
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from configcenter.core.state import EnvState, state_dir
from configcenter.usecases.apply import ApplyOptions, ApplyResult, apply_env
from configcenter.usecases.promote.text import MARKER
from configcenter.usecases.workspace import Workspace
from tests.support.configrepo import git, need_git
from tests.support.gitlab_double import GitLabDouble

GITLAB_PROJECT = "ops/shop-config"
DB_SECRET_ENV = "CC_PROMOTE_TEST_DB_PASSWORD"
TOKEN_ENV = "CC_PROMOTE_TEST_GITLAB_TOKEN"
WEBHOOK_ENV = "CC_PROMOTE_TEST_WEBHOOK_TOKEN"

API_APP_ENV = """\
    # {{ service }} in {{ env }} ({{ template_tag }})
    LOG_LEVEL={{ LOG_LEVEL }}
    DB_PASSWORD={{ DB_PASSWORD }}
    IMAGE={{ image }}
"""

FILES = {
    "environments/_defaults.yaml": """\
        values:
          LOG_LEVEL: info
          DB_NAME: shop
    """,
    "environments/dev/_env.yaml": """\
        allow_head: true
        auto_apply: true
        values:
          LOG_LEVEL: debug
          DB_PASSWORD: {secret: "env:CC_PROMOTE_TEST_DB_PASSWORD"}
    """,
    "environments/dev/api.yaml": """\
        template: 1.1.0
        image: {ref: registry.example.com/shop/api:1.1}
        values:
          FEATURE_FLAGS: checkout-v2
    """,
    "environments/dev/db.yaml": """\
        template: 1.0.0
        image: {ref: docker.io/library/postgres:16}
    """,
    "environments/demo/_env.yaml": """\
        values:
          DB_PASSWORD: {secret: "env:CC_PROMOTE_TEST_DB_PASSWORD"}
    """,
    "environments/demo/api.yaml": """\
        # The api in demo: reviewed by the shop team.
        template: 1.0.0   # pinned tag
        image: {ref: registry.example.com/shop/api:1.0}
        replicas: 2       # two for the demo load
        values:
          LOG_LEVEL: warning   # quieter than dev
    """,
    "environments/demo/db.yaml": """\
        template: 1.0.0
        image: {ref: docker.io/library/postgres:16}
    """,
    "environments/prod/_env.yaml": """\
        values:
          DB_PASSWORD: {secret: "env:CC_PROMOTE_TEST_DB_PASSWORD"}
    """,
    "environments/prod/api.yaml": """\
        template: 1.0.0
        image: {ref: registry.example.com/shop/api:1.0}
        replicas: 3
    """,
    "environments/prod/db.yaml": """\
        template: 1.0.0
        image: {ref: docker.io/library/postgres:16}
    """,
}


class PromotionBed:
    """The config repo (a clone of a bare `origin`), the deploy repo, and how to change them."""

    def __init__(self, root: Path, forge: str, gitlab_url: str = "") -> None:
        need_git()
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.origin = root / "shop-config.git"
        self.config = root / "shop-config"
        self.deploy = root / "shop-deploy.git"
        self.db_password = f"pw-{secrets.token_hex(8)}"
        git(root, "init", "-q", "--bare", "-b", "main", str(self.origin))
        git(root, "init", "-q", "--bare", "-b", "main", str(self.deploy))
        git(root, "clone", "-q", str(self.origin), str(self.config))
        for key, value in (("user.name", "ops"), ("user.email", "ops@shop.invalid")):
            git(self.config, "config", key, value)
        self.forge = forge
        self.gitlab_url = gitlab_url
        self._write_project()
        self._release("api", "1.0.0", ["LOG_LEVEL", "DB_PASSWORD"], API_APP_ENV)
        self._release("api", "1.1.0", ["LOG_LEVEL", "DB_PASSWORD"], API_APP_ENV + "    V=1.1\n")
        self._release(
            "api",
            "1.2.0",
            ["LOG_LEVEL", "DB_PASSWORD", "FEATURE_FLAGS"],
            API_APP_ENV + "    FEATURE_FLAGS={{ FEATURE_FLAGS }}\n",
        )
        self.write_many({"templates/db/template.yaml": "outputs: [app.env]\nenv: [DB_NAME]\n"})
        self.write_many({"templates/db/app.env.j2": "POSTGRES_DB={{ DB_NAME }}\n"})
        self.commit("db 1.0.0")
        git(self.config, "tag", "-a", "-m", "db/1.0.0", "db/1.0.0")
        self.write_many(FILES)
        self.commit("environments dev, demo, prod")
        self.push()

    # -- config repo ----------------------------------------------------------------

    def _write_project(self, extra: str = "") -> None:
        forge = {
            "local": "forge: {kind: local}\n",
            "gitlab": (
                f"forge:\n  kind: gitlab\n  url: {self.gitlab_url}\n  project: {GITLAB_PROJECT}\n"
                f'  token: {{secret: "env:{TOKEN_ENV}"}}\n'
                f'  webhook_token: {{secret: "env:{WEBHOOK_ENV}"}}\n'
            ),
        }[self.forge]
        self.write_many(
            {
                "configcenter.yaml": (
                    "project: shop\n"
                    "environments: [dev, demo, prod]   # promotion order\n"
                    f"deploy_repo: {{url: {self.deploy}, branch: main}}\n" + forge + extra
                )
            },
            dedent=False,
        )

    def set_project(self, extra: str) -> None:
        """Rewrite configcenter.yaml with `extra` settings (e.g. promotion rules) and push."""
        self._write_project(extra)
        self.commit("configcenter.yaml")
        self.push()

    def _release(self, service: str, version: str, env: list[str], app_env: str) -> None:
        self.write_many(
            {
                f"templates/{service}/template.yaml": (
                    f"outputs: [app.env]\nenv: [{', '.join(env)}]\n"
                ),
                f"templates/{service}/app.env.j2": app_env,
            }
        )
        self.commit(f"{service} {version}")
        git(self.config, "tag", "-a", "-m", f"{service}/{version}", f"{service}/{version}")

    def write_many(self, files: dict[str, str], *, dedent: bool = True) -> None:
        for rel, text in files.items():
            path = self.config / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text) if dedent else text)

    def commit(self, message: str) -> str:
        git(self.config, "add", "-A")
        git(self.config, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.config, "rev-parse", "HEAD").strip()

    def push(self) -> None:
        git(self.config, "push", "-q", "--tags", "origin", "HEAD:refs/heads/main")
        git(self.config, "fetch", "-q", "origin")

    def change(self, rel: str, text: str, message: str) -> None:
        """Commit a file on main and push it (as ops editing the config repo)."""
        self.write_many({rel: text})
        self.commit(message)
        self.push()

    def origin_file(self, ref: str, rel: str) -> str:
        return git(self.origin, "show", f"{ref}:{rel}")

    def origin_branches(self) -> list[str]:
        out = git(self.origin, "for-each-ref", "--format=%(refname:short)", "refs/heads")
        return out.split()

    def log(self, ref: str, repo: Path | None = None) -> list[str]:
        return git(repo or self.origin, "log", "--format=%H", ref).split()

    # -- deploy repo ----------------------------------------------------------------

    def ws(self, root: Path | None = None) -> Workspace:
        return Workspace(root or self.config)

    def apply(self, env: str) -> ApplyResult:
        """`configcenter apply ENV --no-rollout` through the real use case."""
        return apply_env(self.ws(), env, ApplyOptions(rollout=False, trigger="test"))

    def state(self, env: str) -> EnvState:
        names = git(self.deploy, "ls-tree", "-r", "--name-only", "main", "--", state_dir(env))
        files = {n: git(self.deploy, "show", f"main:{n}").encode() for n in names.split()}
        return EnvState.from_files(env, files)

    def publish_state(self, state: EnvState) -> None:
        """Write the env's state records to the deploy repo with plain git (an outcome)."""
        work = self.root / "deploy-work"
        if not work.exists():
            git(self.root, "clone", "-q", str(self.deploy), str(work))
        git(work, "pull", "-q", "origin", "main")
        shutil.rmtree(work / state_dir(state.env), ignore_errors=True)
        for rel, data in state.files().items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_bytes(data)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", f"record {state.env}")
        git(work, "push", "-q", "origin", "HEAD:refs/heads/main")

    def deploy_head(self) -> str:
        return git(self.deploy, "rev-parse", "main").strip()

    def serve_checkout(self) -> Path:
        """The checkout `serve` keeps: a second clone of origin that only follows it."""
        path = self.root / "serve-config"
        if not path.exists():
            git(self.root, "clone", "-q", str(self.origin), str(path))
        return path


@pytest.fixture
def promote_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Private cache/state dirs and the secrets the bed's config refers to."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv(DB_SECRET_ENV, f"db-{secrets.token_hex(8)}")
    yield tmp_path


@pytest.fixture
def promotion_bed(promote_env: Path) -> PromotionBed:
    """dev runs api 1.1.0 (applied); demo and prod pin api 1.0.0; local forge."""
    bed = PromotionBed(promote_env / "bed", "local")
    bed.apply("dev")
    bed.apply("demo")
    return bed


@pytest.fixture
def gitlab_bed(
    promote_env: Path, gitlab_server: GitLabDouble, monkeypatch: pytest.MonkeyPatch
) -> tuple[PromotionBed, GitLabDouble]:
    """The same bed with `forge: gitlab` pointing at the GitLab double, which serves origin."""
    bed = PromotionBed(promote_env / "bed", "gitlab", gitlab_server.url)
    monkeypatch.setenv(TOKEN_ENV, gitlab_server.token)
    monkeypatch.setenv(WEBHOOK_ENV, gitlab_server.webhook_token or "")
    gitlab_server.add_project(GITLAB_PROJECT, bed.origin)
    bed.apply("dev")
    bed.apply("demo")
    return bed, gitlab_server


def read_marker(description: str) -> dict[str, Any] | None:
    """The machine-readable block of a promotion description, or None."""
    start = description.find(f"<!-- {MARKER}")
    if start < 0:
        return None
    body = description[start + len(f"<!-- {MARKER}") :]
    end = body.find("-->")
    if end < 0:
        return None
    try:
        data = json.loads(body[:end])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
