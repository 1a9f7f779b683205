"""apply refuses a dirty config work tree and a config commit older than (or diverged
from) the one a service was last applied from: it would silently revert what came after."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.e2e_fixtures import World, clone_world

API = "environments/dev/api.yaml"


def set_level(world: World, level: str) -> str:
    text = world.config.read(API)
    lines = [line for line in text.splitlines() if "LOG_LEVEL" not in line]
    if "values:" not in lines:
        lines.append("values:")
    lines.insert(lines.index("values:") + 1, f"  LOG_LEVEL: {level}")
    world.config.write(API, "\n".join(lines) + "\n")
    return world.config.commit(f"api at {level}")


def api_level(world: World) -> str:
    app_env = world.files()["dev/api/app.env"].decode()
    return next(line for line in app_env.splitlines() if line.startswith("LOG_LEVEL="))


def test_uncommitted_edits_are_refused_and_nothing_is_changed(world: World) -> None:
    world.ok("apply", "dev", "--no-rollout")
    head = world.head()
    text = world.config.read(API)
    world.config.write(API, text.replace("LOG_LEVEL: debug", "LOG_LEVEL: warn"))

    refused = world.cc("apply", "dev", "--no-rollout")

    assert refused.code == 1, refused.output
    assert "uncommitted changes in files apply reads (environments/dev/api.yaml)" in refused.output
    assert "commit them" in refused.output and "Traceback" not in refused.output
    assert world.head() == head
    # A plan still previews the edit; a new untracked service file is refused too.
    assert "LOG_LEVEL" in world.ok("plan", "dev").stdout
    world.config.write(API, text)
    world.config.write("environments/dev/extra.yaml", "template: 1.0.0\n")
    untracked = world.cc("apply", "dev", "--no-rollout")
    assert untracked.code == 1 and "environments/dev/extra.yaml" in untracked.output
    assert world.head() == head


def test_an_older_config_commit_is_refused_naming_both_and_the_ways_out(world: World) -> None:
    old = set_level(world, "warn")
    world.ok("apply", "dev", "--no-rollout")
    new = set_level(world, "error")
    world.ok("apply", "dev", "--no-rollout")
    assert api_level(world) == "LOG_LEVEL=error"
    assert world.state()["config_commit"] == new
    assert world.state()["services"]["api"]["config_commit"] == new
    head = world.head()

    world.config.git("checkout", "-q", old)
    refused = world.cc("apply", "dev", "--no-rollout")

    assert refused.code == 1, refused.output
    text = " ".join(refused.output.split())
    assert f"config commit {old[:12]} (HEAD) is older than {new[:12]}" in text
    assert "git pull" in text and "`configcenter rollback dev api`" in text
    assert "--allow-stale-config" in text
    assert world.head() == head and api_level(world) == "LOG_LEVEL=error"

    # On purpose: applied, and the override is in the commit's trailers.
    world.ok("apply", "dev", "--no-rollout", "--allow-stale-config")
    assert api_level(world) == "LOG_LEVEL=warn"
    override = dict(world.trailers())["Configcenter-Override"]
    assert override.startswith(f"older config {old} applied over {new}")


def test_a_diverged_clone_is_refused_for_the_services_it_would_revert(
    world: World, tmp_path: Path
) -> None:
    world.ok("apply", "dev", "--no-rollout")
    other = clone_world(world, tmp_path / "other")
    ours = set_level(world, "warn")
    world.ok("apply", "dev", "--no-rollout")

    # The other clone never saw `ours`; applying api from it would undo LOG_LEVEL=warn.
    theirs = set_level(other, "error")
    refused = other.cc("apply", "dev", "--no-rollout")

    assert refused.code == 1, refused.output
    text = " ".join(refused.output.split())
    assert f"{theirs[:12]}" in text and f"{ours[:12]}" in text
    assert "last applied api from" in text
    assert api_level(world) == "LOG_LEVEL=warn"

    # After `git pull` (a merge that keeps this clone's level) it goes through.
    other.config.git("fetch", "-q", "origin")
    other.config.git("merge", "-q", "-X", "ours", "--no-edit", "origin/main")
    other.ok("apply", "dev", "--no-rollout")
    assert api_level(world) == "LOG_LEVEL=error"


def test_plan_says_apply_will_refuse_a_service_from_an_older_config_commit(
    world: World,
) -> None:
    """The plan is the truth: from a stale clone it still shows the change, and says that
    apply will refuse it, and why, before anyone runs apply."""
    old = set_level(world, "warn")
    world.ok("apply", "dev", "--no-rollout")
    new = set_level(world, "error")
    world.ok("apply", "dev", "--no-rollout")
    world.config.git("checkout", "-q", old)

    text = world.ok("plan", "dev")
    said = " ".join(text.stderr.split())
    assert f"warning: api: config commit {old[:12]} (HEAD) is older than {new[:12]}" in said
    assert "apply will refuse it" in said and "git pull" in said, said
    data = json.loads(world.ok("plan", "dev", "--json").stdout)
    warnings = [w for w in data["warnings"] if "apply will refuse it" in w["message"]]
    assert [(w["file"], w["severity"]) for w in warnings] == [(API, "warning")], warnings

    world.config.git("checkout", "-q", new)
    assert "apply will refuse" not in world.ok("plan", "dev").output
