"""The image builder port: build a rendered Dockerfile in a context and push it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from configcenter.ports.registry import Registry, RegistryCredentials


@dataclass(frozen=True)
class SourceOrigin:
    """Where a build context came from, for builders that fetch it themselves (Kaniko Jobs).

    `url` is the repository as configured and may carry credentials
    (`https://user:token@host/...`): builders must split them off, never log it.
    """

    url: str = field(repr=False)
    commit: str  # full commit id the context is the tree of
    subdir: str  # context directory inside the repository, "" for its root
    overlay: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # files laid over


@dataclass(frozen=True)
class BuildRequest:
    service: str
    context_dir: Path  # checked-out source (the build context)
    dockerfile: str  # rendered Dockerfile text
    build_args: Mapping[str, str]
    target: str  # where to push, "registry/repo:tag"
    # Layer cache: on unless the template says `build: {cache: false}`. `cache_repo`
    # ("registry/repo", no tag) is where layers are shared between builders; None: the
    # builder's own local cache only. Cache keys come from the Dockerfile steps, the
    # context and the build args, which are plain values (secrets are refused as args).
    cache: bool = True
    cache_repo: str | None = None
    source: SourceOrigin | None = None  # None: the context exists only in context_dir


@dataclass(frozen=True)
class BuildResult:
    reference: str  # "registry/repo@sha256:..."
    digest: str  # "sha256:..."


class BuildFailed(Exception):
    """A build step failed; `log_tail` holds the last lines of the build log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


LogSink = Callable[[str], None]


class Builder(Protocol):
    def build_and_push(self, request: BuildRequest, log: LogSink) -> BuildResult: ...


@dataclass(frozen=True)
class RegistryAccess:
    """The project's image registry as builders need it (secrets already resolved)."""

    host: str
    insecure: bool
    credentials: RegistryCredentials | None = field(default=None, repr=False)

    @property
    def insecure_hosts(self) -> frozenset[str]:
        return frozenset({self.host}) if self.insecure else frozenset()

    @property
    def credentials_by_host(self) -> dict[str, RegistryCredentials]:
        return {self.host: self.credentials} if self.credentials else {}


@dataclass(frozen=True)
class BuilderContext:
    """What every builder may need besides its own settings block."""

    registry: RegistryAccess
    open_registry: Callable[[], Registry]


class BuilderFactory(Protocol):
    """The one signature of every builder module's `open_builder`."""

    def __call__(self, settings: Mapping[str, Any], context: BuilderContext) -> Builder: ...
