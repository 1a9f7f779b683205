"""Real bare Git remotes on disk and deploy repo caches pointing at them."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from configcenter.adapters.git_deploy_repo import GitDeployRepo


@dataclass
class BareRemote:
    """A bare repository standing in for the shared deploy repo remote."""

    path: Path
    branch: str = "main"

    @property
    def url(self) -> str:
        return str(self.path)

    def git(self, *args: str, stdin: bytes | None = None) -> bytes:
        return subprocess.run(
            ["git", f"--git-dir={self.path}", *args], input=stdin, capture_output=True, check=True
        ).stdout

    def head(self) -> str | None:
        proc = subprocess.run(
            ["git", f"--git-dir={self.path}", "rev-parse", "-q", "--verify",
             f"refs/heads/{self.branch}"],
            capture_output=True,
        )  # fmt: skip
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def names(self, rev: str | None = None) -> list[str]:
        """Every file path at ``rev`` (default: the branch head)."""
        rev = rev or self.head()
        if rev is None:
            return []
        out = self.git("ls-tree", "-r", "-z", "--name-only", rev)
        return [n.decode() for n in out.split(b"\0") if n]

    def files(self, rev: str | None = None) -> dict[str, bytes]:
        """Every file at ``rev`` with its bytes, read with plain git (one process per file)."""
        rev = rev or self.head()
        return {n: self.git("cat-file", "blob", f"{rev}:{n}") for n in self.names(rev)}

    def parents(self, rev: str) -> list[str]:
        return self.git("rev-list", "--parents", "-n1", rev).decode().split()[1:]

    def count(self) -> int:
        head = self.head()
        return 0 if head is None else int(self.git("rev-list", "--count", head).decode())

    def fsck(self) -> None:
        self.git("fsck", "--strict", "--no-dangling")


def _need_git() -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed; apt-get install git")


@pytest.fixture
def bare_remote(tmp_path: Path) -> BareRemote:
    """An empty bare repository: what a fresh deploy repo looks like."""
    _need_git()
    path = tmp_path / "deploy.git"
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return BareRemote(path)


@pytest.fixture
def deploy_repo_factory(tmp_path: Path, bare_remote: BareRemote) -> Callable[..., GitDeployRepo]:
    """Open the remote through a cache of its own (``name``), like separate machines."""

    def make(name: str = "cache", **kwargs: Any) -> GitDeployRepo:
        return GitDeployRepo(
            bare_remote.url,
            bare_remote.branch,
            tmp_path / "caches" / name,
            **kwargs,
        )

    return make


@pytest.fixture
def deploy_repo(deploy_repo_factory: Callable[..., GitDeployRepo]) -> GitDeployRepo:
    return deploy_repo_factory()
