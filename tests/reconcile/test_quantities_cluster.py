"""Resource quantities after a real apply: the API server's canonical form is not drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from configcenter.usecases.apply import ApplyOptions, apply_env
from configcenter.usecases.reconcile import reconcile
from tests.support.serve_fixtures import API_TEMPLATE, ShopWorld, make_shop_world

pytestmark = pytest.mark.k8s

RESOURCES = """\
                image: {{ image }}
                resources:
                  requests: {cpu: 0.5, memory: 1Gi}
                  limits: {cpu: 1.5, memory: 1536Mi}
                volumeMounts:
                - {name: tmp, mountPath: /tmp}
              volumes:
              - name: tmp
                emptyDir: {sizeLimit: 0.5Gi}
"""


@pytest.fixture
def deployed(tmp_path: Path, k8s_namespace: Any, private_xdg: Path) -> ShopWorld:
    """dev runs template 1.1.0 of api, whose Deployment sets resources as people write them."""
    world = make_shop_world(
        tmp_path / "w", namespace=k8s_namespace.name, kubeconfig=k8s_namespace.kubeconfig
    )
    template = API_TEMPLATE["deployment.yaml.j2"]
    assert "                image: {{ image }}\n" in template
    world.config.write(
        "templates/api/deployment.yaml.j2",
        template.replace("                image: {{ image }}\n", RESOURCES).replace(
            "                ports:\n                - containerPort: 8080\n", ""
        ),
    )
    world.config.commit("api 1.1.0: resources")
    world.config.tag("api/1.1.0")
    world.config.write(
        "environments/dev/api.yaml",
        "template: 1.1.0\nimage: {ref: registry.test/shop/api:1.0}\nreplicas: 2\n",
    )
    world.config.commit("dev: api 1.1.0")
    world.push_config()
    result = apply_env(world.workspace(), "dev", ApplyOptions(build=False))
    assert [(r.service, r.outcome) for r in result.results] == [("api", "healthy")], [
        r.reason for r in result.results
    ]
    return world


def live_pod_spec(ns: Any) -> Any:
    from kubernetes import client

    with ns.api_client() as api:
        deployment: Any = client.AppsV1Api(api).read_namespaced_deployment("api", ns.name)
    return deployment.spec.template.spec


def test_quantities_the_server_rewrote_are_not_drift(
    deployed: ShopWorld, k8s_namespace: Any
) -> None:
    pod = live_pod_spec(k8s_namespace)
    container = pod.containers[0]
    # The server keeps its canonical form, not what the template wrote.
    assert pod.volumes[0].empty_dir.size_limit == "512Mi"
    assert container.resources.requests == {"cpu": "500m", "memory": "1Gi"}
    assert container.resources.limits["cpu"] == "1500m"
    assert container.resources.limits["memory"] == "1536Mi"

    report = reconcile(deployed.workspace(), "dev")
    assert report.drifts == [], report.to_json()
    assert report.services[0].status == "in_sync"


def test_a_changed_live_cpu_is_drift(deployed: ShopWorld, k8s_namespace: Any) -> None:
    from kubernetes import client

    with k8s_namespace.api_client() as api:
        client.AppsV1Api(api).patch_namespaced_deployment(
            "api",
            k8s_namespace.name,
            {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [{"name": "app", "resources": {"requests": {"cpu": "1"}}}]
                        }
                    }
                }
            },
        )
    report = reconcile(deployed.workspace(), "dev")
    path = "Deployment/api spec.template.spec.containers[app].resources.requests.cpu"
    assert [(d.field, d.desired, d.live) for d in report.drifts] == [(path, "0.5", "1")]
    assert report.services[0].status == "drifted"
