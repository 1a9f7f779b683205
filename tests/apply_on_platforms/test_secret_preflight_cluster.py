"""deploy, rollback and the catch-up refuse a release whose secrets cannot be resolved, as
apply refuses a new one, before anything is recorded or rolled out; plan says so first.

On the test bed's API server: what runs is read from it as kubectl would.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.support.e2e_fixtures import SECRET_ENV
from tests.support.k8s_cluster import RELEASE, Cluster, expect, k8s_world, services
from tests.support.k8s_fixtures import K8sNamespace, version_in_use
from tests.support.rollout_fixtures import SENTINEL

pytestmark = pytest.mark.k8s

WHERE = "environments/dev/_env.yaml:5"  # DB_PASSWORD: {secret: "env:SHOP_DB_PASSWORD"}


def assert_names_the_secret(output: str, where: str = WHERE) -> None:
    said = f"api: value DB_PASSWORD: secret 'env:{SECRET_ENV}' cannot be resolved"
    assert f"{where}: {said}" in output or f"{where}: warning: {said}" in output, output
    assert f"export {SECRET_ENV}" in output, output
    assert "Traceback" not in output


def test_deploy_and_the_catch_up_refuse_a_release_whose_secret_is_not_set_and_plan_says_so(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "api"))
    world.ok("apply", "dev", "--no-rollout")  # committed by someone whose shell has it
    del world.env[SECRET_ENV]
    head, runs = world.head(), world.runs()

    planned = json.loads(world.ok("plan", "dev", "--json").stdout)
    (warning,) = [w for w in planned["warnings"] if "DB_PASSWORD" in w["message"]]
    assert (warning["file"], warning["line"]) == ("environments/dev/_env.yaml", 5)
    assert "apply will refuse to roll this release out again" in warning["message"]
    assert f"export {SECRET_ENV}" in warning["hint"]
    text = world.ok("plan", "dev").output
    assert_names_the_secret(text)

    applied = expect(world.cc("apply", "dev"), 1)
    assert_names_the_secret(applied.output)
    assert "nothing was rolled out, committed or changed" in applied.output
    for args in (("deploy", "dev", "api"), ("deploy", "dev", "api", "--dry-run")):
        refused = expect(world.cc(*args), 1)
        assert_names_the_secret(refused.output)
        assert "nothing was rolled out, committed or changed" in refused.output

    assert cluster.deployments() == set()
    assert world.head() == head
    assert [r for r in world.runs() if r[1] == "deploy"] == []
    assert len(world.runs()) == len(runs) + 1  # the refused apply's run, failed
    # db needs no secret: it is deployed alone without one.
    world.ok("deploy", "dev", "db")
    assert cluster.deployments() == {"db"}

    world.env[SECRET_ENV] = SENTINEL
    world.ok("deploy", "dev", "api")

    api = services(world)["api"]["release"]
    assert cluster.deployment("api").metadata.annotations[RELEASE] == api["id"]
    secret = cluster.core.read_namespaced_secret(
        version_in_use(cluster.api, cluster.ns, "api-secrets"), cluster.ns
    )
    assert base64.b64decode(secret.data["DB_PASSWORD"]).decode() == SENTINEL


def test_rollback_refuses_a_release_whose_secret_is_not_set(
    tmp_path: Path, k8s_namespace: K8sNamespace, cluster: Cluster
) -> None:
    """The release rolled back to was never on the platform, and its password's variable is
    not set here: refused before anything is rolled out or committed."""
    world = k8s_world(tmp_path, k8s_namespace, services=("db", "api"))
    world.ok("apply", "dev", "--no-rollout")
    first = services(world)["api"]["release"]["id"]
    rel = "environments/dev/api.yaml"
    world.config.write(
        rel, world.config.read(rel) + 'values:\n  DB_PASSWORD: {secret: "env:OTHER_PW"}\n'
    )
    world.config.commit("dev: api reads another password")
    world.env["OTHER_PW"] = "other-Pa55w0rd-31c7"
    world.ok("apply", "dev")
    second = services(world)["api"]["release"]["id"]
    assert cluster.deployment("api").metadata.annotations[RELEASE] == second
    del world.env[SECRET_ENV]
    head = world.head()

    for args in (("--dry-run",), ()):
        refused = expect(world.cc("rollback", "dev", "api", "--to", first, *args), 1)
        assert_names_the_secret(refused.output, "deploy repo dev/.state/api.json")
        assert "nothing was rolled out, committed or changed" in refused.output

    assert cluster.deployment("api").metadata.annotations[RELEASE] == second
    assert world.head() == head
    assert services(world)["api"]["release"]["id"] == second
