"""`plan --service S` observes only the platforms S runs on: another platform of the
environment that cannot be reached is not S's business (no warning, no retries). With
--json, a platform that could not be observed is one of the plan's warnings."""

from __future__ import annotations

import json

from click.testing import CliRunner, Result

from configcenter.cli import cli as cli_group
from tests.support.configrepo import BASIC_PROJECT, ConfigRepo


def plan(repo: ConfigRepo, *args: str) -> Result:
    return CliRunner().invoke(
        cli_group,
        ["-C", str(repo.root), "plan", "dev", "--json", *args],
        env={"NO_COLOR": "1", "KUBECONFIG": "/nonexistent/kubeconfig"},
    )


def warned_platforms(result: Result) -> list[str]:
    """The platforms the plan says it could not observe: JSON warnings, not stderr text."""
    assert result.exit_code == 0, result.output
    assert "not observed" not in result.stderr
    warnings = [w for w in json.loads(result.stdout)["warnings"] if "not observed" in w["message"]]
    assert all(w["severity"] == "warning" and w["file"] is None for w in warnings)
    return sorted(w["message"].split("'")[1] for w in warnings)


def test_plan_of_one_service_observes_only_its_platform(repo: ConfigRepo) -> None:
    repo.write(
        "configcenter.yaml",
        BASIC_PROJECT + '  other: {kind: kubernetes, context: other, namespace: "o-{{ env }}"}\n',
    )
    dev_db = repo.read("environments/dev/db.yaml")
    repo.write("environments/dev/db.yaml", dev_db + "platform: other\n")

    assert warned_platforms(plan(repo)) == ["local", "other"]
    assert warned_platforms(plan(repo, "--service", "api")) == ["local"]
    assert warned_platforms(plan(repo, "--service", "db")) == ["other"]
    text = CliRunner().invoke(
        cli_group,
        ["-C", str(repo.root), "plan", "dev", "--service", "db"],
        env={"NO_COLOR": "1", "KUBECONFIG": "/nonexistent/kubeconfig"},
    )
    assert text.exit_code == 0, text.output
    assert "warning: platform 'other' not observed" in text.stderr
