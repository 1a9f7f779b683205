"""The platform contract suite runs once per platform adapter, each on its own bed.

A bed opens the adapter, builds releases the way that platform renders them,
and reads what runs straight from the platform (the Kubernetes API, the
Marathon double's state, the fake's world), never through the adapter under
test. Adding a platform: its module, its registry entry, and one bed here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import pytest
import requests

from configcenter import wiring
from configcenter.adapters.k8s_manifests import SERVICE_LABEL
from configcenter.adapters.marathon import MarathonPlatform
from configcenter.core import kinds
from configcenter.core.redact import Redactor
from configcenter.ports.platform import Deployable, Platform, PlatformTarget
from tests.kubernetes_adapter.conftest import make_deployable
from tests.platform import fake_platform
from tests.support.helpers import poll
from tests.support.marathon_double import MarathonDouble


class Bed(Protocol):
    kind: str
    platform: Platform
    healthy_timeout: float
    failing_timeout: float
    # Re-applying an earlier release brings back its revision (Kubernetes reuses the
    # old ReplicaSet); Marathon deploys a new app version with the old content.
    rollback_reuses_revision: bool

    def release(
        self,
        release_id: str,
        *,
        service: str = "api",
        values: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        failing: bool = False,
        replicas: int = 2,
    ) -> Deployable: ...

    def revision(self, service: str = "api") -> str | None:
        """What runs now, as the platform names it; None when nothing of it runs."""
        ...

    def running_image(self, service: str = "api") -> str | None: ...

    def leftovers(self, service: str) -> list[str]:
        """Anything of the service still on the platform (objects, app, secrets)."""
        ...

    def scale_by_hand(self, service: str, replicas: int) -> None:
        """Change the replica count on the platform itself, as an operator would."""
        ...


class ObjectDriftBed(Bed, Protocol):
    """A bed whose platform has the `object_drift` capability."""

    def add_env_by_hand(self, service: str, key: str, value: str) -> None:
        """Add an environment entry on the platform itself, as another manager would."""
        ...


class KubernetesBed:
    kind = "kubernetes"
    healthy_timeout = 60.0
    failing_timeout = 60.0
    rollback_reuses_revision = True

    def __init__(self, namespace: Any) -> None:
        from kubernetes import client

        self.namespace: str = namespace.name
        target = PlatformTarget(
            "local",
            "kubernetes",
            "dev",
            {"namespace": namespace.name, "kubeconfig": str(namespace.kubeconfig)},
        )
        self.platform = wiring.open_platform(target, Redactor())
        self._api = namespace.api_client()
        self.apps = client.AppsV1Api(self._api)
        self.core = client.CoreV1Api(self._api)

    def close(self) -> None:
        self._api.close()

    def release(
        self,
        release_id: str,
        *,
        service: str = "api",
        values: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        failing: bool = False,
        replicas: int = 2,
    ) -> Deployable:
        image = (
            f"registry.test/never-ready/{service}:2" if failing else f"registry.test/{service}:1"
        )
        return make_deployable(
            service=service,
            release_id=release_id,
            image=image,
            values={"REGION": "eu", **(values or {})},
            secrets=secrets,
            replicas=replicas,
        )

    def _deployment(self, service: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.apps.read_namespaced_deployment(service, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def revision(self, service: str = "api") -> str | None:
        deployment = self._deployment(service)
        if deployment is None:
            return None
        revision = deployment.metadata.annotations["deployment.kubernetes.io/revision"]
        sets = self.apps.list_namespaced_replica_set(
            self.namespace, label_selector=f"{SERVICE_LABEL}={service}"
        ).items
        for rs in sets:
            if rs.metadata.annotations["deployment.kubernetes.io/revision"] == revision:
                return str(rs.metadata.labels["pod-template-hash"])
        raise AssertionError(f"{service}: no ReplicaSet with revision {revision}")

    def running_image(self, service: str = "api") -> str | None:
        deployment = self._deployment(service)
        if deployment is None:
            return None
        return str(deployment.spec.template.spec.containers[0].image)

    def leftovers(self, service: str) -> list[str]:
        selector = f"{SERVICE_LABEL}={service}"
        found = [f"Deployment/{d.metadata.name}" for d in self._list("deployment", selector)]
        for kind in ("service", "config_map", "secret"):
            found += [f"{kind}/{o.metadata.name}" for o in self._list(kind, selector)]
        return found

    def scale_by_hand(self, service: str, replicas: int) -> None:
        """`kubectl scale deployment/SERVICE --replicas=N`: the scale subresource."""
        self.apps.patch_namespaced_deployment_scale(
            service, self.namespace, {"spec": {"replicas": replicas}}
        )

    def add_env_by_hand(self, service: str, key: str, value: str) -> None:
        """`kubectl set env deployment/SERVICE KEY=VALUE`: a strategic merge patch."""
        container = self._deployment(service).spec.template.spec.containers[0].name
        env = [{"name": key, "value": value}]
        self.apps.patch_namespaced_deployment(
            service,
            self.namespace,
            {"spec": {"template": {"spec": {"containers": [{"name": container, "env": env}]}}}},
            field_manager="kubectl-set",
        )

    def _list(self, kind: str, selector: str) -> list[Any]:
        api = self.apps if kind == "deployment" else self.core
        listing = getattr(api, f"list_namespaced_{kind}")
        return list(listing(self.namespace, label_selector=selector).items)


MARATHON_APP: dict[str, Any] = {
    "id": "app",
    "cpus": 0.1,
    "mem": 64,
    "container": {"type": "DOCKER", "docker": {"image": "placeholder"}},
    "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0}],
    "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1},
}


def plain_release(
    release_id: str,
    service: str,
    image: str,
    values: Mapping[str, str] | None,
    secrets: Mapping[str, str] | None,
    replicas: int,
    files: Mapping[str, bytes],
) -> Deployable:
    """A release whose config digest covers its values (REGION=eu unless overridden)."""
    merged = {"REGION": "eu", **(values or {})}
    return Deployable(
        env="dev",
        service=service,
        release_id=release_id,
        image=image,
        config_digest="sha256:" + json.dumps(merged, sort_keys=True),
        files=dict(files),
        values=merged,
        secrets=dict(secrets or {}),
        replicas=replicas,
    )


class MarathonBed:
    kind = "marathon"
    healthy_timeout = 10.0
    failing_timeout = 1.0
    rollback_reuses_revision = False

    def __init__(self, server: MarathonDouble) -> None:
        self.server = server
        target = PlatformTarget(
            "mesos",
            "marathon",
            "dev",
            {
                "url": server.url,
                "group": "/shop/dev",
                "secrets_url": f"{server.url}/secrets/v1",
            },
        )
        # Built directly, not through the registry, for a fast poll (the factory has none).
        self.platform = MarathonPlatform(target, poll_interval=0.02, retry_delay=0.01)

    def release(
        self,
        release_id: str,
        *,
        service: str = "api",
        values: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        failing: bool = False,
        replicas: int = 2,
    ) -> Deployable:
        image = f"127.0.0.1:5000/shop/{service}:" + ("never-ready" if failing else "1")
        files = {"marathon.json": json.dumps(MARATHON_APP).encode()}
        return plain_release(release_id, service, image, values, secrets, replicas, files)

    def _app(self, service: str) -> dict[str, Any] | None:
        path = f"/shop/dev/{service}"
        return self.server.app_json(path) if path in self.server.apps else None

    def revision(self, service: str = "api") -> str | None:
        app = self._app(service)
        return None if app is None else str(app["version"])

    def running_image(self, service: str = "api") -> str | None:
        app = self._app(service)
        return None if app is None else str(app["container"]["docker"]["image"])

    def leftovers(self, service: str) -> list[str]:
        found = [f"app {service}"] if self._app(service) is not None else []
        prefix = f"shop/dev/{service}/"
        return found + [f"secret {p}" for _, p in self.server.secret_values if p.startswith(prefix)]

    def scale_by_hand(self, service: str, replicas: int) -> None:
        """`dcos marathon app update /shop/dev/SERVICE instances=N`: a partial PUT."""
        response = requests.put(
            f"{self.server.url}/v2/apps/shop/dev/{service}",
            json={"instances": replicas},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        deployment = response.json()["deploymentId"]

        def done() -> bool:
            running = requests.get(f"{self.server.url}/v2/deployments", timeout=10).json()
            return all(d["id"] != deployment for d in running)

        poll(done, self.healthy_timeout, f"the scale of {service} to finish")


class FakeBed:
    kind = "fake"
    healthy_timeout = 1.0
    failing_timeout = 1.0
    rollback_reuses_revision = True

    def __init__(self) -> None:
        self.name = uuid.uuid4().hex
        self.world = fake_platform.World()
        fake_platform.WORLDS[self.name] = self.world
        target = PlatformTarget("sandbox", "fake", "dev", {"world": self.name})
        self.platform = wiring.open_platform(target, Redactor())

    def close(self) -> None:
        fake_platform.WORLDS.pop(self.name, None)

    def release(
        self,
        release_id: str,
        *,
        service: str = "api",
        values: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        failing: bool = False,
        replicas: int = 2,
    ) -> Deployable:
        image = f"registry.test/{service}:" + ("never-ready" if failing else "1")
        return plain_release(release_id, service, image, values, secrets, replicas, {})

    def revision(self, service: str = "api") -> str | None:
        app = self.world.apps.get(("dev", service))
        return None if app is None else app.revision

    def running_image(self, service: str = "api") -> str | None:
        app = self.world.apps.get(("dev", service))
        return None if app is None else str(app.spec["image"])

    def leftovers(self, service: str) -> list[str]:
        return [f"app {service}"] if ("dev", service) in self.world.apps else []

    def scale_by_hand(self, service: str, replicas: int) -> None:
        with self.world.lock:
            self.world.apps[("dev", service)].spec["replicas"] = replicas

    def add_env_by_hand(self, service: str, key: str, value: str) -> None:
        with self.world.lock:
            self.world.apps[("dev", service)].spec["env"][key] = value


@pytest.fixture
def fake_kind(monkeypatch: pytest.MonkeyPatch) -> kinds.AdapterKind:
    """The fake platform's registry entry, listed next to the product's own."""
    registry = kinds.Registry((*kinds.REGISTRY.entries, fake_platform.ENTRY))
    monkeypatch.setattr(kinds, "REGISTRY", registry)
    return fake_platform.ENTRY


#: Every platform the suite runs on, with the registry entry that says what it can do.
BEDS = {"kubernetes": "kubernetes", "marathon": "marathon", "fake": "fake"}


def _entry(kind: str) -> kinds.AdapterKind:
    found = fake_platform.ENTRY if kind == "fake" else kinds.REGISTRY.find("platform", kind)
    assert found is not None, kind
    return found


def _params(capability: str | None = None) -> list[Any]:
    """The beds (of the platforms with `capability`), Kubernetes marked as needing the bed."""
    chosen = [k for k in BEDS if capability is None or capability in _entry(k).capabilities]
    return [pytest.param(k, marks=pytest.mark.k8s) if k == "kubernetes" else k for k in chosen]


def _open_bed(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "kubernetes":
        k8s = KubernetesBed(request.getfixturevalue("k8s_namespace"))
        yield k8s
        k8s.close()
    elif request.param == "marathon":
        yield MarathonBed(request.getfixturevalue("marathon_server"))
    else:
        request.getfixturevalue("fake_kind")
        fake = FakeBed()
        yield fake
        fake.close()


@pytest.fixture(params=_params())
def bed(request: pytest.FixtureRequest) -> Iterator[Bed]:
    yield from _open_bed(request)


@pytest.fixture(params=_params(kinds.OBJECT_DRIFT))
def object_drift_bed(request: pytest.FixtureRequest) -> Iterator[ObjectDriftBed]:
    """Only platforms whose registry entry declares `object_drift` (not Marathon: its diff
    is the summary, and a PUT of the definition replaces the whole app anyway)."""
    yield from _open_bed(request)
