"""A plan against a platform that cannot be reached asks it once, not once per service."""

from __future__ import annotations

from pathlib import Path

import pytest

from configcenter.core.plan import ServicePlan, make_plan
from configcenter.core.render import Renderer
from configcenter.core.state import EnvState
from configcenter.usecases.secret_check import secret_checker
from configcenter.usecases.workspace import Workspace
from tests.support.configrepo import ConfigRepo, DeployRemote, deploy_files, state_after


def test_unchanged_services_say_it_cannot_tell_without_reading_their_files(
    repo: ConfigRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("SHOP_DB_PASSWORD", "s3cret-db-password")
    remote = DeployRemote(tmp_path)
    first = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), lambda path: None)
    remote.publish(state_after(first), deploy_files(first))
    ws = Workspace(repo.root, remote.url)
    files = ws.previous_file()
    read: list[str] = []

    def previous_file(path: str) -> bytes | None:
        read.append(path)
        return files(path)

    def plan_dev() -> dict[str, ServicePlan]:
        check = secret_checker(ws, "dev", previous_file)
        plan = make_plan(
            ws.config, "dev", ws.read_state("dev"), ws.renderer, previous_file, secret_check=check
        )
        return {s.service: s for s in plan.services}

    services = plan_dev()
    api = services["api"]
    assert api.action == "noop"
    unknown = api.secrets_unknown
    assert unknown is not None and "kubeconfig" in unknown and str(tmp_path) in unknown
    assert "s3cret" not in unknown
    assert read == [], "the platform said it cannot tell: no recorded file is read for it"

    # A changed service still compares what its Secrets hold by reference, from the files
    # the deploy repo recorded (the values themselves cannot be compared).
    repo.write(
        "environments/dev/_env.yaml",
        repo.read("environments/dev/_env.yaml").replace("LOG_LEVEL: debug", "LOG_LEVEL: warn"),
    )
    repo.commit("api: log level")
    ws = Workspace(repo.root, remote.url)
    files = ws.previous_file()
    services = plan_dev()
    api = services["api"]
    assert api.action == "update"
    assert "dev/api/app.env" in read
