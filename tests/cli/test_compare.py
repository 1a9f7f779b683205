"""services, diff ENV1 ENV2, show ENV RELEASE and history --diff A B, against a real
config repo and a real bare deploy repo; secrets never appear, only `***`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from configcenter.cli import cli as cli_group
from tests.support.configrepo import ConfigRepo, git

API_DEV = "environments/dev/api.yaml"
SENTINEL = "s3nt1nel-Pa55w0rd-never-shown"


@pytest.fixture
def deploy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    remote = tmp_path / "deploy.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    return remote


def cc(repo: ConfigRepo, deploy: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli_group,
        ["-C", str(repo.root), "--deploy-repo", str(deploy), *args],
        env={"NO_COLOR": "1", "SHOP_DB_PASSWORD": SENTINEL},
    )


def ok_json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True
    return dict(data)


def set_replicas(repo: ConfigRepo, count: int) -> None:
    repo.write(
        API_DEV,
        f"template: 1.0.0\nimage: {{ref: registry.example.com/shop/api:1.0}}\nreplicas: {count}\n",
    )
    repo.commit(f"api: {count} replicas")


def test_services_per_environment(repo: ConfigRepo, deploy: Path) -> None:
    ok_json(cc(repo, deploy, "apply", "dev", "--no-rollout", "--json"))
    data = ok_json(cc(repo, deploy, "services", "--json"))
    rows = {(r["env"], r["service"]): r for r in data["services"]}
    assert list(rows) == [("dev", "db"), ("dev", "api"), ("prod", "db"), ("prod", "api")]
    api = rows[("dev", "api")]
    assert (api["template"], api["image"], api["platform"], api["platform_kind"]) == (
        "1.0.0",
        "registry.example.com/shop/api:1.0",
        "local",
        "kubernetes",
    )
    assert api["deployed"]["outcome"] == "committed"
    assert rows[("prod", "api")]["deployed"] is None and rows[("prod", "api")]["replicas"] == 3
    text = cc(repo, deploy, "services", "prod")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].split() == [
        "ENV", "SERVICE", "TEMPLATE", "IMAGE", "PLATFORM", "REPLICAS", "DEPLOYED"
    ]  # fmt: skip
    assert lines[2].split() == [
        "prod", "api", "1.0.0", "registry.example.com/shop/api:1.0", "local", "(kubernetes)",
        "3", "-",
    ]  # fmt: skip
    unknown = cc(repo, deploy, "services", "stage")
    assert unknown.exit_code == 1 and "unknown environment 'stage'" in unknown.stderr


def test_diff_between_environments(repo: ConfigRepo, deploy: Path) -> None:
    data = ok_json(cc(repo, deploy, "diff", "dev", "prod", "--service", "api", "--json"))
    (api,) = data["services"]
    assert api["fields"] == {"replicas": {"from": 1, "to": 3}}
    assert api["values"]["LOG_LEVEL"] == {
        "from": {"value": "debug", "source": "environments/dev/_env.yaml:4"},
        "to": {"value": "info", "source": "environments/_defaults.yaml:2"},
    }
    assert "DB_PASSWORD" not in api["values"]  # the same reference in both: no difference
    assert "\n-LOG_LEVEL=debug\n" in api["files"]["app.env"]
    assert "\n+LOG_LEVEL=info\n" in api["files"]["app.env"]
    assert api["files"]["deployment.yaml"].startswith(
        "--- dev/api/deployment.yaml\n+++ prod/api/deployment.yaml\n"
    )
    text = cc(repo, deploy, "diff", "dev", "prod")
    assert text.exit_code == 0, text.output
    # db reads only DB_NAME: dev's LOG_LEVEL is no difference for it.
    assert text.stdout.splitlines()[0] == "Diff dev -> prod: 1 service(s) differ, 1 same"
    assert (
        "      LOG_LEVEL: debug -> info   (dev: environments/dev/_env.yaml:4; prod: " in text.stdout
    )
    assert SENTINEL not in text.output
    bad = cc(repo, deploy, "diff", "dev", "prod", "-s", "nosuch", "--json")
    assert bad.exit_code == 1
    assert "'nosuch' is in neither dev nor prod" in json.loads(bad.stdout)["problems"][0]["message"]


def test_diff_leaves_out_values_a_service_does_not_consume(repo: ConfigRepo, deploy: Path) -> None:
    """A shared key no template of api reads is no difference for api (nor for its plan)."""
    env_file = "environments/dev/_env.yaml"
    repo.write(env_file, repo.read(env_file) + "  ONLY_IN_DEV_UNUSED: x\n")
    data = ok_json(cc(repo, deploy, "diff", "dev", "prod", "--service", "api", "--json"))
    (api,) = data["services"]
    assert "ONLY_IN_DEV_UNUSED" not in api["values"]
    assert "LOG_LEVEL" in api["values"]  # what api reads still differs
    text = cc(repo, deploy, "diff", "dev", "prod")
    assert text.exit_code == 0, text.output
    assert "ONLY_IN_DEV_UNUSED" not in text.stdout


def test_diff_masks_secrets_that_differ(repo: ConfigRepo, deploy: Path) -> None:
    repo.write(
        "environments/prod/_env.yaml",
        'platform: local\nvalues:\n  DB_PASSWORD: {secret: "env:SHOP_PROD_DB_PASSWORD"}\n',
    )
    data = ok_json(cc(repo, deploy, "diff", "dev", "prod", "-s", "api", "--json"))
    assert data["services"][0]["values"]["DB_PASSWORD"]["from"]["value"] == "***"
    assert SENTINEL not in json.dumps(data)


def test_show_and_history_diff_name_what_changed(repo: ConfigRepo, deploy: Path) -> None:
    ok_json(cc(repo, deploy, "apply", "dev", "--no-rollout", "--json"))
    set_replicas(repo, 2)
    ok_json(cc(repo, deploy, "apply", "dev", "--no-rollout", "--json"))
    set_replicas(repo, 1)
    ok_json(cc(repo, deploy, "apply", "dev", "--no-rollout", "--json"))
    history = ok_json(cc(repo, deploy, "history", "dev", "--service", "api", "--json"))
    third, second, first = (r["release"] for r in history["releases"])
    # replicas 1 -> 2 -> 1: the values digest alone cannot tell these apart; the diff can.
    assert len({r["values_digest"] for r in history["releases"]}) == 1

    changes = ok_json(cc(repo, deploy, "history", "dev", "--diff", first, second, "--json"))
    assert changes["fields"] == {"replicas": {"from": 1, "to": 2}}
    assert changes["values"] == {"changed": {}, "added": {}, "removed": {}}
    assert "-  replicas: 1\n+  replicas: 2\n" in changes["files"]["deployment.yaml"]
    same = ok_json(cc(repo, deploy, "history", "dev", "--diff", first, third, "--json"))
    assert same["fields"] == {} and same["files"] == {}
    text = cc(repo, deploy, "history", "dev", "--diff", first, second)
    assert text.exit_code == 0, text.output
    assert "  replicas 1 -> 2" in text.stdout.splitlines()

    shown = ok_json(cc(repo, deploy, "show", "dev", second, "--json"))
    assert (shown["service"], shown["replicas"], shown["template"]) == ("api", 2, "1.0.0")
    assert shown["values"]["DB_PASSWORD"] == "***"
    assert shown["values"]["LOG_LEVEL"] == "debug"
    assert "DB_PASSWORD=${secret:env:SHOP_DB_PASSWORD}" in shown["files"]["app.env"]
    printed = cc(repo, deploy, "show", "dev", second)
    assert printed.exit_code == 0, printed.output
    assert "    DB_PASSWORD = ***" in printed.stdout
    assert "# ---- dev/api/deployment.yaml" in printed.stdout
    assert SENTINEL not in printed.output + json.dumps(shown) + json.dumps(changes)

    missing = cc(repo, deploy, "show", "dev", "api-nosuch", "--json")
    assert missing.exit_code == 1
    (problem,) = json.loads(missing.stdout)["problems"]
    assert problem["message"] == "no release 'api-nosuch' in dev"
    assert third in problem["hint"]
    assert "configcenter history dev --service api" in problem["hint"]


def test_an_unknown_release_names_what_was_asked_and_the_nearest(
    repo: ConfigRepo, deploy: Path
) -> None:
    """Not a problem of configcenter.yaml: no file or line; the nearest names, and how to
    list them all, exit 1 (bad input)."""
    empty = cc(repo, deploy, "show", "dev", "api-1", "--json")
    assert empty.exit_code == 1, empty.output
    (problem,) = json.loads(empty.stdout)["problems"]
    assert (problem["file"], problem["line"]) == (None, None)
    assert problem["hint"] == "dev has no releases yet: `configcenter apply dev` makes them"

    ok_json(cc(repo, deploy, "apply", "dev", "--no-rollout", "--json"))
    releases = ok_json(cc(repo, deploy, "history", "dev", "--json"))["releases"]
    real = next(r["release"] for r in releases if r["service"] == "api")
    typo = real[:-1] + ("x" if real[-1] != "x" else "y")  # one character off
    for args in (("show", "dev", typo), ("history", "dev", "--diff", real, typo)):
        result = cc(repo, deploy, *args, "--json")
        assert result.exit_code == 1, result.output
        data = json.loads(result.stdout)
        assert (data["ok"], data["exit_code"]) == (False, 1)
        (problem,) = data["problems"]
        assert (problem["file"], problem["line"]) == (None, None), problem
        assert problem["message"] == f"no release '{typo}' in dev"
        assert problem["hint"].startswith(f"did you mean {real}?"), problem["hint"]
        assert problem["hint"].endswith("all of them: configcenter history dev --service api")
        text = cc(repo, deploy, *args)
        assert text.exit_code == 1
        assert "configcenter.yaml" not in text.output and "Traceback" not in text.output
        assert f"no release '{typo}' in dev" in text.output and real in text.output

    # A name that is no service's: the services release names start with, and `history ENV`.
    other = cc(repo, deploy, "show", "dev", "nosuch", "--json")
    (problem,) = json.loads(other.stdout)["problems"]
    assert "release names start with the service's (api, db)" in problem["hint"]
    assert problem["hint"].endswith("all of them: configcenter history dev"), problem["hint"]


def test_services_without_the_deploy_repo_still_lists_the_config(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    broken = tmp_path / "not-a-repo.git"
    broken.mkdir()
    result = CliRunner().invoke(
        cli_group,
        ["-C", str(repo.root), "--deploy-repo", str(broken), "services", "dev", "--json"],
    )
    data = ok_json(result)
    assert [r["service"] for r in data["services"]] == ["db", "api"]
    assert all(r["deployed"] is None for r in data["services"])
    assert "deploy repo not read" in data["warnings"][0]["message"]


def test_services_says_per_node_for_a_daemonset_and_auto_for_an_autoscaled_count(
    repo: ConfigRepo, deploy: Path
) -> None:
    """A DaemonSet runs one pod per node whatever `replicas:` says (the default 1 is not
    what runs); `replicas: auto` is the autoscaler's count, not "None"."""
    daemonset = repo.read("templates/api/deployment.yaml.j2").replace(
        "kind: Deployment", "kind: DaemonSet"
    )
    repo.release("api", "1.1.0", {"deployment.yaml.j2": daemonset})
    repo.write(API_DEV, repo.read(API_DEV).replace("template: 1.0.0", "template: 1.1.0"))
    prod = "environments/prod/api.yaml"
    repo.write(prod, repo.read(prod).replace("replicas: 3", "replicas: auto"))
    repo.commit("dev: api as a DaemonSet; prod: api autoscaled")

    rows = {
        (r["env"], r["service"]): r
        for r in ok_json(cc(repo, deploy, "services", "--json"))["services"]
    }

    assert rows[("dev", "api")]["per_node"] is True
    assert rows[("prod", "api")]["per_node"] is False and rows[("prod", "api")]["replicas"] is None
    assert rows[("dev", "db")]["per_node"] is False
    text = cc(repo, deploy, "services")
    assert text.exit_code == 0, text.output
    replicas = {tuple(line.split()[:2]): line for line in text.stdout.splitlines()[1:]}
    assert " per node " in replicas[("dev", "api")]
    assert " auto " in replicas[("prod", "api")] and "None" not in text.stdout
