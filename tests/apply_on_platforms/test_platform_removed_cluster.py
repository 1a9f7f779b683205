"""A platform removed from configcenter.yaml (a cluster decommissioned) after releases were
committed for it: plan and apply agree, and apply never tries to reach it.

On the test bed's API server: what was running there is left as it was (kubectl's view).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.e2e_fixtures import World
from tests.support.k8s_cluster import RELEASE, Cluster, expect, k8s_world, plan_of, services
from tests.support.k8s_fixtures import K8sNamespace
from tests.support.rollout_fixtures import set_service

pytestmark = pytest.mark.k8s


def remove_platform(world: World) -> None:
    config = world.config
    project = config.read("configcenter.yaml")
    kept = project.split("platforms:\n")[0]
    assert kept != project
    config.write("configcenter.yaml", kept)
    env = config.read("environments/dev/_env.yaml")
    config.write("environments/dev/_env.yaml", env.replace("platform: k8s\n", ""))


def test_a_platform_removed_after_a_commit_only_apply(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "api", "worker"))
    world.ok("apply", "dev")
    ran = {name: r["release"]["id"] for name, r in services(world).items()}
    uids = {name: cluster.deployment(name).metadata.uid for name in ran}
    set_service(world, "worker", LOG_LEVEL="debug")
    world.ok("apply", "dev", "--no-rollout")
    remove_platform(world)
    world.config.remove("environments/dev/api.yaml")  # and api leaves dev
    set_service(world, "worker", LOG_LEVEL="warning")  # commits the config too

    plan = plan_of(world)
    assert (plan["worker"]["action"], plan["worker"]["reasons"]) == ("update", ["values"])
    assert (plan["db"]["action"], plan["db"]["reasons"]) == ("update", ["platform"])
    assert plan["db"]["platform"]["step"] == "commit"
    assert plan["api"]["action"] == "delete"
    assert (
        "platform k8s -> none (what runs on k8s is left as it is)"
        in (plan["db"]["platform"]["why"])
    )
    assert "platform k8s -> none" in world.ok("plan", "dev").output

    applied = expect(world.cc("apply", "dev"), 0)

    assert "is not defined" not in applied.output
    assert "api: platform k8s is no longer defined in configcenter.yaml" in applied.output
    records = services(world)
    assert {name: r.get("platform") for name, r in records.items()} == {"db": None, "worker": None}
    assert records["worker"]["release"]["outcome"] == "committed"
    # Nothing was rolled out or deleted where the platform was: kubectl sees what ran.
    assert set(ran) == {"db", "api", "worker"}
    for name, release in ran.items():
        deployment = cluster.deployment(name)
        assert deployment.metadata.uid == uids[name], name
        assert deployment.metadata.annotations[RELEASE] == release, name
    assert {s["action"] for s in plan_of(world).values()} == {"noop"}
    head = world.head()
    assert "nothing to do" in world.ok("apply", "dev").output.lower()
    assert world.head() == head
