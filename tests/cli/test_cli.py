"""The command line: exit codes, stderr messages, --help everywhere, nothing written on errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from configcenter.cli import cli as cli_group
from tests.support.configrepo import ConfigRepo

API_DEV = "environments/dev/api.yaml"
SENTINEL = "s3nt1nel-Pa55w0rd-never-shown"


def run(repo: ConfigRepo, *args: str) -> Result:
    return CliRunner().invoke(cli_group, ["-C", str(repo.root), *args], env={"NO_COLOR": "1"})


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found.extend(all_commands(command, (*prefix, name)))
    return found


COMMANDS = all_commands(cli_group)


def test_core_commands_exist() -> None:
    assert {("validate",), ("explain",), ("render",), ("plan",), ("template", "release")} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("command", [(), *COMMANDS], ids=lambda c: " ".join(c) or "configcenter")
def test_help(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli_group, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")
    assert "-h, --help" in result.stdout


# -- validate ----------------------------------------------------------------------------------


def test_validate_ok(repo: ConfigRepo) -> None:
    result = run(repo, "validate")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "ok: 2 environments, 4 service configs, 4 rendered, 0 warning(s)\n"
    assert result.stderr == ""


def test_validate_json(repo: ConfigRepo) -> None:
    result = run(repo, "validate", "--json")
    assert json.loads(result.stdout) == {
        "ok": True,
        "version": version("configcenter"),
        "environments": 2,
        "services": 4,
        "warnings": [],
    }


def test_bad_input_exits_1_with_path_and_line(repo: ConfigRepo) -> None:
    repo.write(API_DEV, "template: 1.0.0\nimage: {ref: x}\nreplica: 2\n")
    result = run(repo, "validate")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "environments/dev/api.yaml:3: error: unknown key 'replica'",
        "    hint: did you mean 'replicas'?",
        "1 problem(s); nothing was changed.",
    ]


def test_a_layer_that_does_not_parse_is_the_one_problem_not_the_values_it_holds(
    repo: ConfigRepo,
) -> None:
    """DB_PASSWORD is set in dev's _env.yaml; when that file has a syntax error, the error
    is the syntax error alone, not also "DB_PASSWORD has no value in any layer" with a hint
    to add it to the very file that has it."""
    text = repo.read("environments/dev/_env.yaml")
    repo.write("environments/dev/_env.yaml", text + "  FEATURES: [search\n")
    for command in (["validate"], ["plan", "dev"]):
        result = run(repo, *command)
        assert result.exit_code == 1, command
        assert result.stderr.startswith("environments/dev/_env.yaml:6: error: YAML syntax error")
        assert "has no value in any layer" not in result.stderr, result.stderr
        assert result.stderr.endswith("1 problem(s); nothing was changed.\n"), result.stderr


def test_render_error_exits_1_with_template_path_and_line(repo: ConfigRepo) -> None:
    repo.write(API_DEV, "template: HEAD\nimage: {ref: x}\n")
    repo.write("templates/api/app.env.j2", "A=1\nB={{ NOPE }}\n")
    for command in (["validate"], ["plan", "dev"], ["render", "dev"]):
        result = run(repo, *command)
        assert result.exit_code == 1, command
        assert result.stderr.startswith(
            "templates/api/app.env.j2:2: error: undefined variable while rendering api for dev: "
            "'NOPE' is undefined\n"
        )


def test_an_undefined_variable_next_to_a_misspelt_value_names_the_value_and_its_line(
    repo: ConfigRepo,
) -> None:
    """The usual cause of an undefined variable is a typo in a values file: the error says
    which value is close to the name, and where it is set, so the fix is one look away."""
    repo.write(API_DEV, "template: HEAD\nimage: {ref: x}\nvalues:\n  WORKRES: 4\n")
    repo.write("templates/api/app.env.j2", "A=1\nWORKERS={{ WORKERS }}\n")
    for command in (["validate"], ["plan", "dev"], ["render", "dev"]):
        result = run(repo, *command)
        assert result.exit_code == 1, command
        lines = result.stderr.splitlines()
        assert lines[0] == (
            "templates/api/app.env.j2:2: error: undefined variable while rendering api for dev: "
            "'WORKERS' is undefined"
        ), command
        assert lines[1].startswith(
            "    hint: did you mean the value 'WORKRES' (environments/dev/api.yaml:4)?"
        ), lines[1]
        assert "Traceback" not in result.output


def test_the_warnings_of_the_load_are_reported_with_a_render_error(repo: ConfigRepo) -> None:
    """A warning often explains the error it comes with (a value the template does not
    list, a misspelt name): validate, plan and render report it too, after the errors."""
    repo.release("api", "1.0.1", {"app.env.j2": "A=1\nB={{ NOPE }}\n"})
    repo.write(API_DEV, "template: 1.0.1\nimage: {ref: x}\nvalues:\n  EXTRA: 1\n")
    for command in (["validate"], ["plan", "dev"], ["render", "dev"]):
        result = run(repo, *command)
        assert result.exit_code == 1, command
        lines = result.stderr.splitlines()
        assert "error: undefined variable" in lines[0], (command, lines)
        warning = next(line for line in lines if ": warning: " in line)
        assert warning.startswith("environments/dev/api.yaml:4: warning: 'EXTRA' is not in ")
        assert result.stderr.endswith("1 problem(s); nothing was changed.\n"), result.stderr
        data = json.loads(run(repo, *command, "--json").stdout)
        assert [p["severity"] for p in data["problems"]] == ["error", "warning"], data


def test_warning_passes_unless_strict(repo: ConfigRepo) -> None:
    repo.write(API_DEV, "template: 1.0.0\nimage: {ref: x}\nvalues:\n  EXTRA: 1\n")
    result = run(repo, "validate")
    assert result.exit_code == 0
    assert result.stderr.startswith(
        "environments/dev/api.yaml:4: warning: 'EXTRA' is not in "
        "templates/api@1.0.0/template.yaml's env list and no template of it reads it\n"
    )
    assert "1 warning(s)" in result.stdout
    strict = CliRunner().invoke(cli_group, ["-C", str(repo.root), "--strict", "validate"])
    assert strict.exit_code == 1
    # Under --strict the warning is what failed the command: it is labelled an error.
    assert "environments/dev/api.yaml:4: error: 'EXTRA'" in strict.stderr
    assert "--strict turns warnings into errors" in strict.stderr
    assert strict.stdout == ""


def test_not_a_config_repo(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_group, ["-C", str(tmp_path), "validate"])
    assert result.exit_code == 1
    assert result.stderr.startswith("configcenter.yaml: error: no configcenter.yaml in ")


def test_unknown_environment(repo: ConfigRepo) -> None:
    for command in (["plan", "stage"], ["render", "stage"], ["explain", "stage", "api"]):
        result = run(repo, *command)
        assert result.exit_code == 1
        assert "error: unknown environment 'stage'" in result.stderr
        assert "hint: environments: dev, prod" in result.stderr


# -- explain -----------------------------------------------------------------------------------


def test_explain_shows_winner_and_overrides(repo: ConfigRepo) -> None:
    repo.write(API_DEV, "template: 1.0.0\nimage: {ref: x}\nvalues:\n  LOG_LEVEL: trace\n")
    result = run(repo, "explain", "dev", "api", "LOG_LEVEL")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "api in dev",
        "  LOG_LEVEL = trace",
        "      from environments/dev/api.yaml:4 (service)",
        "      overrides debug from environments/dev/_env.yaml:4 (environment)",
        "      overrides info from environments/_defaults.yaml:2 (defaults)",
    ]


def test_explain_json(repo: ConfigRepo) -> None:
    result = run(repo, "explain", "dev", "api", "--json")
    rows = {row["key"]: row for row in json.loads(result.stdout)["values"]}
    assert rows["LOG_LEVEL"] == {
        "key": "LOG_LEVEL",
        "value": "debug",
        "source": "environments/dev/_env.yaml:4",
        "layer": "environment",
        "overrides": [
            {"value": "info", "source": "environments/_defaults.yaml:2", "layer": "defaults"}
        ],
        "consumed": True,
    }
    assert rows["DB_PASSWORD"]["value"] == "***"
    assert rows["DB_NAME"]["consumed"] is False  # db's: api's templates never read it


def test_explain_says_which_values_the_service_does_not_consume(repo: ConfigRepo) -> None:
    """As its plan, values digest and releases count them: a change to DB_NAME is no change
    for api, and explain says so rather than list it like the values api reads."""
    result = run(repo, "explain", "dev", "api")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    at = lines.index("  DB_NAME = shop")
    assert lines[at + 1 : at + 3] == [
        "      from environments/_defaults.yaml:4 (defaults)",
        "      not consumed by api: not in its ENV list, no template of it reads it",
    ]
    assert "not consumed" not in result.stdout.split("  DB_NAME")[0]


def test_explain_unknown_key(repo: ConfigRepo) -> None:
    result = run(repo, "explain", "dev", "api", "NOPE")
    assert result.exit_code == 1
    assert "environments/dev/api.yaml:1: error: 'NOPE' has no value for api in dev" in result.stderr


# -- render ------------------------------------------------------------------------------------


def test_render_prints_files(repo: ConfigRepo) -> None:
    result = run(repo, "render", "dev", "--service", "db")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "# ---- dev/db/app.env\nPOSTGRES_DB=shop\n"


def test_render_out_writes_files(repo: ConfigRepo, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(repo, "render", "prod", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"wrote 3 files for 2 services to {out}\n"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    # .configcenter-render marks the directory as render --out's own, for the next render
    assert written == [".configcenter-render", "api/app.env", "api/deployment.yaml", "db/app.env"]
    assert (out / "api/deployment.yaml").read_text() == (
        "kind: Deployment\nmetadata: {name: api, namespace: shop-prod}\nspec:\n"
        "  replicas: 3\n  image: registry.example.com/shop/api:1.0\n"
    )


def test_render_out_writes_nothing_on_error(repo: ConfigRepo, tmp_path: Path) -> None:
    repo.write("environments/dev/db.yaml", "template: HEAD\n")
    repo.write("templates/db/app.env.j2", "{{ DB_NAME }\n")
    out = tmp_path / "out"
    result = run(repo, "render", "dev", "--out", str(out))
    assert result.exit_code == 1
    assert result.stderr.startswith("templates/db/app.env.j2:1: error: template syntax error")
    assert not out.exists()


# -- plan (no deploy repo: everything is new) --------------------------------------------------


def test_plan_exit_code(repo: ConfigRepo) -> None:
    assert run(repo, "plan", "dev").exit_code == 0
    assert run(repo, "plan", "dev", "--exit-code").exit_code == 2
    # An environment with nothing deployed has no changes.
    repo.remove("environments/prod/api.yaml")
    repo.remove("environments/prod/db.yaml")
    result = run(repo, "plan", "prod", "--exit-code")
    assert result.exit_code == 0
    assert "Nothing to do." in result.stdout


def test_plan_text(repo: ConfigRepo) -> None:
    result = run(repo, "plan", "dev", "--full")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Plan for dev (config ")
    assert lines[0].endswith("): 2 to change, 0 blocked, 0 unchanged")
    assert "  + db              create   [template, values, image]" in lines
    assert "      + DB_PASSWORD: ***   (environments/dev/_env.yaml:5)" in lines
    assert lines.index("  + db              create   [template, values, image]") < lines.index(
        "  + api             create   [template, values, image]"
    )


def test_plan_json(repo: ConfigRepo) -> None:
    data = json.loads(run(repo, "plan", "dev", "--json", "--service", "api").stdout)
    assert data["env"] == "dev"
    (api,) = data["services"]
    assert (api["action"], api["reasons"]) == ("create", ["template", "values", "image"])
    assert api["values"]["added"]["DB_PASSWORD"] == {
        "to": "***",
        "source": "environments/dev/_env.yaml:5",
    }


# -- secrets -----------------------------------------------------------------------------------


def test_secret_value_appears_in_no_output(repo: ConfigRepo, tmp_path: Path) -> None:
    env = {"NO_COLOR": "1", "SHOP_DB_PASSWORD": SENTINEL}
    out = tmp_path / "out"
    seen = []
    for command in (
        ["validate"],
        ["validate", "--json"],
        ["explain", "dev", "api"],
        ["explain", "dev", "api", "--json"],
        ["render", "dev"],
        ["render", "dev", "--out", str(out)],
        ["plan", "dev"],
        ["plan", "dev", "--json"],
    ):
        result = CliRunner().invoke(cli_group, ["-C", str(repo.root), *command], env=env)
        assert result.exit_code == 0, (command, result.stderr)
        seen.append(result.stdout + result.stderr)
    text = "\n".join(seen)
    assert SENTINEL not in text
    assert "***" in text
    assert "${secret:env:SHOP_DB_PASSWORD}" in text  # the reference, never the value
    for path in out.rglob("*"):
        if path.is_file():
            assert SENTINEL not in path.read_text()


# -- template release --------------------------------------------------------------------------


def test_template_release(repo: ConfigRepo) -> None:
    result = run(repo, "template", "release", "api", "1.1.0")
    assert result.exit_code == 0, result.stderr
    head = repo.git("rev-parse", "HEAD").strip()
    assert result.stdout == f"tagged api/1.1.0 at {head[:10]} (rendered for dev, prod)\n"
    assert "api/1.1.0" in repo.git("tag").split()
    again = run(repo, "template", "release", "api", "1.1.0")
    assert again.exit_code == 1
    assert again.stderr.startswith(
        "templates/api/template.yaml: error: tag api/1.1.0 already exists\n"
    )


def test_template_release_dry_run(repo: ConfigRepo) -> None:
    result = run(repo, "template", "release", "api", "1.1.0", "--dry-run")
    assert result.exit_code == 0
    assert result.stdout.startswith("would tag api/1.1.0 at ")
    assert "api/1.1.0" not in repo.git("tag").split()


# -- a real process ----------------------------------------------------------------------------


def test_real_process_exit_codes_and_streams(repo: ConfigRepo, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "NO_COLOR": "1"}
    base = [sys.executable, "-m", "configcenter", "-C", str(repo.root)]

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, env=env, check=False)

    changes = call("plan", "dev", "--exit-code")
    assert changes.returncode == 2, changes.stderr
    repo.write(API_DEV, "template: 7.7.7\n")
    bad = call("plan", "dev")
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr.startswith(
        "environments/dev/api.yaml:1: error: template tag 'api/7.7.7' does not exist\n"
    )
