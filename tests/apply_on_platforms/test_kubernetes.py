"""apply/deploy/rollback end to end on the real control plane (the KWOK test bed).

Every test owns a namespace (`k8s_namespace`) and a world: a real config repo, a
bare deploy remote and its own XDG dirs. Failures are real: a pod label makes
pods never ready so the Deployment controller itself reports
ProgressDeadlineExceeded, and an image marked `never-ready` sits in
ImagePullBackOff, which the adapter fails fast on.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import pytest

from configcenter.usecases.apply import ApplyOptions, apply_env, deploy_service
from tests.support.e2e_fixtures import SECRET_ENV
from tests.support.k8s_cluster import (
    RELEASE,
    Cluster,
    expect,
    k8s_world,
    plan_actions,
    service_files,
    services,
)
from tests.support.k8s_fixtures import K8sNamespace, version_in_use
from tests.support.rollout_fixtures import (
    SENTINEL,
    add_service,
    set_service,
    workspace,
)

pytestmark = pytest.mark.k8s

NEVER_READY_LABEL = "testbed.configcenter.io/never-ready"
DIGEST = "configcenter.io/config-digest"


# -- a new service, a value change, a no-op ------------------------------------------------------


def test_new_services_roll_out_in_order_and_are_recorded_good(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "api"), replicas={"api": 2})

    result = expect(world.cc("apply", "dev"), 0)

    lines = result.stderr.splitlines()
    db_ok = next(i for i, line in enumerate(lines) if "db: healthy" in line)
    api_start = next(i for i, line in enumerate(lines) if line.lstrip("↻ ").startswith("api:"))
    assert db_ok < api_start, "api (depends on db) started before db was healthy"
    state = services(world)
    for service in ("db", "api"):
        record = state[service]
        assert record["release"]["outcome"] == "healthy"
        assert record["last_good"]["id"] == record["release"]["id"]
        assert "last_failed" not in record
        deployment = cluster.deployment(service)
        assert deployment.metadata.annotations[RELEASE] == record["release"]["id"]
        assert cluster.healthy(service)
    assert cluster.deployment("api").status.ready_replicas == 2
    # One commit for the release, one recording the outcome.
    assert world.commit_count() == 2
    assert world.message().startswith("record dev: ")
    assert [r[4] for r in world.runs()] == ["succeeded"]


def test_value_change_rolls_the_pods_and_an_unchanged_apply_touches_nothing(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster, rollout_xdg: Path
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",), replicas={"worker": 2})
    ws = workspace(world)
    first = apply_env(ws, "dev", ApplyOptions())
    assert [(r.service, r.outcome) for r in first.results] == [("worker", "healthy")]
    old_rs = cluster.active_rs("worker")
    assert cluster.config("worker")["LOG_LEVEL"] == "info"

    set_service(world, "worker", LOG_LEVEL="debug")
    changed = apply_env(workspace(world), "dev", ApplyOptions())

    assert [(r.service, r.outcome) for r in changed.results] == [("worker", "healthy")]
    new_rs = cluster.active_rs("worker")
    assert new_rs != old_rs, "a value-only change must roll the pods (new ReplicaSet)"
    assert cluster.replica_sets("worker")[old_rs] == 0
    assert cluster.config("worker")["LOG_LEVEL"] == "debug"
    assert cluster.healthy("worker")

    head, generation = world.head(), cluster.deployment("worker").metadata.generation
    before = cluster.snapshot()
    again = apply_env(workspace(world), "dev", ApplyOptions())

    assert again.commit is None
    assert [(r.service, r.outcome) for r in again.results] == [("worker", "noop")]
    assert world.head() == head
    assert cluster.deployment("worker").metadata.generation == generation
    assert cluster.snapshot() == before


# -- failures and rollback -----------------------------------------------------------------------


def test_missed_progress_deadline_rolls_back_image_and_config(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",), progress_deadline=5)
    expect(world.cc("apply", "dev"), 0)
    good = services(world)["worker"]["release"]["id"]
    good_files = service_files(world, "worker")
    good_rs = cluster.active_rs("worker")

    # Pods of this release never become ready: the controller's deadline expires.
    set_service(world, "worker", LOG_LEVEL="debug", NEVER_READY="true")
    failed = expect(world.cc("apply", "dev"), 3)

    assert "ProgressDeadlineExceeded" in failed.output
    assert f"rolling back to {good}" in failed.output
    record = services(world)["worker"]
    assert record["release"]["id"] == good and record["release"]["outcome"] == "healthy"
    assert record["last_good"]["id"] == good
    assert record["last_failed"]["id"] != good
    assert record["last_failed"]["outcome"] == "rolled_back"
    assert "ProgressDeadlineExceeded" in record["last_failed"]["reason"]
    # Image and config are the good release's again: in Git and on the cluster.
    assert service_files(world, "worker") == good_files
    assert cluster.active_rs("worker") == good_rs
    assert cluster.healthy("worker")
    template = cluster.deployment("worker").spec.template
    assert template.metadata.labels[NEVER_READY_LABEL] == "false"
    assert cluster.config("worker")["LOG_LEVEL"] == "info"
    assert world.message().startswith("rollback dev: worker rolled_back")
    assert plan_actions(world) == {"worker": "blocked"}


def test_unpullable_image_fails_fast_rolls_back_then_blocks_until_retry_or_change(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    # A deadline far longer than the test: only failing fast can make it pass.
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",), progress_deadline=600)
    expect(world.cc("apply", "dev"), 0)
    good = services(world)["worker"]["release"]["id"]
    good_files = service_files(world, "worker")
    good_rs = cluster.active_rs("worker")

    bad_image = "registry.test/shop/worker:1.1-never-ready"
    set_service(world, "worker", image=bad_image, LOG_LEVEL="debug")
    started = time.monotonic()
    failed = expect(world.cc("apply", "dev"), 3)
    took = time.monotonic() - started

    assert took < 120, f"fail-fast took {took:.1f}s"
    assert "ImagePullBackOff" in failed.output and f"rolling back to {good}" in failed.output
    record = services(world)["worker"]
    assert record["release"]["id"] == good and record["release"]["outcome"] == "healthy"
    assert record["last_good"]["id"] == good
    bad = record["last_failed"]["id"]
    assert bad != good and record["last_failed"]["outcome"] == "rolled_back"
    assert record["last_failed"]["image"] == bad_image
    assert record["last_failed"]["reason"].startswith("ImagePullBackOff")
    assert service_files(world, "worker") == good_files
    assert cluster.active_rs("worker") == good_rs and cluster.healthy("worker")
    container = cluster.deployment("worker").spec.template.spec.containers[0]
    assert container.image == "registry.test/shop/worker:1.0"
    assert cluster.config("worker")["LOG_LEVEL"] == "info"

    # No retry loop: the config still asks for the failed release, plan says blocked.
    plan = json.loads(world.ok("plan", "dev", "--json").stdout)
    [worker] = plan["services"]
    assert worker["action"] == "blocked" and bad in worker["blocked"]
    head, before = world.head(), cluster.snapshot()
    blocked = json.loads(expect(world.cc("apply", "dev", "--json"), 0).stdout)
    assert [(r["service"], r["outcome"]) for r in blocked["results"]] == [("worker", "blocked")]
    assert world.head() == head and cluster.snapshot() == before

    # --retry deploys it again (and it fails and rolls back again).
    expect(world.cc("apply", "dev", "--retry", "worker"), 3)
    retried = services(world)["worker"]
    assert retried["last_failed"]["id"] not in (bad, good)
    assert retried["release"]["id"] == good and cluster.active_rs("worker") == good_rs

    # A changed input unblocks it: the fixed release rolls out.
    set_service(world, "worker", image="registry.test/shop/worker:1.2", LOG_LEVEL="debug")
    expect(world.cc("apply", "dev"), 0)
    fixed = services(world)["worker"]
    assert fixed["release"]["outcome"] == "healthy" and fixed["release"]["id"] != good
    container = cluster.deployment("worker").spec.template.spec.containers[0]
    assert container.image == "registry.test/shop/worker:1.2"
    assert cluster.config("worker")["LOG_LEVEL"] == "debug"
    assert cluster.active_rs("worker") != good_rs and cluster.healthy("worker")


def test_dependents_of_a_failed_service_are_skipped_and_restored_others_proceed(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster, rollout_xdg: Path
) -> None:
    world = k8s_world(tmp_path, k8s_namespace)
    first = apply_env(workspace(world), "dev", ApplyOptions())
    assert {r.outcome for r in first.results} == {"healthy"}
    before = services(world)
    web_files = service_files(world, "web")
    web_digest = cluster.deployment("web").metadata.annotations[DIGEST]

    # One commit: api breaks, web (needs api) and worker (independent) change, and
    # admin (needs api) is new.
    set_service(world, "api", image="registry.test/shop/api:2.0-never-ready")
    set_service(world, "web", LOG_LEVEL="debug")
    set_service(world, "worker", LOG_LEVEL="debug")
    add_service(world.config, "admin")
    world.config.commit("dev: admin")
    result = apply_env(workspace(world), "dev", ApplyOptions())

    outcomes = {r.service: r.outcome for r in result.results}
    assert outcomes == {
        "db": "noop",
        "api": "rolled_back",
        "web": "skipped",
        "admin": "skipped",
        "worker": "healthy",
    }
    assert result.exit_code == 3
    state = services(world)
    assert state["web"] == before["web"], "a skipped service keeps its previous state"
    assert "admin" not in state
    assert service_files(world, "web") == web_files
    assert service_files(world, "admin") == {}, "a skipped new service leaves no files"
    assert cluster.deployment("web").metadata.annotations[DIGEST] == web_digest
    assert "admin" not in cluster.deployments()
    assert cluster.config("worker")["LOG_LEVEL"] == "debug"
    assert state["worker"]["release"]["outcome"] == "healthy"

    # The skipped ones are planned again; the failed one is blocked.
    assert plan_actions(world) == {
        "admin": "create",
        "api": "blocked",
        "db": "noop",
        "web": "update",
        "worker": "noop",
    }


def test_first_deploy_failing_is_failed_with_exit_1(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=())
    add_service(world.config, "worker")
    set_service(world, "worker", image="registry.test/shop/worker:1.0-never-ready")

    result = expect(world.cc("apply", "dev"), 1)

    assert "ImagePullBackOff" in result.output
    assert "no earlier good release to roll back to; left failed" in result.output
    record = services(world)["worker"]
    assert record["release"]["outcome"] == "failed"
    assert record["last_failed"]["id"] == record["release"]["id"]
    assert record["last_failed"]["outcome"] == "failed"
    assert "last_good" not in record
    assert [r[4] for r in world.runs()] == ["failed"]


# -- secrets -------------------------------------------------------------------------------------


def _git_objects(git_dir: Path) -> bytes:
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True,
        check=True,
    )
    return proc.stdout


def test_secret_reaches_the_cluster_secret_and_nothing_else(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "api"))
    outputs = [expect(world.cc("apply", "dev", "--verbose"), 0).output]
    set_service(world, "api", image="registry.test/shop/api:2.0-never-ready")
    outputs.append(expect(world.cc("apply", "dev", "--verbose"), 3).output)
    outputs.append(world.ok("history", "dev", "--json").output)
    outputs.append(world.ok("plan", "dev", "--json").output)

    secret = cluster.core.read_namespaced_secret(
        version_in_use(cluster.core.api_client, cluster.ns, "api-secrets"), cluster.ns
    )
    assert base64.b64decode(secret.data["DB_PASSWORD"]).decode() == SENTINEL
    assert "DB_PASSWORD" not in cluster.config("api")
    forms = [SENTINEL.encode(), base64.b64encode(SENTINEL.encode())]
    for text in outputs:
        assert SENTINEL not in text
    git_dirs = [world.deploy] + [
        p.parent for p in world.root.rglob("HEAD") if p.parent.name.endswith(".git")
    ]
    git_dirs += [p for p in world.root.rglob(".git") if p.is_dir()]
    assert len(git_dirs) >= 2, git_dirs
    for git_dir in git_dirs:
        objects = _git_objects(git_dir)
        assert objects and not any(f in objects for f in forms), git_dir
    dump = world.run_store_dump()
    assert "rolling back" in dump and SENTINEL not in dump
    for path in world.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(f in data for f in forms), path


# -- dry runs, deploy and rollback commands ------------------------------------------------------


def test_dry_runs_change_nothing_on_the_cluster(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",))
    empty = cluster.snapshot()
    world.ok("apply", "dev", "--dry-run")
    assert cluster.deployments() == set() and cluster.snapshot() == empty
    assert world.head() is None

    world.ok("apply", "dev")
    set_service(world, "worker", LOG_LEVEL="debug")
    head, before = world.head(), cluster.snapshot()

    dry = world.ok("apply", "dev", "--dry-run")
    assert "LOG_LEVEL: info -> debug" in dry.stdout
    assert cluster.snapshot() == before and world.head() == head

    world.ok("apply", "dev", "--no-rollout")  # committed, not rolled out
    head, runs = world.head(), world.runs()
    # In process: the CLI's `deploy --dry-run` cannot print its "dry-run" result row
    # (rich MarkupError in cli._print_results), but the use case is what changes things.
    monkeypatch.setenv("XDG_STATE_HOME", str(world.state_home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(world.cache_home))
    monkeypatch.setenv(SECRET_ENV, SENTINEL)
    result = deploy_service(workspace(world), "dev", "worker", dry_run=True)
    assert result.outcome == "dry-run"
    assert cluster.snapshot() == before and world.head() == head and world.runs() == runs
    assert cluster.config("worker")["LOG_LEVEL"] == "info"


def test_deploy_and_rollback_commands_drive_the_cluster(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("worker",))
    world.ok("apply", "dev")
    good = services(world)["worker"]["release"]["id"]
    good_rs = cluster.active_rs("worker")
    set_service(world, "worker", LOG_LEVEL="debug")
    world.ok("apply", "dev", "--no-rollout")
    committed = services(world)["worker"]["release"]["id"]
    assert cluster.config("worker")["LOG_LEVEL"] == "info"

    deployed = world.ok("deploy", "dev", "worker")

    assert committed in deployed.stdout and "healthy" in deployed.stdout
    assert cluster.config("worker")["LOG_LEVEL"] == "debug"
    assert cluster.active_rs("worker") != good_rs and cluster.healthy("worker")
    record = services(world)["worker"]
    assert record["release"] == {**record["release"], "id": committed, "outcome": "healthy"}

    back = world.ok("rollback", "dev", "worker")

    assert f"rolled back to {good} (healthy)" in back.stdout
    assert cluster.config("worker")["LOG_LEVEL"] == "info"
    assert cluster.active_rs("worker") == good_rs and cluster.healthy("worker")
    record = services(world)["worker"]
    assert record["release"]["id"] == good and record["release"]["outcome"] == "healthy"
    assert record["last_failed"]["id"] == committed
    assert plan_actions(world) == {"worker": "blocked"}
