"""Fixtures for the GitLab API v4 double: a running server and a project backed by a bare repo.

Loaded from the root conftest through `pytest_plugins`. The server needs only
Python and git, both always present, so nothing here skips.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.gitlab_double import GIT_IDENTITY, GitLabDouble, Project

GITLAB_PROJECT_PATH = "ops/shop-config"


def run_git(cwd: Path, *args: str) -> str:
    """Run real git with a fixed identity; returns stdout."""
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_IDENTITY},
        check=True,
    )
    return result.stdout.strip()


@dataclass(frozen=True)
class GitLabConfigRepo:
    """A config repo clone whose `origin` is the bare repo the double serves."""

    bare: Path
    work: Path
    project: Project

    def commit_on(self, branch: str, filename: str, content: str, message: str) -> str:
        """Commit a file on `branch` (created from its remote if needed) and push it."""
        start = f"origin/{branch}" if self.has_remote(branch) else "origin/main"
        run_git(self.work, "checkout", "-q", "-B", branch, start)
        (self.work / filename).parent.mkdir(parents=True, exist_ok=True)
        (self.work / filename).write_text(content)
        run_git(self.work, "add", filename)
        run_git(self.work, "commit", "-q", "-m", message)
        run_git(self.work, "push", "-q", "origin", f"{branch}:refs/heads/{branch}")
        run_git(self.work, "fetch", "-q", "origin")
        return run_git(self.work, "rev-parse", "HEAD")

    def has_remote(self, branch: str) -> bool:
        refs = run_git(self.work, "ls-remote", "--heads", "origin", branch)
        return bool(refs)

    def branch_sha(self, branch: str) -> str:
        return run_git(self.bare, "rev-parse", f"refs/heads/{branch}")


@pytest.fixture
def gitlab_server() -> Iterator[GitLabDouble]:
    """A GitLab API v4 double on 127.0.0.1 (free port), with a random API and webhook token."""
    double = GitLabDouble(
        token=f"glpat-{secrets.token_urlsafe(15)}",
        webhook_token=f"whsec-{secrets.token_urlsafe(15)}",
    )
    double.start()
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture
def gitlab_config_repo(tmp_path: Path, gitlab_server: GitLabDouble) -> GitLabConfigRepo:
    """A bare config repo with `main`, `dev`, `demo` and `prod`, served as ops/shop-config."""
    bare = tmp_path / "shop-config.git"
    work = tmp_path / "shop-config"
    run_git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    run_git(tmp_path, "clone", "-q", str(bare), str(work))
    (work / "configcenter.yaml").write_text("project: shop\nenvironments: [dev, demo, prod]\n")
    run_git(work, "add", "configcenter.yaml")
    run_git(work, "commit", "-q", "-m", "Start the config repo")
    run_git(work, "push", "-q", "origin", "HEAD:refs/heads/main")
    for env in ("dev", "demo", "prod"):
        run_git(work, "push", "-q", "origin", f"HEAD:refs/heads/{env}")
    run_git(work, "fetch", "-q", "origin")
    project = gitlab_server.add_project(GITLAB_PROJECT_PATH, bare)
    return GitLabConfigRepo(bare=bare, work=work, project=project)
