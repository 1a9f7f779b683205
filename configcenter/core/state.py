"""The state record `<env>/state.yaml` in the deploy repo: what the next plan compares against."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

STATE_FILE = "state.yaml"
HEADER = "# Written by configcenter. Do not edit: the next plan compares against it.\n"

try:
    _Loader: type = yaml.CSafeLoader
    _Dumper: type = yaml.CSafeDumper
except AttributeError:  # pragma: no cover
    _Loader, _Dumper = yaml.SafeLoader, yaml.SafeDumper


@dataclass
class Release:
    """One service's rendered files + image at one apply, with its outcome."""

    id: str
    outcome: str  # committed | healthy | failed | rolled_back
    at: str  # ISO time, UTC
    run: str = ""
    template_tag: str = ""
    image: str = ""
    values_digest: str = ""
    rendered_digest: str = ""
    inputs_digest: str = ""
    reason: str = ""  # why it failed / was rolled back
    secrets_generation: int = 0  # which generation of the service's Secrets it ran with

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Release | None:
        if not data:
            return None
        known: dict[str, Any] = {
            k: str(v) for k, v in data.items() if k in cls.__dataclass_fields__
        }
        if "secrets_generation" in known:
            known["secrets_generation"] = int(known["secrets_generation"])
        return cls(**known)


@dataclass
class ServiceState:
    template_tag: str
    template_commit: str | None
    template_tree: str
    values_digest: str
    values: dict[str, Any]  # canonical: secrets as {secret: ref}
    replicas: int | None  # None: left to an autoscaler
    image: str
    image_digest: str | None
    build_key: str | None  # what the image was built from (None: given by ref)
    rendered_digest: str
    inputs_digest: str
    files: dict[str, str]  # output -> sha256
    platform: str | None = None
    env_keys: list[str] = field(default_factory=list)  # the template's ENV list
    #: The value names the template reads (["*"]: all); None in records made before this.
    consumes: list[str] | None = None
    #: Moves when the values behind the service's secrets change (never a hash of them).
    secrets_generation: int = 1
    release: Release | None = None
    last_good: Release | None = None
    last_failed: Release | None = None
    #: The config commit its current release was applied from (apply refuses older ones).
    config_commit: str | None = None
    # The release's stages (configcenter.core.stages.ReleaseStages.to_record); {}: none.
    stages: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["config_commit"] is None:
            del data["config_commit"]
        if not data["stages"]:
            del data["stages"]
        for key in ("release", "last_good", "last_failed"):
            if data[key] is None:
                del data[key]
            else:
                data[key] = {k: v for k, v in data[key].items() if v not in ("", 0)}
        if data["consumes"] is None:
            del data["consumes"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceState:
        return cls(
            template_tag=str(data.get("template_tag", "")),
            template_commit=data.get("template_commit"),
            template_tree=str(data.get("template_tree", "")),
            values_digest=str(data.get("values_digest", "")),
            values=dict(data.get("values") or {}),
            replicas=None if data.get("replicas", 1) is None else int(data.get("replicas", 1)),
            image=str(data.get("image", "")),
            image_digest=data.get("image_digest"),
            build_key=data.get("build_key"),
            rendered_digest=str(data.get("rendered_digest", "")),
            inputs_digest=str(data.get("inputs_digest", "")),
            files={str(k): str(v) for k, v in (data.get("files") or {}).items()},
            platform=data.get("platform"),
            env_keys=[str(k) for k in data.get("env_keys") or []],
            consumes=[str(k) for k in data["consumes"]] if "consumes" in data else None,
            secrets_generation=int(data.get("secrets_generation", 1)),
            release=Release.from_dict(data.get("release")),
            last_good=Release.from_dict(data.get("last_good")),
            last_failed=Release.from_dict(data.get("last_failed")),
            config_commit=data.get("config_commit"),
            stages=dict(data.get("stages") or {}),
        )


@dataclass
class EnvState:
    env: str
    services: dict[str, ServiceState] = field(default_factory=dict)
    #: The config commit the environment was last applied from (apply refuses older ones).
    config_commit: str | None = None

    def to_yaml(self) -> bytes:
        data: dict[str, Any] = {"env": self.env}
        if self.config_commit:
            data["config_commit"] = self.config_commit
        data["services"] = {name: self.services[name].to_dict() for name in sorted(self.services)}
        body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
        return (HEADER + body).encode()

    @classmethod
    def from_yaml(cls, env: str, raw: bytes | None) -> EnvState:
        if not raw:
            return cls(env)
        data = yaml.load(raw, Loader=_Loader) or {}
        services = {
            str(name): ServiceState.from_dict(item)
            for name, item in (data.get("services") or {}).items()
        }
        commit = data.get("config_commit")
        return cls(env, services, str(commit) if commit else None)
