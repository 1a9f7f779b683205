"""Where a local deploy repo is, and what a path where nothing exists does.

`--deploy-repo` / CONFIGCENTER_DEPLOY_REPO are taken against the current directory (a
command-line path), configcenter.yaml's `deploy_repo.url` against the config repo. A local
path where nothing exists is an error naming the path and the fix, never an empty repo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from configcenter.cli import cli as cli_group
from configcenter.core.plan import make_plan
from configcenter.core.render import Renderer
from configcenter.core.state import EnvState
from tests.support.configrepo import ConfigRepo, DeployRemote, deploy_files, state_after


def cc(*args: str, **env: str) -> Result:
    return CliRunner().invoke(cli_group, list(args), env={"NO_COLOR": "1", **env})


def publish_dev(repo: ConfigRepo, remote: DeployRemote) -> None:
    plan = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), lambda path: None)
    remote.publish(state_after(plan), deploy_files(plan))


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory: neither the config repo nor its parent."""
    cwd = tmp_path / "work" / "here"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    return cwd


def test_a_relative_deploy_repo_option_is_relative_to_the_current_directory(
    repo: ConfigRepo, elsewhere: Path
) -> None:
    remote = DeployRemote(elsewhere)
    publish_dev(repo, remote)
    for args, env in (
        (["--deploy-repo", "deploy.git"], {}),
        ([], {"CONFIGCENTER_DEPLOY_REPO": "./deploy.git"}),
    ):
        result = cc("-C", str(repo.root), *args, "plan", "dev", "--json", **env)
        assert result.exit_code == 0, result.stderr
        actions = [s["action"] for s in json.loads(result.stdout)["services"]]
        assert actions == ["noop", "noop"]


@pytest.mark.parametrize("command", [["plan", "dev"], ["history", "dev"], ["apply", "dev"]])
def test_a_missing_deploy_repo_is_an_error_naming_the_path_and_the_fix(
    repo: ConfigRepo, elsewhere: Path, command: list[str]
) -> None:
    result = cc("-C", str(repo.root), "--deploy-repo", "deploy.git", *command)
    assert result.exit_code == 1, result.output
    resolved = elsewhere / "deploy.git"
    assert f"deploy repo {resolved} does not exist" in result.stderr
    assert f"git init --bare {resolved}" in result.stderr
    assert "relative to the current directory" in result.stderr
    assert "Traceback" not in result.stderr and "create" not in result.stdout
    assert not resolved.exists()  # apply created nothing there
    assert not (repo.root / "deploy.git").exists()


def test_a_missing_deploy_repo_in_json_is_one_problem(repo: ConfigRepo, elsewhere: Path) -> None:
    missing = elsewhere / "typo.git"
    result = cc(
        "-C", str(repo.root), "plan", "dev", "--json", CONFIGCENTER_DEPLOY_REPO=str(missing)
    )
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["ok"] is False
    [problem] = out["problems"]
    assert problem["message"].startswith(f"deploy repo {missing} does not exist")
    assert f"git init --bare {missing}" in problem["hint"]


def test_services_warns_that_deployed_releases_are_unknown(
    repo: ConfigRepo, elsewhere: Path
) -> None:
    result = cc("-C", str(repo.root), "--deploy-repo", "deploy.git", "services", "dev")
    assert result.exit_code == 0, result.stderr
    assert f"deploy repo {elsewhere / 'deploy.git'} does not exist" in result.stderr


def test_deploy_repo_url_in_the_config_is_relative_to_the_config_repo(
    repo: ConfigRepo, elsewhere: Path
) -> None:
    text = repo.read("configcenter.yaml")
    repo.write("configcenter.yaml", text + "deploy_repo: {url: ../deploy.git}\n")
    line = repo.line_of("configcenter.yaml", "deploy_repo:")
    result = cc("-C", str(repo.root), "plan", "dev")
    assert result.exit_code == 1
    resolved = repo.root.parent / "deploy.git"
    assert f"configcenter.yaml:{line}: deploy repo {resolved} does not exist" in result.stderr
    assert "fix deploy_repo.url" in result.stderr
    # validate does not need the deploy repo: it says what it could not check, and passes
    checked = cc("-C", str(repo.root), "validate")
    assert checked.exit_code == 0, checked.stderr
    assert f"moved tags not checked: deploy repo {resolved} does not exist" in checked.stderr

    remote = DeployRemote(repo.root.parent)  # creates ../deploy.git next to the config repo
    publish_dev(repo, remote)
    result = cc("-C", str(repo.root), "plan", "dev", "--json")
    assert result.exit_code == 0, result.stderr
    assert {s["action"] for s in json.loads(result.stdout)["services"]} == {"noop"}
