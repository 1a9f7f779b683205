"""`init` scaffolds a repo that works as generated; a fresh repo releases its first templates
in one step; released tags are pushed when the config repo has a remote."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from configcenter.adapters.sqlite_runs import SqliteRunStore
from configcenter.cli import cli as cli_group
from tests.support.configrepo import GIT_IDENTITY, ConfigRepo, git, need_git

GIT_ENV = {**GIT_IDENTITY, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def cc(*args: str, cwd: Path | None = None) -> Result:
    runner = CliRunner()
    env = {"NO_COLOR": "1", **GIT_ENV}
    if cwd is None:
        return runner.invoke(cli_group, list(args), env=env)
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return runner.invoke(cli_group, list(args), env=env)
    finally:
        os.chdir(old)


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_git()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


# -- init ------------------------------------------------------------------------------------


def test_init_validates_plans_and_applies_as_generated(tmp_path: Path) -> None:
    root = tmp_path / "acme-config"
    made = cc("init", str(root), "--json")
    assert made.exit_code == 0, made.output
    data = json.loads(made.stdout)
    assert data["ok"] is True and data["tag"] == "hello/0.1.0"
    deploy = Path(data["deploy_repo"])
    assert deploy == tmp_path / "acme-config-deploy.git"
    assert "environments/dev/hello.yaml" in data["files"]

    # Used from inside the new repo, with no -C: found upward.
    validated = cc("validate", cwd=root / "templates")
    assert validated.exit_code == 0, validated.output
    assert validated.stdout == "ok: 2 environments, 2 service configs, 2 rendered, 0 warning(s)\n"
    plan = cc("plan", "dev", "--exit-code", cwd=root)
    assert plan.exit_code == 2, plan.output
    assert "  + hello           create   [template, values, image]" in plan.stdout
    for env in ("dev", "prod"):
        applied = cc("apply", env, "--no-rollout", "--json", cwd=root)
        assert applied.exit_code == 0, applied.output
        result = json.loads(applied.stdout)
        assert [r["outcome"] for r in result["results"]] == ["committed"]
    files = git(deploy, "ls-tree", "-r", "--name-only", "main").split()
    assert {"dev/hello/app.env", "prod/hello/deployment.yaml", "prod/.state/hello.json"} <= set(
        files
    )
    prod_env = git(deploy, "show", "main:prod/hello/app.env")
    assert prod_env == "GREETING=hello from prod\nLOG_LEVEL=info\n"
    again = cc("plan", "dev", "--exit-code", cwd=root)
    assert again.exit_code == 0, again.output


def test_init_text_says_what_to_do_next(tmp_path: Path) -> None:
    result = cc("init", str(tmp_path / "shop"), "--service", "api")
    assert result.exit_code == 0, result.output
    assert "created config repo " in result.stdout
    assert "  environments/prod/api.yaml" in result.stdout
    assert "  configcenter apply dev --no-rollout" in result.stdout


def test_init_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine\n")
    result = cc("init", str(tmp_path / "busy"), "--json")
    assert result.exit_code == 1
    (problem,) = json.loads(result.stdout)["problems"]
    assert problem["message"].endswith("exists and is not empty")
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]


def test_init_rejects_a_bad_service_name(tmp_path: Path) -> None:
    result = cc("init", str(tmp_path / "x"), "--service", "Bad_Name")
    assert result.exit_code == 1
    assert "'Bad_Name' is not a usable service name" in result.stderr
    assert not (tmp_path / "x").exists()


# -- releasing the first templates of a fresh repo ---------------------------------------------


def fresh_repo(root: Path) -> ConfigRepo:
    """Two templates, never released; both environments already pin 1.0.0 for both."""
    repo = ConfigRepo.init(root)
    repo.write("configcenter.yaml", "project: fresh\nenvironments: [dev, prod]\n")
    for name in ("a", "b"):
        repo.write(f"templates/{name}/template.yaml", "outputs: [app.env]\nenv: [X]\n")
        repo.write(f"templates/{name}/app.env.j2", "X={{ X }}\n")
    repo.write("templates/b/template.yaml", "outputs: [app.env]\nenv: [X]\ndepends_on: [a]\n")
    repo.write("environments/_defaults.yaml", "values: {X: 1}\n")
    for env in ("dev", "prod"):
        repo.write(f"environments/{env}/_env.yaml", "values: {}\n")
        for name in ("a", "b"):
            repo.write(f"environments/{env}/{name}.yaml", "template: 1.0.0\n")
    repo.commit("fresh")
    return repo


def test_one_template_of_a_fresh_repo_says_to_release_them_together(tmp_path: Path) -> None:
    repo = fresh_repo(tmp_path / "fresh")
    result = cc("-C", str(repo.root), "template", "release", "a", "1.0.0")
    assert result.exit_code == 1
    assert "template tag 'b/1.0.0' does not exist" in result.stderr
    assert "configcenter template release a b 1.0.0" in result.stderr
    # Not the misleading "web depends on api, which is not deployed": b's file exists.
    assert "not deployed" not in result.stderr
    assert repo.git("tag").split() == []


def test_release_all_bootstraps_a_fresh_repo(tmp_path: Path) -> None:
    repo = fresh_repo(tmp_path / "fresh")
    result = cc("-C", str(repo.root), "template", "release", "--all", "1.0.0")
    assert result.exit_code == 0, result.output
    head = repo.git("rev-parse", "HEAD").strip()[:10]
    assert result.stdout.splitlines() == [
        f"tagged a/1.0.0 at {head} (rendered for dev, prod)",
        f"tagged b/1.0.0 at {head} (rendered for dev, prod)",
    ]
    assert "has no remote" in result.stderr and "git push origin a/1.0.0 b/1.0.0" in result.stderr
    assert sorted(repo.git("tag").split()) == ["a/1.0.0", "b/1.0.0"]
    assert cc("-C", str(repo.root), "validate").exit_code == 0


def test_release_refuses_a_linked_template_file_naming_the_link(tmp_path: Path) -> None:
    """Not "output 'app.env' has no app.env.j2": the file is there, as a link."""
    repo = fresh_repo(tmp_path / "fresh")
    outside = tmp_path / "outside.j2"
    outside.write_text("X={{ X }}\n")
    (repo.root / "templates/a/app.env.j2").unlink()
    (repo.root / "templates/a/app.env.j2").symlink_to(outside)
    repo.commit("a: a link")
    result = cc("-C", str(repo.root), "template", "release", "--all", "1.0.0", "--json")
    assert result.exit_code == 1
    (problem,) = json.loads(result.stdout)["problems"]
    assert problem["file"] == "templates/a/app.env.j2"
    assert problem["message"] == "templates/a/app.env.j2 is a symbolic link, not a regular file"
    assert "never follows links" in problem["hint"]
    assert repo.git("tag").split() == []


def test_release_pushes_the_tags_to_the_remote(tmp_path: Path) -> None:
    repo = fresh_repo(tmp_path / "fresh")
    remote = tmp_path / "fresh.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    repo.git("remote", "add", "origin", str(remote))
    repo.git("push", "-q", "origin", "main")
    result = cc("-C", str(repo.root), "template", "release", "a", "b", "1.0.0", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["remote"], data["pushed"]) == ("origin", True)
    assert [r["tag"] for r in data["released"]] == ["a/1.0.0", "b/1.0.0"]
    remote_tags = git(remote, "tag").split()
    assert sorted(remote_tags) == ["a/1.0.0", "b/1.0.0"]
    # --no-push tags locally and says how to push.
    repo.write("templates/a/app.env.j2", "X={{ X }}\nY=2\n")
    repo.commit("a: Y")
    local = cc("-C", str(repo.root), "template", "release", "a", "1.1.0", "--no-push")
    assert local.exit_code == 0, local.output
    assert "not pushed: git push origin a/1.1.0" in local.stderr
    assert "a/1.1.0" not in git(remote, "tag").split()


def test_release_usage_errors(tmp_path: Path) -> None:
    repo = fresh_repo(tmp_path / "fresh")
    assert cc("-C", str(repo.root), "template", "release").exit_code == 64
    assert cc("-C", str(repo.root), "template", "release", "1.0.0").exit_code == 64
    assert cc("-C", str(repo.root), "template", "release", "a", "--all", "1.0.0").exit_code == 64


def test_two_projects_with_the_default_run_store_keep_their_runs_apart(tmp_path: Path) -> None:
    """Runs (and with them the console's drift, metrics and serve's queue) are per
    environment name: each project gets its own default store, never a shared one."""
    from configcenter.adapters.runstores import default_sqlite_path, project_sqlite_path

    state = tmp_path / "state" / "configcenter"
    # A store from before per-project stores, with a run in it.
    with SqliteRunStore(default_sqlite_path(), None) as legacy:
        legacy.start("apply", "dev", ["hello"], "cli", "alice")
    for name in ("first", "second"):
        made = cc("init", str(tmp_path / name), "--project", name, "--json")
        assert made.exit_code == 0, made.output
        applied = cc("apply", "dev", "--no-rollout", cwd=tmp_path / name)
        assert applied.exit_code == 0, applied.output

    # The first project to open the old store after the upgrade keeps it and its history.
    assert project_sqlite_path("first") == default_sqlite_path()
    assert project_sqlite_path("second") == state / "projects" / "second" / "runs.sqlite3"
    with SqliteRunStore(default_sqlite_path(), None) as first:
        assert [(r.kind, r.actor) for r in first.list()][-1] == ("apply", "alice")
        assert len(first.list()) == 2
    with SqliteRunStore(project_sqlite_path("second"), None) as second:
        [run] = second.list()
        assert (run.kind, run.env, run.outcome) == ("apply", "dev", "succeeded")
