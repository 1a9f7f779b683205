"""The local forge: merge requests recorded in the config repo's Git directory.

What every forge does is the contract suite (tests/forge/test_contract.py); this file
keeps what is the local forge's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from configcenter.adapters.local_forge import LocalForge
from configcenter.ports.forge import ForgeError, MergeRequestNotFound
from tests.forge.conftest import SOURCE, local_config_repo
from tests.support.gitlab_double import GIT_IDENTITY
from tests.support.gitlab_fixtures import run_git


@pytest.fixture
def config_repo(tmp_path: Path) -> Path:
    """A config repo with `demo` and a promotion branch one commit ahead of it."""
    return local_config_repo(tmp_path)


def records(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / ".git/configcenter/merge-requests").glob("*.json"))


def test_open_records_the_request_in_the_git_directory(config_repo: Path) -> None:
    forge = LocalForge(config_repo)

    mr = forge.open(SOURCE, "demo", "Promote dev to demo", "api 1.5.0", ["promotion"], False)

    assert (mr.iid, mr.state, mr.title, mr.labels, mr.draft) == (
        1,
        "opened",
        "Promote dev to demo",
        ("promotion",),
        False,
    )
    assert records(config_repo) == ["1.json"]
    stored = json.loads((config_repo / ".git/configcenter/merge-requests/1.json").read_text())
    assert stored["source_branch"] == SOURCE and stored["description"] == "api 1.5.0"
    assert run_git(config_repo, "status", "--porcelain") == ""  # nothing to commit by accident
    assert forge.find_open(SOURCE, "demo") == mr
    assert forge.find_open(SOURCE, "prod") is None
    assert LocalForge(config_repo).get(1) == mr


def test_running_the_merge_command_marks_the_request_merged(config_repo: Path) -> None:
    forge = LocalForge(config_repo)
    mr = forge.open(SOURCE, "demo", "Promote dev to demo", "", [], False)
    assert mr.web_url.startswith("git -C ")
    assert "merge --no-ff" in mr.web_url

    env = {**os.environ, **GIT_IDENTITY}
    subprocess.run(mr.web_url, shell=True, check=True, capture_output=True, env=env)

    assert (config_repo / "api.yaml").read_text() == "template: 1.5.0\n"
    assert forge.find_open(SOURCE, "demo") is None
    assert forge.get(mr.iid).state == "merged"
    # A new promotion after the merge is a new request.
    run_git(config_repo, "branch", "-D", SOURCE)
    run_git(config_repo, "checkout", "-q", "-b", SOURCE)
    (config_repo / "api.yaml").write_text("template: 1.6.0\n")
    run_git(config_repo, "commit", "-q", "-am", "Pin api 1.6.0")
    run_git(config_repo, "checkout", "-q", "demo")
    assert forge.open(SOURCE, "demo", "Promote 1.6.0", "", [], False).iid == 2
    assert forge.get(mr.iid).state == "merged"


def test_deleted_source_branch_closes_the_request(config_repo: Path) -> None:
    forge = LocalForge(config_repo)
    mr = forge.open(SOURCE, "demo", "Promote", "", [], False)

    run_git(config_repo, "branch", "-D", SOURCE)

    assert forge.find_open(SOURCE, "demo") is None
    assert forge.get(mr.iid).state == "closed"


def test_request_with_nothing_to_merge_stays_open(config_repo: Path) -> None:
    run_git(config_repo, "branch", "promote/empty", "demo")
    forge = LocalForge(config_repo)

    mr = forge.open("promote/empty", "demo", "Nothing yet", "", [], True)

    assert forge.get(mr.iid).state == "opened"
    assert forge.find_open("promote/empty", "demo") == mr


def test_concurrent_opens_never_share_an_iid(config_repo: Path) -> None:
    branches = [f"promote/{n}" for n in range(6)]
    for branch in branches:
        run_git(config_repo, "branch", branch, SOURCE)
    iids: list[int] = []
    errors: list[BaseException] = []

    def open_one(branch: str) -> None:
        try:
            iids.append(LocalForge(config_repo).open(branch, "demo", branch, "", [], False).iid)
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=open_one, args=(b,)) for b in branches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(iids) == [1, 2, 3, 4, 5, 6]


def test_concurrent_opens_for_the_same_branches_record_one_request(config_repo: Path) -> None:
    iids: list[int] = []

    def open_one(n: int) -> None:
        iids.append(LocalForge(config_repo).open(SOURCE, "demo", f"run {n}", "", [], False).iid)

    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert iids == [1] * 6
    assert records(config_repo) == ["1.json"]


def test_bad_input_names_what_to_fix(config_repo: Path, tmp_path: Path) -> None:
    forge = LocalForge(config_repo)
    with pytest.raises(MergeRequestNotFound, match="!7"):
        forge.get(7)
    with pytest.raises(ForgeError, match="'promote/nowhere' does not exist"):
        forge.open("promote/nowhere", "demo", "t", "", [], False)
    with pytest.raises(ForgeError, match="into itself"):
        forge.open("demo", "demo", "t", "", [], False)
    with pytest.raises(ForgeError, match="title is empty"):
        forge.open(SOURCE, "demo", "  ", "", [], False)
    with pytest.raises(ForgeError, match="not a Git repository"):
        LocalForge(tmp_path / "elsewhere-not-a-repo").find_open(SOURCE, "demo")

    forge.open(SOURCE, "demo", "t", "", [], False)
    (config_repo / ".git/configcenter/merge-requests/1.json").write_text("{not json")
    with pytest.raises(ForgeError, match=r"1\.json is not valid JSON"):
        forge.get(1)
