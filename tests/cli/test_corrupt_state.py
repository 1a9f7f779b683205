"""A corrupt or hand-edited state record in a real deploy repo: every command says which
file, which key and how to fix it, with no traceback and nothing changed; a format-1
`state.yaml` is still read and is migrated by the next commit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from configcenter.cli import cli as cli_group
from configcenter.core.plan import make_plan
from configcenter.core.render import Renderer
from configcenter.core.state import STATE_VERSION, EnvState
from tests.support.configrepo import (
    ConfigRepo,
    DeployRemote,
    deploy_files,
    git,
    legacy_state_yaml,
    state_after,
)

API_STATE = "dev/.state/api.json"


@pytest.fixture
def remote(tmp_path: Path) -> DeployRemote:
    return DeployRemote(tmp_path)


def publish_applied(repo: ConfigRepo, remote: DeployRemote) -> EnvState:
    plan = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), lambda path: None)
    state = state_after(plan)
    remote.publish(state, deploy_files(plan))
    return state


def hand_edit(remote: DeployRemote, rel: str, data: bytes, message: str = "hand edit") -> str:
    """What someone with push access does: change a file with plain git and push."""
    path = remote.work / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    git(remote.work, "add", "-A")
    git(remote.work, "commit", "-q", "-m", message)
    git(remote.work, "push", "-q", "origin", "HEAD:refs/heads/main")
    return head(remote)


def head(remote: DeployRemote) -> str:
    return git(remote.path, "rev-parse", "refs/heads/main").strip()


def run(repo: ConfigRepo, remote: DeployRemote, *args: str) -> Result:
    return CliRunner().invoke(
        cli_group,
        ["-C", str(repo.root), "--deploy-repo", remote.url, *args],
        env={"NO_COLOR": "1", "SHOP_DB_PASSWORD": "pw-for-tests"},
    )


def edited(remote: DeployRemote, **fields: object) -> bytes:
    data = json.loads((remote.work / API_STATE).read_bytes())
    data.update(fields)
    return json.dumps(data, indent=1).encode()


CASES = {
    "truncated": lambda r: (r.work / API_STATE).read_bytes()[:150],
    "replicas many": lambda r: edited(r, replicas="many"),
    "newer format": lambda r: edited(r, configcenter_state=STATE_VERSION + 1),
}
EXPECT = {
    "truncated": ("is not valid JSON at line", ""),
    "replicas many": ("must be a whole number, not a string ('many')", "key 'replicas'"),
    "newer format": (f"is {STATE_VERSION + 1}: written by a newer configcenter", "upgrade"),
}
COMMANDS = {
    "plan": ("plan", "dev"),
    "apply": ("apply", "dev", "--no-rollout"),
    "rollback": ("rollback", "dev", "api", "--no-rollout"),
    "reconcile": ("reconcile", "dev"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_commands_refuse_a_corrupt_record_clearly_and_change_nothing(
    repo: ConfigRepo, remote: DeployRemote, command: str, case: str
) -> None:
    publish_applied(repo, remote)
    bad = hand_edit(remote, API_STATE, CASES[case](remote), "edit api's state by hand")

    result = run(repo, remote, *COMMANDS[command])

    output = result.output + (result.stderr if result.stderr_bytes else "")
    assert result.exit_code == 1, output
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), output
    words, more = EXPECT[case]
    assert API_STATE in output and words in output and more in output, output
    # The fix names the commit that made the edit, so it can be undone.
    assert f"commit {bad[:10]}" in output and "git revert" in output, output
    assert head(remote) == bad  # nothing committed


def test_history_skips_an_unreadable_record_with_a_warning(
    repo: ConfigRepo, remote: DeployRemote
) -> None:
    publish_applied(repo, remote)
    hand_edit(remote, API_STATE, edited(remote, replicas="many"))
    result = run(repo, remote, "history", "dev", "--json")
    assert result.exit_code == 0, result.output
    warned = result.stderr.replace("\n", " ")
    assert "warning: history skips a state record" in warned, warned
    assert API_STATE in warned and "key 'replicas'" in warned, warned
    assert "Traceback" not in result.output


def test_a_stray_file_under_the_state_directory_is_named(
    repo: ConfigRepo, remote: DeployRemote
) -> None:
    publish_applied(repo, remote)
    hand_edit(remote, "dev/.state/README.md", b"notes\n")
    result = run(repo, remote, "plan", "dev")
    assert result.exit_code == 1
    assert "dev/.state/README.md" in result.output and "is not a state record" in result.output


def test_a_format_1_state_yaml_plans_as_before_and_apply_migrates_it(
    repo: ConfigRepo, remote: DeployRemote
) -> None:
    plan = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), lambda path: None)
    state = state_after(plan)
    # A deploy repo written by an older configcenter: one dev/state.yaml.
    remote.publish(EnvState("dev"))  # (an empty first commit, and the work clone)
    for rel, data in {**deploy_files(plan), "dev/state.yaml": legacy_state_yaml(state)}.items():
        (remote.work / rel).parent.mkdir(parents=True, exist_ok=True)
        (remote.work / rel).write_bytes(data)
    git(remote.work, "add", "-A")
    git(remote.work, "commit", "-q", "-m", "written by configcenter 0.x")
    git(remote.work, "push", "-q", "origin", "HEAD:refs/heads/main")

    noop = run(repo, remote, "plan", "dev", "--json", "--exit-code")
    assert noop.exit_code == 0, noop.output
    assert {s["action"] for s in json.loads(noop.stdout)["services"]} == {"noop"}

    text = repo.read("environments/dev/api.yaml").replace("replicas: 1", "replicas: 2")
    repo.write("environments/dev/api.yaml", text)
    repo.commit("api: 2 replicas")  # apply deploys commits
    applied = run(repo, remote, "apply", "dev", "--no-rollout")
    assert applied.exit_code == 0, applied.output
    files = git(remote.path, "ls-tree", "-r", "--name-only", "main", "--", "dev").split()
    assert "dev/state.yaml" not in files
    assert {f for f in files if f.startswith("dev/.state/")} == {
        "dev/.state/_env.json",  # the config commit dev was applied from
        "dev/.state/api.json",
        "dev/.state/db.json",
    }
    again = run(repo, remote, "plan", "dev", "--json", "--exit-code")
    assert again.exit_code == 0, again.output
