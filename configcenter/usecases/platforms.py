"""Choosing the platform adapter for a service, and building what it deploys."""

from __future__ import annotations

from collections.abc import Mapping

from configcenter import wiring
from configcenter.core import kinds
from configcenter.core.errors import UserError
from configcenter.core.model import Config
from configcenter.core.redact import Redactor
from configcenter.core.render import render_setting_map
from configcenter.core.stages import ReleaseStages
from configcenter.core.state import ServiceState
from configcenter.core.values import digest, to_value
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
    tree = to_value(state.values)
    keys = state.env_keys or [k for k, v in tree.items() if not isinstance(v, dict | list)]
    values: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for key in keys:
        value = tree.get(key)
        if value is None:
            continue
        if hasattr(value, "ref"):
            secrets[key] = value.ref
        else:
            values[key] = _env_string(value)
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
    )


def config_digest(state: ServiceState) -> str:
    """Changes whenever the rendered files or values change: rolls the pods."""
    return digest({"rendered": state.rendered_digest, "values": state.values_digest})


def _env_string(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
