"""A tiny platform adapter that keeps its "cluster" in memory.

It exists to show what adding a platform takes: this module (the port's
operations, the `open_platform` factory and, for the `config_files`
capability, `check_config_files`), one registry entry (`ENTRY`, added
by the `fake_kind` fixture the way a real adapter is listed in
`configcenter.core.kinds`), and its bed in the contract suite's parameters
(tests/platform/conftest.py). No other module changes.

Releases whose image contains `never-ready` never become healthy, like pods on
the Kubernetes test bed and apps on the Marathon double.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from configcenter.adapters.secrets import SecretError, resolve_secret
from configcenter.core.kinds import CONFIG_FILES, AdapterKind
from configcenter.core.redact import Redactor
from configcenter.ports.platform import (
    Deployable,
    ObservedService,
    PlatformError,
    PlatformTarget,
    ProgressCallback,
    RolloutStatus,
    ServiceDiff,
    UndeliveredFiles,
    service_diff,
)

ENTRY = AdapterKind(
    "platform",
    "fake",
    __name__,
    "open_platform",
    settings={"world": "text", "files": "flag"},
    capabilities=frozenset({CONFIG_FILES}),
    description="an in-memory platform for the contract suite",
)


@dataclass
class App:
    release: Deployable
    revision: str


@dataclass
class World:
    """What runs on one fake platform: apps by (env, service)."""

    apps: dict[tuple[str, str], App] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


WORLDS: dict[str, World] = {}


class FakePlatform:
    def __init__(self, target: PlatformTarget, redactor: Redactor) -> None:
        name = target.settings.get("world", "")
        if name not in WORLDS:
            raise PlatformError(f"platform {target.name!r}: no fake world {name!r}")
        self.target = target
        self.world = WORLDS[name]
        self.redactor = redactor

    def apply(self, deployable: Deployable, *, dry_run: bool = False) -> None:
        for key, ref in sorted(deployable.secrets.items()):
            try:
                resolve_secret(ref, on_resolved=self.redactor.register)
            except SecretError as error:
                raise PlatformError(f"{deployable.service}: {key}: {error}") from None
        if dry_run:
            return
        revision = hashlib.sha256(
            f"{deployable.image}|{deployable.config_digest}|{deployable.replicas}".encode()
        ).hexdigest()[:10]
        with self.world.lock:
            self.world.apps[(self.target.env, deployable.service)] = App(deployable, revision)

    def wait(
        self, deployable: Deployable, *, timeout: float, progress: ProgressCallback | None = None
    ) -> RolloutStatus:
        replicas = deployable.replicas
        if "never-ready" in deployable.image:
            status = RolloutStatus("failed", "NeverReady", f"{deployable.image} never starts")
        else:
            status = RolloutStatus("healthy", "", "", replicas, replicas, replicas, replicas)
        if progress is not None:
            progress(status)
        return status

    def prune(self, deployable: Deployable) -> list[str]:
        """A release is one app, replaced whole by `apply`: nothing is ever left over."""
        return []

    def observe(self) -> Mapping[str, ObservedService]:
        with self.world.lock:
            apps = {s: a for (env, s), a in self.world.apps.items() if env == self.target.env}
        return {
            service: ObservedService(
                service,
                app.release.image,
                app.release.replicas,
                app.release.config_digest,
                app.release.release_id,
                {f"App/{service}": {"image": app.release.image}},
            )
            for service, app in sorted(apps.items())
        }

    def diff(self, deployable: Deployable, observed: ObservedService | None) -> ServiceDiff:
        return service_diff(
            deployable, observed, image=deployable.image, replicas=deployable.replicas
        )

    def delete(self, service: str) -> None:
        with self.world.lock:
            self.world.apps.pop((self.target.env, service), None)


def check_config_files(
    platform: str, settings: Mapping[str, object], files: Mapping[str, bytes]
) -> UndeliveredFiles | None:
    """Outputs other than `.env` files are config files; a world takes them with `files: true`."""
    found = tuple(sorted(name for name in files if not name.endswith(".env")))
    if not found or settings.get("files"):
        return None
    return UndeliveredFiles(
        found,
        f"renders config files ({', '.join(found)}) for fake platform '{platform}', "
        "which keeps no files",
        f"set platforms.{platform}.files: true",
    )


def open_platform(
    target: PlatformTarget, redactor: Redactor, *, force: bool = False
) -> FakePlatform:
    return FakePlatform(target, redactor)
