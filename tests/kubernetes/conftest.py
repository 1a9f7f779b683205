"""Helpers for the Kubernetes adapter tests: releases built the way the use case builds them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from configcenter.ports.platform import Deployable, PlatformTarget

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {service}
  labels: {{app: {service}}}
spec:
  replicas: {replicas}
  progressDeadlineSeconds: {deadline}
  revisionHistoryLimit: 10
  selector:
    matchLabels: {{app: {service}}}
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {pod_labels}
    spec:
      containers:
      - name: app
        {image_line}
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: {service}
spec:
  selector: {{app: {service}}}
  ports:
  - port: 80
    targetPort: 8080
"""

MakeDeployable = Callable[..., Deployable]


def make_deployable(
    *,
    service: str = "api",
    env: str = "dev",
    release_id: str = "r1",
    image: str = "registry.test/shop/api:1.0",
    manifest_image: str | None = None,
    values: Mapping[str, str] | None = None,
    env_file: str = "LOG_LEVEL=info\n",
    secrets: Mapping[str, str] | None = None,
    replicas: int = 2,
    deadline: int = 600,
    pod_labels: Mapping[str, str] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> Deployable:
    """A release as the use case hands it over; the digest covers files and values."""
    labels = {"app": service, **(pod_labels or {})}
    image_line = f"image: {manifest_image}" if manifest_image else "imagePullPolicy: IfNotPresent"
    files = {
        "deployment.yaml": DEPLOYMENT.format(
            service=service,
            replicas=replicas,
            deadline=deadline,
            pod_labels=json.dumps(labels),
            image_line=image_line,
        ).encode(),
        "app.env": env_file.encode(),
        **(extra_files or {}),
    }
    vals = dict(values if values is not None else {"REGION": "eu"})
    digest = hashlib.sha256(
        json.dumps(
            {"files": {k: v.decode() for k, v in files.items()}, "values": vals, "s": secrets},
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    return Deployable(
        env=env,
        service=service,
        release_id=release_id,
        image=image,
        config_digest=f"sha256:{digest}",
        files=files,
        values=vals,
        secrets=dict(secrets or {}),
        replicas=replicas,
    )


@pytest.fixture
def deployable() -> MakeDeployable:
    return make_deployable


def target_for(namespace: str, env: str = "dev", **settings: str) -> PlatformTarget:
    return PlatformTarget(
        name="local", kind="kubernetes", env=env, settings={"namespace": namespace, **settings}
    )


def strip(obj: Any) -> Any:
    """JSON round trip: plain dicts and lists for comparisons."""
    return json.loads(json.dumps(obj))
