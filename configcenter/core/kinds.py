"""The adapter registry: every kind of adapter, by port, listed once.

This table is the one place a kind of platform, builder, forge, run store or
secret backend is named. The config schema takes its lists of kinds and the
settings each kind reads from here, the factories in `configcenter.wiring`
open adapters through it, and use cases ask it for capabilities instead of
testing an adapter's class. Adding an adapter means one module plus one entry
below.

The core stays pure: an entry names its adapter module by import path and
never imports it; only the edge (`configcenter.wiring`) does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Port = Literal["platform", "builder", "forge", "run_store", "secret_backend"]

#: How the schema checks one setting: a non-empty string, true/false, a secret
#: reference (never plain text), or either a string or a secret reference.
SettingType = Literal["text", "flag", "secret", "text_or_secret"]

#: `diff` compares the release's objects with the live ones field by field (drifts
#: named "<Kind/name> <path>") and `replace_drifted` replaces drifted objects (heal).
OBJECT_DRIFT = "object_drift"
#: A deployment in progress holds an app (Marathon's HTTP 409); `held` says which
#: (`ports.platform.ForcePlatform`) and `force=True` cancels such a deployment.
FORCE = "force"
#: Rendered files reach the workload as files (not only as environment values); the
#: adapter module's `check_config_files` (`ports.platform.ConfigFilesCheck`) says which
#: outputs those are and whether the platform, as configured, can deliver them.
CONFIG_FILES = "config_files"
#: The adapter resolves `k8s:` secret references itself, at deploy time.
CLUSTER_SECRETS = "cluster_secrets"
#: The platform runs a release's stage Jobs (`run_job`): pre-deploy jobs, verification jobs.
JOBS = "jobs"
#: The platform tells where a release's tasks listen (`task_endpoints`), for HTTP checks.
TASK_ENDPOINTS = "task_endpoints"
#: A forge whose merge requests are branches of the config repo checkout itself.
LOCAL_BRANCHES = "local_branches"


@dataclass(frozen=True)
class AdapterKind:
    """One kind of adapter for one port.

    `module` and `factory` name the callable that opens it; every factory of a
    port has that port's one signature (see `configcenter.wiring`). An empty
    `factory` means the kind is served by another adapter (a `k8s:` secret is
    read by the Kubernetes platform). `settings` are the keys the kind reads
    from its block in configcenter.yaml.
    """

    port: Port
    kind: str
    module: str
    factory: str
    settings: Mapping[str, SettingType] = field(default_factory=dict)
    capabilities: frozenset[str] = frozenset()
    aliases: tuple[str, ...] = ()
    description: str = ""


class Registry:
    """The adapters known for each port, looked up by kind (or an alias of it)."""

    def __init__(self, entries: Iterable[AdapterKind]) -> None:
        self.entries: tuple[AdapterKind, ...] = tuple(entries)
        self._by_name: dict[tuple[str, str], AdapterKind] = {}
        for entry in self.entries:
            for name in (entry.kind, *entry.aliases):
                key = (entry.port, name)
                if key in self._by_name:
                    raise ValueError(f"adapter kind {entry.port}/{name} is registered twice")
                self._by_name[key] = entry

    def kinds(self, port: Port) -> tuple[str, ...]:
        """The kinds a user may write for `port`, in registration order (aliases excluded)."""
        return tuple(entry.kind for entry in self.entries if entry.port == port)

    def find(self, port: Port, kind: str) -> AdapterKind | None:
        return self._by_name.get((port, kind))

    def settings(self, port: Port) -> dict[str, SettingType]:
        """Every setting some kind of `port` reads (the schema accepts their union)."""
        merged: dict[str, SettingType] = {}
        for entry in self.entries:
            if entry.port == port:
                merged.update(entry.settings)
        return merged

    def supports(self, port: Port, kind: str, capability: str) -> bool:
        entry = self.find(port, kind)
        return entry is not None and capability in entry.capabilities

    def having(self, port: Port, capability: str) -> tuple[str, ...]:
        """The kinds of `port` with `capability`, in registration order (for messages)."""
        return tuple(
            e.kind for e in self.entries if e.port == port and capability in e.capabilities
        )


_KUBERNETES_SETTINGS: dict[str, SettingType] = {
    "context": "text",
    "kubeconfig": "text",
    "namespace": "text",
}

REGISTRY = Registry(
    (
        AdapterKind(
            "platform",
            "kubernetes",
            "configcenter.adapters.kubernetes",
            "open_platform",
            settings=_KUBERNETES_SETTINGS,
            capabilities=frozenset({OBJECT_DRIFT, CONFIG_FILES, CLUSTER_SECRETS, JOBS}),
            description="server-side apply of rendered manifests; rolls out Deployments",
        ),
        AdapterKind(
            "platform",
            "marathon",
            "configcenter.adapters.marathon",
            "open_platform",
            settings={
                "url": "text",
                "group": "text",
                "secrets_url": "text",
                "secret_store": "text",
                "token": "secret",
                "verify": "flag",
                "files_url": "text",
                "files_key": "secret",
            },
            capabilities=frozenset({FORCE, TASK_ENDPOINTS, CONFIG_FILES}),
            description="Marathon's REST API; the release is its rendered marathon.json",
        ),
        AdapterKind(
            "builder",
            "buildah",
            "configcenter.adapters.buildah",
            "open_builder",
            settings={"storage_driver": "text", "isolation": "text"},
            description="buildah on this machine (the default)",
        ),
        AdapterKind(
            "builder",
            "docker",
            "configcenter.adapters.docker_builder",
            "open_builder",
            description="the docker CLI on this machine",
        ),
        AdapterKind(
            "builder",
            "kaniko",
            "configcenter.adapters.kaniko",
            "open_builder",
            settings={
                "push_secret": "text",
                "fetch_source": "text",
                "git_image": "text",
                **_KUBERNETES_SETTINGS,
            },
            description="Kaniko Jobs on a Kubernetes cluster",
        ),
        AdapterKind(
            "forge",
            "gitlab",
            "configcenter.adapters.gitlab_forge",
            "open_forge",
            settings={
                "url": "text",
                "project": "text",
                "token": "text_or_secret",
                "webhook_token": "text_or_secret",
            },
            description="merge requests on GitLab",
        ),
        AdapterKind(
            "forge",
            "local",
            "configcenter.adapters.local_forge",
            "open_forge",
            capabilities=frozenset({LOCAL_BRANCHES}),
            description="merge requests as branches of the config repo itself (the default)",
        ),
        AdapterKind(
            "run_store",
            "sqlite",
            "configcenter.adapters.sqlite_runs",
            "open_store",
            description="one SQLite file (the default)",
        ),
        AdapterKind(
            "run_store",
            "postgresql",
            "configcenter.adapters.postgres_runs",
            "open_store",
            aliases=("postgres",),
            description="PostgreSQL, shared by several serve replicas",
        ),
        AdapterKind(
            "secret_backend",
            "env",
            "configcenter.adapters.secrets",
            "resolve_secret",
            description="env:NAME, an environment variable of the configcenter process",
        ),
        AdapterKind(
            "secret_backend",
            "file",
            "configcenter.adapters.secrets",
            "resolve_secret",
            description="file:/absolute/path, a file on the configcenter machine",
        ),
        AdapterKind(
            "secret_backend",
            "k8s",
            "configcenter.adapters.kubernetes",
            "",  # no resolver of its own: a platform with CLUSTER_SECRETS reads it
            capabilities=frozenset({CLUSTER_SECRETS}),
            description="k8s:namespace/name/key, read by the Kubernetes platform at deploy time",
        ),
    )
)
