"""Small real config repos for tests: files on disk, real Git commits and tags.

Tests build exactly the repo they need (`ConfigRepo.basic` is a valid starting
point), then break or change one thing and assert what the core says about it.
A test about files only (no commits, no tags made during the test) uses
`MemoryRepo.basic`, the same repo held in memory: no Git, no disk.
Deploy state goes into a real bare deploy repo (`DeployRemote`), committed with
plain git, so planning reads it the way it will in production.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from configcenter.adapters.git_config_repo import GitConfigRepo
from configcenter.adapters.git_env import git_env
from configcenter.core.errors import ConfigError, Problem, ProblemList
from configcenter.core.load import load_config
from configcenter.core.model import Config
from configcenter.core.plan import Plan, ServicePlan, service_record
from configcenter.core.source import ConfigSource, MemorySource
from configcenter.core.state import EnvState, Release, ServiceState, state_dir

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "configcenter tests",
    "GIT_AUTHOR_EMAIL": "tests@configcenter.invalid",
    "GIT_COMMITTER_NAME": "configcenter tests",
    "GIT_COMMITTER_EMAIL": "tests@configcenter.invalid",
}


def need_git() -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed; apt-get install git")


def git(cwd: Path, *args: str) -> str:
    """Plain git, with a fixed identity and no user or system config leaking in (nor a
    GIT_DIR a test sets to play a git hook: `git_env`, as the product's git calls)."""
    env = {
        **git_env(),
        **GIT_IDENTITY,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}:\n{proc.stderr}")
    return proc.stdout


BASIC_PROJECT = """\
project: shop
environments: [dev, prod]
platforms:
  local: {kind: kubernetes, context: kind-local, namespace: "shop-{{ env }}"}
"""

BASIC_FILES: dict[str, str] = {
    "templates/db/template.yaml": """\
        outputs: [app.env]
        env: [DB_NAME]
    """,
    "templates/db/app.env.j2": """\
        POSTGRES_DB={{ DB_NAME }}
    """,
    "templates/api/template.yaml": """\
        outputs: [app.env, deployment.yaml]
        env: [LOG_LEVEL, DB_HOST, DB_PASSWORD]
        depends_on: [db]
    """,
    "templates/api/app.env.j2": """\
        # {{ service }} in {{ env }} ({{ template_tag }})
        LOG_LEVEL={{ LOG_LEVEL }}
        DB_HOST={{ DB_HOST }}
        DB_PASSWORD={{ DB_PASSWORD }}
    """,
    "templates/api/deployment.yaml.j2": """\
        kind: Deployment
        metadata: {name: {{ service }}, namespace: {{ platform.namespace }}}
        spec:
          replicas: {{ replicas }}
          image: {{ image }}
    """,
    "environments/_defaults.yaml": """\
        values:
          LOG_LEVEL: info
          DB_HOST: db
          DB_NAME: shop
    """,
    "environments/dev/_env.yaml": """\
        platform: local
        allow_head: true
        values:
          LOG_LEVEL: debug
          DB_PASSWORD: {secret: "env:SHOP_DB_PASSWORD"}
    """,
    "environments/dev/api.yaml": """\
        template: 1.0.0
        image: {ref: registry.example.com/shop/api:1.0}
        replicas: 1
    """,
    "environments/dev/db.yaml": """\
        template: 1.0.0
        image: {ref: docker.io/library/postgres:16}
    """,
    "environments/prod/_env.yaml": """\
        platform: local
        values:
          DB_PASSWORD: {secret: "env:SHOP_DB_PASSWORD"}
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


class ConfigRepo:
    """A config repo in a temporary directory, driven with plain git."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def init(cls, root: Path) -> ConfigRepo:
        need_git()
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "-q", "-b", "main")
        git(root, "config", "user.name", GIT_IDENTITY["GIT_AUTHOR_NAME"])
        git(root, "config", "user.email", GIT_IDENTITY["GIT_AUTHOR_EMAIL"])
        git(root, "config", "tag.gpgSign", "false")
        git(root, "config", "commit.gpgSign", "false")
        return cls(root)

    @classmethod
    def basic(cls, root: Path) -> ConfigRepo:
        """api (depends on db) and db, both released as 1.0.0; dev and prod pin 1.0.0."""
        repo = cls.init(root)
        repo.write("configcenter.yaml", BASIC_PROJECT)
        for rel in ("templates/db/template.yaml", "templates/db/app.env.j2"):
            repo.write(rel, BASIC_FILES[rel])
        for rel, text in BASIC_FILES.items():
            if rel.startswith("templates/api/"):
                repo.write(rel, text)
        repo.commit("templates 1.0.0")
        repo.tag("api/1.0.0")
        repo.tag("db/1.0.0")
        for rel, text in BASIC_FILES.items():
            if rel.startswith("environments/"):
                repo.write(rel, text)
        repo.commit("environments")
        return repo

    # -- files ---------------------------------------------------------------------------------

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text(encoding="utf-8")

    def remove(self, rel: str) -> None:
        path = self.root / rel
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    def line_of(self, rel: str, needle: str, occurrence: int = 1) -> int:
        """The 1-based line of the `occurrence`-th line of `rel` containing `needle`."""
        return line_of(self.read(rel), rel, needle, occurrence)

    # -- git -----------------------------------------------------------------------------------

    def git(self, *args: str) -> str:
        return git(self.root, *args)

    def commit(self, message: str = "change") -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def tag(self, name: str, rev: str = "HEAD", *, force: bool = False) -> str:
        """An annotated tag, as `template release` makes them; returns its commit."""
        self.git("tag", *(["-f"] if force else []), "-a", "-m", name, name, rev)
        return self.git("rev-parse", f"{name}^{{commit}}").strip()

    def release(self, service: str, version: str, files: Mapping[str, str]) -> str:
        """Write template files, commit them, and tag `service/version`."""
        for rel, text in files.items():
            self.write(f"templates/{service}/{rel}", text)
        self.commit(f"{service} {version}")
        return self.tag(f"{service}/{version}")

    # -- loading -------------------------------------------------------------------------------

    def source(self) -> GitConfigRepo:
        return GitConfigRepo(self.root)

    def load(self, problems: ProblemList | None = None) -> Config:
        return load_config(self.source(), problems)

    def problems(self) -> list[Problem]:
        """Every problem loading reports (errors and warnings), or [] when it loads clean."""
        return problems_of(self.source())


class MemoryRepo:
    """The basic config repo held in memory (`MemorySource`): for tests that need files, not Git.

    Same file helpers as ConfigRepo (write, read, remove, line_of, load, problems);
    templates are released by `tags` (tag -> files of templates/<service> at it).
    """

    def __init__(
        self, files: Mapping[str, str], tags: Mapping[str, Mapping[str, str]] | None = None
    ) -> None:
        self.files = dict(files)
        self.tags = {tag: dict(tree) for tag, tree in (tags or {}).items()}

    @classmethod
    def basic(cls) -> MemoryRepo:
        """api (depends on db) and db, both released as 1.0.0; dev and prod pin 1.0.0."""
        files = {"configcenter.yaml": BASIC_PROJECT}
        files.update({rel: textwrap.dedent(text) for rel, text in BASIC_FILES.items()})
        tags = {
            f"{service}/1.0.0": {
                rel.removeprefix(f"templates/{service}/"): text
                for rel, text in files.items()
                if rel.startswith(f"templates/{service}/")
            }
            for service in ("api", "db")
        }
        return cls(files, tags)

    def write(self, rel: str, text: str) -> None:
        self.files[rel] = textwrap.dedent(text)

    def read(self, rel: str) -> str:
        return self.files[rel]

    def remove(self, rel: str) -> None:
        """A file, or everything under a directory."""
        gone = [p for p in self.files if p == rel or p.startswith(rel.rstrip("/") + "/")]
        if not gone:
            raise AssertionError(f"{rel} is not in the repo")
        for path in gone:
            del self.files[path]

    def line_of(self, rel: str, needle: str, occurrence: int = 1) -> int:
        return line_of(self.read(rel), rel, needle, occurrence)

    def source(self) -> MemorySource:
        return MemorySource(self.files, self.tags)

    def load(self, problems: ProblemList | None = None) -> Config:
        return load_config(self.source(), problems)

    def problems(self) -> list[Problem]:
        """Every problem loading reports (errors and warnings), or [] when it loads clean."""
        return problems_of(self.source())


def line_of(text: str, rel: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based line of the `occurrence`-th line of `text` (file `rel`) with `needle`."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} is not in {rel}")


def problems_of(source: ConfigSource) -> list[Problem]:
    """Every problem loading `source` reports (errors and warnings); [] when it loads clean."""
    found = ProblemList()
    try:
        load_config(source, found)
    except ConfigError as exc:
        return exc.problems
    return found.items


def only_problem(problems: list[Problem], severity: str = "error") -> Problem:
    picked = [p for p in problems if p.severity == severity]
    assert len(picked) == 1, "expected one problem, got:\n" + "\n".join(map(str, problems))
    return picked[0]


# -- deploy state ------------------------------------------------------------------------------


def service_state(plan: ServicePlan, *, release_id: str = "r1") -> ServiceState:
    """The state record apply writes for a planned (and applied) service."""
    release = Release(
        id=release_id,
        outcome="committed",
        at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        template_tag=plan.template_to or "",
        image=plan.image.ref if plan.image else "",
        values_digest=plan.values_digest,
        rendered_digest=plan.rendered_digest,
        inputs_digest=plan.inputs_digest,
        secrets_generation=plan.secrets_generation,
    )
    return service_record(plan, release, last_good=release, last_failed=None)


def legacy_state_yaml(state: EnvState) -> bytes:
    """`state` as a format-1 ``<env>/state.yaml`` (still read, and migrated, by configcenter;
    it writes format 2 only), for tests of reading and migrating it."""
    data: dict[str, object] = {"env": state.env}
    if state.config_commit:
        data["config_commit"] = state.config_commit
    data["services"] = {name: state.services[name].to_dict() for name in sorted(state.services)}
    body = yaml.dump(data, Dumper=yaml.CSafeDumper, sort_keys=False, default_flow_style=False)
    header = "# Written by configcenter. Do not edit: the next plan compares against it.\n"
    return (header + body).encode()


def state_after(plan: Plan, *, release_id: str = "r1") -> EnvState:
    """The env state after applying `plan` in full (deleted services drop out)."""
    return EnvState(
        plan.env,
        {
            s.service: service_state(s, release_id=release_id)
            for s in plan.services
            if s.action != "delete"
        },
    )


def deploy_files(plan: Plan) -> dict[str, bytes]:
    """The rendered files apply writes to the deploy repo for `plan`."""
    out: dict[str, bytes] = {}
    for s in plan.services:
        for name, data in (s.files or {}).items():
            out[f"{plan.env}/{s.service}/{name}"] = data
    return out


class DeployRemote:
    """A bare deploy repo on disk, written through a work clone with plain git."""

    def __init__(self, root: Path) -> None:
        need_git()
        self.path = root / "deploy.git"
        self.work = root / "deploy-work"
        git(root, "init", "-q", "--bare", "-b", "main", str(self.path))

    @property
    def url(self) -> str:
        return str(self.path)

    def publish(self, env_state: EnvState, files: Mapping[str, bytes] | None = None) -> str:
        """Commit the env's state records (and rendered files) and push to the bare repo."""
        if not self.work.exists():
            git(self.path.parent, "clone", "-q", str(self.path), str(self.work))
            git(self.work, "checkout", "-q", "-B", "main")
        shutil.rmtree(self.work / state_dir(env_state.env), ignore_errors=True)
        writes = {**(files or {}), **env_state.files()}
        for rel, data in writes.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "--allow-empty", "-m", f"state of {env_state.env}")
        git(self.work, "push", "-q", "origin", "HEAD:refs/heads/main")
        return git(self.work, "rev-parse", "HEAD").strip()
