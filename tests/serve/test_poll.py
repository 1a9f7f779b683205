"""Git polling: a push whose webhook never arrives is applied by the next poll, once."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from configcenter.core.errors import ConfigError
from configcenter.core.model import Config
from configcenter.core.redact import Redactor
from configcenter.serve.settings import load_settings
from configcenter.usecases.workspace import Workspace
from tests.serve.conftest import Served, start_served
from tests.support.helpers import poll
from tests.support.serve_fixtures import ServeProcess, make_shop_world


def deployed_state(served: Served) -> str:
    return subprocess.run(
        ["git", f"--git-dir={served.world.deploy}", "show", "main:dev/.state/api.json"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout


def test_a_lost_webhook_only_delays_the_apply(
    tmp_path: Path, serve_processes: list[ServeProcess]
) -> None:
    served = start_served(tmp_path, serve_processes)
    try:
        # poll_interval is a config change like any other: committed and pushed.
        served.proc.stop()
        config = served.world.config
        config.write(
            "configcenter.yaml", config.read("configcenter.yaml") + "  poll_interval: 2s\n"
        )
        config.commit("serve polls every 2s")
        config.git("push", "-q", "origin", "main")
        served.ops.git("pull", "-q", "--ff-only")
        served.proc = ServeProcess(served.world)
        serve_processes.append(served.proc)
        served.proc.wait_ready()

        # A push whose delivery is lost: GitLab's webhook is never posted.
        served.push_change(
            "environments/dev/api.yaml",
            "template: 1.0.0\nimage: {ref: registry.test/shop/api:7.7}\nreplicas: 2\n",
            "api 7.7 in dev",
        )
        poll(
            lambda: "registry.test/shop/api:7.7" in deployed_state(served) or None,
            120,
            "a poll to apply the push",
        )
        head = served.ops.git("rev-parse", "HEAD").strip()

        def polls_after_the_apply() -> list[dict[str, Any]] | None:
            jobs = [j for j in served.jobs(source="schedule")["jobs"] if j["kind"] == "poll"]
            quiet = [j for j in jobs if j["state"] == "ignored" and head[:10] in j["note"]]
            return jobs if quiet else None

        jobs = poll(polls_after_the_apply, 60, "a poll that finds nothing new")
        [applied] = [j for j in jobs if j["runs"]]
        assert applied["state"] == "done" and f"-> {head[:10]}" in applied["note"]
        runs = served.runs(kind="apply")
        assert [r["id"] for r in runs] == applied["runs"], "later polls must apply nothing"
        assert runs[0]["outcome"] == "succeeded"
        assert (runs[0]["trigger"], runs[0]["actor"]) == ("poll", "poll: main moved")
    finally:
        served.gitlab.stop()


def test_poll_interval_default_and_bad_value(tmp_path: Path) -> None:
    world = make_shop_world(tmp_path / "w")
    text = world.config.read("configcenter.yaml")
    assert load_settings(_load(world.config.root), Redactor()).poll_interval == 180.0
    world.config.write("configcenter.yaml", text + "serve:\n  poll_interval: 1m\n")
    assert load_settings(_load(world.config.root), Redactor()).poll_interval == 60.0
    world.config.write("configcenter.yaml", text + "serve:\n  poll_interval: soon\n")
    with pytest.raises(ConfigError) as caught:
        _load(world.config.root)
    assert "configcenter.yaml:5: error: 'poll_interval': 'soon' is not a duration" in str(
        caught.value
    )


def _load(root: Path) -> Config:
    return Workspace(root).config


def test_a_broken_push_does_not_stop_the_poll_that_brings_its_fix(
    tmp_path: Path, serve_processes: list[ServeProcess]
) -> None:
    """A push that breaks the config (its webhook delivered), serve restarted, and the
    fix (webhook lost): serve starts on the broken commit and the schedule cannot load
    the config meanwhile, yet it keeps polling, so the fix arrives; it says why it cannot
    schedule once, not twice a second."""
    served = start_served(tmp_path, serve_processes)
    try:
        served.proc.stop()
        config = served.world.config
        config.write(
            "configcenter.yaml", config.read("configcenter.yaml") + "  poll_interval: 2s\n"
        )
        config.commit("serve polls every 2s")
        config.git("push", "-q", "origin", "main")
        served.ops.git("pull", "-q", "--ff-only")
        served.proc = ServeProcess(served.world)
        serve_processes.append(served.proc)
        served.proc.wait_ready()

        broken = served.push_change(
            "environments/dev/api.yaml",
            "template: 1.0.0\nimage: {ref: registry.test/shop/api:7.7\nreplicas: 2\n",
            "api: a brace left open",
        )
        status, _ = broken.post(served.url + "/hooks/gitlab")
        assert status == 202

        def failed_push() -> dict[str, Any] | None:
            jobs = served.jobs(source="gitlab")["jobs"]
            return next((j for j in jobs if j["state"] == "failed"), None)

        job = poll(failed_push, 60, "the broken push's job to fail")
        assert "environments/dev/api.yaml:2" in job["note"]

        # serve restarts (a deploy, a crash) with the broken commit checked out: it must
        # come up, say what is broken, and keep listening for the fix.
        served.proc.stop()
        served.proc = ServeProcess(served.world)
        serve_processes.append(served.proc)
        served.proc.wait_ready()
        started = served.proc.log()
        assert "environments/dev/api.yaml:2" in started and "serve starts anyway" in started

        # The fix, whose delivery is lost: only the poll can bring it.
        served.push_change(
            "environments/dev/api.yaml",
            "template: 1.0.0\nimage: {ref: registry.test/shop/api:7.8}\nreplicas: 2\n",
            "api: brace closed, 7.8",
        )
        poll(
            lambda: "registry.test/shop/api:7.8" in deployed_state(served) or None,
            120,
            "a poll to apply the fix",
        )
        log = served.proc.log()
        schedule_warnings = [line for line in log.splitlines() if " schedule: " in line]
        assert 1 <= len(schedule_warnings) <= 3, schedule_warnings[:10]
        assert "environments/dev/api.yaml:2" in schedule_warnings[0]
        assert "Traceback" not in log
    finally:
        served.gitlab.stop()
