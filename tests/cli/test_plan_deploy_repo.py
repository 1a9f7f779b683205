"""`plan` end to end against a real bare deploy repo holding the state records."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from configcenter.cli import cli as cli_group
from configcenter.core.plan import make_plan
from configcenter.core.render import Renderer
from configcenter.core.state import EnvState, Release
from tests.support.configrepo import ConfigRepo, DeployRemote, deploy_files, state_after

API_DEV = "environments/dev/api.yaml"
SENTINEL = "s3nt1nel-Pa55w0rd-never-shown"


@pytest.fixture
def remote(tmp_path: Path) -> DeployRemote:
    return DeployRemote(tmp_path)


def publish_applied(repo: ConfigRepo, remote: DeployRemote) -> EnvState:
    """Record in the deploy repo what applying dev's current plan would have written."""
    plan = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), lambda path: None)
    state = state_after(plan)
    remote.publish(state, deploy_files(plan))
    return state


def plan(repo: ConfigRepo, remote: DeployRemote, *args: str, **env: str) -> Result:
    return CliRunner().invoke(
        cli_group,
        ["-C", str(repo.root), "--deploy-repo", remote.url, "plan", "dev", *args],
        env={"NO_COLOR": "1", **env},
    )


def test_empty_deploy_repo_plans_creates(repo: ConfigRepo, remote: DeployRemote) -> None:
    result = plan(repo, remote, "--exit-code", "--json")
    assert result.exit_code == 2, result.stderr
    assert [s["action"] for s in json.loads(result.stdout)["services"]] == ["create", "create"]


def test_noop_exits_0(repo: ConfigRepo, remote: DeployRemote) -> None:
    publish_applied(repo, remote)
    result = plan(repo, remote, "--exit-code")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()[1:]
    assert lines[0] == "  = unchanged: db, api"
    # No cluster here (the kubeconfig context does not exist): the plan says it could not
    # check a rotation, with the reason the platform gave once for the whole environment.
    assert lines[1].startswith("  ? api: secrets not checked for rotation: ")
    assert "cannot load kubeconfig" in lines[1] and "kind-local" in lines[1]
    assert lines[2:] == ["Nothing to do."]
    full = plan(repo, remote, "--full")
    lines = full.stdout.splitlines()[1:]
    assert lines[:2] == ["  = db              noop    ", "  = api             noop    "]
    assert lines[2].startswith("      secrets: cannot tell whether they rotated: ")
    assert lines[3:] == ["Nothing to do."]


def test_value_change_diffs_against_deployed_files(repo: ConfigRepo, remote: DeployRemote) -> None:
    publish_applied(repo, remote)
    repo.write(
        API_DEV,
        "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\nreplicas: 1\n"
        "values:\n  LOG_LEVEL: trace\n",
    )
    result = plan(repo, remote, "--exit-code", "--json")
    assert result.exit_code == 2
    db, api = json.loads(result.stdout)["services"]
    assert db["action"] == "noop"
    assert (api["action"], api["reasons"]) == ("update", ["values"])
    assert api["values"]["changed"] == {
        "LOG_LEVEL": {"from": "debug", "to": "trace", "source": "environments/dev/api.yaml:5"}
    }
    assert api["files"] == {
        "app.env": "--- a/dev/api/app.env\n+++ b/dev/api/app.env\n@@ -1,4 +1,4 @@\n"
        " # api in dev (1.0.0)\n-LOG_LEVEL=debug\n+LOG_LEVEL=trace\n DB_HOST=db\n"
        " DB_PASSWORD=${secret:env:SHOP_DB_PASSWORD}\n"
    }


def test_delete_and_template_and_image(repo: ConfigRepo, remote: DeployRemote) -> None:
    publish_applied(repo, remote)
    repo.release("db", "1.1.0", {"app.env.j2": "POSTGRES_DB={{ DB_NAME }}\nTUNED=1\n"})
    repo.write("environments/dev/db.yaml", "template: 1.1.0\nimage: {ref: postgres:17}\n")
    repo.remove(API_DEV)
    result = plan(repo, remote, "--json")
    assert result.exit_code == 0, result.stderr
    db, api = json.loads(result.stdout)["services"]
    assert (db["action"], db["reasons"]) == ("update", ["template", "image"])
    assert db["template"] == {"from": "1.0.0", "to": "1.1.0"}
    assert api["action"] == "delete"
    assert api["files"]["app.env"].startswith("--- a/dev/api/app.env\n+++ /dev/null\n")


def test_blocked_then_retry(repo: ConfigRepo, remote: DeployRemote) -> None:
    state = publish_applied(repo, remote)
    repo.write(API_DEV, "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:2.0}\n")
    wanted = make_plan(repo.load(), "dev", state, Renderer(), lambda path: None, only=["api"])
    failed = Release(
        id="api-r2",
        outcome="failed",
        at="2024-05-01T10:00:00Z",
        inputs_digest=wanted.services[0].inputs_digest,
        reason="progress deadline exceeded",
    )
    state.services["api"] = replace(state.services["api"], last_failed=failed)
    remote.publish(state)
    result = plan(repo, remote, "--exit-code")
    assert result.exit_code == 0  # blocked is not a change apply would make
    assert "  ! api             blocked  [image]" in result.stdout.splitlines()
    assert (
        "      release api-r2 (released 2024-05-01T10:00:00Z) with these inputs failed: progress "
        "deadline exceeded; change its inputs or run apply --retry api"
    ) in result.stdout.splitlines()
    retried = plan(repo, remote, "--exit-code", "--retry", "api", "--json")
    assert retried.exit_code == 2
    assert json.loads(retried.stdout)["services"][1]["action"] == "update"


def test_moved_tag_is_refused(repo: ConfigRepo, remote: DeployRemote) -> None:
    publish_applied(repo, remote)
    repo.write("templates/api/app.env.j2", "MOVED=1\n")
    repo.commit("rewrite history")
    repo.tag("api/1.0.0", force=True)
    result = plan(repo, remote)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(
        "environments/dev/api.yaml:1: error: template tag api/1.0.0 moved: the deploy repo "
        "recorded commit "
    )
    # validate says so too (it passed a tag that plan rejects).
    validated = CliRunner().invoke(
        cli_group, ["-C", str(repo.root), "--deploy-repo", remote.url, "validate"]
    )
    assert validated.exit_code == 1
    assert "error: template tag api/1.0.0 moved" in validated.stderr


def test_secret_never_resolved(repo: ConfigRepo, remote: DeployRemote) -> None:
    publish_applied(repo, remote)
    repo.write(
        "environments/dev/_env.yaml",
        "platform: local\nallow_head: true\nvalues:\n  LOG_LEVEL: debug\n"
        "  DB_PASSWORD: {secret: 'env:SHOP_DB_PASSWORD_NEW'}\n",
    )
    env = {"SHOP_DB_PASSWORD": SENTINEL, "SHOP_DB_PASSWORD_NEW": SENTINEL + "2"}
    text = plan(repo, remote, **env).stdout + plan(repo, remote, "--json", **env).stdout
    assert "~ DB_PASSWORD: *** -> ***" in text
    assert "+DB_PASSWORD=${secret:env:SHOP_DB_PASSWORD_NEW}" in text
    assert SENTINEL not in text


def test_unchanged_services_that_cannot_be_checked_for_one_reason_share_a_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from configcenter.core.plan import Plan, ServicePlan
    from configcenter.output import print_plan

    why = "platform 'local': cannot load kubeconfig"
    services = [ServicePlan(f"svc-{n}", "noop", secrets_unknown=why) for n in range(3)]
    services.insert(1, ServicePlan("plain", "noop"))
    services.append(ServicePlan("other", "noop", secrets_unknown="no secrets generation"))
    print_plan(Plan("dev", services))
    lines = capsys.readouterr().out.splitlines()[1:]
    assert lines == [
        "  = unchanged: svc-0, plain, svc-1, svc-2, other",
        f"  ? svc-0, svc-1, svc-2: secrets not checked for rotation: {why}",
        "  ? other: secrets not checked for rotation: no secrets generation",
        "Nothing to do.",
    ]


def test_a_summary_line_names_twenty_services_and_counts_the_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from configcenter.core.plan import Plan, ServicePlan
    from configcenter.output import print_plan

    why = "platform 'local': cannot load kubeconfig"
    names = [f"svc-{n:04d}" for n in range(5000)]
    print_plan(Plan("dev", [ServicePlan(n, "noop", secrets_unknown=why) for n in names]))
    lines = capsys.readouterr().out.splitlines()[1:]
    first = ", ".join(names[:20])
    assert lines == [
        f"  = unchanged: {first} and 4,980 more (5,000 in all)",
        f"  ? {first} and 4,980 more (5,000 in all): secrets not checked for rotation: {why}",
        "Nothing to do.",
    ]
