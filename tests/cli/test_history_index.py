"""`history --service` through the history index: the same JSON as from an empty cache
after new releases, a force-pushed (rewritten) deploy repo branch and a deleted index.
(`tests/deployrepo/test_history_index.py` compares the index with git alone.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from configcenter.adapters.git_deploy_repo import HISTORY_INDEX_DIR
from configcenter.cli import cli as cli_group
from tests.cli.test_compare import set_replicas
from tests.support.configrepo import ConfigRepo, git


@pytest.fixture
def deploy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    remote = tmp_path / "deploy.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    return remote


def cc(repo: ConfigRepo, deploy: Path, cache: Path, *args: str) -> Result:
    result = CliRunner().invoke(
        cli_group,
        ["-C", str(repo.root), "--deploy-repo", str(deploy), *args],
        env={"NO_COLOR": "1", "SHOP_DB_PASSWORD": "pw", "XDG_CACHE_HOME": str(cache)},
    )
    assert result.exit_code == 0, result.output
    return result


def history(repo: ConfigRepo, deploy: Path, cache: Path) -> str:
    return cc(repo, deploy, cache, "history", "dev", "--service", "api", "--json").stdout


def from_empty_cache(repo: ConfigRepo, deploy: Path, tmp_path: Path) -> str:
    fresh = tmp_path / "fresh-cache"
    shutil.rmtree(fresh, ignore_errors=True)
    return history(repo, deploy, fresh)


def releases(text: str) -> list[str]:
    """The release ids listed, newest first."""
    return [r["release"] for r in json.loads(text)["releases"]]


def test_history_from_the_index_is_the_history_from_an_empty_cache(
    repo: ConfigRepo, deploy: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    for replicas in (1, 2, 1):
        set_replicas(repo, replicas)
        cc(repo, deploy, cache, "apply", "dev", "--no-rollout", "--json")
    first = history(repo, deploy, cache)
    (index_dir,) = (cache / "configcenter" / "deploy").glob(f"*/{HISTORY_INDEX_DIR}")
    assert len(list(index_dir.glob("*.json"))) == 1
    assert history(repo, deploy, cache) == first == from_empty_cache(repo, deploy, tmp_path)
    three = releases(first)
    assert len(three) == 3

    # A new release: the index is extended with its commit.
    set_replicas(repo, 3)
    cc(repo, deploy, cache, "apply", "dev", "--no-rollout", "--json")
    four = history(repo, deploy, cache)
    assert four == from_empty_cache(repo, deploy, tmp_path)
    assert releases(four)[1:] == three

    # Someone force-pushes the branch back to the second release; a release follows on it.
    commits = git(deploy, "rev-list", "main").split()
    git(deploy, "update-ref", "refs/heads/main", commits[2])
    set_replicas(repo, 4)
    cc(repo, deploy, cache, "apply", "dev", "--no-rollout", "--json")
    rewritten = history(repo, deploy, cache)
    assert rewritten == from_empty_cache(repo, deploy, tmp_path)
    assert releases(rewritten)[1:] == three[1:]

    # The index deleted: filled again, the same answer.
    shutil.rmtree(index_dir)
    assert history(repo, deploy, cache) == rewritten
    assert len(list(index_dir.glob("*.json"))) == 1
