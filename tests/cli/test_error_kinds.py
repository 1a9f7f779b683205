"""The CLI prints user errors as one line and shows the traceback of anything else."""

from __future__ import annotations

import pytest
from click import ClickException

from configcenter.cli import handle_errors
from configcenter.core.errors import PlatformFailure, UserError


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
