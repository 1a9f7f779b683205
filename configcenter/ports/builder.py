"""The image builder port: build a rendered Dockerfile in a context and push it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class BuildRequest:
    service: str
    context_dir: Path  # checked-out source (the build context)
    dockerfile: str  # rendered Dockerfile text
    build_args: Mapping[str, str]
    target: str  # where to push, "registry/repo:tag"


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
