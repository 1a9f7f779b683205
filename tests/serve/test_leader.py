"""Two `serve` replicas, one PostgreSQL, one cluster: one Lease holder runs the schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import poll
from tests.support.serve_fixtures import ServeProcess, http, make_shop_world

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


def health(proc: ServeProcess) -> tuple[int, dict[str, Any]] | None:
    if proc.process.poll() is not None:
        raise AssertionError(f"serve exited:\n{proc.log()[-3000:]}")
    try:
        result = http("GET", proc.url + "/healthz", timeout=2)
    except OSError:
        return None
    return result.status, result.json()


def test_a_replica_that_can_never_lead_says_why_in_healthz(
    tmp_path: Path,
    postgres_url: str,
    k8s_namespace: Any,
    serve_processes: list[ServeProcess],
) -> None:
    """A missing Lease namespace, or RBAC without leases, is reported (503 + the fix),
    not logged every few seconds behind `ok`; once RBAC is granted, the replica leads."""
    import yaml
    from kubernetes import client

    world = make_shop_world(tmp_path / "w", run_store_url=postgres_url)
    world.env.update(
        {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    )
    admin = str(k8s_namespace.kubeconfig)
    missing = ServeProcess(
        world, "--kubeconfig", admin, "--lease-namespace", "no-such-ns", "--identity", "lost"
    )
    serve_processes.append(missing)
    status, body = poll(lambda: health(missing), 60, "healthz of the replica without namespace")
    assert status == 503 and body["can_lead"] is False and body["leader"] is False
    assert "namespace 'no-such-ns' does not exist" in body["problem"]

    # A service account without any Role: the Lease API answers 403.
    ns = k8s_namespace.name
    with k8s_namespace.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_service_account(
            ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="serve"))
        )
        token = core.create_namespaced_service_account_token(
            "serve", ns, client.AuthenticationV1TokenRequest(spec={"audiences": []})
        ).status.token
    config = yaml.safe_load(k8s_namespace.kubeconfig.read_text())
    config["users"] = [{"name": "serve", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "serve"
    restricted = tmp_path / "serve.kubeconfig"
    restricted.write_text(yaml.safe_dump(config))
    denied = ServeProcess(
        world,
        "--kubeconfig",
        str(restricted),
        "--lease-namespace",
        ns,
        "--lease-duration",
        "3",
        "--identity",
        "denied",
    )
    serve_processes.append(denied)
    status, body = poll(lambda: health(denied), 60, "healthz of the replica without RBAC")
    assert status == 503 and "HTTP 403 Forbidden" in body["problem"]
    assert f"leases.coordination.k8s.io in namespace '{ns}'" in body["problem"]

    with k8s_namespace.api_client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            ns,
            {
                "metadata": {"name": "configcenter-serve"},
                "rules": [
                    {
                        "apiGroups": ["coordination.k8s.io"],
                        "resources": ["leases"],
                        "verbs": ["get", "create", "update"],
                    }
                ],
            },
        )
        rbac.create_namespaced_role_binding(
            ns,
            {
                "metadata": {"name": "configcenter-serve"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "configcenter-serve",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "serve", "namespace": ns}],
            },
        )
    status, body = poll(
        lambda: (h := health(denied)) and h[1]["leader"] and h,
        60,
        "the replica to lead once RBAC allows it",
    )
    assert status == 200 and body["can_lead"] is True and "problem" not in body
    assert denied.log().count("HTTP 403 Forbidden") <= 2, "reported, not logged every 5 s"
