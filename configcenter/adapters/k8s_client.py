"""The Kubernetes API as one platform target reaches it: the connection, discovery, errors.

The official `kubernetes` client is imported only when a request is first made
(constructing the adapter, or a plan whose platform has no cluster configured
here, never pays for it). Every failure becomes a `PlatformError` that names
the step, with the API's own message, masked by the target's `Redactor`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

from configcenter.adapters.k8s_manifests import ManifestError, SourcedObject
from configcenter.core.redact import Redactor
from configcenter.ports.platform import PlatformError, PlatformTarget


class KubeClient:
    """The dynamic client of one target's cluster and namespace, built on first use."""

    def __init__(
        self, target: PlatformTarget, namespace: str, kubeconfig: str | None, redactor: Redactor
    ) -> None:
        self.target = target
        self.namespace = namespace
        self.context = target.settings.get("context") or None
        self.kubeconfig = kubeconfig
        self.redactor = redactor
        self._dynamic: Any = None
        self._lock = threading.Lock()

    def dynamic(self) -> Any:
        """The dynamic client, built on first use so constructing the adapter is cheap."""
        with self._lock:
            if self._dynamic is None:
                in_cluster = self.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST")
                if not in_cluster and not _kubeconfig_exists(self.kubeconfig):
                    # Said without importing the client (a quarter second a plan need not pay).
                    raise self._kubeconfig_error("no such file")
                from kubernetes import config, dynamic

                try:
                    api = config.new_client_from_config(
                        config_file=self.kubeconfig, context=self.context
                    )
                except Exception as exc:
                    if in_cluster:
                        api = _in_cluster_client()
                    else:
                        raise self._kubeconfig_error(str(exc)) from None
                try:
                    self._dynamic = dynamic.DynamicClient(api)
                except Exception as exc:
                    raise self.api_error("discover the API", exc) from None
            return self._dynamic

    def _kubeconfig_error(self, why: str) -> PlatformError:
        where = self.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        return PlatformError(
            f"platform {self.target.name!r}: cannot load kubeconfig {where}"
            f"{f' context {self.context!r}' if self.context else ''}: {why}; "
            "point KUBECONFIG at a valid file or fix platforms."
            f"{self.target.name}.context"
        )

    def resource(self, api_version: str, kind: str) -> Any:
        client = self.dynamic()
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return client.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise ManifestError(
                f"the cluster serves no {kind} in {api_version}; check apiVersion and kind"
            ) from None
        except PlatformError:
            raise
        except Exception as exc:
            raise self.api_error(f"discover {kind} ({api_version})", exc) from None

    def resource_for(self, obj: SourcedObject) -> Any:
        try:
            resource = self.resource(str(obj.body["apiVersion"]), obj.kind)
        except ManifestError as exc:
            raise ManifestError(f"{obj.source}: {obj.ref}: {exc}") from None
        if not resource.namespaced:
            raise ManifestError(
                f"{obj.source}: {obj.ref} is cluster-scoped; configcenter manages only objects "
                "inside the target namespace, so create it outside the service's templates"
            )
        return resource

    def get_json(self, resource: Any, **kwargs: Any) -> dict[str, Any]:
        response = resource.get(serialize=False, **kwargs)
        try:
            data: dict[str, Any] = json.loads(response.data)
        finally:
            response.release_conn()
        return data

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PlatformError:
            raise
        except Exception as exc:
            raise self.api_error(what, exc) from None

    def api_error(self, what: str, exc: BaseException) -> PlatformError:
        """A PlatformError naming the failed step, with the API's own message, masked."""
        status = getattr(exc, "status", None)
        if status is None:
            host = ""
            if self._dynamic is not None:
                host = f" at {self._dynamic.configuration.host}"
            text = (
                f"platform {self.target.name!r}: {what}: cannot talk to the Kubernetes API{host} "
                f"({type(exc).__name__}: {exc}); check that the cluster is up and the kubeconfig"
            )
            return PlatformError(self.redactor.redact(text))
        message = str(getattr(exc, "reason", "") or "")
        body = getattr(exc, "body", None)
        if body:
            try:
                message = json.loads(body).get("message") or message
            except (ValueError, AttributeError):
                message = str(body)
        hint = {
            401: "check the credentials in the kubeconfig",
            403: "grant the kubeconfig's user the missing permission (RBAC)",
            404: "check the namespace and names",
            409: "another writer changed it at the same time; apply again",
            422: "fix the template that renders it",
        }.get(int(status), "")
        text = f"platform {self.target.name!r}: {what}: HTTP {status}: {message}"
        return PlatformError(self.redactor.redact(f"{text}; {hint}" if hint else text))

    def delete_object(self, resource: Any, item: Mapping[str, Any], what: str) -> bool:
        """Delete exactly this object (by uid); False when it is gone or was replaced."""
        meta = item["metadata"]
        try:
            resource.delete(
                name=meta["name"],
                namespace=self.namespace,
                body={"preconditions": {"uid": meta.get("uid")}},
                propagation_policy="Background",
            )
        except Exception as exc:
            # 404: already gone; 409: a different object of that name now stands there.
            if getattr(exc, "status", None) in (404, 409):
                return False
            raise self.api_error(what, exc) from None
        return True


def _kubeconfig_exists(kubeconfig: str | None) -> bool:
    """Whether a kubeconfig the client would read exists: the given file, else any file
    KUBECONFIG lists, else ~/.kube/config."""
    if kubeconfig is not None:
        return os.path.exists(os.path.expanduser(kubeconfig))
    listed = os.environ.get("KUBECONFIG")
    if listed:
        return any(os.path.exists(os.path.expanduser(p)) for p in listed.split(os.pathsep) if p)
    return os.path.exists(os.path.expanduser("~/.kube/config"))


def _in_cluster_client() -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)
