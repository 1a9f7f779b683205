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


def test_builds_show_one_line_per_step_unless_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        "STEP 1/3: FROM 127.0.0.1:5000/base/busybox:latest",
        "Getting image source signatures",
        "Copying blob sha256:0123",
        "STEP 2/3: RUN echo 2.3.1 > /app/VERSION",
        "Writing manifest to image destination",
    ]
    quiet = PrintingReporter(verbose=False)
    for line in lines:
        quiet.build_log("api", line)
    shown = capsys.readouterr().err
    assert "STEP 1/3: FROM" in shown and "STEP 2/3: RUN" in shown
    assert "Writing manifest" in shown
    assert "Copying blob" not in shown and "signatures" not in shown
    loud = PrintingReporter(verbose=True)
    for line in lines:
        loud.build_log("api", line)
    assert "Copying blob sha256:0123" in capsys.readouterr().err
