"""The workspace keeps the last state it read per environment, by commit: never stale."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from configcenter.core.plan import make_plan
from configcenter.core.render import Renderer
from configcenter.core.state import EnvState
from configcenter.usecases.workspace import PreviousFiles, Workspace
from tests.support.configrepo import ConfigRepo, DeployRemote, deploy_files, state_after


def test_a_state_read_twice_is_parsed_once_and_a_new_push_is_seen(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    remote = DeployRemote(tmp_path)
    plan = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), lambda path: None)
    state = state_after(plan)
    remote.publish(state, deploy_files(plan))
    ws = Workspace(repo.root, remote.url)

    first = ws.read_state("dev")
    assert first.services == state.services
    # What a caller changes in its copy does not leak into the next read.
    first.services["api"].replicas = 99
    del first.services["db"]
    again = ws.read_state("dev")
    assert again.services == state.services

    # Another writer pushes behind the workspace's back: the next read sees it.
    changed = EnvState("dev", {**state.services, "api": replace(state.services["api"], replicas=7)})
    remote.publish(changed)
    assert ws.read_state("dev").services["api"].replicas == 7
    # An older commit asked for by sha is read as it was.
    old = ws.deploy_repo.log(prefix="dev/", limit=2)[1].sha
    assert ws.read_state("dev", old).services["api"].replicas == state.services["api"].replicas


def test_rendered_files_read_service_by_service_then_in_one_batch_are_the_same(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    remote = DeployRemote(tmp_path)
    files = {
        f"{env}/svc-{n:02d}/{name}": f"{env} {n} {name}\n".encode()
        for env in ("dev", "prod")
        for n in range(PreviousFiles.ONE_BY_ONE + 4)
        for name in ("app.env", "conf/nested.yaml")
    }
    first = remote.publish(EnvState("dev"), files)
    ws = Workspace(repo.root, remote.url)
    ws.deploy_repo.sync()
    previous = PreviousFiles(ws.deploy_repo, None)
    # Service by service first, then the rest of the environment in one batch; a file
    # asked for again, one that does not exist, and another environment read the same.
    for path in [*sorted(files), *sorted(files)]:
        assert previous(path) == files[path], path
    assert previous("dev/svc-00/missing.txt") is None
    assert previous("dev/no-such-service/app.env") is None
    assert previous("staging/svc-00/app.env") is None

    # Another revision is read as it was, not as the reader of the first one has it.
    changed = {**files, "dev/svc-00/app.env": b"changed\n"}
    remote.publish(EnvState("dev"), changed)
    ws.deploy_repo.sync()
    assert PreviousFiles(ws.deploy_repo, None)("dev/svc-00/app.env") == b"changed\n"
    assert PreviousFiles(ws.deploy_repo, first)("dev/svc-00/app.env") == files["dev/svc-00/app.env"]
