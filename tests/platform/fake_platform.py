"""A tiny platform adapter that keeps its "cluster" in memory.

It exists to show what adding a platform takes: this module (the port's
operations, the `open_platform` factory and, for the `config_files`
capability, `check_config_files`), one registry entry (`ENTRY`, added
by the `fake_kind` fixture the way a real adapter is listed in
`configcenter.core.kinds`), and its bed in the contract suite's parameters
(tests/platform/conftest.py). No other module changes.

An app is one object, `App/<service>`: image, replicas and environment. Like a
server-side apply, `apply` sets the fields the release has and keeps
environment entries someone else added; `replace_drifted` and `apply_replacing`
replace the object whole (the `object_drift` capability). Releases whose image contains
`never-ready` never become healthy, like pods on the Kubernetes test bed and
apps on the Marathon double.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from configcenter.adapters.secrets import SecretError, resolve_secret
from configcenter.core.kinds import CONFIG_FILES, OBJECT_DRIFT, AdapterKind
from configcenter.core.redact import Redactor
from configcenter.core.secretrefs import SecretsRotated, separate_rotated
from configcenter.ports.platform import (
    Deployable,
    Drift,
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
    capabilities=frozenset({CONFIG_FILES, OBJECT_DRIFT}),
    description="an in-memory platform for the contract suite",
)


@dataclass
class App:
    release: Deployable
    #: The app object as the platform holds it: {"image", "replicas", "env"}.
    spec: dict[str, Any]

    @property
    def revision(self) -> str:
        """What runs, by content: a new spec (or config) is a new revision."""
        identity = json.dumps([self.spec, self.release.config_digest], sort_keys=True)
        return hashlib.sha256(identity.encode()).hexdigest()[:10]


@dataclass
class World:
    """What runs on one fake platform: apps by (env, service)."""

    apps: dict[tuple[str, str], App] = field(default_factory=dict)
    #: Resolved secret values by (env, service, generation), then key: written once per
    #: generation and never rewritten, like Kubernetes' immutable Secrets.
    secrets: dict[tuple[str, str, int], dict[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


WORLDS: dict[str, World] = {}


def _spec(deployable: Deployable) -> dict[str, Any]:
    return {
        "image": deployable.image,
        "replicas": deployable.replicas,
        "env": dict(deployable.values),
    }


class FakePlatform:
    def __init__(self, target: PlatformTarget, redactor: Redactor) -> None:
        name = target.settings.get("world", "")
        if name not in WORLDS:
            raise PlatformError(f"platform {target.name!r}: no fake world {name!r}")
        self.target = target
        self.world = WORLDS[name]
        self.redactor = redactor

    def _resolve(self, deployable: Deployable) -> dict[str, str]:
        resolved: dict[str, str] = {}
        for key, ref in sorted(deployable.secrets.items()):
            try:
                resolved[key] = resolve_secret(ref, on_resolved=self.redactor.register)
            except SecretError as error:
                raise PlatformError(f"{deployable.service}: {key}: {error}") from None
        return resolved

    def apply(self, deployable: Deployable, *, dry_run: bool = False) -> None:
        resolved = self._resolve(deployable)
        if dry_run:
            return
        spec = _spec(deployable)
        generation = (self.target.env, deployable.service, deployable.secrets_generation)
        with self.world.lock:
            if resolved:
                self.world.secrets.setdefault(generation, resolved)
            current = self.world.apps.get((self.target.env, deployable.service))
            if current is not None:  # entries someone else added stay, ours are set
                spec["env"] = {**current.spec["env"], **spec["env"]}
            self.world.apps[(self.target.env, deployable.service)] = App(deployable, spec)

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
                app.spec["image"],
                app.spec["replicas"],
                app.release.config_digest,
                app.release.release_id,
                {f"App/{service}": json.loads(json.dumps(app.spec))},
            )
            for service, app in sorted(apps.items())
        }

    def diff(self, deployable: Deployable, observed: ObservedService | None) -> ServiceDiff:
        ref = f"App/{deployable.service}"
        drifts: list[Drift] = []
        if observed is not None:
            want, have = _flat(_spec(deployable)), _flat(observed.objects.get(ref) or {})
            for path in sorted(set(want) | set(have)):
                if want.get(path) != have.get(path):
                    drifts.append(
                        Drift(deployable.service, f"{ref} {path}", want.get(path), have.get(path))
                    )
        return service_diff(
            deployable,
            observed,
            image=deployable.image,
            replicas=deployable.replicas,
            objects=drifts,
        )

    def replace_drifted(self, deployable: Deployable, refs: Iterable[str]) -> list[str]:
        key = (self.target.env, deployable.service)
        with self.world.lock:
            if f"App/{deployable.service}" not in refs or key not in self.world.apps:
                return []
            self.world.apps[key] = App(deployable, _spec(deployable))
        return [f"App/{deployable.service}"]

    def apply_replacing(self, deployable: Deployable, refs: Iterable[str]) -> list[str]:
        """`apply`, then the edited app replaced whole (one app: no order to keep)."""
        wanted = list(refs)
        self.apply(deployable)
        return self.replace_drifted(deployable, wanted)

    def delete(self, service: str) -> None:
        with self.world.lock:
            self.world.apps.pop((self.target.env, service), None)
            for key in [k for k in self.world.secrets if k[:2] == (self.target.env, service)]:
                del self.world.secrets[key]

    def secrets_match(
        self, deployable: Deployable, generations: list[int]
    ) -> int | SecretsRotated | str:
        """Each ENV secret is its own entry of a generation, so every rotated reference is
        told apart."""
        if not generations:
            return "no secrets generation to compare with"
        if not deployable.secrets:
            return generations[0]
        try:
            now = self._resolve(deployable)
        except PlatformError as error:
            return str(error)
        with self.world.lock:
            held = {
                g: self.world.secrets.get((self.target.env, deployable.service, g))
                for g in generations
            }
        for generation in generations:
            if held[generation] == now:
                return generation
        first = held[generations[0]]
        if first is None:
            # Another generation that is there says nothing about this one's values.
            return f"generation {generations[0]}'s secrets are not on the platform yet"
        return separate_rotated(
            {k: ([ref], first.get(k) == now[k]) for k, ref in deployable.secrets.items()}
        )

    def secrets_unavailable(self) -> str | None:
        """The world is in memory: always there, so each service is asked."""
        return None


def _flat(spec: Mapping[str, Any]) -> dict[str, str | None]:
    """`image`, `replicas` and `env.<KEY>`, as text."""
    out: dict[str, str | None] = {"image": spec.get("image"), "replicas": None}
    if spec.get("replicas") is not None:
        out["replicas"] = str(spec["replicas"])
    for key, value in (spec.get("env") or {}).items():
        out[f"env.{key}"] = str(value)
    return out


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
