"""`apply` killed with SIGKILL at random moments, over rollouts that succeed and that fail.

Each round changes worker (a release that becomes healthy, or one whose pods never
become ready so the Deployment misses its progress deadline), then starts `apply`
in a child process and kills it after a random delay, several times in a row; then
one apply runs to the end. After every round the platform must run the deploy
repo's current release (or, for a failing one, the last good one), the state
record must say so, and reconcile must find no drift. Bounded: a few minutes on
two cores (CONFIGCENTER_KILL_ROUNDS rounds, CONFIGCENTER_KILLS_PER_ROUND kills each).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.e2e_fixtures import CLI_TIMEOUT, World
from tests.support.k8s_cluster import RELEASE, Cluster, k8s_world, services
from tests.support.k8s_fixtures import K8sNamespace
from tests.support.rollout_fixtures import set_service

pytestmark = pytest.mark.k8s

ROUNDS = int(os.environ.get("CONFIGCENTER_KILL_ROUNDS", "6"))
KILLS_PER_ROUND = int(os.environ.get("CONFIGCENTER_KILLS_PER_ROUND", "4"))
SEED = int(os.environ.get("CONFIGCENTER_KILL_SEED", str(time.time_ns() % 100_000)))


def start_apply(world: World) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "configcenter", "-C", str(world.config.root), "apply", "dev"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=world.child_env(),
        cwd=world.root,
    )


def kill_after(proc: subprocess.Popen[str], delay: float) -> bool:
    """SIGKILL `proc` after `delay` seconds; True when it was still running then."""
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return True
    return False


def converged(world: World, cluster: Cluster, *, failing: bool, level: str) -> dict[str, Any]:
    """Platform, record and reconcile agree; returns worker's state record."""
    record: dict[str, Any] = services(world)["worker"]
    release = record["release"]
    deployment = cluster.deployment("worker")
    assert deployment.metadata.annotations[RELEASE] == release["id"]
    assert release["outcome"] == "healthy", record
    assert record["last_good"]["id"] == release["id"]
    assert cluster.healthy("worker")
    assert cluster.active_rs("worker")  # exactly one ReplicaSet has replicas
    template = deployment.spec.template
    assert template.metadata.labels["testbed.configcenter.io/never-ready"] == "false"
    assert cluster.config("worker")["LOG_LEVEL"] == level
    if failing:
        assert record["last_failed"]["outcome"] == "rolled_back", record
    report = json.loads(world.ok("reconcile", "dev", "--json").stdout)
    assert report["drift_count"] == 0, report
    plan = json.loads(world.ok("plan", "dev", "--json").stdout)
    [worker] = plan["services"]
    assert worker["action"] == ("blocked" if failing else "noop"), worker
    return record


def test_random_kills_during_apply_converge(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    rng = random.Random(SEED)
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",), progress_deadline=3)
    started = time.monotonic()
    first = world.cc("apply", "dev")
    assert first.code == 0, first.output
    took = {"ok": time.monotonic() - started, "failing": 3 * (time.monotonic() - started)}
    level = "info"
    kills = {"ok": 0, "failing": 0}
    for round_ in range(ROUNDS):
        failing = round_ % 2 == 1
        kind = "failing" if failing else "ok"
        new_level = f"level{round_}"
        if failing:
            set_service(world, "worker", LOG_LEVEL=new_level, NEVER_READY="true")
        else:
            set_service(world, "worker", LOG_LEVEL=new_level)
            level = new_level
        for _ in range(KILLS_PER_ROUND):
            delay = rng.uniform(0.2, max(0.5, took[kind]))
            if kill_after(start_apply(world), delay):
                kills[kind] += 1
        started = time.monotonic()
        final = world.cc("apply", "dev")
        took[kind] = max(took[kind], time.monotonic() - started)
        assert final.code in (0, 3), final.output
        assert time.monotonic() - started < CLI_TIMEOUT
        converged(world, cluster, failing=failing, level=level)
    total = kills["ok"] + kills["failing"]
    print(
        f"random kills (seed {SEED}): survived {total} kills of a running apply "
        f"({kills['ok']} over succeeding rollouts, {kills['failing']} over failing ones) "
        f"in {ROUNDS} rounds"
    )
    assert kills["ok"] > 0 and kills["failing"] > 0, kills
