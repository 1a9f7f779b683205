"""Builder adapter: the docker CLI, for teams that already run a Docker daemon.

Same contract as buildah: build the rendered Dockerfile in the context, push,
return the pushed digest. BuildKit with SOURCE_DATE_EPOCH=0 keeps image
metadata reproducible. The digest is read from `docker push`'s output (the
daemon prints `<tag>: digest: sha256:... size: N`). Insecure registries are a
daemon setting (`insecure-registries` in daemon.json), not a flag here.
Credentials go into a private `--config` directory, never onto the command line.
The layer cache is the daemon's own (local to that daemon); `build: {cache: false}`
adds `--no-cache`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configcenter.adapters.buildah import (
    BuildSteps,
    build_workspace,
    check_build_inputs,
    write_auth_file,
)
from configcenter.adapters.oci_registry import RegistryCredentials
from configcenter.ports.builder import (
    BuilderContext,
    BuildFailed,
    BuildRequest,
    BuildResult,
    LogSink,
)

_PUSH_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64})")


def digest_from_push_output(lines: list[str]) -> str | None:
    for line in reversed(lines):
        match = _PUSH_DIGEST_RE.search(line)
        if match:
            return match.group(1)
    return None


@dataclass
class DockerBuilder:
    executable: str = "docker"
    credentials: Mapping[str, RegistryCredentials] = field(default_factory=dict, repr=False)
    buildkit: bool = True
    timeout: float | None = 3600.0
    tail_lines: int = 40

    def environment(self) -> dict[str, str]:
        env = {"SOURCE_DATE_EPOCH": "0"}
        if self.buildkit:
            env["DOCKER_BUILDKIT"] = "1"
        return env

    def build_command(
        self, request: BuildRequest, dockerfile: Path, config_dir: Path | None
    ) -> list[str]:
        cmd = [self.executable]
        if config_dir:
            cmd += ["--config", str(config_dir)]
        # --progress=plain gives one line per step event, like buildah's STEP lines.
        cmd += ["build", "--progress=plain"] if self.buildkit else ["build"]
        if not request.cache:
            cmd.append("--no-cache")
        for key in sorted(request.build_args):
            cmd += ["--build-arg", f"{key}={request.build_args[key]}"]
        cmd += ["-f", str(dockerfile), "-t", request.target, str(request.context_dir)]
        return cmd

    def push_command(self, request: BuildRequest, config_dir: Path | None) -> list[str]:
        cmd = [self.executable]
        if config_dir:
            cmd += ["--config", str(config_dir)]
        return [*cmd, "push", request.target]

    def build_and_push(self, request: BuildRequest, log: LogSink) -> BuildResult:
        repository = check_build_inputs(request, self.executable, "install the docker CLI")
        with build_workspace("cc-docker-", request) as (work, dockerfile):
            config_dir: Path | None = None
            if self.credentials:
                config_dir = work / "config"
                config_dir.mkdir(mode=0o700)
                write_auth_file(config_dir, self.credentials)
            steps = BuildSteps("docker", request, log, self.tail_lines, self.timeout)
            steps.build(self.build_command(request, dockerfile, config_dir), self.environment())
            push = steps.push(self.push_command(request, config_dir))
        digest = digest_from_push_output(push.tail)
        if digest is None:
            raise BuildFailed(
                f"docker push of {request.service} printed no manifest digest",
                "\n".join(push.tail),
            )
        return BuildResult(reference=f"{repository}@{digest}", digest=digest)


def open_builder(settings: Mapping[str, Any], context: BuilderContext) -> DockerBuilder:
    """The registry's factory (`configcenter.core.kinds`) for `builder: {kind: docker}`."""
    return DockerBuilder(credentials=context.registry.credentials_by_host)
