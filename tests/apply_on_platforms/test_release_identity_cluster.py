"""A release is exactly what a service consumes, judged on the real control plane.

Each test drives the CLI on a real config repo and deploy remote, then reads the
namespace the way kubectl would: ReplicaSets and their pod-template hashes,
StatefulSet revisions, the ConfigMaps and Secrets the pod templates refer to,
and the data in them.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.e2e_fixtures import SECRET_ENV, CliResult, World
from tests.support.k8s_fixtures import K8sNamespace, version_in_use
from tests.support.rollout_fixtures import SENTINEL, make_rollout_world, set_service

pytestmark = pytest.mark.k8s

ROTATED = "r0tated-Pa55w0rd-93b1e0"
PAYMENTS_ENV = "SHOP_PAYMENTS_KEY"
PAYMENTS = "paym3nts-K3y-5e1d2a"  # a second secret, which does not rotate


def add_payments_key(world: World) -> None:
    """A second secret in dev, `PAYMENTS_KEY` (env:SHOP_PAYMENTS_KEY); the caller commits."""
    rel = "environments/dev/_env.yaml"
    text = world.config.read(rel)
    world.config.write(rel, text + f'  PAYMENTS_KEY: {{secret: "env:{PAYMENTS_ENV}"}}\n')
    world.env[PAYMENTS_ENV] = PAYMENTS


STATEFULSET_J2 = """\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: {{ service }}, labels: {app: {{ service }}}}
spec:
  serviceName: {{ service }}
  replicas: {{ replicas }}
  selector: {matchLabels: {app: {{ service }}}}
  template:
    metadata: {labels: {app: {{ service }}}}
    spec:
      containers:
      - name: app
        image: {{ image }}
"""


class Namespace:
    """The test's namespace, read straight from the API server."""

    def __init__(self, ns: K8sNamespace) -> None:
        from kubernetes import client

        self.ns = ns.name
        self.api = ns.api_client()
        self.apps = client.AppsV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

    def revisions(self) -> dict[str, Any]:
        """Everything that moves when pods restart: ReplicaSets (by pod-template hash) with
        their replicas, StatefulSet revisions, and the pods' UIDs."""
        out: dict[str, Any] = {}
        for rs in self.apps.list_namespaced_replica_set(self.ns).items:
            out[f"ReplicaSet/{rs.metadata.name}"] = rs.spec.replicas
        for sts in self.apps.list_namespaced_stateful_set(self.ns).items:
            out[f"StatefulSet/{sts.metadata.name}"] = (
                sts.metadata.generation,
                sts.status.update_revision,
            )
        for pod in self.core.list_namespaced_pod(self.ns).items:
            out[f"Pod/{pod.metadata.name}"] = pod.metadata.uid
        return out

    def active_hash(self, service: str) -> str:
        items = self.apps.list_namespaced_replica_set(self.ns, label_selector=f"app={service}")
        active = [rs for rs in items.items if (rs.spec.replicas or 0) > 0]
        assert len(active) == 1, [rs.metadata.name for rs in active]
        return str(active[0].metadata.labels["pod-template-hash"])

    def replica_set_uids(self, service: str) -> dict[str, str]:
        items = self.apps.list_namespaced_replica_set(self.ns, label_selector=f"app={service}")
        return {rs.metadata.name: rs.metadata.uid for rs in items.items}

    def pod_uids(self, service: str) -> set[str]:
        pods = self.core.list_namespaced_pod(self.ns, label_selector=f"app={service}").items
        return {p.metadata.uid for p in pods if not p.metadata.deletion_timestamp}

    def in_use(self, name: str) -> str:
        found = version_in_use(self.api, self.ns, name)
        assert found != name, f"no workload refers to a version of {name}"
        return found

    def secret_data(self, name: str) -> dict[str, str]:
        secret = self.core.read_namespaced_secret(self.in_use(name), self.ns)
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def config_maps(self) -> dict[str, dict[str, str]]:
        return {
            cm.metadata.name: dict(cm.data or {})
            for cm in self.core.list_namespaced_config_map(self.ns).items
        }


@pytest.fixture
def live(k8s_namespace: K8sNamespace) -> Namespace:
    return Namespace(k8s_namespace)


def world_for(tmp_path: Path, ns: K8sNamespace, **kwargs: Any) -> World:
    return make_rollout_world(
        tmp_path / "world", namespace=ns.name, kubeconfig=ns.kubeconfig, **kwargs
    )


def expect(result: CliResult, code: int) -> CliResult:
    assert result.code == code, f"exit {result.code}, expected {code}:\n{result.output}"
    return result


def plan(world: World) -> dict[str, dict[str, Any]]:
    data = json.loads(expect(world.cc("plan", "dev", "--json"), 0).stdout)
    return {s["service"]: s for s in data["services"]}


def release(world: World, service: str, version: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        world.config.write(f"templates/{service}/{name}", text)
    world.config.commit(f"{service} {version}")
    world.config.tag(f"{service}/{version}")


def pin(world: World, service: str, version: str, replicas: int = 1) -> None:
    world.config.write(
        f"environments/dev/{service}.yaml",
        f"template: {version}\nimage: {{ref: registry.test/shop/{service}:1.0}}\n"
        f"replicas: {replicas}\n",
    )
    world.config.commit(f"dev: {service} {version}")


def test_a_shared_value_no_template_reads_restarts_nothing_and_commits_nothing(
    tmp_path: Path, k8s_namespace: K8sNamespace, live: Namespace
) -> None:
    world = world_for(tmp_path, k8s_namespace, services=("api", "worker"))
    release(world, "db", "1.1.0", {"deployment.yaml.j2": STATEFULSET_J2})
    pin(world, "db", "1.1.0")
    expect(world.cc("apply", "dev"), 0)
    before, head = live.revisions(), world.head()
    assert any(k.startswith("StatefulSet/") for k in before)

    env = world.config.read("environments/dev/_env.yaml")
    world.config.write("environments/dev/_env.yaml", env + "  FEATURE_ONLY_FOR_WEB: 'on'\n")
    world.config.commit("a value only web would read")

    planned = plan(world)
    assert {s: (p["action"], p["values"]) for s, p in planned.items()} == {
        s: ("noop", {"changed": {}, "added": {}, "removed": {}}) for s in ("db", "api", "worker")
    }
    result = expect(world.cc("apply", "dev"), 0)
    assert "Nothing to do" in result.output
    assert world.head() == head, "no release, no commit"
    assert live.revisions() == before, "no ReplicaSet, StatefulSet revision or pod changed"


def test_a_replicas_change_scales_in_place_with_the_same_pod_template(
    tmp_path: Path, k8s_namespace: K8sNamespace, live: Namespace
) -> None:
    world = world_for(tmp_path, k8s_namespace, services=("worker",))
    expect(world.cc("apply", "dev"), 0)
    template_hash = live.active_hash("worker")
    replica_sets = live.replica_set_uids("worker")
    pods = live.pod_uids("worker")
    pin(world, "worker", "1.0.0", replicas=3)

    worker = plan(world)["worker"]
    assert (worker["action"], worker["reasons"], worker["replicas"]) == (
        "update",
        ["replicas"],
        {"from": 1, "to": 3},
    )
    assert "replicas: 1 -> 3" in expect(world.cc("plan", "dev"), 0).stdout
    expect(world.cc("apply", "dev"), 0)
    deployment = live.apps.read_namespaced_deployment("worker", live.ns)
    assert (deployment.spec.replicas, deployment.status.ready_replicas) == (3, 3)
    assert live.active_hash("worker") == template_hash, "a scale is not a restart"
    assert live.replica_set_uids("worker") == replica_sets, "the same ReplicaSet scaled"
    assert pods <= live.pod_uids("worker"), "the pod that ran before still runs"
    # The next apply converges: the release runs, nothing is rolled out or committed again.
    assert plan(world)["worker"]["action"] == "noop"
    head = world.head()
    assert "Nothing to do" in expect(world.cc("apply", "dev"), 0).output
    assert world.head() == head
    assert live.replica_set_uids("worker") == replica_sets


def test_secrets_reach_the_pods_as_values_wherever_used_and_rotate_and_roll_back(
    tmp_path: Path, k8s_namespace: K8sNamespace, live: Namespace
) -> None:
    world = world_for(tmp_path, k8s_namespace, services=("api",))
    add_payments_key(world)
    release(
        world,
        "api",
        "1.1.0",
        {
            "template.yaml": "outputs: [app.env, deployment.yaml, conf/app.yaml]\n"
            "env: [LOG_LEVEL, NEVER_READY, DB_PASSWORD, PAYMENTS_KEY]\n",
            "app.env.j2": "LOG_LEVEL={{ LOG_LEVEL }}\nPOSTGRES_PASSWORD={{ DB_PASSWORD }}\n"
            "DSN=postgres://app:{{ DB_PASSWORD }}@db/shop\n",
            "conf/app.yaml.j2": 'smtp:\n  host: mail\n  password: "{{ DB_PASSWORD }}"\n',
        },
    )
    pin(world, "api", "1.1.0")
    outputs = [expect(world.cc("apply", "dev"), 0).output]
    first_release = world.state("dev")["services"]["api"]["release"]["id"]
    first_hash = live.active_hash("api")

    assert live.secret_data("api-secrets") == {
        "DB_PASSWORD": SENTINEL,
        "POSTGRES_PASSWORD": SENTINEL,
        "DSN": f"postgres://app:{SENTINEL}@db/shop",
        "PAYMENTS_KEY": PAYMENTS,
    }
    assert live.secret_data("api-secret-files") == {
        "conf_app.yaml": f'smtp:\n  host: mail\n  password: "{SENTINEL}"\n'
    }
    for name, data in live.config_maps().items():
        assert "${secret:" not in json.dumps(data), f"ConfigMap {name} holds a placeholder"
        assert SENTINEL not in json.dumps(data), f"ConfigMap {name} holds the secret"
    deployed = world.files()["dev/api/app.env"]
    assert b"POSTGRES_PASSWORD=${secret:env:" in deployed, "the deploy repo keeps the reference"

    # Rotation: the value behind the reference changes, nothing in the config repo does.
    world.env[SECRET_ENV] = ROTATED
    api = plan(world)["api"]
    assert (api["action"], api["reasons"], api["secrets"]) == (
        "update",
        ["secrets"],
        {"rotated": ["DB_PASSWORD"]},
    )
    text_plan = expect(world.cc("plan", "dev"), 0)
    assert "DB_PASSWORD: *** (rotated)" in text_plan.stdout
    # Only the secret whose value changed is listed; PAYMENTS_KEY's value did not.
    assert "PAYMENTS_KEY" not in text_plan.stdout, text_plan.stdout
    outputs += [text_plan.output, expect(world.cc("apply", "dev"), 0).output]
    assert live.secret_data("api-secrets")["POSTGRES_PASSWORD"] == ROTATED
    assert ROTATED in live.secret_data("api-secret-files")["conf_app.yaml"]
    assert live.active_hash("api") != first_hash, "a rotation rolls the pods"
    assert live.in_use("api-secrets") == "api-secrets-2"
    assert live.secret_data("api-secrets")["PAYMENTS_KEY"] == PAYMENTS
    assert plan(world)["api"]["action"] == "noop", "rolled out: nothing more to do"

    # A rollback to the release made before the rotation runs with the values it ran with.
    outputs.append(expect(world.cc("rollback", "dev", "api", "--to", first_release), 0).output)
    assert live.in_use("api-secrets") == "api-secrets-1"
    assert live.secret_data("api-secrets")["DB_PASSWORD"] == SENTINEL
    assert SENTINEL in live.secret_data("api-secret-files")["conf_app.yaml"]
    assert live.active_hash("api") == first_hash, "the old ReplicaSet is scaled back up"

    for text in [*outputs, world.refs()]:
        for value in (SENTINEL, ROTATED, PAYMENTS):
            assert value not in text
            assert base64.b64encode(value.encode()).decode() not in text
    for path, data in world.files().items():
        assert SENTINEL.encode() not in data and ROTATED.encode() not in data, path


def applied_with_a_secret_file(tmp_path: Path, ns: K8sNamespace) -> World:
    """api 1.1.0 applied, with conf/app.yaml holding LOG_LEVEL and the secret DB_PASSWORD."""
    world = world_for(tmp_path, ns, services=("api",))
    release(
        world,
        "api",
        "1.1.0",
        {
            "template.yaml": "outputs: [app.env, deployment.yaml, conf/app.yaml]\n"
            "env: [LOG_LEVEL, NEVER_READY]\n",
            "conf/app.yaml.j2": 'level: {{ LOG_LEVEL }}\npassword: "{{ DB_PASSWORD }}"\n',
        },
    )
    pin(world, "api", "1.1.0")
    expect(world.cc("apply", "dev"), 0)
    return world


def test_a_changed_file_holding_a_secret_is_a_values_change_not_a_rotation(
    tmp_path: Path, k8s_namespace: K8sNamespace, live: Namespace
) -> None:
    """The file's Secret gets a new generation either way; the plan says why, truthfully."""
    world = applied_with_a_secret_file(tmp_path, k8s_namespace)

    set_service(world, "api", LOG_LEVEL="debug")
    api = plan(world)["api"]
    assert (api["action"], api["reasons"]) == ("update", ["values"])
    assert "secrets" not in api
    text = expect(world.cc("plan", "dev"), 0).stdout
    assert "[values]" in text and "rotated" not in text
    expect(world.cc("apply", "dev"), 0)
    assert live.secret_data("api-secret-files")["conf_app.yaml"] == (
        f'level: debug\npassword: "{SENTINEL}"\n'
    )

    # A rotation at the same time as a value change is said as both.
    set_service(world, "api", LOG_LEVEL="warning")
    world.env[SECRET_ENV] = ROTATED
    api = plan(world)["api"]
    assert (api["reasons"], api["secrets"]) == (["values", "secrets"], {"rotated": ["DB_PASSWORD"]})
    expect(world.cc("apply", "dev"), 0)
    assert live.secret_data("api-secret-files")["conf_app.yaml"] == (
        f'level: warning\npassword: "{ROTATED}"\n'
    )


def test_a_changed_file_holding_a_secret_never_reuses_an_old_generation(
    tmp_path: Path, k8s_namespace: K8sNamespace, live: Namespace
) -> None:
    """With the secret's value not resolvable here, the release cannot reuse the Secret of
    the one before (it holds the old file): the rollout fails, it does not run stale files."""
    world = applied_with_a_secret_file(tmp_path, k8s_namespace)
    before = live.secret_data("api-secret-files")

    set_service(world, "api", LOG_LEVEL="debug")
    secret = world.env.pop(SECRET_ENV)
    try:
        failed = world.cc("apply", "dev")
    finally:
        world.env[SECRET_ENV] = secret
    assert failed.code != 0, failed.output
    assert SECRET_ENV in failed.output
    assert live.secret_data("api-secret-files") == before, "the last good files still run"

    expect(world.cc("apply", "dev", "--retry", "api"), 0)
    assert live.secret_data("api-secret-files")["conf_app.yaml"] == (
        f'level: debug\npassword: "{SENTINEL}"\n'
    )
    deployed = world.files()["dev/api/conf/app.yaml"]
    assert deployed.startswith(b"level: debug\n"), "the deploy repo and the pods agree"


def test_a_committed_release_is_rolled_out_as_committed_even_after_a_failed_one(
    tmp_path: Path, k8s_namespace: K8sNamespace, live: Namespace
) -> None:
    """An apply killed between its commit and its rollout (here `--no-rollout`) leaves a
    release whose secrets generation is not on the platform yet. The Secrets of an older
    failed release still are; they say nothing about the committed one's values, so the
    next plan rolls out the committed release ("committed, not yet on the platform"), not
    a new one for secrets that "may have rotated": no second release, one rollout."""
    world = applied_with_a_secret_file(tmp_path, k8s_namespace)
    set_service(world, "api", image="registry.test/never-ready/api:2", LOG_LEVEL="warning")
    expect(world.cc("apply", "dev"), 3)
    assert live.in_use("api-secret-files") == "api-secret-files-1", "rolled back"

    set_service(world, "api", LOG_LEVEL="debug")
    expect(world.cc("apply", "dev", "--no-rollout"), 0)
    committed = world.state("dev")["services"]["api"]
    assert committed["secrets_generation"] == 3, committed

    api = plan(world)["api"]
    assert (api["action"], api["reasons"]) == ("update", ["platform"]), api
    assert set(api.get("secrets", {})) <= {"unknown"}, api["secrets"]
    text = expect(world.cc("plan", "dev"), 0).stdout
    assert "committed, not yet on the platform" in text, text
    assert "may have rotated" not in text and "(rotated)" not in text, text

    expect(world.cc("apply", "dev"), 0)
    state = world.state("dev")["services"]["api"]
    assert state["release"]["id"] == committed["release"]["id"], "no second release"
    assert state["release"]["outcome"] == "healthy"
    assert live.in_use("api-secret-files") == "api-secret-files-3"
    assert live.secret_data("api-secret-files")["conf_app.yaml"] == (
        f'level: debug\npassword: "{SENTINEL}"\n'
    )
    assert plan(world)["api"]["action"] == "noop"


def test_secrets_the_platform_cannot_tell_apart_are_said_so_not_guessed(
    tmp_path: Path, k8s_namespace: K8sNamespace, live: Namespace
) -> None:
    """Two secrets only ever delivered in one config file: the Secret compares the file as
    a whole, so when it differs the plan names both as undecidable, not one as rotated."""
    world = world_for(tmp_path, k8s_namespace, services=("api",))
    add_payments_key(world)
    release(
        world,
        "api",
        "1.1.0",
        {
            "template.yaml": "outputs: [app.env, deployment.yaml, conf/app.yaml]\n"
            "env: [LOG_LEVEL, NEVER_READY]\n",
            "app.env.j2": "LOG_LEVEL={{ LOG_LEVEL }}\n",
            "conf/app.yaml.j2": 'db: "{{ DB_PASSWORD }}"\npayments: "{{ PAYMENTS_KEY }}"\n',
        },
    )
    pin(world, "api", "1.1.0")
    outputs = [expect(world.cc("apply", "dev"), 0).output]

    world.env[SECRET_ENV] = ROTATED
    api = plan(world)["api"]
    why = (
        "Secret entry api-secret-files-1/conf_app.yaml holds more than one secret, "
        "compared as a whole"
    )
    assert (api["action"], api["reasons"], api["secrets"]) == (
        "update",
        ["secrets"],
        {"rotated": [], "cannot_separate": {"keys": ["DB_PASSWORD", "PAYMENTS_KEY"], "why": why}},
    )
    text_plan = expect(world.cc("plan", "dev"), 0)
    assert "DB_PASSWORD, PAYMENTS_KEY: *** (may have rotated" in text_plan.stdout
    assert "(rotated)" not in text_plan.stdout
    outputs += [text_plan.output, expect(world.cc("apply", "dev"), 0).output]
    assert live.in_use("api-secret-files") == "api-secret-files-2"
    assert live.secret_data("api-secret-files")["conf_app.yaml"] == (
        f'db: "{ROTATED}"\npayments: "{PAYMENTS}"\n'
    )
    assert plan(world)["api"]["action"] == "noop"
    for text in [*outputs, world.refs()]:
        for value in (SENTINEL, ROTATED, PAYMENTS):
            assert value not in text
            assert base64.b64encode(value.encode()).decode() not in text


def test_a_secret_that_cannot_be_resolved_is_refused_before_the_commit_and_the_cluster(
    tmp_path: Path, k8s_namespace: K8sNamespace, live: Namespace
) -> None:
    world = world_for(tmp_path, k8s_namespace, services=("db", "api"))
    del world.env[SECRET_ENV]  # DB_PASSWORD: {secret: "env:SHOP_DB_PASSWORD"}, not set

    result = expect(world.cc("apply", "dev"), 1)

    assert "environments/dev/_env.yaml:5: api: value DB_PASSWORD: secret" in result.output
    assert "environment variable SHOP_DB_PASSWORD is not set" in result.output
    assert "nothing was committed" in result.output and "Traceback" not in result.output
    assert world.commit_count() == 0
    assert live.apps.list_namespaced_deployment(live.ns).items == []
    managed = "app.kubernetes.io/managed-by"
    assert live.core.list_namespaced_secret(live.ns, label_selector=managed).items == []
    assert live.core.list_namespaced_config_map(live.ns, label_selector=managed).items == []

    world.env[SECRET_ENV] = SENTINEL
    expect(world.cc("apply", "dev"), 0)
    assert live.secret_data("api-secrets")["DB_PASSWORD"] == SENTINEL


def test_a_k8s_secret_that_does_not_exist_is_refused_before_the_commit_and_the_cluster(
    tmp_path: Path, k8s_namespace: K8sNamespace, live: Namespace
) -> None:
    from kubernetes import client

    world = world_for(tmp_path, k8s_namespace, services=("db", "api"))
    env_file = "environments/dev/_env.yaml"
    ref = f"k8s:{live.ns}/db-creds/password"
    world.config.write(
        env_file, world.config.read(env_file).replace(f'"env:{SECRET_ENV}"', f'"{ref}"')
    )
    settings = world.config.read("configcenter.yaml")
    world.config.write(
        "configcenter.yaml", settings + f'secrets:\n  k8s: {{allow: ["{live.ns}/*"]}}\n'
    )
    world.config.commit("db password from a Secret on the cluster")

    for args in (("apply", "dev"), ("apply", "dev", "--no-rollout")):
        result = expect(world.cc(*args), 1)
        text = " ".join(result.output.split())
        assert f"environments/dev/_env.yaml:5: api: value DB_PASSWORD: secret '{ref}'" in text
        assert f"Secret {live.ns}/db-creds does not exist" in text
        assert "create it or fix the reference" in text and "nothing was committed" in text
        assert "Traceback" not in result.output
        assert world.commit_count() == 0
        assert live.apps.list_namespaced_deployment(live.ns).items == []
    planned = " ".join(world.ok("plan", "dev").output.split())
    assert f"Secret {live.ns}/db-creds does not exist" in planned
    assert "apply will refuse this release" in planned

    live.core.create_namespaced_secret(
        live.ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="db-creds"),
            string_data={"password": SENTINEL},
        ),
    )
    expect(world.cc("apply", "dev"), 0)
    assert live.secret_data("api-secrets")["DB_PASSWORD"] == SENTINEL
    assert "apply will refuse" not in world.ok("plan", "dev").output


def test_a_k8s_secret_is_not_checked_by_apply_no_rollout_when_the_cluster_cannot_be_asked(
    tmp_path: Path, k8s_namespace: K8sNamespace
) -> None:
    world = world_for(tmp_path, k8s_namespace, services=("db", "api"))
    env_file = "environments/dev/_env.yaml"
    ref = f"k8s:{k8s_namespace.name}/db-creds/password"
    world.config.write(
        env_file, world.config.read(env_file).replace(f'"env:{SECRET_ENV}"', f'"{ref}"')
    )
    settings = world.config.read("configcenter.yaml").replace(
        str(k8s_namespace.kubeconfig), str(tmp_path / "no-such-kubeconfig")
    )
    world.config.write(
        "configcenter.yaml",
        settings + f'secrets:\n  k8s: {{allow: ["{k8s_namespace.name}/*"]}}\n',
    )
    world.config.commit("db password from a Secret, on a cluster that cannot be reached")

    result = expect(world.cc("apply", "dev", "--no-rollout"), 0)

    text = " ".join(result.output.split())
    assert f"api: value DB_PASSWORD: secret '{ref}' was not checked: platform 'k8s'" in text
    assert world.state("dev")["services"]["api"]["release"]["outcome"] == "committed"
