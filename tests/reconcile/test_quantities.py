"""Kubernetes drift compares quantities by amount, everything else exactly (no cluster)."""

from __future__ import annotations

from typing import Any

from configcenter.adapters.k8s_diff import object_drifts


def deployment(requests: dict[str, Any], limits: dict[str, Any], size: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "resources": {"requests": requests, "limits": limits}}
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": size}}],
                }
            }
        },
    }


def pvc(storage: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"resources": {"requests": {"storage": storage}}},
    }


def drift_fields(desired: dict[str, Any], live: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    ref = f"{desired['kind']}/{desired['metadata']['name']}"
    return [(d.field, d.desired, d.live) for d in object_drifts("api", {ref: desired}, {ref: live})]


def test_quantities_written_differently_are_the_same_amount() -> None:
    rendered = deployment({"cpu": 0.5, "memory": "1Gi"}, {"cpu": 2, "memory": "1.5Gi"}, "1G")
    live = deployment({"cpu": "500m", "memory": "1024Mi"}, {"cpu": "2", "memory": "1536Mi"}, "1e9")
    assert drift_fields(rendered, live) == []
    assert drift_fields(pvc("1Gi"), pvc("1073741824")) == []
    assert (
        drift_fields(deployment({"cpu": 0.1}, {}, "1Ki"), deployment({"cpu": "100m"}, {}, "1024"))
        == []
    )


def test_a_different_amount_is_drift_shown_as_written() -> None:
    rendered = deployment({"cpu": 0.5, "memory": "1Gi"}, {}, "1G")
    live = deployment({"cpu": "1", "memory": "1G"}, {}, "1G")
    path = "Deployment/api spec.template.spec.containers[app].resources.requests"
    assert drift_fields(rendered, live) == [
        (f"{path}.cpu", "0.5", "1"),
        (f"{path}.memory", "1Gi", "1G"),
    ]
    assert drift_fields(pvc("1Gi"), pvc("2Gi")) == [
        ("PersistentVolumeClaim/data spec.resources.requests.storage", "1Gi", "2Gi")
    ]


def test_everything_that_is_not_a_quantity_compares_exactly() -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "api-config", "annotations": {"cpu": "0.5"}},
        "data": {"resources.requests.cpu": "0.5", "REPLICAS": "2"},
    }
    live = {
        **config_map,
        "metadata": {"name": "api-config", "annotations": {"cpu": "500m"}},
        "data": {"resources.requests.cpu": "500m", "REPLICAS": "2.0"},
    }
    assert sorted(f for f, _, _ in drift_fields(config_map, live)) == [
        "ConfigMap/api-config data.REPLICAS",
        "ConfigMap/api-config data.resources.requests.cpu",
        "ConfigMap/api-config metadata.annotations.cpu",
    ]
    # Not parseable as a quantity: exact, so a typo is drift rather than silently equal.
    assert drift_fields(
        deployment({"cpu": "half"}, {}, "1G"), deployment({"cpu": "500m"}, {}, "1G")
    )
    assert drift_fields(deployment({"cpu": True}, {}, "1G"), deployment({"cpu": "1"}, {}, "1G"))
