"""The loaded config repo: project, environments, services, templates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configcenter.core.errors import Source
from configcenter.core.limits import Limits
from configcenter.core.source import TemplateTree
from configcenter.core.values import Layered
from configcenter.core.yamldoc import YamlDoc

HEAD = "HEAD"


@dataclass(frozen=True)
class PlatformSpec:
    name: str
    kind: str
    settings: dict[str, str]  # raw; may use {{ env }} / {{ project }}


@dataclass
class Project:
    name: str
    environments: list[str]
    deploy_repo_url: str | None
    deploy_repo_branch: str
    registry: dict[str, Any]
    builder: dict[str, Any]
    platforms: dict[str, PlatformSpec]
    forge: dict[str, Any] | None
    promotion: dict[str, Any]
    run_store_url: str | None
    doc: YamlDoc
    limits: Limits = field(default_factory=Limits)
    deploy_repo_timeout: float | None = None  # seconds; None: the adapter's default
    deploy_repo_plan_timeout: float | None = None


@dataclass
class Template:
    """One version of a service's template: a released tag, or HEAD (the work tree)."""

    service: str
    tag: str  # "1.4.0" or "HEAD"
    commit: str | None  # tag's commit; None for HEAD
    tree: TemplateTree
    outputs: list[str]
    env_keys: list[str]
    build: dict[str, Any] | None
    depends_on: list[str]
    doc: YamlDoc

    @property
    def tree_id(self) -> str:
        return self.tree.tree_id

    @property
    def label(self) -> str:
        """How files of this version are named in messages."""
        return f"templates/{self.service}" + ("" if self.tag == HEAD else f"@{self.tag}")


@dataclass(frozen=True)
class ImageSpec:
    ref: str | None = None  # use this image
    repo: str | None = None  # or build from this source repo ...
    source_ref: str = "HEAD"  # ... at this ref
    context: str = "."

    @property
    def is_build(self) -> bool:
        return self.repo is not None


@dataclass
class ServiceConfig:
    env: str
    name: str
    template: Template
    image: ImageSpec | None
    replicas: int | None  # None: `replicas: auto`, left to an autoscaler
    platform: str | None
    values: Layered
    doc: YamlDoc
    #: A digest of every byte its values were layered from (configcenter.yaml,
    #: _defaults.yaml, its _env.yaml, its own file): equal prints, equal values.
    inputs_print: str | None = None

    @property
    def file(self) -> str:
        return self.doc.file

    def source(self, *path: str) -> Source:
        return self.doc.source(*path)


@dataclass
class Environment:
    name: str
    platform: str | None
    allow_head: bool
    auto_apply: bool
    reconcile_interval: str | None
    reconcile_heal: bool
    rollout_timeout: str | None
    services: dict[str, ServiceConfig] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # services in dependency order


@dataclass
class Config:
    root: Path
    commit: str | None
    project: Project
    environments: dict[str, Environment]

    def environment(self, name: str) -> Environment:
        return self.environments[name]
