"""The CLI prints user errors as one line and shows the traceback of anything else."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click import ClickException
from click.testing import CliRunner, Result

from configcenter.cli import BUG_NOTE, ConfigcenterCLI, handle_errors
from configcenter.cli import cli as cli_group
from configcenter.core.errors import PlatformFailure, TransientFailure, UserError
from configcenter.usecases.apply import ApplyError, ApplyFailed, ApplyRefused, ApplyUnreachable
from configcenter.usecases.observe import ObserveError
from configcenter.usecases.release_template import TagPushError
from tests.support.configrepo import ConfigRepo, DeployRemote


def test_a_user_error_is_one_message_without_a_traceback() -> None:
    @handle_errors
    def command() -> None:
        raise UserError("no such environment 'stage'", file="configcenter.yaml", line=2)

    with pytest.raises(ClickException) as caught:
        command()
    assert caught.value.message == "configcenter.yaml:2: no such environment 'stage'"


def test_a_platform_failure_explains_itself() -> None:
    @handle_errors
    def command() -> None:
        raise PlatformFailure("platform 'main': HTTP 403: forbidden")

    with pytest.raises(ClickException, match="HTTP 403"):
        command()


def test_a_bare_value_error_is_a_bug_shown_with_its_traceback_and_a_report_hint() -> None:
    @handle_errors
    def command() -> None:
        int("not a number")

    with pytest.raises(ValueError) as caught:
        command()
    assert any("bug in configcenter" in note for note in caught.value.__notes__)


# -- every command, and what happens outside one ----------------------------------------------


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_command_reports_errors_by_kind() -> None:
    unwrapped = [
        name
        for name, command in _commands(cli_group)
        if not getattr(command.callback, "handles_errors", False)
    ]
    assert unwrapped == []


def _tiny_cli(failure: Exception) -> click.Group:
    """A group of the CLI's own class whose options step fails before any command runs."""

    @click.group(cls=ConfigcenterCLI)
    def group() -> None:
        raise failure

    @group.command()
    def noop() -> None:
        """Never reached."""

    return group


def test_a_user_error_outside_a_command_is_one_message() -> None:
    result = CliRunner().invoke(
        _tiny_cli(UserError("bad option", hint="fix it")), ["noop"], catch_exceptions=False
    )
    assert result.exit_code == 1
    assert result.stderr == "Error: bad option (hint: fix it)\n"


def test_a_bug_outside_a_command_is_raised_with_the_report_hint() -> None:
    result = CliRunner().invoke(_tiny_cli(KeyError("oops")), ["noop"])
    assert isinstance(result.exception, KeyError)
    assert result.exception.__notes__ == [BUG_NOTE]


def test_a_bug_prints_its_traceback_and_the_hint_once(tmp_path: Path) -> None:
    script = tmp_path / "buggy.py"
    script.write_text(
        "import click\n"
        "from configcenter.cli import ConfigcenterCLI, handle_errors\n"
        "@click.group(cls=ConfigcenterCLI)\n"
        "def group() -> None: ...\n"
        "@group.command()\n"
        "@handle_errors\n"
        "def crash() -> None:\n"
        "    {}['missing']\n"
        "group(['crash'])\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "KeyError: 'missing'" in proc.stderr
    assert proc.stderr.count("please report it") == 1


# -- apply's, rollback's and template release's errors, on real repos -------------------------


def cc(repo: ConfigRepo, deploy: str, *args: str) -> Result:
    return CliRunner().invoke(
        cli_group, ["-C", str(repo.root), "--deploy-repo", deploy, *args], env={"NO_COLOR": "1"}
    )


def test_apply_and_rollback_refusals_are_user_errors(
    repo: ConfigRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_DB_PASSWORD", "err0r-kinds-s3cret")  # apply resolves what it commits
    deploy = DeployRemote(tmp_path).url
    unknown = cc(repo, deploy, "apply", "dev", "--service", "nosuch")
    assert unknown.exit_code == 1
    assert unknown.stderr == (
        "Error: 'nosuch': no such service in dev (known: api, db); check --service/--retry\n"
    )
    rollback = cc(repo, deploy, "rollback", "dev", "api", "--json")
    assert rollback.exit_code == 1
    [problem] = json.loads(rollback.stdout)["problems"]
    assert problem["message"].startswith("api has no release in dev yet")
    assert cc(repo, deploy, "apply", "dev", "--no-rollout").exit_code == 0
    typo = cc(repo, deploy, "rollback", "dev", "apii", "--json")
    assert typo.exit_code == 1
    [problem] = json.loads(typo.stdout)["problems"]
    assert problem["message"] == (
        "'apii': the deploy repo has no release of it in dev (services with releases "
        "there: api, db); check the service name"
    )
    assert "Traceback" not in rollback.stderr
    assert issubclass(ApplyRefused, UserError) and issubclass(ApplyRefused, ApplyError)
    assert issubclass(ApplyUnreachable, TransientFailure)
    assert issubclass(ApplyFailed, PlatformFailure)
    assert issubclass(ObserveError, TransientFailure)


def test_tags_that_cannot_be_pushed_are_a_transient_failure(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    repo.git("remote", "add", "origin", str(tmp_path / "nowhere.git"))
    repo.write("templates/api/app.env.j2", repo.read("templates/api/app.env.j2") + "# more\n")
    repo.commit("api changes")
    result = cc(repo, DeployRemote(tmp_path).url, "template", "release", "api", "1.1.0")
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert "tagged api/1.1.0 locally, but pushing to origin failed" in result.stderr
    assert "push them with: git push origin api/1.1.0" in result.stderr
    assert "api/1.1.0" in repo.git("tag", "--list")
    assert issubclass(TagPushError, TransientFailure)
