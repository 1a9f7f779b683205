"""reconcile against the real control plane: desired state applied with apply_env first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from configcenter.usecases.apply import ApplyOptions, apply_env
from configcenter.usecases.reconcile import reconcile
from tests.support.serve_fixtures import ShopWorld, make_shop_world

pytestmark = pytest.mark.k8s

LABELS = {
    "app.kubernetes.io/managed-by": "configcenter",
    "configcenter.io/env": "dev",
}


@pytest.fixture
def deployed(tmp_path: Path, k8s_namespace: Any, private_xdg: Path) -> ShopWorld:
    """The shop's dev env applied and healthy in the test's namespace."""
    world = make_shop_world(
        tmp_path / "w", namespace=k8s_namespace.name, kubeconfig=k8s_namespace.kubeconfig
    )
    result = apply_env(world.workspace(), "dev", ApplyOptions(build=False))
    assert [(r.service, r.outcome) for r in result.results] == [("api", "healthy")]
    return world


def apps(ns: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(ns.api_client())


def test_no_drift_right_after_deploy(deployed: ShopWorld) -> None:
    report = reconcile(deployed.workspace(), "dev")
    assert report.drifts == [], report.to_json()
    [api] = report.services
    assert (api.status, api.desired_image, api.live_image) == (
        "in_sync",
        "registry.test/shop/api:1.0",
        "registry.test/shop/api:1.0",
    )
    assert (api.desired_replicas, api.live_replicas) == (2, 2)
    run = deployed.workspace().run_store.get(report.run_id or "")
    assert run is not None and (run.kind, run.outcome) == ("reconcile", "noop")


def test_manual_image_and_replica_change_is_drift_and_heal_fixes_it(
    deployed: ShopWorld, k8s_namespace: Any
) -> None:
    api = apps(k8s_namespace)
    api.patch_namespaced_deployment(
        "api",
        k8s_namespace.name,
        {
            "spec": {
                "replicas": 5,
                "template": {
                    "spec": {"containers": [{"name": "app", "image": "registry.test/evil:6"}]}
                },
            }
        },
    )
    report = reconcile(deployed.workspace(), "dev")
    found = {(d.field, d.desired, d.live) for d in report.drifts}
    assert ("image", "registry.test/shop/api:1.0", "registry.test/evil:6") in found
    assert ("replicas", "2", "5") in found
    assert report.services[0].status == "drifted"

    healed = reconcile(deployed.workspace(), "dev", heal=True)
    assert [(r.service, r.outcome) for r in healed.healed] == [("api", "healthy")]
    live = api.read_namespaced_deployment("api", k8s_namespace.name)
    assert live.spec.replicas == 2
    assert live.spec.template.spec.containers[0].image == "registry.test/shop/api:1.0"
    store = deployed.workspace().run_store
    run = store.get(healed.run_id or "")
    assert run is not None and (run.kind, run.outcome) == ("reconcile", "succeeded")
    assert "healing" in (store.get(healed.run_id or "") or run).log or run.details["healed"]
    assert reconcile(deployed.workspace(), "dev").drifts == []


def test_orphans_and_missing_services_are_reported(deployed: ShopWorld, k8s_namespace: Any) -> None:
    from kubernetes import client

    core = client.CoreV1Api(k8s_namespace.api_client())
    core.create_namespaced_config_map(
        k8s_namespace.name,
        {
            "metadata": {
                "name": "ghost-config",
                "labels": {**LABELS, "configcenter.io/service": "ghost"},
            },
            "data": {"A": "1"},
        },
    )
    core.create_namespaced_config_map(
        k8s_namespace.name,
        {
            "metadata": {
                "name": "api-leftover",
                "labels": {**LABELS, "configcenter.io/service": "api"},
            }
        },
    )
    report = reconcile(deployed.workspace(), "dev")
    by_service = {s.service: s for s in report.services}
    assert by_service["ghost"].status == "orphan"
    assert ("ConfigMap/api-leftover", None, "present", "orphan") in {
        (d.field, d.desired, d.live, d.kind) for d in by_service["api"].drifts
    }

    apps(k8s_namespace).delete_namespaced_deployment("api", k8s_namespace.name)
    core.delete_namespaced_config_map("api-leftover", k8s_namespace.name)
    core.delete_namespaced_service("api", k8s_namespace.name)
    # The record ConfigMap and every config and secret version of the service.
    selector = "configcenter.io/service=api"
    core.delete_collection_namespaced_config_map(k8s_namespace.name, label_selector=selector)
    core.delete_collection_namespaced_secret(k8s_namespace.name, label_selector=selector)
    gone = reconcile(deployed.workspace(), "dev")
    api = next(s for s in gone.services if s.service == "api")
    assert api.status == "missing"
    assert [(d.field, d.kind) for d in api.drifts] == [("service", "missing")]


def test_cli_reconcile_json_and_exit_code(deployed: ShopWorld, k8s_namespace: Any) -> None:
    apps(k8s_namespace).patch_namespaced_deployment(
        "api", k8s_namespace.name, {"spec": {"replicas": 3}}
    )
    base = [sys.executable, "-m", "configcenter", "-C", str(deployed.config.root)]
    base += ["--run-store", deployed.run_store_url]
    proc = subprocess.run(
        [*base, "reconcile", "dev", "--json", "--exit-code"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    data = json.loads(proc.stdout)
    assert data["drift"] is True
    assert {"service": "api", "field": "replicas", "desired": "2", "live": "3"}.items() <= next(
        d for d in data["services"][0]["drifts"] if d["field"] == "replicas"
    ).items()
    table = subprocess.run(
        [*base, "reconcile", "dev"], capture_output=True, text=True, timeout=180, check=False
    )
    assert table.returncode == 0, table.stderr
    assert "replicas" in table.stdout and "api" in table.stdout
