"""Progress lines are data, never rich markup: brackets in build output or reasons print as is."""

from __future__ import annotations

import pytest

from configcenter.output import PrintingReporter
from configcenter.ports.platform import RolloutStatus


def test_brackets_in_messages_build_lines_and_reasons_print_verbatim(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = PrintingReporter(verbose=True)
    reporter.message("[/bold] closing tag from a commit message")
    reporter.build_log("api", "[1/2] STEP 2/3: RUN [ -f /app ] && echo [/x]")
    reporter.rollout("api", RolloutStatus("failed", "Err[/x]", desired=1))
    err = capsys.readouterr().err
    assert "[/bold] closing tag from a commit message" in err
    assert "[1/2] STEP 2/3: RUN [ -f /app ] && echo [/x]" in err
    assert "(Err[/x])" in err
