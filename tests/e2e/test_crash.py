"""`configcenter apply` killed with SIGKILL at every crash point, then run again.

Each crash point named anywhere in configcenter/ gets one real child process that
dies right there. The deploy remote must then hold the old head or a complete new
commit, and a rerun (over the dead process's stale lock) must converge on the
tree an uninterrupted apply from the same config commit produces.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest

from configcenter.adapters.git_deploy_repo import CRASH_POINTS, LOCK_FILE
from configcenter.crashpoints import crash_env
from tests.support.configrepo import git
from tests.support.e2e_fixtures import World

PACKAGE = Path(__file__).resolve().parents[2] / "configcenter"
_CALL = re.compile(r"""crash_point\(\s*["']([^"']+)["']\s*\)""")
# Volatile per run: which run made a release, when, and so its id.
_PER_RUN = ("id", "at", "run")


def all_crash_points() -> list[str]:
    """Every `crash_point("...")` in the package, found by reading the source."""
    found: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name != "crashpoints.py":
            found.update(_CALL.findall(path.read_text(encoding="utf-8")))
    return sorted(found)


POINTS = all_crash_points()
#: Points on the way to the platform do not fire with --no-rollout;
#: tests/apply_on_platforms kills there.
ROLLOUT_POINTS = [p for p in POINTS if p.startswith("rollout:")]
COMMIT_POINTS = [p for p in POINTS if p not in ROLLOUT_POINTS]
#: Points reached while apply holds the deploy repo's lock (its sync, commit and push); a
#: cache write (`cache_files.before_rename`) fires first when the config's load is kept,
#: before apply takes the lock.
LOCKED_POINTS = set(CRASH_POINTS) | {p for p in POINTS if p.startswith("apply:")}


def test_every_adapter_crash_point_is_exercised() -> None:
    assert set(CRASH_POINTS) <= set(POINTS)
    assert {"apply:before-push", "apply:after-push"} <= set(POINTS)


def normalised_state(data: dict[str, Any]) -> dict[str, Any]:
    """The state records without what differs between two runs of the same apply."""
    for record in data["services"].values():
        for key in ("release", "last_good", "last_failed"):
            if record.get(key):
                record[key] = {k: v for k, v in record[key].items() if k not in _PER_RUN}
    return dict(data)


def tree(world: World, rev: str) -> tuple[str, dict[str, Any]]:
    """`git ls-tree -r` without the state records, and the normalised records."""
    listing = world.git_deploy("ls-tree", "-r", rev).decode()
    files = "\n".join(line for line in listing.splitlines() if "\tdev/.state/" not in line)
    return files, normalised_state(world.state("dev", rev))


def lock_files(world: World) -> list[Path]:
    return sorted((world.cache_home / "configcenter" / "deploy").glob(f"*/{LOCK_FILE}"))


@pytest.mark.parametrize("point", COMMIT_POINTS)
def test_apply_killed_at_a_crash_point_leaves_a_whole_commit_and_reruns_clean(
    world: World, tmp_path: Path, point: str
) -> None:
    world.ok("apply", "dev", "--no-rollout")
    old = world.head()
    assert old is not None
    text = world.config.read("environments/dev/api.yaml")
    world.config.write(
        "environments/dev/api.yaml",
        text.replace("template: 1.0.0", "template: 1.1.0").replace("debug", "warn"),
    )
    world.config.remove("environments/dev/worker.yaml")
    world.config.commit("api 1.1.0 at warn; no worker")

    # The same apply, uninterrupted, against a copy of the remote as it is now.
    reference = tmp_path / "reference.git"
    git(tmp_path, "clone", "-q", "--bare", str(world.deploy), str(reference))
    world.ok("--deploy-repo", str(reference), "apply", "dev", "--no-rollout")

    crashed = world.cc("apply", "dev", "--no-rollout", extra_env=crash_env(point))

    assert crashed.code == -signal.SIGKILL, (
        f"apply did not die at {point} (exit {crashed.code}):\n{crashed.output}"
    )
    head = world.head()
    world.git_deploy("fsck", "--strict", "--no-dangling")
    if head != old:
        # A complete new commit on top of the old head, never a partial one.
        assert world.git_deploy("rev-parse", f"{head}^").decode().strip() == old
        assert tree(world, "refs/heads/main") == tree_of(reference)
    if point in LOCKED_POINTS:
        assert lock_files(world), "the killed apply should have left its lock behind"

    rerun = world.ok("apply", "dev", "--no-rollout")

    final = world.head()
    assert final is not None
    assert tree(world, final) == tree_of(reference)
    assert world.commit_count() == 2, "the rerun made a second commit for the same change"
    if head != old:
        assert final == head and "nothing to do" in rerun.output.lower()
    assert not lock_files(world), "the rerun left a lock file behind"
    assert world.ok("plan", "dev", "--exit-code").code == 0


def tree_of(bare: Path) -> tuple[str, dict[str, Any]]:
    probe = World(bare.parent, None, bare, bare.parent, bare.parent)  # type: ignore[arg-type]
    return tree(probe, "refs/heads/main")


def test_the_run_of_a_killed_apply_is_ended_by_the_next_one(world: World) -> None:
    world.ok("apply", "dev", "--no-rollout")
    text = world.config.read("environments/dev/api.yaml")
    world.config.write("environments/dev/api.yaml", text.replace("debug", "warn"))
    world.config.commit("api at warn")

    crashed = world.cc("apply", "dev", "--no-rollout", extra_env=crash_env("apply:before-push"))
    assert crashed.code == -signal.SIGKILL, crashed.output
    killed = [r for r in world.runs() if r[4] == "running"]
    assert len(killed) == 1  # it could not record its own end

    world.ok("apply", "dev", "--no-rollout")

    outcomes = {run_id: outcome for run_id, _, _, _, outcome in world.runs()}
    assert outcomes[killed[0][0]] == "failed"
    assert "running" not in outcomes.values()
    assert "died before it ended" in world.run_store_dump()
