"""serve against the real control plane: scheduled reconcile reports drift, then heals it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.serve.conftest import start_served
from tests.support.helpers import poll
from tests.support.serve_fixtures import ServeProcess, http

pytestmark = pytest.mark.k8s

ENV = "auto_apply: true\nreconcile: {interval: 1s, heal: %s}\n"


def test_schedule_reports_drift_in_api_and_page_then_heals(
    tmp_path: Path, k8s_namespace: Any, serve_processes: list[ServeProcess]
) -> None:
    from kubernetes import client

    served = start_served(
        tmp_path,
        serve_processes,
        ENV % "false",
        namespace=k8s_namespace.name,
        kubeconfig=k8s_namespace.kubeconfig,
    )
    try:
        first = served.push_change(
            "environments/dev/api.yaml",
            "template: 1.0.0\nimage: {ref: registry.test/shop/api:1.5}\nreplicas: 2\n",
            "api 1.5",
        )
        assert first.post(served.url + "/hooks/gitlab")[0] == 202

        def api_cell() -> dict[str, Any]:
            cell: dict[str, Any] = served.get("/api/matrix")["cells"]["dev"]["api"]
            return cell

        poll(
            lambda: (api_cell()["release"] or {}).get("outcome") == "healthy",
            180,
            "api 1.5 to roll out healthy",
        )
        apps = client.AppsV1Api(k8s_namespace.api_client())
        apps.patch_namespaced_deployment("api", k8s_namespace.name, {"spec": {"replicas": 4}})

        def drifted() -> dict[str, Any] | None:
            drift = api_cell()["drift"]
            return drift if drift and drift["count"] else None

        drift = poll(drifted, 120, "a scheduled reconcile to report the drift")
        assert {"field": "replicas", "desired": "2", "live": "4"}.items() <= next(
            d for d in drift["items"] if d["field"] == "replicas"
        ).items()
        page = http("GET", served.url + "/", headers=served.auth()).body.decode()
        assert "⚠ drift" in page
        metrics = http("GET", served.url + "/metrics", headers=served.auth()).body.decode()
        assert 'configcenter_drift{env="dev",state="known"}' in metrics

        # Turning heal on is a config change like any other: a push. Without auto_apply, so
        # the push applies nothing (an apply would itself roll the hand-scaled Deployment
        # back to its release's replicas) and the heal is the scheduled reconcile's.
        healing = ENV.replace("auto_apply: true", "auto_apply: false") % "true"
        second = served.push_change("environments/dev/_env.yaml", healing, "heal dev")
        assert second.post(served.url + "/hooks/gitlab")[0] == 202
        poll(
            lambda: apps.read_namespaced_deployment("api", k8s_namespace.name).spec.replicas == 2,
            180,
            "the scheduled reconcile to heal replicas back to 2",
        )
        healed = poll(
            lambda: [r for r in served.runs(kind="reconcile") if r["details"].get("healed")],
            120,
            "the healing reconcile run to be recorded",
        )
        assert all(r["trigger"] == "schedule" for r in healed)
        assert json.dumps(healed[-1]["details"]["healed"]).count('"healthy"') >= 1
        poll(lambda: api_cell()["drift"]["count"] == 0, 120, "drift to clear")
    finally:
        served.gitlab.stop()
