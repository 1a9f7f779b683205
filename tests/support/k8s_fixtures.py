"""pytest fixtures giving tests a real Kubernetes API (see ``k8s_testbed``).

* ``k8s_cluster`` (session): builds the bed if needed, starts it once per
  session on free loopback ports and stops it at the end. It is skipped only
  when the binaries are missing and ``go`` is not installed to build them.
* ``k8s_namespace`` (function): a fresh namespace per test, deleted afterwards,
  so tests never see each other's objects.

Set ``CONFIGCENTER_TEST_KUBECONFIG=/path/to/kubeconfig`` to run the same tests
against an existing cluster instead; nothing is built or started then (pods on
such a cluster follow its own kubelets, not the bed's never-ready convention).

``kubernetes`` is imported lazily so that loading this plugin never breaks
test runs that do not use the fixtures.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from tests.support import k8s_testbed
from tests.support.helpers import poll

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

EXISTING_KUBECONFIG_ENV = "CONFIGCENTER_TEST_KUBECONFIG"
NAMESPACE_LABEL = "testbed.configcenter.io/test-namespace"
NEVER_READY_LABEL = k8s_testbed.NEVER_READY_LABEL
NEVER_READY_IMAGE_MARK = k8s_testbed.NEVER_READY_IMAGE_MARK
FAILS_JOB_IMAGE_MARK = k8s_testbed.FAILS_JOB_IMAGE_MARK
FAILS_JOB_LOG_ANNOTATION = k8s_testbed.FAILS_JOB_LOG_ANNOTATION

T = TypeVar("T")


@dataclass(frozen=True)
class K8sCluster:
    """A reachable cluster: its admin kubeconfig, API URL and a client factory."""

    kubeconfig: Path
    api_url: str

    def api_client(self) -> ApiClient:
        """A new ``kubernetes.client.ApiClient`` for this cluster (close it after use)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


@dataclass(frozen=True)
class K8sNamespace(K8sCluster):
    """A cluster plus the name of the namespace that belongs to one test."""

    name: str


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: needs the Kubernetes test bed (k8s_cluster)")


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8sCluster]:
    """The session's cluster: an existing one, or a bed started for this session."""
    existing = os.environ.get(EXISTING_KUBECONFIG_ENV)
    if existing:
        kubeconfig = Path(existing).expanduser().resolve()
        with K8sCluster(kubeconfig, api_url="").api_client() as api:
            api_url = api.configuration.host
        yield K8sCluster(kubeconfig, api_url)
        return
    if not k8s_testbed.is_built():
        if shutil.which("go") is None:
            pytest.skip(
                "Kubernetes test bed binaries are not built and `go` is not installed; "
                f"install Go or set {EXISTING_KUBECONFIG_ENV}"
            )
        k8s_testbed.build()
    state_dir = tmp_path_factory.mktemp("k8s-testbed")
    bed = k8s_testbed.up(state_dir, tie_to_parent=True)
    try:
        yield K8sCluster(bed.kubeconfig, bed.api_url)
    finally:
        k8s_testbed.down(state_dir)


def _namespace_name(test_name: str) -> str:
    """A valid, unique DNS-1123 label that still says which test owns it."""
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].rstrip("-")
    return f"t-{slug}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def k8s_namespace(
    k8s_cluster: K8sCluster, request: pytest.FixtureRequest
) -> Iterator[K8sNamespace]:
    """A fresh namespace for one test, deleted (in the background) afterwards."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    name = _namespace_name(request.node.name)
    body = client.V1Namespace(
        metadata=client.V1ObjectMeta(name=name, labels={NAMESPACE_LABEL: "true"})
    )
    with k8s_cluster.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace(body)
        # Clusters that keep the ServiceAccount admission plugin (not the bed)
        # refuse pods until the namespace's "default" ServiceAccount exists.
        poll(
            lambda: (
                core.list_namespaced_service_account(
                    name, field_selector="metadata.name=default"
                ).items
            ),
            30,
            f"ServiceAccount {name}/default",
        )
    try:
        yield K8sNamespace(k8s_cluster.kubeconfig, k8s_cluster.api_url, name)
    finally:
        with k8s_cluster.api_client() as api:
            try:
                client.CoreV1Api(api).delete_namespace(name, propagation_policy="Background")
            except ApiException as error:
                if error.status != 404:
                    raise


VERSIONED_ROLES = ("secret-files", "config", "files", "secrets")


def versions_referenced(api_client: Any, namespace: str, service: str, role: str) -> set[str]:
    """Names of the `<service>-<role>-*` ConfigMaps/Secrets the service's workloads refer to,
    read from their pod templates as kubectl shows them (envFrom and projected volumes)."""
    from kubernetes import client

    apps = client.AppsV1Api(api_client)
    selector = f"configcenter.io/service={service}"
    workloads = [
        *apps.list_namespaced_deployment(namespace, label_selector=selector).items,
        *apps.list_namespaced_stateful_set(namespace, label_selector=selector).items,
        *apps.list_namespaced_daemon_set(namespace, label_selector=selector).items,
    ]
    prefix = f"{service}-{role}-"
    names: set[str] = set()
    for workload in workloads:
        pod = api_client.sanitize_for_serialization(workload.spec.template.spec)
        for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
            for source in container.get("envFrom") or []:
                ref = source.get("configMapRef") or source.get("secretRef") or {}
                names.add(ref.get("name", ""))
        for volume in pod.get("volumes") or []:
            for source in (volume.get("projected") or {}).get("sources") or []:
                ref = source.get("configMap") or source.get("secret") or {}
                names.add(ref.get("name", ""))
    return {n for n in names if n.startswith(prefix) and n[len(prefix) :].isalnum()}


def version_in_use(api_client: Any, namespace: str, name: str) -> str:
    """The live version of `<service>-config|files|secrets|secret-files` in use; other names,
    and a base name nothing refers to, as given."""
    roles = [r for r in VERSIONED_ROLES if name.endswith("-" + r)]
    if not roles:
        return name
    service = name[: -len(roles[0]) - 1]
    found = sorted(versions_referenced(api_client, namespace, service, roles[0]))
    if not found:
        return name
    assert len(found) == 1, f"workloads of {service} refer to several {roles[0]}: {found}"
    return found[0]
