"""`apply --json` that rolls back (exit 3) or fails (exit 1) is a failure object like any
other: `ok: false`, `command`, `exit_code` and `problems` naming each service that did not
become healthy, with the reason and what to do; the results and the plan stay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.k8s_cluster import RELEASE, Cluster, expect, k8s_world, service_files, services
from tests.support.k8s_fixtures import K8sNamespace
from tests.support.rollout_fixtures import set_service

pytestmark = pytest.mark.k8s

PROBLEM_KEYS = {"file", "line", "message", "hint", "severity"}


def test_a_rolled_back_apply_in_json_names_the_service_as_a_problem(
    tmp_path: Path, k8s_namespace: K8sNamespace
) -> None:
    cluster = Cluster(k8s_namespace)
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "worker"), progress_deadline=5)
    ok = json.loads(expect(world.cc("apply", "dev", "--json"), 0).stdout)
    assert ok["ok"] is True and "problems" not in ok
    good_rs = cluster.active_rs("worker")
    set_service(world, "worker", NEVER_READY="true")

    data = json.loads(expect(world.cc("apply", "dev", "--json"), 3).stdout)

    assert data["ok"] is False and data["command"] == "apply" and data["exit_code"] == 3
    (problem,) = data["problems"]
    assert set(problem) == PROBLEM_KEYS and problem["severity"] == "error"
    failed = services(world)["worker"]["last_failed"]["id"]
    assert problem["message"].startswith(f"worker: rolled_back ({failed}): ")
    assert "ProgressDeadlineExceeded" in problem["message"]
    assert "configcenter history dev --service worker" in problem["hint"]
    assert {r["service"]: r["outcome"] for r in data["results"]}["worker"] == "rolled_back"
    assert cluster.active_rs("worker") == good_rs


def test_a_rolled_back_apply_names_the_release_commit_and_the_rollback_commit(
    tmp_path: Path, k8s_namespace: K8sNamespace
) -> None:
    """The deploy repo ends at the rollback commit, after the release commit: apply's
    report (--json and text) names both, each as what it is."""
    cluster = Cluster(k8s_namespace)
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "worker"), progress_deadline=5)
    ok = json.loads(expect(world.cc("apply", "dev", "--json"), 0).stdout)
    assert ok["commit"] is not None and ok["rollback_commit"] is None
    good = services(world)["worker"]["release"]["id"]
    good_files = service_files(world, "worker")
    good_rs = cluster.active_rs("worker")
    good_uid = cluster.apps.read_namespaced_replica_set(good_rs, cluster.ns).metadata.uid
    set_service(world, "worker", NEVER_READY="true")

    data = json.loads(expect(world.cc("apply", "dev", "--json"), 3).stdout)

    head = world.head()
    assert head is not None
    failed = services(world)["worker"]["last_failed"]["id"]
    assert data["rollback_commit"] == head != data["commit"]
    assert world.git_deploy("rev-parse", f"{head}^").decode().strip() == data["commit"]
    assert ("Configcenter-Release", f"worker {failed}") in world.trailers(data["commit"])
    assert world.message(data["commit"]).startswith("apply dev: worker (update")
    assert world.message(head).startswith("rollback dev: worker rolled_back")
    assert service_files(world, "worker", data["commit"]) != good_files
    assert service_files(world, "worker", head) == good_files
    # The cluster runs the last good release again: its ReplicaSet, the same object.
    assert cluster.active_rs("worker") == good_rs
    rs = cluster.apps.read_namespaced_replica_set(good_rs, cluster.ns)
    assert rs.metadata.uid == good_uid
    assert cluster.deployment("worker").metadata.annotations[RELEASE] == good
    (run,) = [r for r in world.runs() if r[0] == data["run"]]
    assert run[1:] == ("apply", "dev", "cli", "rolled_back")

    set_service(world, "worker", image="registry.test/shop/worker:never-ready")
    text = expect(world.cc("apply", "dev"), 3).stdout

    rollback = world.head()
    assert rollback is not None and rollback != head
    release = world.git_deploy("rev-parse", f"{rollback}^").decode().strip()
    assert world.message(release).startswith("apply dev: worker (update")
    assert f"deploy repo commit {release[:10]} (run " in text, text
    said = f"rollback: deploy repo commit {rollback[:10]} restored the last good release of worker"
    assert said in text, text
    assert service_files(world, "worker", rollback) == good_files
    assert cluster.active_rs("worker") == good_rs
