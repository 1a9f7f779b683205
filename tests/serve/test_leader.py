"""Two `serve` replicas, one PostgreSQL, one cluster: one Lease holder runs the schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.serve_fixtures import ServeProcess, http, make_shop_world, poll

pytestmark = pytest.mark.k8s


def leaders(replicas: list[ServeProcess]) -> list[str]:
    found = []
    for proc in replicas:
        if proc.process.poll() is None:
            health = http("GET", proc.url + "/healthz").json()
            if health["leader"]:
                found.append(health["identity"])
    return found


def reconcile_actors(url: str) -> list[str]:
    runs = http("GET", url + "/api/runs?kind=reconcile&limit=1000").json()
    return [r["actor"] for r in runs if r["outcome"] != "running"]


def test_two_replicas_elect_one_leader_and_only_it_reconciles(
    tmp_path: Path,
    postgres_url: str,
    k8s_namespace: Any,
    serve_processes: list[ServeProcess],
) -> None:
    world = make_shop_world(
        tmp_path / "w",
        envs={"dev": "reconcile: {interval: 1s}\n"},
        run_store_url=postgres_url,
    )
    world.env.update(
        {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    )
    lease = [
        "--kubeconfig",
        str(k8s_namespace.kubeconfig),
        "--lease-namespace",
        k8s_namespace.name,
        "--lease-duration",
        "3",
    ]
    a = ServeProcess(world, *lease, "--identity", "replica-a")
    b = ServeProcess(world, *lease, "--identity", "replica-b")
    serve_processes += [a, b]
    a.wait_ready()
    b.wait_ready()

    [leader] = poll(lambda: leaders([a, b]) or None, 60, "a leader")
    actors = poll(lambda: reconcile_actors(a.url)[2:], 120, "three scheduled reconciles")
    assert set(actors) == {leader}
    # Both replicas see the same runs: they share the PostgreSQL run store.
    assert set(reconcile_actors(b.url)) == {leader}
    assert leaders([a, b]) == [leader]

    from kubernetes import client

    lease_obj = client.CoordinationV1Api(k8s_namespace.api_client()).read_namespaced_lease(
        "configcenter-serve", k8s_namespace.name
    )
    assert lease_obj.spec.holder_identity == leader

    # The leader goes away: the other takes the lease and the schedule over.
    gone, stays = (a, b) if leader == "replica-a" else (b, a)
    gone.stop()
    follower = "replica-b" if leader == "replica-a" else "replica-a"
    poll(lambda: leaders([stays]) == [follower], 60, f"{follower} to take the lease")
    poll(
        lambda: follower in reconcile_actors(stays.url),
        60,
        f"a reconcile run by {follower}",
    )
