"""Choosing the platform adapter for a service, and building what it deploys."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from configcenter import wiring
from configcenter.core import kinds
from configcenter.core.errors import UserError
from configcenter.core.model import Config
from configcenter.core.redact import Redactor
from configcenter.core.render import render_setting_map
from configcenter.core.stages import ReleaseStages
from configcenter.core.state import ServiceState
from configcenter.core.values import SecretRef, canonical, digest, to_value
from configcenter.ports.platform import Deployable, Platform, PlatformTarget


class NoPlatform(UserError):
    """A rollout was asked for a service that has no platform."""


def platform_target(config: Config, env: str, name: str) -> PlatformTarget:
    spec = config.project.platforms.get(name)
    if spec is None:
        raise NoPlatform(
            f"platform '{name}' is not defined in configcenter.yaml (platforms: "
            + (", ".join(sorted(config.project.platforms)) or "none")
            + ")"
        )
    return PlatformTarget(name, spec.kind, env, render_setting_map(spec.settings, config, env))


def open_platform(
    config: Config, env: str, name: str, redactor: Redactor, *, force: bool = False
) -> Platform:
    """The adapter for platform `name`, opened through the registry by its kind."""
    target = platform_target(config, env, name)
    if kinds.REGISTRY.find("platform", target.kind) is None:
        raise NoPlatform(f"platform '{name}' has unknown kind '{target.kind}'")
    return wiring.open_platform(target, redactor, force=force)


def supports(config: Config, name: str, capability: str) -> bool:
    """Whether platform `name`'s kind has `capability` (see `configcenter.core.kinds`)."""
    spec = config.project.platforms.get(name)
    return spec is not None and kinds.REGISTRY.supports("platform", spec.kind, capability)


def deployable(
    env: str, service: str, state: ServiceState, files: Mapping[str, bytes], release_id: str
) -> Deployable:
    """What a platform needs for one release, from the deploy repo's view of it."""
    values, secrets = env_values(to_value(state.values), state.env_keys)
    return Deployable(
        env=env,
        service=service,
        release_id=release_id,
        image=state.image,
        config_digest=config_digest(state),
        files=dict(files),
        values=values,
        secrets=secrets,
        replicas=state.replicas,
        labels={},
        stage_files=ReleaseStages.from_record(state.stages).job_files,
        secrets_generation=state.secrets_generation,
        scale_of=scale_of(state, release_id),
    )


def scale_of(state: ServiceState, release_id: str) -> tuple[str, str] | None:
    """The release `release_id` only scales (id and config digest), from its record."""
    release = state.release
    if release is None or release.id != release_id or not release.scale_of:
        return None
    return release.scale_of, release.scale_of_digest or config_digest(state)


def env_values(
    tree: Mapping[str, Any], env_keys: list[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The ENV list's values as strings, and its secrets as references."""
    keys = env_keys or [k for k, v in tree.items() if not isinstance(v, dict | list)]
    values: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for key in keys:
        value = tree.get(key)
        if value is None:
            continue
        if isinstance(value, SecretRef):
            secrets[key] = value.ref
        else:
            values[key] = env_string(value)
    return values, secrets


def config_digest(state: ServiceState) -> str:
    """The release's identity on the platform: rendered files, consumed values, secrets."""
    return digest(
        {
            "rendered": state.rendered_digest,
            "values": state.values_digest,
            "secrets": state.secrets_generation,
        }
    )


def env_string(value: object) -> str:
    """A value as an environment variable: booleans lower-case, maps and lists as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"))
    return str(value)
