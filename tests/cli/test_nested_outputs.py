"""Outputs in folders (conf/app.conf) keep their folder through apply, plan and rollback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from configcenter.cli import cli as cli_group
from tests.support.configrepo import ConfigRepo, DeployRemote

API_DEV = "environments/dev/api.yaml"


def cc(repo: ConfigRepo, remote: DeployRemote, *args: str) -> Result:
    return CliRunner().invoke(
        cli_group, ["-C", str(repo.root), "--deploy-repo", remote.url, *args], env={"NO_COLOR": "1"}
    )


def tree(remote: DeployRemote) -> dict[str, str]:
    listing = subprocess.run(
        ["git", "-C", remote.url, "ls-tree", "-r", "--name-only", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        name: subprocess.run(
            ["git", "-C", remote.url, "show", f"main:{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for name in listing
        if "/.state/" not in name
    }


def test_a_rollback_restores_files_in_folders_at_their_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("SHOP_DB_PASSWORD", "n3sted-s3cret")  # apply resolves what it commits
    repo = ConfigRepo.basic(tmp_path / "config")
    remote = DeployRemote(tmp_path)
    text = repo.read("templates/api/template.yaml").replace(
        "outputs: [", "outputs: [conf/app.conf, "
    )
    repo.write("templates/api/template.yaml", text)
    repo.write("templates/api/conf/app.conf.j2", "level = {{ LOG_LEVEL }}\n")
    repo.write(API_DEV, repo.read(API_DEV).replace("template: 1.0.0", "template: HEAD"))
    repo.commit("api writes conf/app.conf")
    first = cc(repo, remote, "apply", "dev", "--no-rollout")
    assert first.exit_code == 0, first.output
    before = tree(remote)
    assert "dev/api/conf/app.conf" in before

    repo.write(API_DEV, repo.read(API_DEV) + "values:\n  LOG_LEVEL: trace\n")
    repo.commit("api: trace")
    second = cc(repo, remote, "apply", "dev", "--no-rollout")
    assert second.exit_code == 0, second.output
    assert tree(remote)["dev/api/conf/app.conf"] == "level = trace\n"

    back = cc(repo, remote, "rollback", "dev", "api", "--no-rollout")
    assert back.exit_code == 0, back.output
    assert tree(remote) == before  # conf/app.conf back in conf/, no stray dev/api/app.conf
