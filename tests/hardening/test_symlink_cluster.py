"""Bullet 1 on the platform: the reported attack (a HEAD template linked to a private key,
applied) puts the key into no ConfigMap or Secret, the deploy repo, a cache or the run store."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.hardening.conftest import files_containing
from tests.support.k8s_fixtures import K8sNamespace
from tests.support.rollout_fixtures import make_rollout_world

pytestmark = pytest.mark.k8s


def _namespace_data(ns: K8sNamespace) -> list[bytes]:
    """Every value of every ConfigMap and Secret in the namespace, as bytes."""
    from kubernetes import client

    core = client.CoreV1Api(ns.api_client())
    found: list[bytes] = []
    for cm in core.list_namespaced_config_map(ns.name).items:
        found += [v.encode() for v in (cm.data or {}).values()]
        found += [base64.b64decode(v) for v in (cm.binary_data or {}).values()]
    for secret in core.list_namespaced_secret(ns.name).items:
        found += [base64.b64decode(v) for v in (secret.data or {}).values()]
    return found


def test_linked_template_never_reaches_the_cluster(
    tmp_path: Path, k8s_namespace: K8sNamespace, sentinel: tuple[Path, bytes]
) -> None:
    target, secret = sentinel
    world = make_rollout_world(
        tmp_path / "world",
        namespace=k8s_namespace.name,
        kubeconfig=k8s_namespace.kubeconfig,
        services=("worker",),
    )
    config = world.config
    config.write(
        "environments/dev/_env.yaml",
        config.read("environments/dev/_env.yaml") + "allow_head: true\n",
    )
    config.write(
        "templates/worker/template.yaml",
        config.read("templates/worker/template.yaml").replace(
            "outputs: [app.env, deployment.yaml]", "outputs: [app.env, deployment.yaml, app.conf]"
        ),
    )
    config.write("templates/worker/app.conf.j2", "log_level={{ LOG_LEVEL }} marker=plain-conf\n")
    config.write(
        "environments/dev/worker.yaml",
        config.read("environments/dev/worker.yaml").replace("template: 1.0.0", "template: HEAD"),
    )
    config.commit("worker at HEAD with a config file")
    world.ok("apply", "dev")
    assert any(b"marker=plain-conf" in data for data in _namespace_data(k8s_namespace)), (
        "the config file reached a ConfigMap: the attack path is live"
    )

    (config.root / "templates/worker/app.conf.j2").unlink()
    os.symlink(target, config.root / "templates/worker/app.conf.j2")
    config.commit("app.conf -> the private key")
    outputs = [world.cc("plan", "dev"), world.cc("apply", "dev"), world.cc("reconcile", "dev")]

    assert outputs[1].code == 1, outputs[1].output
    assert "templates/worker/app.conf.j2 is a symbolic link" in outputs[1].output
    for result in outputs:
        assert secret not in result.output.encode(), result.output
    assert not any(secret in data for data in _namespace_data(k8s_namespace))
    assert secret not in world.all_objects()
    assert files_containing(world.cache_home, secret) == []
    assert files_containing(world.state_home, secret) == []
    assert secret.decode() not in world.run_store_dump()
