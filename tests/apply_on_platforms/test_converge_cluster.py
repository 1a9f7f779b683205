"""apply converges the platform, not only the deploy repo (on the real control plane).

Each test makes the platform and the deploy repo part ways the way a user or a
crash does (`--no-rollout`, a platform added later, SIGKILL at a crash point, a
service removed) and checks, with the API server as the judge, that the next
`apply` makes the platform run what the deploy repo says and records the truth.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from configcenter.adapters.sqlite_runs import SqliteRunStore
from configcenter.crashpoints import crash_env
from configcenter.ports.platform import RolloutStatus
from configcenter.ports.runstore import RunStoreError
from configcenter.usecases.apply import ApplyOptions, Reporter, apply_env
from tests.support.e2e_fixtures import World
from tests.support.k8s_cluster import (
    RELEASE,
    Cluster,
    expect,
    k8s_world,
    plan_actions,
    plan_of,
    services,
)
from tests.support.k8s_fixtures import FAILS_JOB_IMAGE_MARK, K8sNamespace, version_in_use
from tests.support.rollout_fixtures import add_service, set_service, workspace

pytestmark = pytest.mark.k8s


def reconcile_drift(world: World) -> list[Any]:
    report = json.loads(world.ok("reconcile", "dev", "--json").stdout)
    drifts: list[Any] = [d for s in report["services"] for d in s["drifts"]]
    return drifts


def live_release(cluster: Cluster, service: str) -> str:
    return str(cluster.deployment(service).metadata.annotations[RELEASE])


def image_of(cluster: Cluster, service: str) -> str:
    return str(cluster.deployment(service).spec.template.spec.containers[0].image)


# -- committed, not live ------------------------------------------------------------------------


def test_no_rollout_then_apply_rolls_out_what_was_committed(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "worker"))
    world.ok("apply", "dev", "--no-rollout")
    assert cluster.deployments() == set()
    committed = {name: record["release"]["id"] for name, record in services(world).items()}

    plan = plan_of(world)
    for name in ("db", "worker"):
        assert plan[name]["action"] == "update" and plan[name]["reasons"] == ["platform"]
        assert "committed, not yet on the platform" in plan[name]["platform"]["why"]
    text = world.ok("plan", "dev").stdout
    assert "[platform]" in text and "committed, not yet on the platform" in text

    result = expect(world.cc("apply", "dev"), 0)

    assert "Nothing to do" not in result.output
    assert cluster.deployments() == {"db", "worker"}
    for name in ("db", "worker"):
        assert live_release(cluster, name) == committed[name]
        assert image_of(cluster, name) == f"registry.test/shop/{name}:1.0"
        assert cluster.config(name)["LOG_LEVEL"] == "info"
        assert cluster.healthy(name)
        record = services(world)[name]
        assert record["release"] == {**record["release"], "id": committed[name]}
        assert record["release"]["outcome"] == "healthy"
        assert record["last_good"]["id"] == committed[name]
    assert world.message().startswith("record dev: ")
    assert plan_actions(world) == {"db": "noop", "worker": "noop"}
    assert reconcile_drift(world) == []
    # Converged: the next apply touches neither the repo nor the cluster.
    head, before = world.head(), cluster.snapshot()
    again = expect(world.cc("apply", "dev"), 0)
    assert "nothing to do" in again.output.lower()
    assert world.head() == head and cluster.snapshot() == before


def test_objects_deleted_by_hand_are_a_plan_step_and_apply_puts_them_back(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """A deleted Deployment, or a ConfigMap its pods read, is not "nothing to do"."""
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "worker"))
    world.ok("apply", "dev")
    released = {name: record["release"]["id"] for name, record in services(world).items()}
    db_config = version_in_use(cluster.api, cluster.ns, "db-config")
    cluster.apps.delete_namespaced_deployment("worker", cluster.ns)
    cluster.core.delete_namespaced_config_map(db_config, cluster.ns)

    plan = plan_of(world)
    for name in ("db", "worker"):
        assert (plan[name]["action"], plan[name]["reasons"]) == ("update", ["platform"]), name
    assert "Deployment/worker missing on k8s" in plan["worker"]["platform"]["why"]
    assert f"ConfigMap/{db_config} missing on k8s" in plan["db"]["platform"]["why"]
    output = world.ok("apply", "dev").output
    assert "Deployment/worker missing on platform" in output
    assert f"ConfigMap/{db_config} missing on platform" in output

    assert live_release(cluster, "worker") == released["worker"]
    assert cluster.core.read_namespaced_config_map(db_config, cluster.ns).data
    assert {n: r["release"]["id"] for n, r in services(world).items()} == released
    assert {s["action"] for s in plan_of(world).values()} == {"noop"}


def test_a_platform_added_after_the_first_apply_is_rolled_out_and_deploy_works(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "worker"))
    env_file = "environments/dev/_env.yaml"
    with_platform = world.config.read(env_file)
    world.config.write(env_file, with_platform.replace("platform: k8s\n", ""))
    world.config.commit("dev: no platform yet")
    world.ok("apply", "dev")
    assert cluster.deployments() == set()
    assert all(not r.get("platform") for r in services(world).values())

    world.config.write(env_file, with_platform)
    world.config.commit("dev: on k8s")
    plan = plan_of(world)
    assert {n: (p["action"], p["reasons"]) for n, p in plan.items()} == {
        "db": ("update", ["platform"]),
        "worker": ("update", ["platform"]),
    }
    assert plan["db"]["platform"]["why"] == "platform none -> k8s"
    # deploy works at once: the platform comes from the config, and the record names it.
    deployed = world.ok("deploy", "dev", "db")
    assert "healthy" in deployed.stdout and cluster.deployments() == {"db"}
    assert services(world)["db"]["platform"] == "k8s"

    expect(world.cc("apply", "dev"), 0)

    assert cluster.deployments() == {"db", "worker"}
    for name, record in services(world).items():
        assert record["platform"] == "k8s"
        assert record["release"]["outcome"] == "healthy"
        assert live_release(cluster, name) == record["release"]["id"]
    set_service(world, "worker", LOG_LEVEL="debug")
    world.ok("apply", "dev", "--no-rollout")
    deployed = world.ok("deploy", "dev", "worker")
    assert "healthy" in deployed.stdout
    assert cluster.config("worker")["LOG_LEVEL"] == "debug"


# -- pruning --------------------------------------------------------------------------------------


def test_a_service_removed_with_no_rollout_is_pruned_by_the_next_apply(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "worker"))
    expect(world.cc("apply", "dev"), 0)
    world.config.remove("environments/dev/worker.yaml")
    world.config.commit("dev: no worker")
    world.ok("apply", "dev", "--no-rollout")
    assert "worker" not in services(world)
    assert "worker" in cluster.deployments(), "--no-rollout leaves the platform alone"

    # Another project in the same namespace, with the same env name: not ours to delete.
    labels = {
        "app.kubernetes.io/managed-by": "configcenter",
        "configcenter.io/env": "dev",
        "configcenter.io/service": "ghost",
    }
    cluster.core.create_namespaced_config_map(
        cluster.ns, {"metadata": {"name": "ghost-config", "labels": labels}, "data": {"A": "1"}}
    )
    plan = plan_of(world)
    assert (plan["worker"]["action"], plan["worker"]["reasons"]) == ("delete", ["platform"])
    assert "ghost" not in plan
    head = world.head()

    result = expect(world.cc("apply", "dev"), 0)

    assert "worker: deleted from k8s" in result.output
    assert "ghost: runs on k8s with dev's labels, but this deploy repo never deployed it" in (
        result.output
    )
    assert cluster.deployments() == {"db"}
    names = {cm.metadata.name for cm in cluster.core.list_namespaced_config_map(cluster.ns).items}
    assert not any(n.startswith("worker-") for n in names)
    assert "ghost-config" in names
    assert world.head() == head, "pruning an orphan needs no commit"
    assert plan_actions(world) == {"db": "noop"}
    assert {d["service"] for d in reconcile_drift(world)} == {"ghost"}


def _release_worker_with_service(world: World) -> None:
    """worker/1.1.0: the 1.0.0 template plus a Service (a ClusterIP in front of the pods)."""
    template = "templates/worker/template.yaml"
    world.config.write(
        template,
        world.config.read(template).replace(
            "outputs: [app.env, deployment.yaml]", "outputs: [app.env, deployment.yaml, svc.yaml]"
        ),
    )
    world.config.write(
        "templates/worker/svc.yaml.j2",
        "apiVersion: v1\nkind: Service\nmetadata: {name: worker}\n"
        "spec:\n  selector: {app: worker}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
    )
    world.config.commit("worker 1.1.0: a Service")
    world.config.tag("worker/1.1.0")
    # 1.2.0 drops the Service again.
    world.config.remove("templates/worker/svc.yaml.j2")
    world.config.write(
        template,
        world.config.read(template).replace(
            "outputs: [app.env, deployment.yaml, svc.yaml]", "outputs: [app.env, deployment.yaml]"
        ),
    )
    world.config.commit("worker 1.2.0: no Service")
    world.config.tag("worker/1.2.0")


def _pin(world: World, service: str, version: str, **values: str) -> None:
    rel = f"environments/dev/{service}.yaml"
    lines = [
        line
        for line in world.config.read(rel).splitlines()
        if not line.startswith(("template:", "values:", "  "))
    ]
    lines.insert(0, f"template: {version}")
    if values:
        lines.append("values:")
        lines += [f'  {key}: "{value}"' for key, value in values.items()]
    world.config.write(rel, "\n".join(lines) + "\n")
    world.config.commit(f"dev: {service} {version} {values}")


def test_a_dropped_service_object_is_pruned_only_once_the_release_is_healthy(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",), progress_deadline=5)
    _release_worker_with_service(world)
    _pin(world, "worker", "1.1.0")
    expect(world.cc("apply", "dev"), 0)
    service = cluster.core.read_namespaced_service("worker", cluster.ns)
    uid, ip = service.metadata.uid, service.spec.cluster_ip
    good = services(world)["worker"]["release"]["id"]

    # 1.2.0 drops the Service and never becomes ready: rolled back, nothing dropped.
    _pin(world, "worker", "1.2.0", NEVER_READY="true")
    failed = expect(world.cc("apply", "dev"), 3)
    assert f"rolling back to {good}" in failed.output
    kept = cluster.core.read_namespaced_service("worker", cluster.ns)
    assert (kept.metadata.uid, kept.spec.cluster_ip) == (uid, ip)
    assert live_release(cluster, "worker") == good and cluster.healthy("worker")

    # 1.2.0 that works: once healthy, the Service it no longer renders is pruned.
    _pin(world, "worker", "1.2.0")
    healthy = expect(world.cc("apply", "dev"), 0)
    assert "pruned Service/worker" in healthy.output
    assert [s.metadata.name for s in cluster.core.list_namespaced_service(cluster.ns).items] == []
    assert reconcile_drift(world) == []


# -- crashes between the steps of an apply -------------------------------------------------------


def test_killed_after_the_push_the_rerun_rolls_the_commit_out(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",))
    expect(world.cc("apply", "dev"), 0)
    set_service(world, "worker", LOG_LEVEL="debug")

    crashed = world.cc("apply", "dev", extra_env=crash_env("apply:after-push"))
    assert crashed.code == -signal.SIGKILL, crashed.output
    committed = services(world)["worker"]["release"]
    assert committed["outcome"] == "committed"
    assert cluster.config("worker")["LOG_LEVEL"] == "info"

    expect(world.cc("apply", "dev"), 0)

    assert cluster.config("worker")["LOG_LEVEL"] == "debug"
    assert live_release(cluster, "worker") == committed["id"] and cluster.healthy("worker")
    record = services(world)["worker"]
    assert (record["release"]["id"], record["release"]["outcome"]) == (committed["id"], "healthy")
    assert record["last_good"]["id"] == committed["id"]
    assert reconcile_drift(world) == []


@pytest.mark.parametrize("point", ["rollout:applied", "rollout:failed"])
def test_killed_while_a_failing_release_is_watched_the_rerun_rolls_it_back(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster, point: str
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",), progress_deadline=5)
    expect(world.cc("apply", "dev"), 0)
    good = services(world)["worker"]["release"]["id"]
    good_rs = cluster.active_rs("worker")
    set_service(world, "worker", LOG_LEVEL="debug", NEVER_READY="true")

    crashed = world.cc("apply", "dev", extra_env=crash_env(point))
    assert crashed.code == -signal.SIGKILL, crashed.output
    bad = services(world)["worker"]["release"]["id"]
    assert live_release(cluster, "worker") == bad
    assert plan_of(world)["worker"]["platform"]["step"] == "record"

    rerun = expect(world.cc("apply", "dev"), 3)

    assert f"rolling back to {good}" in rerun.output
    record = services(world)["worker"]
    assert (record["release"]["id"], record["release"]["outcome"]) == (good, "healthy")
    assert (record["last_failed"]["id"], record["last_failed"]["outcome"]) == (bad, "rolled_back")
    assert cluster.active_rs("worker") == good_rs and cluster.healthy("worker")
    assert cluster.config("worker")["LOG_LEVEL"] == "info"
    assert plan_actions(world) == {"worker": "blocked"}
    assert reconcile_drift(world) == []


def test_killed_after_the_rollback_before_the_record_the_rerun_records_it(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",), progress_deadline=3)
    expect(world.cc("apply", "dev"), 0)
    good = services(world)["worker"]["release"]["id"]
    good_rs = cluster.active_rs("worker")
    set_service(world, "worker", LOG_LEVEL="debug", NEVER_READY="true")

    crashed = world.cc("apply", "dev", extra_env=crash_env("rollout:rolled-back"))
    assert crashed.code == -signal.SIGKILL, crashed.output
    bad = services(world)["worker"]["release"]
    assert bad["outcome"] == "committed", "the kill came before the record"
    assert live_release(cluster, "worker") == good and cluster.healthy("worker")

    # The platform cannot tell this from a release never rolled out: it is tried once
    # more, fails again, is rolled back again, and this time recorded.
    rerun = expect(world.cc("apply", "dev"), 3)

    assert f"rolling back to {good}" in rerun.output
    record = services(world)["worker"]
    assert (record["release"]["id"], record["release"]["outcome"]) == (good, "healthy")
    assert record["last_failed"]["id"] == bad["id"]
    assert cluster.active_rs("worker") == good_rs and cluster.healthy("worker")
    assert plan_actions(world) == {"worker": "blocked"}
    assert reconcile_drift(world) == []


def test_killed_after_healthy_before_the_record_last_good_is_still_right(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",), progress_deadline=5)
    expect(world.cc("apply", "dev"), 0)
    set_service(world, "worker", LOG_LEVEL="debug")
    crashed = world.cc("apply", "dev", extra_env=crash_env("rollout:verified"))
    assert crashed.code == -signal.SIGKILL, crashed.output
    verified = services(world)["worker"]["release"]
    assert verified["outcome"] == "committed" and cluster.healthy("worker")
    verified_rs = cluster.active_rs("worker")

    # The next apply also changes worker, and that release fails: it must roll back to
    # the release that was verified (LOG_LEVEL debug), not to the one before it.
    set_service(world, "worker", LOG_LEVEL="warn", NEVER_READY="true")
    result = expect(world.cc("apply", "dev"), 3)

    assert f"rolling back to {verified['id']}" in result.output
    record = services(world)["worker"]
    assert record["release"]["id"] == verified["id"]
    assert record["last_good"]["id"] == verified["id"]
    assert cluster.config("worker")["LOG_LEVEL"] == "debug"
    assert cluster.active_rs("worker") == verified_rs and cluster.healthy("worker")
    assert reconcile_drift(world) == []


class LockStoreOnHealthy(Reporter):
    """Locks the run store's SQLite file (another writer holds it) once a rollout is healthy."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.holder: sqlite3.Connection | None = None
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)

    def rollout(self, service: str, status: RolloutStatus) -> None:
        if status.state == "healthy" and self.holder is None:
            self.holder = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.holder.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        if self.holder is not None:
            self.holder.execute("ROLLBACK")
            self.holder.close()


def test_a_run_store_locked_between_healthy_and_the_record_loses_no_outcome(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster, rollout_xdg: Path
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",))
    expect(world.cc("apply", "dev"), 0)
    set_service(world, "worker", LOG_LEVEL="debug")
    ws = workspace(world)
    store_path = tmp_path / "runs.sqlite3"
    ws.__dict__["run_store"] = SqliteRunStore(store_path, ws.redactor, busy_timeout=0.5)
    reporter = LockStoreOnHealthy(store_path)

    try:
        with pytest.raises(RunStoreError, match="locked"):
            apply_env(ws, "dev", ApplyOptions(), reporter)
    finally:
        reporter.release()

    assert any("run store: cannot log run" in m for m in reporter.messages)
    record = services(world)["worker"]
    assert record["release"]["outcome"] == "healthy", "the outcome was recorded all the same"
    assert record["last_good"]["id"] == record["release"]["id"]
    assert live_release(cluster, "worker") == record["release"]["id"]
    assert cluster.config("worker")["LOG_LEVEL"] == "debug"
    again = apply_env(workspace(world), "dev", ApplyOptions())
    assert again.commit is None and [r.outcome for r in again.results] == ["noop"]


def test_add_service_then_no_rollout_crash_and_rerun_converge(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("db",))
    expect(world.cc("apply", "dev"), 0)
    add_service(world.config, "worker")
    world.config.commit("dev: worker")
    crashed = world.cc("apply", "dev", extra_env=crash_env("apply:before-push"))
    assert crashed.code == -signal.SIGKILL, crashed.output
    assert "worker" not in cluster.deployments()

    expect(world.cc("apply", "dev"), 0)

    assert cluster.deployments() == {"db", "worker"}
    assert services(world)["worker"]["release"]["outcome"] == "healthy"
    assert reconcile_drift(world) == []


# -- a broken config repo does not block rollback and history --------------------------------------


def test_rollback_and_history_work_from_the_deploy_repo_when_the_config_is_broken(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "worker"))
    expect(world.cc("apply", "dev"), 0)
    good = services(world)["worker"]["release"]["id"]
    set_service(world, "worker", LOG_LEVEL="debug")
    expect(world.cc("apply", "dev"), 0)
    assert cluster.config("worker")["LOG_LEVEL"] == "debug"
    # Someone breaks another service's file: the whole environment no longer loads.
    world.config.write("environments/dev/db.yaml", "template: [1.0.0\n")
    world.config.commit("db: broken")
    assert world.cc("plan", "dev").code == 1

    # history of one service reads only that service's file to warn: db's is broken.
    listed = world.ok("history", "dev", "--service", "worker", "--json")
    assert "does not load" not in listed.stderr, listed.stderr
    releases = json.loads(listed.stdout)["releases"]
    assert good in [r["release"] for r in releases]
    of_db = world.ok("history", "dev", "--service", "db", "--json")
    assert "does not load" in of_db.stderr and "environments/dev/db.yaml" in of_db.stderr
    assert json.loads(of_db.stdout)["releases"]
    whole = world.ok("history", "dev", "--json")
    assert "does not load" in whole.stderr and "environments/dev/db.yaml" in whole.stderr

    back = world.ok("rollback", "dev", "worker")

    assert "does not load" in back.output and f"rolled back to {good}" in back.stdout
    assert cluster.config("worker")["LOG_LEVEL"] == "info"
    assert live_release(cluster, "worker") == good and cluster.healthy("worker")
    assert services(world)["worker"]["release"]["id"] == good


def test_a_release_whose_verification_fails_drops_nothing(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",))
    _release_worker_with_service(world)
    # worker/1.3.0: no Service, and a smoke test (verification) that fails.
    config = world.config
    config.write(
        "templates/worker/template.yaml",
        config.read("templates/worker/template.yaml").replace(
            "outputs: [app.env, deployment.yaml]",
            "outputs: [app.env, deployment.yaml, smoke.yaml]\nverify: [smoke.yaml]",
        ),
    )
    config.write(
        "templates/worker/smoke.yaml.j2",
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: smoke}\nspec:\n  template:\n"
        f"    spec:\n      containers:\n      - {{name: smoke, image: registry.test/smoke:"
        f"1-{FAILS_JOB_IMAGE_MARK}}}\n",
    )
    config.commit("worker 1.3.0: no Service, a failing smoke test")
    config.tag("worker/1.3.0")
    _pin(world, "worker", "1.1.0")
    expect(world.cc("apply", "dev"), 0)
    service = cluster.core.read_namespaced_service("worker", cluster.ns)
    uid, ip = service.metadata.uid, service.spec.cluster_ip
    good = services(world)["worker"]["release"]["id"]

    _pin(world, "worker", "1.3.0")
    failed = expect(world.cc("apply", "dev"), 3)

    assert f"rolling back to {good}" in failed.output
    kept = cluster.core.read_namespaced_service("worker", cluster.ns)
    assert (kept.metadata.uid, kept.spec.cluster_ip) == (uid, ip)
    assert live_release(cluster, "worker") == good and cluster.healthy("worker")
    assert reconcile_drift(world) == []
