"""Two processes applying to one deploy remote at once: nothing lost, nothing doubled."""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
from pathlib import Path

from tests.e2e.racer import Lane, race
from tests.support.e2e_fixtures import World, clone_world

ROUNDS = int(os.environ.get("CONFIGCENTER_RACE_ROUNDS", "20"))
LANES = (
    Lane("racer-a", "api", "LOG_LEVEL", "a"),
    Lane("racer-b", "worker", "QUEUE", "b"),
)
RACE_TIMEOUT = 900.0


def test_two_processes_racing_on_push_lose_and_duplicate_nothing(
    world: World, tmp_path: Path
) -> None:
    world.ok("apply", "dev", "--no-rollout")
    racers = [clone_world(world, tmp_path / lane.name) for lane in LANES]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(LANES))
    outs = [tmp_path / f"{lane.name}.json" for lane in LANES]
    procs = [
        ctx.Process(target=race, args=(lane, str(r.root), ROUNDS, barrier, str(out)))
        for lane, r, out in zip(LANES, racers, outs, strict=True)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(RACE_TIMEOUT)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert [p.exitcode for p in procs] == [0] * len(LANES), "a racer failed; see its traceback"
    results = {
        lane.name: json.loads(out.read_text()) for lane, out in zip(LANES, outs, strict=True)
    }

    # One commit per apply, on a straight line: none lost, none doubled.
    assert world.commit_count() == 1 + ROUNDS * len(LANES)
    assert world.git_deploy("rev-list", "--min-parents=2", "refs/heads/main").strip() == b""
    history = world.git_deploy("rev-list", "--reverse", "refs/heads/main").decode().split()
    pushed = [r["commit"] for lane in LANES for r in results[lane.name]]
    assert None not in pushed and len(set(pushed)) == len(pushed)
    assert set(pushed) == set(history[1:])
    runs = [v for sha in history for k, v in world.trailers(sha) if k == "Configcenter-Run"]
    assert len(runs) == len(set(runs)) == len(history)

    # Each commit carries exactly its racer's change, seen in order.
    seen: dict[str, list[str]] = {lane.name: [] for lane in LANES}
    by_service = {lane.service: lane for lane in LANES}
    for parent, sha in itertools.pairwise(history):
        paths = set(world.git_deploy("diff", "--name-only", parent, sha).decode().split())
        [service] = {p.split("/")[1] for p in paths if not p.startswith("dev/.state/")}
        lane = by_service[service]
        # Only the changed service's state record is rewritten (and the env's config commit).
        assert paths - {"dev/.state/_env.json"} == {
            f"dev/{service}/app.env",
            f"dev/.state/{service}.json",
        }, paths
        app_env = world.git_deploy("cat-file", "blob", f"{sha}:dev/{service}/app.env").decode()
        value = next(
            line.split("=", 1)[1] for line in app_env.splitlines() if line.startswith(lane.key)
        )
        seen[lane.name].append(value)
    for lane in LANES:
        assert seen[lane.name] == [lane.value(r) for r in range(ROUNDS)], lane.name

    # The final state record parses and matches the files next to it.
    state = world.state("dev")
    files = world.files()
    assert set(state["services"]) == {"db", "api", "worker"}
    for service, record in state["services"].items():
        for name, digest in record["files"].items():
            data = files[f"dev/{service}/{name}"]
            assert digest == "sha256:" + hashlib.sha256(data).hexdigest(), (service, name)
        assert not {p for p in files if p.startswith(f"dev/{service}/")} - {
            f"dev/{service}/{n}" for n in record["files"]
        }
    for lane in LANES:
        last = lane.value(ROUNDS - 1)
        assert state["services"][lane.service]["values"][lane.key] == last
        assert f"{lane.key}={last}\n".encode() in files[f"dev/{lane.service}/app.env"]
    assert {p for p in files if p.startswith("dev/.state/")} == {
        "dev/.state/_env.json",
        *(f"dev/.state/{s}.json" for s in state["services"]),
    }

    # They really raced: some pushes were rejected and retried.
    rejected = sum(r["rejected"] for lane in LANES for r in results[lane.name])
    assert rejected > 0, "no push was ever rejected: the racers did not overlap"
