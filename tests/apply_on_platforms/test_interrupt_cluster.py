"""Ctrl-C during a rollout stops the apply at once; the next apply finishes the job.

An interrupted apply used to sit until the rollout ended (up to the progress
deadline or the rollout timeout) before saying "Aborted!": the worker thread
that watches the rollout was joined on the way out. What was committed stays
committed and what is rolling out goes on; the next apply watches it and records
the outcome (here: it fails, so it is rolled back), with the cluster as the judge.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.k8s_cluster import Cluster, expect, k8s_world, services
from tests.support.k8s_fixtures import K8sNamespace
from tests.support.rollout_fixtures import set_service

pytestmark = pytest.mark.k8s


def test_ctrl_c_while_waiting_exits_promptly_and_the_next_apply_records_the_outcome(
    tmp_path: Path, k8s_namespace: K8sNamespace
) -> None:
    cluster = Cluster(k8s_namespace)
    # A never-ready release misses its progress deadline only after a while.
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",), progress_deadline=20)
    world.ok("apply", "dev")
    good = services(world)["worker"]["release"]["id"]
    good_rs = cluster.active_rs("worker")
    set_service(world, "worker", NEVER_READY="true")

    proc = subprocess.Popen(
        [sys.executable, "-m", "configcenter", "-C", str(world.config.root), "apply", "dev"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=world.child_env(),
        cwd=world.root,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "worker: progressing" in line:
            proc.send_signal(signal.SIGINT)
            break
    try:
        rest = proc.communicate(timeout=15)[1]  # well before the 20 s progress deadline
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("apply went on waiting for the rollout after Ctrl-C")
    stderr = "".join(seen) + rest
    assert proc.returncode == 1, stderr
    assert "Aborted!" in stderr and "rolled back" not in stderr
    assert "configcenter apply" in stderr  # says how to finish the job
    record = services(world)["worker"]
    bad = record["release"]["id"]
    assert bad != good and record["release"]["outcome"] == "committed"

    again = expect(world.cc("apply", "dev"), 3)  # watched, failed, rolled back

    assert "never recorded" in again.output
    assert cluster.active_rs("worker") == good_rs
    assert cluster.healthy("worker")
    record = services(world)["worker"]
    assert record["release"]["id"] == good and record["release"]["outcome"] == "healthy"
    assert record["last_failed"]["id"] == bad
    assert record["last_failed"]["outcome"] == "rolled_back"
    # The interrupted run says so (it is not left running, nor failed without a reason).
    outcomes = [run[4] for run in world.runs() if run[1] == "apply"]
    assert outcomes == ["succeeded", "failed", "rolled_back"], world.run_store_dump()
    assert '"error": "interrupted"' in world.run_store_dump()
