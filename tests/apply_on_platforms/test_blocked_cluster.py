"""Blocked services on the real control plane (the test bed's API server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.e2e_fixtures import SECRET_ENV
from tests.support.helpers import poll
from tests.support.k8s_cluster import RELEASE, Cluster, expect, k8s_world, plan_of, services
from tests.support.k8s_fixtures import K8sNamespace, version_in_use
from tests.support.rollout_fixtures import set_service

pytestmark = pytest.mark.k8s


def namespace_gone(cluster: Cluster) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.core.read_namespace(cluster.ns)
    except ApiException as error:
        return error.status == 404
    return False


def test_a_blocked_service_whose_namespace_was_deleted_gets_its_good_release_back_only(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """api's release with a rotated password (and never-ready pods) was rolled back: api is
    blocked. The namespace is then deleted, and the failed release's Secret with it. The
    plan says what apply does: the good releases back; apply does that and nothing more
    (no new release of the blocked inputs, whose secret values nobody can compare now)."""
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "api"), progress_deadline=5)
    world.ok("apply", "dev")
    good = {name: record["release"]["id"] for name, record in services(world).items()}
    world.env[SECRET_ENV] = "rotated-Pa55w0rd-4e1d"
    set_service(world, "api", NEVER_READY="true")
    expect(world.cc("apply", "dev"), 3)  # rolled back to the good release
    bad = services(world)["api"]["last_failed"]["id"]
    assert plan_of(world)["api"]["action"] == "blocked"
    # `services` says so too, and which release runs (the good one, as the cluster shows).
    assert cluster.deployment("api").metadata.annotations[RELEASE] == good["api"]
    rows = {
        r["service"]: r
        for r in json.loads(world.ok("services", "dev", "--json").stdout)["services"]
    }
    deployed = rows["api"]["deployed"]
    assert (deployed["release"], deployed["outcome"]) == (good["api"], "healthy")
    assert (deployed["blocked"]["release"], deployed["blocked"]["outcome"]) == (bad, "rolled_back")
    assert "ProgressDeadlineExceeded" in deployed["blocked"]["reason"]
    assert "blocked" not in rows["db"]["deployed"]
    line = next(x for x in world.ok("services", "dev").stdout.splitlines() if " api " in x)
    assert line.rstrip().endswith(f"{good['api']} healthy; blocked: {bad} rolled_back"), line
    cluster.core.delete_namespace(cluster.ns)
    poll(lambda: namespace_gone(cluster), 60, "the namespace gone")

    plan = plan_of(world)
    for name in ("db", "api"):
        assert (plan[name]["action"], plan[name]["reasons"]) == ("update", ["platform"]), name
        assert plan[name]["platform"]["release"] == good[name], name
    head = world.head()

    applied = expect(world.cc("apply", "dev"), 0)

    assert bad not in applied.stdout.split("result", 1)[-1].split("deploy repo commit")[0]
    for name in ("db", "api"):
        deployment = cluster.deployment(name)
        assert deployment.metadata.annotations[RELEASE] == good[name], name
        labels = deployment.spec.template.metadata.labels
        assert labels["testbed.configcenter.io/never-ready"] == "false", name
        poll(lambda n=name: cluster.healthy(n), 30, f"{name} healthy")  # type: ignore[misc]
    assert version_in_use(cluster.api, cluster.ns, "api-secrets") == "api-secrets-1"
    record = services(world)["api"]
    assert record["release"]["id"] == good["api"]
    assert record["last_failed"]["id"] == bad
    # Only the outcome record was committed: no release of the blocked inputs.
    subjects = world.git_deploy("log", "--format=%s", f"{head}..refs/heads/main").decode()
    assert not [s for s in subjects.splitlines() if s.startswith("apply ")], subjects
    again = plan_of(world)
    assert again["api"]["action"] == "blocked" and "platform" not in again["api"]
    assert again["db"]["action"] == "noop"
    expect(world.cc("plan", "dev", "--exit-code"), 0)
    head = world.head()
    assert "nothing to do" in world.ok("apply", "dev").output.lower()
    assert world.head() == head
    assert version_in_use(cluster.api, cluster.ns, "api-secrets") == "api-secrets-1"


def test_a_rotation_the_platform_can_see_unblocks_the_service(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """The other side: the failed release's Secret is still there and the password rotated
    again since it failed: these are new inputs, released (not blocked)."""
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "api"), progress_deadline=5)
    world.ok("apply", "dev")
    world.env[SECRET_ENV] = "rotated-Pa55w0rd-4e1d"
    set_service(world, "api", NEVER_READY="true")
    expect(world.cc("apply", "dev"), 3)
    assert plan_of(world)["api"]["action"] == "blocked"
    world.env[SECRET_ENV] = "rotated-again-Pa55w0rd-9c2b"

    plan = plan_of(world)["api"]

    assert (plan["action"], plan["secrets"]) == ("update", {"rotated": ["DB_PASSWORD"]}), plan


def test_a_rollback_to_a_release_that_fails_says_what_runs_now(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """`rollback --to` the release that failed before: it fails again, the release the
    deploy repo names is put back (its own ReplicaSet), and the error says so plainly:
    why it failed (`reason: message`) and which release runs now; the deploy repo unchanged."""
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",))
    world.ok("apply", "dev")
    good = services(world)["worker"]["release"]["id"]
    good_rs = cluster.active_rs("worker")
    set_service(world, "worker", image="registry.test/never-ready/worker:2")
    expect(world.cc("apply", "dev"), 3)
    bad = services(world)["worker"]["last_failed"]["id"]
    head = world.head()

    back = expect(world.cc("rollback", "dev", "worker", "--to", bad), 1)

    assert (
        f"rollback of worker to {bad} failed (ImagePullBackOff: Deployment worker: pod "
    ) in back.output, back.output
    runs = f"{good}, the release the deploy repo names, runs again; the deploy repo is unchanged"
    assert runs in back.output
    assert cluster.deployment("worker").metadata.annotations[RELEASE] == good
    poll(lambda: cluster.active_rs("worker") == good_rs, 60, "the good ReplicaSet back")
    assert world.head() == head and services(world)["worker"]["release"]["id"] == good
