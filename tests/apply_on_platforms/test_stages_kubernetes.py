"""Pre-deploy jobs and verification on the real control plane (the KWOK test bed).

api's template 2.0.0 has a migration Job (`hooks: {pre_deploy: [migrate.yaml]}`) that
runs with the release's image, values and secrets, and a smoke-test Job
(`verify: [smoke.yaml]`). The test bed fails a Job's pod when its image contains
`fails-job` (its termination message, from the pod annotation
testbed.configcenter.io/log, stands in for the log), so a failing migration is an
api image marked fails-job (the Deployment's pods still become ready: only Job
pods fail) and a failing smoke test is SMOKE_IMAGE marked fails-job.
"""

from __future__ import annotations

import base64
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from configcenter.crashpoints import crash_env
from tests.support.e2e_fixtures import World
from tests.support.helpers import poll
from tests.support.k8s_cluster import RELEASE, Cluster, expect, k8s_world, plan_actions, services
from tests.support.k8s_fixtures import FAILS_JOB_IMAGE_MARK, K8sNamespace
from tests.support.rollout_fixtures import SENTINEL, set_service

pytestmark = pytest.mark.k8s

MIGRATE_LOG = "migrate: 0042_orders: relation orders already exists"
SMOKE_LOG = "smoke: GET /orders answered 500"

API_TEMPLATE = {
    "template.yaml": """\
outputs: [app.env, deployment.yaml, migrate.yaml, smoke.yaml]
env: [LOG_LEVEL, NEVER_READY, DB_PASSWORD]
depends_on: [db]
hooks: {pre_deploy: [migrate.yaml], timeout: 60s, retention: 2h}
verify: [smoke.yaml]
""",
    "migrate.yaml.j2": f"""\
apiVersion: batch/v1
kind: Job
metadata: {{name: migrate}}
spec:
  template:
    metadata:
      annotations: {{testbed.configcenter.io/log: "{MIGRATE_LOG}"}}
    spec:
      containers:
      - name: migrate
        command: [/app/migrate, up]
""",
    "smoke.yaml.j2": f"""\
apiVersion: batch/v1
kind: Job
metadata: {{name: smoke}}
spec:
  template:
    metadata:
      annotations: {{testbed.configcenter.io/log: "{SMOKE_LOG}"}}
    spec:
      containers:
      - name: smoke
        image: {{{{ SMOKE_IMAGE }}}}
        args: [--url, "http://api/orders"]
""",
}


def stage_world(tmp_path: Path, ns: K8sNamespace) -> World:
    """db <- api <- web; api on template 2.0.0 (migration + smoke test)."""
    world = k8s_world(tmp_path, ns, services=("db", "api", "web"))
    config = world.config
    for name, text in API_TEMPLATE.items():
        config.write(f"templates/api/{name}", text)
    config.commit("api 2.0.0: migration and smoke test")
    config.tag("api/2.0.0")
    config.write(
        "environments/dev/api.yaml",
        config.read("environments/dev/api.yaml").replace("template: 1.0.0", "template: 2.0.0"),
    )
    defaults = config.read("environments/_defaults.yaml")
    config.write(
        "environments/_defaults.yaml", defaults + "  SMOKE_IMAGE: registry.test/shop/smoke:1.0\n"
    )
    config.commit("dev: api on 2.0.0")
    return world


def set_api(world: World, image: str | None = None, **values: str) -> None:
    """api's service file with `image`/`values`, keeping template 2.0.0."""
    set_service(world, "api", image=image, **values)
    rel = "environments/dev/api.yaml"
    text = world.config.read(rel)
    if "template: 2.0.0" not in text:
        world.config.write(rel, text.replace("template: 1.0.0", "template: 2.0.0"))
        world.config.commit("dev: api stays on 2.0.0")


class Jobs:
    def __init__(self, ns: K8sNamespace) -> None:
        from kubernetes import client

        self.ns = ns.name
        api = ns.api_client()
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    def of(self, stage: str) -> list[Any]:
        items = self.batch.list_namespaced_job(
            self.ns, label_selector=f"configcenter.io/job={stage},configcenter.io/stage-of=api"
        ).items
        return sorted(items, key=lambda j: j.metadata.creation_timestamp)


def run_log(world: World) -> str:
    return world.run_store_dump()


def test_migration_job_completes_before_the_rollout_with_the_release_image_env_and_secrets(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = stage_world(tmp_path, k8s_namespace)
    plan = world.ok("plan", "dev").output
    assert (
        "stages   pre-deploy job migrate.yaml -> apply and wait for ready -> verify job "
        "smoke.yaml" in plan
    )
    dry = world.ok("apply", "dev", "--dry-run").output
    assert "pre-deploy job migrate.yaml" in dry
    assert Jobs(k8s_namespace).of("pre-deploy") == []  # a dry run runs nothing

    result = expect(world.cc("apply", "dev"), 0)

    release = services(world)["api"]["release"]
    assert release["outcome"] == "healthy"
    jobs = Jobs(k8s_namespace)
    (migrate,) = jobs.of("pre-deploy")
    (smoke,) = jobs.of("verify")
    # Named per release, kept for the template's retention, completed.
    assert migrate.metadata.name == f"{release['id'].replace('.', '-')}-migrate"
    assert migrate.metadata.annotations["configcenter.io/release"] == release["id"]
    assert migrate.spec.ttl_seconds_after_finished == 7200
    assert migrate.spec.backoff_limit == 0
    assert migrate.status.succeeded == 1 and smoke.status.succeeded == 1
    # The release's image for a container without one; its values and secrets as env.
    (container,) = migrate.spec.template.spec.containers
    assert container.image == cluster.deployment("api").spec.template.spec.containers[0].image
    env_name = container.env_from[0].config_map_ref.name
    assert container.env_from[1].secret_ref.name == env_name
    env_cm = jobs.core.read_namespaced_config_map(env_name, k8s_namespace.name)
    assert env_cm.data["LOG_LEVEL"] == "info"
    secret = jobs.core.read_namespaced_secret(env_name, k8s_namespace.name)
    assert base64.b64decode(secret.data["DB_PASSWORD"]).decode() == SENTINEL
    for owned in (env_cm, secret):
        (owner,) = owned.metadata.owner_references
        assert (owner.kind, owner.uid) == ("Job", migrate.metadata.uid)
    # The migration finished before the Deployment it guards was created.
    deployment = cluster.deployment("api")
    assert migrate.status.completion_time <= deployment.metadata.creation_timestamp
    assert smoke.metadata.creation_timestamp >= deployment.metadata.creation_timestamp
    # Neither Job is part of the workload: not in drift, and apply left it alone.
    assert "verification passed" in result.output
    assert SENTINEL not in run_log(world) and SENTINEL not in result.output
    drift = json.loads(world.ok("reconcile", "dev", "--json", "--exit-code").stdout)
    assert drift["drift"] is False, drift


def test_a_failed_migration_rolls_out_nothing_blocks_and_skips_dependents(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = stage_world(tmp_path, k8s_namespace)
    expect(world.cc("apply", "dev"), 0)
    good = services(world)["api"]["release"]["id"]
    before = cluster.snapshot()
    api_generation = cluster.deployment("api").metadata.generation

    set_api(world, image=f"registry.test/shop/api:2.1-{FAILS_JOB_IMAGE_MARK}", LOG_LEVEL="debug")
    set_service(world, "web", LOG_LEVEL="debug")  # a dependent with a change of its own
    failed = expect(world.cc("apply", "dev"), 1)

    assert "pre-deploy job migrate.yaml failed" in failed.output
    assert "web: skipped: a service it depends on failed" in failed.output
    # Nothing of the failed release reached the cluster.
    assert cluster.deployment("api").metadata.generation == api_generation
    assert cluster.config("api")["LOG_LEVEL"] == "info"
    assert cluster.config("web")["LOG_LEVEL"] == "info"
    after = cluster.snapshot()
    assert {k: v for k, v in after.items() if k in before} == before
    record = services(world)["api"]
    assert record["release"]["id"] == good  # the record says what runs
    assert record["last_failed"]["outcome"] == "failed"
    assert "pre-deploy job migrate.yaml failed" in record["last_failed"]["reason"]
    assert MIGRATE_LOG in record["last_failed"]["reason"]
    assert "log of pod" not in record["last_failed"]["reason"]  # the log, not the API's note
    # The job's log is in the run.
    assert f"[pre-deploy api/migrate.yaml] {MIGRATE_LOG}" in run_log(world)
    runs = world.runs()
    assert runs[-1][4] == "failed"
    # Then blocked, like any failure.
    assert plan_actions(world)["api"] == "blocked"
    history = world.ok("history", "dev", "--service", "api").output
    assert "migrate.yaml" in history


def test_a_failed_verification_rolls_back_image_and_config_and_skips_dependents(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = stage_world(tmp_path, k8s_namespace)
    expect(world.cc("apply", "dev"), 0)
    good = services(world)["api"]["release"]["id"]
    good_rs = cluster.active_rs("api")
    good_image = cluster.deployment("api").spec.template.spec.containers[0].image

    set_api(
        world,
        image="registry.test/shop/api:2.2",
        LOG_LEVEL="debug",
        SMOKE_IMAGE=f"registry.test/shop/smoke:{FAILS_JOB_IMAGE_MARK}",
    )
    set_service(world, "web", LOG_LEVEL="debug")
    failed = expect(world.cc("apply", "dev"), 3)

    assert "verify job smoke.yaml failed" in failed.output
    assert f"rolling back to {good}" in failed.output
    assert "web: skipped: a service it depends on failed" in failed.output
    record = services(world)["api"]
    assert record["release"]["id"] == good and record["release"]["outcome"] == "healthy"
    assert record["last_failed"]["outcome"] == "rolled_back"
    assert record["last_failed"]["reason"].startswith("VerificationFailed: verify job smoke.yaml")
    assert SMOKE_LOG in record["last_failed"]["reason"]
    # Live image and config are the last good release's again.
    assert cluster.active_rs("api") == good_rs and cluster.healthy("api")
    assert cluster.deployment("api").spec.template.spec.containers[0].image == good_image
    assert cluster.config("api")["LOG_LEVEL"] == "info"
    assert cluster.config("web")["LOG_LEVEL"] == "info"
    assert f"[verify api/smoke.yaml] {SMOKE_LOG}" in run_log(world)
    history = world.ok("history", "dev", "--service", "api").output
    assert "smoke.yaml" in history
    assert plan_actions(world)["api"] == "blocked"


def test_skip_verify_is_recorded_in_the_commit_and_the_run(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = stage_world(tmp_path, k8s_namespace)
    world.config.write(
        "environments/_defaults.yaml",
        world.config.read("environments/_defaults.yaml").replace(
            "smoke:1.0", f"smoke:{FAILS_JOB_IMAGE_MARK}"
        ),
    )
    world.config.commit("a smoke test that would fail")

    result = expect(world.cc("apply", "dev", "--skip-verify"), 0)

    assert "verification skipped (--skip-verify)" in result.output
    assert services(world)["api"]["release"]["outcome"] == "healthy"
    assert Jobs(k8s_namespace).of("verify") == []
    release_commit = world.git_deploy("rev-parse", "refs/heads/main^").decode().strip()
    assert ("Configcenter-Skip-Verify", "true") in world.trailers(release_commit)
    assert '"skip_verify": true' in run_log(world)


def test_putting_back_a_hand_scaled_healthy_release_runs_none_of_its_stages_again(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    from kubernetes import client

    world = stage_world(tmp_path, k8s_namespace)
    expect(world.cc("apply", "dev"), 0)
    release = services(world)["api"]["release"]
    assert release["outcome"] == "healthy"
    jobs = Jobs(k8s_namespace)
    (migrate,) = jobs.of("pre-deploy")
    (smoke,) = jobs.of("verify")
    wanted = cluster.deployment("api").spec.replicas
    # kubectl scale deploy/api --replicas=3: a hand edit of the same release.
    client.AppsV1Api(k8s_namespace.api_client()).patch_namespaced_deployment_scale(
        "api", k8s_namespace.name, {"spec": {"replicas": wanted + 2}}
    )

    assert plan_actions(world)["api"] == "update"
    plan = world.ok("plan", "dev").output
    assert "pre-deploy job" not in plan and "verify job" not in plan, plan
    result = expect(world.cc("apply", "dev"), 0)

    assert cluster.deployment("api").spec.replicas == wanted  # put back
    assert services(world)["api"]["release"]["id"] == release["id"]
    # The migration and the smoke test ran once, for the release, and were not run again.
    assert [j.metadata.uid for j in jobs.of("pre-deploy")] == [migrate.metadata.uid]
    assert [j.metadata.uid for j in jobs.of("verify")] == [smoke.metadata.uid]
    assert "pre-deploy job" not in result.output


def test_a_catch_up_after_a_kill_before_the_record_runs_no_stage_job_of_the_release_again(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """Killed once the migration and the smoke test completed and the workload was ready,
    before the outcome was recorded: the catch-up finds this release's Jobs completed on the
    cluster and starts neither again; it records the release healthy."""
    world = stage_world(tmp_path, k8s_namespace)
    expect(world.cc("apply", "dev", "--service", "db"), 0)  # the kill is in api's rollout
    crashed = world.cc("apply", "dev", extra_env=crash_env("rollout:stages-done"))
    assert crashed.code == -signal.SIGKILL, crashed.output
    release = services(world)["api"]["release"]
    assert release["outcome"] == "committed"  # the outcome was never recorded
    jobs = Jobs(k8s_namespace)
    (migrate,) = jobs.of("pre-deploy")
    (smoke,) = jobs.of("verify")
    assert migrate.status.succeeded == 1 and smoke.status.succeeded == 1
    assert cluster.deployment("api").metadata.annotations[RELEASE] == release["id"]
    rs_uid = rs_uid_of(cluster, "api")
    plan = world.ok("plan", "dev").output
    note = (
        f"{release['id']}'s outcome was never recorded: a stage Job the platform shows it "
        "completed is not run again"
    )
    assert note in plan, plan

    result = expect(world.cc("apply", "dev"), 0)

    assert [j.metadata.uid for j in jobs.of("pre-deploy")] == [migrate.metadata.uid]
    assert [j.metadata.uid for j in jobs.of("verify")] == [smoke.metadata.uid]
    for stage, file, job in (
        ("pre-deploy", "migrate.yaml", migrate),
        ("verify", "smoke.yaml", smoke),
    ):
        said = (
            f"api: {stage} job {file} of {release['id']} completed in an earlier attempt "
            f"(Job {job.metadata.name}); not run again"
        )
        assert said in result.output, result.output
    record = services(world)["api"]
    assert record["release"]["id"] == release["id"]
    assert record["release"]["outcome"] == "healthy"
    assert rs_uid_of(cluster, "api") == rs_uid  # the same ReplicaSet runs: not rolled again
    assert cluster.healthy("api")


def test_a_catch_up_reruns_a_pre_deploy_job_the_cluster_no_longer_shows_and_says_why(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """Killed after the migration completed, before api was applied; its Job is then gone
    (as after its retention): nothing tells that it ran, so it runs again, and the log says
    which stage and why."""
    world = stage_world(tmp_path, k8s_namespace)
    crashed = world.cc("apply", "dev", extra_env=crash_env("rollout:pre-deployed"))
    assert crashed.code == -signal.SIGKILL, crashed.output
    release = services(world)["api"]["release"]
    assert release["outcome"] == "committed"
    assert "api" not in cluster.deployments()  # killed before api was applied
    jobs = Jobs(k8s_namespace)
    (migrate,) = jobs.of("pre-deploy")
    assert migrate.status.succeeded == 1
    jobs.batch.delete_namespaced_job(
        migrate.metadata.name, k8s_namespace.name, propagation_policy="Foreground"
    )
    poll(lambda: jobs.of("pre-deploy") == [] or None, 60, "the migration Job to be deleted")

    result = expect(world.cc("apply", "dev"), 0)

    (again,) = jobs.of("pre-deploy")
    assert again.metadata.uid != migrate.metadata.uid and again.status.succeeded == 1
    said = (
        f"api: pre-deploy job migrate.yaml: runs: the cluster shows no Job "
        f"{k8s_namespace.name}/{migrate.metadata.name} of release {release['id']} from an "
        "earlier attempt (it never started, or it ended more than 7200s ago and was deleted)"
    )
    assert said in result.output, result.output
    assert "completed in an earlier attempt" not in result.output
    assert services(world)["api"]["release"]["outcome"] == "healthy"
    assert cluster.deployment("api").metadata.annotations[RELEASE] == release["id"]


def test_a_catch_up_after_a_kill_before_the_apply_does_not_migrate_again(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """Killed after the migration completed, before api was applied: the catch-up does not
    start the migration again, and rolls api out."""
    world = stage_world(tmp_path, k8s_namespace)
    crashed = world.cc("apply", "dev", extra_env=crash_env("rollout:pre-deployed"))
    assert crashed.code == -signal.SIGKILL, crashed.output
    release = services(world)["api"]["release"]
    jobs = Jobs(k8s_namespace)
    (migrate,) = jobs.of("pre-deploy")
    plan = world.ok("plan", "dev").output
    assert f"{release['id']}'s outcome was never recorded: a stage Job" in plan, plan

    result = expect(world.cc("apply", "dev"), 0)

    assert [j.metadata.uid for j in jobs.of("pre-deploy")] == [migrate.metadata.uid]
    assert "pre-deploy job migrate.yaml of" in result.output
    assert "completed in an earlier attempt" in result.output
    (smoke,) = jobs.of("verify")  # verification had not run: it runs now
    assert smoke.status.succeeded == 1
    assert migrate.status.completion_time <= cluster.deployment("api").metadata.creation_timestamp
    record = services(world)["api"]["release"]
    assert (record["id"], record["outcome"]) == (release["id"], "healthy")


def rs_uid_of(cluster: Cluster, service: str) -> str:
    name = cluster.active_rs(service)
    uid: str = cluster.apps.read_namespaced_replica_set(name, cluster.ns).metadata.uid
    return uid
