"""What the console and the notifications say after a real failed rollout on Marathon.

The rollout really fails (the double's `never-ready` image never passes its health
checks) and apply really rolls back: the deploy repo then records the good release as
current and the failed one as `last_failed`. The cell must say `rolled_back` (the README's
"the newest release failed and the previous one was put back"), not `healthy`, and the
notifier must name the failed release, once.
"""

from __future__ import annotations

from pathlib import Path

from configcenter.serve import status
from configcenter.serve.notify import facts
from configcenter.usecases.apply import ApplyOptions, apply_env, rollback_service
from tests.support.marathon_double import MarathonDouble
from tests.support.rollout_fixtures import make_rollout_world, set_service, workspace


def test_a_rolled_back_release_shows_rolled_back_and_is_one_notification(
    tmp_path: Path, marathon_server: MarathonDouble, rollout_xdg: Path
) -> None:
    world = make_rollout_world(
        tmp_path / "world",
        kind="marathon",
        marathon_url=marathon_server.url,
        services=("worker",),
        timeout="3s",
    )
    first = apply_env(workspace(world), "dev", ApplyOptions())
    assert [r.outcome for r in first.results] == ["healthy"]
    good = world.state("dev")["services"]["worker"]["release"]["id"]
    [cell] = status.services(workspace(world), "dev")
    assert cell["status"] == "healthy" and not facts(workspace(world), "dev")

    set_service(world, "worker", image="registry.test/shop/worker:1.1-never-ready")
    broken = apply_env(workspace(world), "dev", ApplyOptions())

    assert [r.outcome for r in broken.results] == ["rolled_back"]
    record = world.state("dev")["services"]["worker"]
    bad = record["last_failed"]["id"]
    assert record["release"]["id"] == good and bad != good
    app = marathon_server.app_json("/shop/dev/worker")
    assert app["labels"]["configcenter.io/release"] == good

    [cell] = status.services(workspace(world), "dev")
    assert cell["status"] == "rolled_back", cell
    assert cell["release"]["id"] == good and cell["last_failed"] == bad
    assert bad in cell["status_why"] and "ProgressDeadlineExceeded" in cell["status_why"]
    assert good in cell["status_why"]

    [fact] = facts(workspace(world), "dev")
    assert (fact.event, fact.service) == ("rolled_back", "worker")
    assert bad in fact.key and bad in fact.summary
    assert "ProgressDeadlineExceeded" in fact.reason
    assert fact.run == record["last_failed"]["run"] == cell["status_run"]

    # The next apply of the same inputs refuses them: blocked, and the message links the
    # run that refused (not the good release's old apply, whose log says healthy).
    refused = apply_env(workspace(world), "dev", ApplyOptions())
    assert [r.outcome for r in refused.results] == ["blocked"] and refused.run_id
    [cell] = status.services(workspace(world), "dev")
    assert cell["status"] == "blocked" and cell["status_run"] == refused.run_id, cell
    [fact] = facts(workspace(world), "dev")
    assert fact.event == "blocked" and fact.run == refused.run_id

    # A later good release of the same service is healthy again: nothing to tell.
    set_service(world, "worker", image="registry.test/shop/worker:1.2")
    fixed = apply_env(workspace(world), "dev", ApplyOptions())
    assert [r.outcome for r in fixed.results] == ["healthy"]
    [cell] = status.services(workspace(world), "dev")
    assert cell["status"] == "healthy" and not facts(workspace(world), "dev")
    newest = world.state("dev")["services"]["worker"]["release"]["id"]

    # Rolling back on purpose from a healthy release is no failure: healthy, nothing to tell.
    back = rollback_service(workspace(world), "dev", "worker", good, actor="ops@test")
    assert back.outcome == "healthy", back
    record = world.state("dev")["services"]["worker"]
    assert record["release"]["id"] == good and record["last_failed"]["id"] == newest
    [cell] = status.services(workspace(world), "dev")
    assert cell["status"] == "healthy" and cell["failure"] is None, cell
    assert not facts(workspace(world), "dev")
