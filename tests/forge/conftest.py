"""The forge contract suite runs once per forge adapter: local, and GitLab on its double.

A bed opens the forge through the registry (`configcenter.wiring.open_forge`), has a
config repo with a `demo` branch and a promotion branch one commit ahead of it, and
reads and merges requests the forge's own way (the local forge's records and merge
command, the GitLab double's state and merge), never through the adapter under test.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Protocol

import pytest

from configcenter import wiring
from configcenter.core.redact import Redactor
from configcenter.ports.forge import Forge, ForgeContext, MergeRequest
from tests.support.gitlab_double import GIT_IDENTITY, GitLabDouble
from tests.support.gitlab_fixtures import GITLAB_PROJECT_PATH, GitLabConfigRepo, run_git

SOURCE = "promote/dev-to-demo"
TOKEN_ENV = "CC_FORGE_CONTRACT_TOKEN"


class ForgeBed(Protocol):
    kind: str
    forge: Forge

    def stored(self) -> list[dict[str, Any]]:
        """The requests as the forge keeps them (title, description, source, target)."""
        ...

    def stored_notes(self, iid: int) -> list[str]: ...

    def merge(self, mr: MergeRequest) -> None:
        """Merge the request the way its users would."""
        ...


def _context(root: Path) -> ForgeContext:
    redactor = Redactor()
    return ForgeContext(root, lambda ref, what: wiring.resolve_secret(ref, redactor))


def local_config_repo(tmp_path: Path) -> Path:
    """A config repo with `demo` and a promotion branch one commit ahead of it."""
    repo = tmp_path / "shop config"  # a space, so the merge command must quote
    run_git(tmp_path, "init", "-q", "-b", "demo", str(repo))
    (repo / "configcenter.yaml").write_text("project: shop\n")
    run_git(repo, "add", ".")
    run_git(repo, "commit", "-q", "-m", "Start")
    run_git(repo, "checkout", "-q", "-b", SOURCE)
    (repo / "api.yaml").write_text("template: 1.5.0\n")
    run_git(repo, "add", ".")
    run_git(repo, "commit", "-q", "-m", "Pin api 1.5.0")
    run_git(repo, "checkout", "-q", "demo")
    return repo


class LocalBed:
    kind = "local"

    def __init__(self, tmp_path: Path) -> None:
        repo = local_config_repo(tmp_path)
        self.repo = repo
        self.forge = wiring.open_forge({"kind": "local"}, _context(repo))

    def _records(self) -> list[dict[str, Any]]:
        folder = self.repo / ".git/configcenter/merge-requests"
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]

    def stored(self) -> list[dict[str, Any]]:
        return self._records()

    def stored_notes(self, iid: int) -> list[str]:
        [record] = [r for r in self._records() if r["iid"] == iid]
        return [note["body"] for note in record["notes"]]

    def merge(self, mr: MergeRequest) -> None:
        env = {**os.environ, **GIT_IDENTITY}
        subprocess.run(mr.web_url, shell=True, check=True, capture_output=True, env=env)


class GitLabBed:
    kind = "gitlab"

    def __init__(self, server: GitLabDouble, repo: GitLabConfigRepo) -> None:
        self.server = server
        repo.commit_on(SOURCE, "environments/demo/api.yaml", "template: 1.5.0\n", "Pin api 1.5.0")
        settings = {
            "kind": "gitlab",
            "url": server.url,
            "project": GITLAB_PROJECT_PATH,
            "token": {"secret": f"env:{TOKEN_ENV}"},
        }
        self.forge = wiring.open_forge(settings, _context(repo.work))

    def stored(self) -> list[dict[str, Any]]:
        return self.server.merge_requests(GITLAB_PROJECT_PATH)

    def stored_notes(self, iid: int) -> list[str]:
        return [n["body"] for n in self.server.notes(GITLAB_PROJECT_PATH, iid)]

    def merge(self, mr: MergeRequest) -> None:
        self.server.merge(GITLAB_PROJECT_PATH, mr.iid)


@pytest.fixture(params=["local", "gitlab"])
def forge_bed(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ForgeBed:
    if request.param == "local":
        return LocalBed(tmp_path)
    server: GitLabDouble = request.getfixturevalue("gitlab_server")
    monkeypatch.setenv(TOKEN_ENV, server.token)
    return GitLabBed(server, request.getfixturevalue("gitlab_config_repo"))
