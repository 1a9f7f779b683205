"""End-to-end worlds: a real config repo, a bare deploy remote and private state dirs.

The e2e tests drive the real `configcenter` command in child processes, so what
they see (exit codes, stdout, stderr, what lands in Git and the run store) is
exactly what a user or a CI job sees. Every world gets its own XDG_STATE_HOME
and XDG_CACHE_HOME, so nothing touches the user's ~/.cache or ~/.local/state.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.configrepo import ConfigRepo, git, need_git

SECRET_ENV = "SHOP_DB_PASSWORD"
CLI_TIMEOUT = 180.0

PROJECT = """\
project: shop
environments: [dev, prod]
deploy_repo: {url: ../deploy.git, branch: main}
platforms:
  local: {kind: kubernetes, context: kind-local, namespace: "shop-{{ env }}"}
"""

MESOS_PLATFORM = """\
  mesos: {{kind: marathon, url: "{url}", group: "/shop/{{{{ env }}}}",
          secrets_url: "{url}/secrets/v1"}}
"""

TEMPLATES_1_0_0: dict[str, str] = {
    "db/template.yaml": """\
        outputs: [app.env]
        env: [DB_NAME]
    """,
    "db/app.env.j2": """\
        POSTGRES_DB={{ DB_NAME }}
    """,
    "api/template.yaml": """\
        outputs: [app.env, deployment.yaml, marathon.json]
        env: [LOG_LEVEL, DB_HOST, DB_PASSWORD]
        depends_on: [db]
    """,
    "api/app.env.j2": """\
        # {{ service }} in {{ env }} ({{ template_tag }})
        LOG_LEVEL={{ LOG_LEVEL }}
        DB_HOST={{ DB_HOST }}
        DB_PASSWORD={{ DB_PASSWORD }}
    """,
    "api/deployment.yaml.j2": """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: {{ service }}}
        spec:
          replicas: {{ replicas }}
          image: {{ image }}
    """,
    "api/marathon.json.j2": """\
        {"id": "{{ service }}", "cpus": 0.1, "mem": 64,
         "container": {"type": "DOCKER", "docker": {"image": "{{ image }}"}}}
    """,
    "worker/template.yaml": """\
        outputs: [app.env]
        env: [LOG_LEVEL, QUEUE]
    """,
    "worker/app.env.j2": """\
        LOG_LEVEL={{ LOG_LEVEL }}
        QUEUE={{ QUEUE }}
    """,
}

# api 1.1.0 adds a line, so a pin move changes the rendered files.
API_1_1_0 = {
    "app.env.j2": """\
        # {{ service }} in {{ env }} ({{ template_tag }})
        LOG_LEVEL={{ LOG_LEVEL }}
        DB_HOST={{ DB_HOST }}
        DB_PASSWORD={{ DB_PASSWORD }}
        FEATURE_CHECKOUT_V2=true
    """,
}

ENVIRONMENTS: dict[str, str] = {
    "environments/_defaults.yaml": """\
        values:
          LOG_LEVEL: info
          DB_HOST: db
          DB_NAME: shop
    """,
    "environments/dev/_env.yaml": """\
        platform: local
        values:
          LOG_LEVEL: debug
          DB_PASSWORD: {secret: "env:SHOP_DB_PASSWORD"}
    """,
    "environments/dev/db.yaml": """\
        template: 1.0.0
        image: {ref: docker.io/library/postgres:16}
    """,
    "environments/dev/api.yaml": """\
        template: 1.0.0
        image: {ref: registry.example.com/shop/api:1.0}
        replicas: 1
        values:
          LOG_LEVEL: debug
    """,
    "environments/dev/worker.yaml": """\
        template: 1.0.0
        image: {ref: registry.example.com/shop/worker:1.0}
        values:
          QUEUE: jobs
    """,
    "environments/prod/_env.yaml": """\
        platform: local
        values:
          DB_PASSWORD: {secret: "env:SHOP_DB_PASSWORD"}
    """,
    "environments/prod/db.yaml": """\
        template: 1.0.0
        image: {ref: docker.io/library/postgres:16}
    """,
    "environments/prod/api.yaml": """\
        template: 1.0.0
        image: {ref: registry.example.com/shop/api:1.0}
        replicas: 2
    """,
}


def git_bare(path: Path, *args: str, stdin: bytes | None = None) -> bytes:
    """Plain git against a bare repository, bytes out."""
    proc = subprocess.run(
        ["git", f"--git-dir={path}", *args], input=stdin, capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {path}:\n{proc.stderr.decode()}")
    return proc.stdout


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class World:
    """One user's view: a config repo clone, the shared deploy remote, private XDG dirs."""

    root: Path
    config: ConfigRepo
    deploy: Path  # the bare deploy remote
    state_home: Path
    cache_home: Path
    env: dict[str, str] = field(default_factory=dict)

    # -- running the CLI -------------------------------------------------------------------

    def child_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GIT_", "CONFIGCENTER_")) and k != SECRET_ENV
        }
        env.update(
            {
                "XDG_STATE_HOME": str(self.state_home),
                "XDG_CACHE_HOME": str(self.cache_home),
                "COLUMNS": "250",
                "NO_COLOR": "1",
                "PYTHONUNBUFFERED": "1",
                "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_CONFIG_NOSYSTEM": "1",
            }
        )
        env.update(self.env)
        env.update(extra or {})
        return env

    def cc(self, *args: str, extra_env: Mapping[str, str] | None = None) -> CliResult:
        """`configcenter -C <config> ARGS` in a child process."""
        proc = subprocess.run(
            [sys.executable, "-m", "configcenter", "-C", str(self.config.root), *args],
            capture_output=True,
            text=True,
            env=self.child_env(extra_env),
            timeout=CLI_TIMEOUT,
            cwd=self.root,
            check=False,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, extra_env: Mapping[str, str] | None = None) -> CliResult:
        """Like `cc`, asserting exit 0 (the output is in the failure message)."""
        result = self.cc(*args, extra_env=extra_env)
        assert result.code == 0, f"configcenter {' '.join(args)} exited {result.code}:\n" + (
            result.output
        )
        return result

    # -- the deploy remote -----------------------------------------------------------------

    def git_deploy(self, *args: str, stdin: bytes | None = None) -> bytes:
        return git_bare(self.deploy, *args, stdin=stdin)

    def head(self) -> str | None:
        proc = subprocess.run(
            ["git", f"--git-dir={self.deploy}", "rev-parse", "-q", "--verify", "refs/heads/main"],
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.stdout.strip() if proc.returncode == 0 else None

    def refs(self) -> str:
        return self.git_deploy("for-each-ref", "--format=%(refname) %(objectname)").decode()

    def commit_count(self) -> int:
        head = self.head()
        return 0 if head is None else int(self.git_deploy("rev-list", "--count", head))

    def message(self, rev: str = "refs/heads/main") -> str:
        return self.git_deploy("log", "-1", "--format=%B", rev).decode()

    def trailers(self, rev: str = "refs/heads/main") -> list[tuple[str, str]]:
        raw = self.git_deploy(
            "log", "-1", "--format=%(trailers:only,unfold,separator=%x1f)", rev
        ).decode()
        pairs = []
        for item in raw.strip().split("\x1f"):
            if item.strip():
                key, _, value = item.partition(":")
                pairs.append((key.strip(), value.strip()))
        return pairs

    def files(self, rev: str = "refs/heads/main") -> dict[str, bytes]:
        names = [
            n for n in self.git_deploy("ls-tree", "-r", "-z", "--name-only", rev).split(b"\0") if n
        ]
        return {
            n.decode(): self.git_deploy("cat-file", "blob", f"{rev}:{n.decode()}") for n in names
        }

    def ls_tree(self, rev: str = "refs/heads/main") -> str:
        return self.git_deploy("ls-tree", "-r", rev).decode()

    def state(self, env: str = "dev", rev: str = "refs/heads/main") -> dict[str, Any]:
        """The env's state records at `rev` as {"env": ..., "services": {name: record}}."""
        listing = self.git_deploy("ls-tree", "-r", "-z", "--name-only", rev, "--", f"{env}/.state")
        services: dict[str, Any] = {}
        result: dict[str, Any] = {"env": env}
        for name in (n.decode() for n in listing.split(b"\0") if n):
            if name.endswith("/_env.json"):  # the environment's own record, not a service
                own = json.loads(self.git_deploy("cat-file", "blob", f"{rev}:{name}"))
                result["config_commit"] = own["config_commit"]
                continue
            record = json.loads(self.git_deploy("cat-file", "blob", f"{rev}:{name}"))
            assert isinstance(record, dict), f"{name} is not a JSON object: {record!r}"
            record.pop("configcenter_state")
            services[record.pop("service")] = record
        result["services"] = services
        return result

    def all_objects(self) -> bytes:
        """Every object in the deploy remote, loose or packed, reachable or not."""
        return self.git_deploy("cat-file", "--batch-all-objects", "--batch")

    # -- the run store ---------------------------------------------------------------------

    @property
    def run_store_file(self) -> Path:
        """The project's default run store (the worlds are all project `shop`)."""
        return self.state_home / "configcenter" / "projects" / "shop" / "runs.sqlite3"

    def runs(self) -> list[tuple[str, str, str, str, str]]:
        """(id, kind, env, trigger, outcome) of every run, oldest first."""
        if not self.run_store_file.exists():
            return []
        with contextlib.closing(sqlite3.connect(self.run_store_file)) as db:
            rows = db.execute("SELECT id, kind, env, trigger, outcome FROM runs ORDER BY id")
            return [(str(a), str(b), str(c), str(d), str(e)) for a, b, c, d, e in rows]

    def run_store_dump(self) -> str:
        """Everything the run store holds, as SQL text (the file may be empty pages)."""
        if not self.run_store_file.exists():
            return ""
        with contextlib.closing(sqlite3.connect(self.run_store_file)) as db:
            return "\n".join(db.iterdump())


def make_world(root: Path, *, marathon_url: str | None = None, deploy: Path | None = None) -> World:
    """The shop config repo (db, api, worker; dev and prod) and an empty bare deploy repo.

    Templates are released as 1.0.0 and api also as 1.1.0; every environment pins
    1.0.0. With `marathon_url`, prod runs on a Marathon platform at that URL.
    """
    need_git()
    root.mkdir(parents=True, exist_ok=True)
    config = ConfigRepo.init(root / "config")
    project = PROJECT
    if marathon_url is not None:
        project += MESOS_PLATFORM.format(url=marathon_url)
    config.write("configcenter.yaml", project)
    for rel, text in TEMPLATES_1_0_0.items():
        config.write(f"templates/{rel}", text)
    config.commit("templates 1.0.0")
    for service in ("db", "api", "worker"):
        config.tag(f"{service}/1.0.0")
    config.release("api", "1.1.0", API_1_1_0)
    for rel, text in ENVIRONMENTS.items():
        if marathon_url is not None and rel == "environments/prod/_env.yaml":
            text = text.replace("platform: local", "platform: mesos")
        config.write(rel, text)
    config.commit("environments dev, prod")
    if deploy is None:
        deploy = root / "deploy.git"
        git(root, "init", "-q", "--bare", "-b", "main", str(deploy))
    return World(root, config, deploy, root / "state", root / "cache")


def clone_world(world: World, root: Path) -> World:
    """Another user: a clone of the config repo, sharing the deploy remote."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "clone", "-q", str(world.config.root), str(root / "config"))
    config = ConfigRepo(root / "config")
    config.git("config", "user.name", "configcenter tests")
    config.git("config", "user.email", "tests@configcenter.invalid")
    config.git("fetch", "-q", "--tags", "origin")
    # The clone's configcenter.yaml points at ../deploy.git: reach the shared remote.
    config.write(
        "configcenter.yaml",
        config.read("configcenter.yaml").replace("../deploy.git", str(world.deploy)),
    )
    config.commit("point at the shared deploy repo")
    return World(root, config, world.deploy, root / "state", root / "cache", dict(world.env))


@pytest.fixture
def world(tmp_path: Path) -> World:
    """A fresh shop world; the secret the config names is set for the CLI's children."""
    made = make_world(tmp_path / "world")
    made.env[SECRET_ENV] = "dev-password-not-secret-in-tests"
    return made
