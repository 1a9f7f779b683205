"""`apply --json` that rolls back (exit 3) or fails (exit 1) is a failure object like any
other: `ok: false`, `command`, `exit_code` and `problems` naming each service that did not
become healthy, with the reason and what to do; the results and the plan stay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.k8s_cluster import Cluster, expect, k8s_world, services
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
