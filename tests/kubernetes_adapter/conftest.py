"""Helpers for the Kubernetes adapter tests: releases built the way the use case builds them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from configcenter.adapters.k8s_manifests import SERVICE_LABEL
from configcenter.adapters.kubernetes import KubernetesPlatform
from configcenter.ports.platform import Deployable, PlatformTarget
from tests.support.k8s_fixtures import version_in_use, versions_referenced

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
    replicas: int | None = 2,
    deadline: int = 600,
    pod_labels: Mapping[str, str] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    manifest: str | None = None,
) -> Deployable:
    """A release as the use case hands it over; the digest covers files and values.

    `manifest` replaces the Deployment + Service written to deployment.yaml.
    """
    labels = {"app": service, **(pod_labels or {})}
    image_line = f"image: {manifest_image}" if manifest_image else "imagePullPolicy: IfNotPresent"
    files = {
        "deployment.yaml": (
            manifest
            if manifest is not None
            else DEPLOYMENT.format(
                service=service,
                replicas=replicas,
                deadline=deadline,
                pod_labels=json.dumps(labels),
                image_line=image_line,
            )
        ).encode(),
        "app.env": env_file.encode(),
        **(extra_files or {}),
    }
    vals = dict(values if values is not None else {"REGION": "eu"})
    digest = hashlib.sha256(
        json.dumps(
            {
                "files": {k: hashlib.sha256(v).hexdigest() for k, v in files.items()},
                "values": vals,
                "s": secrets,
            },
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


class Cluster:
    """Read-only views of the namespace through the plain client, to check what landed."""

    def __init__(self, ns: Any) -> None:
        from kubernetes import client

        self.namespace: str = ns.name
        self._api = ns.api_client()
        self.apps = client.AppsV1Api(self._api)
        self.core = client.CoreV1Api(self._api)

    def close(self) -> None:
        self._api.close()

    def deployment(self, name: str = "api") -> Any:
        return self.apps.read_namespaced_deployment(name, self.namespace)

    def replica_sets(self, service: str = "api") -> dict[str, Any]:
        items: list[Any] = self.apps.list_namespaced_replica_set(
            self.namespace, label_selector=f"{SERVICE_LABEL}={service}"
        ).items
        return {rs.metadata.labels["pod-template-hash"]: rs for rs in items}

    def current_hash(self, name: str = "api") -> str:
        revision = self.deployment(name).metadata.annotations["deployment.kubernetes.io/revision"]
        for template_hash, rs in self.replica_sets().items():
            if rs.metadata.annotations["deployment.kubernetes.io/revision"] == revision:
                return template_hash
        raise AssertionError(f"no ReplicaSet with revision {revision}")

    def pods(self, template_hash: str, service: str = "api") -> list[Any]:
        """The pods of one ReplicaSet of the service (by its pod-template-hash)."""
        selector = f"{SERVICE_LABEL}={service},pod-template-hash={template_hash}"
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def config_map(self, name: str = "api-config") -> Any:
        """A ConfigMap; a versioned one's base name (`api-config`, `api-files`) reads the
        version the service's workloads use now."""
        return self.core.read_namespaced_config_map(self.in_use(name), self.namespace)

    def secret(self, name: str = "api-secrets") -> Any:
        """A Secret; a base name (`api-secrets`, `api-secret-files`) reads the one in use."""
        return self.core.read_namespaced_secret(self.in_use(name), self.namespace)

    def in_use(self, name: str) -> str:
        """The version of `<service>-config|files|secrets|secret-files` the workloads refer
        to; other names as given."""
        return version_in_use(self._api, self.namespace, name)

    def referenced_names(self, service: str, role: str) -> set[str]:
        return versions_referenced(self._api, self.namespace, service, role)

    def exists(self, kind: str, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        read = {
            "Deployment": self.apps.read_namespaced_deployment,
            "ConfigMap": self.core.read_namespaced_config_map,
            "Secret": self.core.read_namespaced_secret,
            "Service": self.core.read_namespaced_service,
            "ServiceAccount": self.core.read_namespaced_service_account,
        }[kind]
        try:
            read(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


@pytest.fixture
def cluster(k8s_namespace: Any) -> Iterator[Cluster]:
    view = Cluster(k8s_namespace)
    yield view
    view.close()


@pytest.fixture
def platform(k8s_namespace: Any) -> KubernetesPlatform:
    return KubernetesPlatform(
        target_for(k8s_namespace.name), kubeconfig=str(k8s_namespace.kubeconfig)
    )
