"""Scripting-safe CLI: JSON on failure too, exit codes, discovery, environment variables,
global options anywhere, plain complete tables off a terminal, offline render and plan."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from configcenter.cli import EXIT_USAGE
from configcenter.cli import cli as cli_group
from tests.support.configrepo import ConfigRepo, DeployRemote, git
from tests.support.helpers import free_port

API_DEV = "environments/dev/api.yaml"
PROBLEM_KEYS = {"file", "line", "message", "hint", "severity"}


def run(repo: ConfigRepo, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(
        cli_group, ["-C", str(repo.root), *args], env={"NO_COLOR": "1", **(env or {})}
    )


def one_json(result: Result) -> dict[str, Any]:
    """stdout is exactly one JSON object, carrying ok and version."""
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    assert data["version"] == version("configcenter")
    assert isinstance(data["ok"], bool)
    return data


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found.extend(leaf_commands(command, (*prefix, name)))
        else:
            found.append((*prefix, name))
    return found


# -- --json everywhere, failures included -----------------------------------------------------


@pytest.mark.parametrize(
    "command", [c for c in leaf_commands(cli_group) if c != ("serve",)], ids=" ".join
)
def test_every_command_has_json(command: tuple[str, ...]) -> None:
    cmd: click.Command = cli_group
    for name in command:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    assert "--json" in {opt for p in cmd.params for opt in getattr(p, "opts", ())}


#: Commands that stop on a config error (`history` and `rollback` go on from the deploy
#: repo alone: tests/apply_on_platforms/test_converge_cluster.py).
BROKEN_COMMANDS = [
    ("validate",),
    ("plan", "dev"),
    ("render", "dev"),
    ("explain", "dev", "api"),
    ("apply", "dev", "--no-rollout"),
    ("template", "release", "api", "1.1.0"),
    ("promote", "dev", "prod", "--dry-run"),
    ("reconcile", "dev"),
    ("services", "dev"),
    ("diff", "dev", "prod"),
    ("show", "dev", "api-1"),
    ("history", "dev", "--diff", "api-1", "api-2"),
    ("build", "dev", "api"),
    ("deploy", "dev", "api"),
]


@pytest.mark.parametrize("command", BROKEN_COMMANDS, ids=" ".join)
def test_json_failure_is_one_object_with_problems(
    repo: ConfigRepo, command: tuple[str, ...]
) -> None:
    repo.write("environments/dev/_env.yaml", "platform: local\nallow_haed: true\n")
    repo.commit("typo")
    result = run(repo, *command, "--json")
    assert result.exit_code == 1, result.output
    data = one_json(result)
    assert data["ok"] is False
    assert data["exit_code"] == 1
    problem = next(p for p in data["problems"] if "allow_haed" in p["message"])
    assert set(problem) == PROBLEM_KEYS
    assert problem == {
        "file": "environments/dev/_env.yaml",
        "line": 2,
        "message": "unknown key 'allow_haed'",
        "hint": "did you mean 'allow_head'?",
        "severity": "error",
    }


def test_validate_warnings_have_the_problem_shape(repo: ConfigRepo) -> None:
    repo.write(API_DEV, "template: 1.0.0\nimage: {ref: x}\nvalues:\n  EXTRA: 1\n")
    data = one_json(run(repo, "validate", "--json"))
    assert data["ok"] is True
    (warning,) = data["warnings"]
    assert set(warning) == PROBLEM_KEYS
    assert (warning["file"], warning["line"], warning["severity"]) == (API_DEV, 4, "warning")


def test_strict_failure_in_json_is_an_error_with_why(repo: ConfigRepo) -> None:
    repo.write(API_DEV, "template: 1.0.0\nimage: {ref: x}\nvalues:\n  EXTRA: 1\n")
    result = run(repo, "validate", "--json", "--strict")
    assert result.exit_code == 1
    (problem,) = one_json(result)["problems"]
    assert problem["severity"] == "error"
    assert "--strict turns warnings into errors" in problem["hint"]


def test_a_non_config_error_is_json_too(repo: ConfigRepo) -> None:
    # No deploy repo configured: history's error is an exception, not a ConfigError.
    result = run(repo, "rollback", "dev", "api", "--json")
    assert result.exit_code == 1
    data = one_json(result)
    assert data["ok"] is False and data["problems"][0]["message"]
    assert result.stderr == ""


# -- exit codes ------------------------------------------------------------------------------


def test_usage_error_is_not_exit_2(repo: ConfigRepo) -> None:
    result = run(repo, "plan", "dev", "--exit-code", "--typo")
    assert result.exit_code == EXIT_USAGE == 64
    assert "No such option '--typo'" in result.stderr
    assert run(repo, "plan").exit_code == 64  # missing ENV
    assert run(repo, "nosuch").exit_code == 64


def test_usage_error_with_json_is_json(repo: ConfigRepo) -> None:
    result = run(repo, "plan", "dev", "--json", "--typo")
    assert result.exit_code == 64
    data = one_json(result)
    assert data["ok"] is False and data["exit_code"] == 64
    assert data["command"] == "plan"  # as for any other failure of the command
    (problem,) = data["problems"]
    assert "No such option '--typo'" in problem["message"]
    assert problem["hint"].startswith("see ") and problem["hint"].endswith(" plan --help")
    assert one_json(run(repo, "template", "release", "--json"))["command"] == "template release"
    assert one_json(run(repo, "nosuch", "--json"))["command"] is None


def test_help_documents_every_exit_code() -> None:
    text = CliRunner().invoke(cli_group, ["--help"]).stdout
    for code in ("0 ", "1 ", "2 ", "3 ", "64 "):
        assert f"\n    {code}" in text
    assert "CONFIGCENTER_CONFIG_REPO" in text
    assert "DESIGN" not in text


def test_no_help_text_cites_the_design_document() -> None:
    for command in [(), *leaf_commands(cli_group)]:
        text = CliRunner().invoke(cli_group, [*command, "--help"]).stdout
        assert "DESIGN" not in text and "../shared" not in text, command


# -- discovery, environment variables, global options after the command ----------------------


def test_found_from_a_subdirectory(repo: ConfigRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo.root / "environments" / "dev")
    result = CliRunner().invoke(cli_group, ["validate"], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("ok: 2 environments")


def test_outside_any_config_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli_group, ["validate"])
    assert result.exit_code == 1
    assert "no configcenter.yaml in " in result.stderr
    assert "configcenter init" in result.stderr


def test_environment_variables_set_global_options(
    repo: ConfigRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"NO_COLOR": "1", "CONFIGCENTER_CONFIG_REPO": str(repo.root)}
    result = CliRunner().invoke(cli_group, ["validate"], env=env)
    assert result.exit_code == 0, result.stderr
    repo.write(API_DEV, "template: 1.0.0\nimage: {ref: x}\nvalues:\n  EXTRA: 1\n")
    strict = CliRunner().invoke(cli_group, ["validate"], env={**env, "CONFIGCENTER_STRICT": "1"})
    assert strict.exit_code == 1
    missing = tmp_path / "no-such-deploy.git"
    deploy = CliRunner().invoke(
        cli_group, ["history", "dev"], env={**env, "CONFIGCENTER_DEPLOY_REPO": str(missing)}
    )
    assert deploy.exit_code == 1  # a deploy repo where nothing exists is not an empty one
    assert f"deploy repo {missing} does not exist" in deploy.stderr


def test_global_options_after_the_command(repo: ConfigRepo, tmp_path: Path) -> None:
    repo.write(API_DEV, "template: 1.0.0\nimage: {ref: x}\nvalues:\n  EXTRA: 1\n")
    runner = CliRunner()
    assert runner.invoke(cli_group, ["validate", "-C", str(repo.root)]).exit_code == 0
    assert runner.invoke(cli_group, ["validate", "-C", str(repo.root), "--strict"]).exit_code == 1
    assert runner.invoke(cli_group, ["validate", f"-C{repo.root}", "--strict"]).exit_code == 1
    result = runner.invoke(
        cli_group, ["template", "release", "api", "1.1.0", "--dry-run", "-C", str(repo.root)]
    )
    assert result.exit_code == 0, result.output


# -- tables and long problem lists -----------------------------------------------------------


def test_tables_off_a_terminal_are_plain_and_complete(capsys: pytest.CaptureFixture[str]) -> None:
    from configcenter.output import print_table

    reason = "ImagePullBackOff: " + "x" * 300
    print_table("result", ("service", "outcome", "reason"), [("api", "failed", reason)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "result"
    assert lines[1].split() == ["service", "outcome", "reason"]
    assert lines[2].endswith(reason)
    assert "…" not in lines[2] and "\x1b[" not in lines[2]


def test_long_problem_lists_are_capped_in_text_not_in_json(repo: ConfigRepo) -> None:
    repo.write(
        "environments/dev/_env.yaml",
        "platform: local\n" + "".join(f"bad_key_{i}: 1\n" for i in range(30)),
    )
    data = one_json(run(repo, "validate", "--json"))
    total = len(data["problems"])
    assert total > 30
    text = run(repo, "validate")
    assert text.exit_code == 1
    shown = [line for line in text.stderr.splitlines() if ": error: " in line]
    assert len(shown) == 20
    assert f"... and {total - 20} more problem(s) (--json lists them all)" in text.stderr


def test_history_of_an_unknown_service_is_an_error(repo: ConfigRepo) -> None:
    result = run(repo, "history", "dev", "--service", "nosuch")
    assert result.exit_code == 1
    assert "service 'nosuch' is not deployed in dev" in result.stderr


# -- offline: render and plan without the registry -------------------------------------------


def test_render_and_plan_work_when_the_registry_is_unreachable(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    host = f"127.0.0.1:{free_port()}"
    repo.write(
        "configcenter.yaml",
        repo.read("configcenter.yaml") + f"registry: {{url: '{host}', insecure: true}}\n",
    )
    repo.write(API_DEV, f"template: 1.0.0\nimage: {{ref: {host}/shop/api:1.0}}\nreplicas: 1\n")
    rendered = run(repo, "render", "dev", "--service", "api")
    assert rendered.exit_code == 0, rendered.stderr
    assert f"image: {host}/shop/api:1.0\n" in rendered.stdout
    assert f"{API_DEV}:2: warning: api: image not pinned to a digest" in rendered.stderr
    plan = run(repo, "plan", "dev")
    assert plan.exit_code == 0, plan.stderr
    assert "unverified: not pinned to a digest (registry unreachable)" in plan.stdout
    data = one_json(run(repo, "plan", "dev", "--json"))
    assert set(data["unverified"]) == {"api"}
    assert data["warnings"][0]["severity"] == "warning"
    # apply deploys by digest: it still needs the registry.
    deploy = DeployRemote(tmp_path).url
    applied = run(repo, "apply", "dev", "--no-rollout", "--deploy-repo", deploy)
    assert applied.exit_code == 1
    assert "cannot pin given images to their digests" in applied.output


def test_a_dependency_that_failed_to_load_is_not_called_undeployed(repo: ConfigRepo) -> None:
    repo.write("environments/dev/db.yaml", "template: 9.9.9\nimage: {ref: x}\n")
    data = one_json(run(repo, "validate", "--json"))
    messages = [p["message"] for p in data["problems"]]
    assert messages == ["template tag 'db/9.9.9' does not exist"]
    assert data["problems"][0]["hint"] == "released: 1.0.0"


def test_a_typed_user_error_keeps_file_line_and_hint_as_data() -> None:
    from configcenter.cli import _problem_of, problem_json
    from configcenter.core.errors import UserError

    exc = UserError("bad thing", file="environments/dev/api.yaml", line=3, hint="fix it")
    assert problem_json(_problem_of(exc)) == {
        "file": "environments/dev/api.yaml",
        "line": 3,
        "message": "bad thing",
        "hint": "fix it",
        "severity": "error",
    }


def test_no_build_names_the_service_to_build_not_a_placeholder(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    source = ConfigRepo.init(tmp_path / "api-src")
    source.write("main.txt", "hello\n")
    source.commit("source")
    repo.write(
        "templates/api/template.yaml",
        "outputs: [app.env, deployment.yaml, Dockerfile]\nenv: [LOG_LEVEL, DB_HOST, DB_PASSWORD]\n"
        "depends_on: [db]\nbuild: {dockerfile: Dockerfile}\n",
    )
    repo.write("templates/api/Dockerfile.j2", "FROM scratch\nCOPY main.txt /\n")
    repo.write(API_DEV, f"template: HEAD\nimage: {{source: {{repo: {source.root}}}}}\n")
    deploy = tmp_path / "deploy.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(deploy))
    result = run(repo, "apply", "dev", "--no-build", "--no-rollout", "--deploy-repo", str(deploy))
    assert result.exit_code == 1, result.output
    assert "`configcenter build dev api`" in result.stderr
    assert "SERVICE" not in result.stderr


def test_one_huge_problem_is_clipped_in_text_whole_in_json(repo: ConfigRepo) -> None:
    # A problem naming 500 services used to be printed as one unreadable 60 KB line.
    repo.write(
        "environments/dev/api.yaml",
        "template: 1.0.0\nimage: {ref: x}\nplatform: " + "p" * 5000 + "\n",
    )
    text = run(repo, "validate")
    assert text.exit_code == 1
    assert max(len(line) for line in text.stderr.splitlines()) < 600
    assert "more characters; --json has all" in text.stderr
    data = one_json(run(repo, "validate", "--json"))
    assert any(len(p["message"]) > 5000 for p in data["problems"])
