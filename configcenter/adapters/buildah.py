"""Builder adapter: `buildah build` + `buildah push`, daemonless and rootless-capable.

`--timestamp 0` makes identical inputs give identical image digests, `--layers`
keeps a warm cache between builds, `--cache-from`/`--cache-to` share those layers
through a cache repository on the registry (so a fresh CI machine starts warm),
and push writes the pushed manifest's
digest to a file (`--digestfile`), so nothing has to be parsed from output.
Registry credentials go through a private auth file (0600, in a 0700 directory), never the
command line; the file is removed when the build ends however it ends (see `build_workspace`).
"""

from __future__ import annotations

import base64
import collections
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configcenter.adapters.oci_registry import RegistryCredentials
from configcenter.ports.builder import (
    BuilderContext,
    BuildFailed,
    BuildRequest,
    BuildResult,
    LogSink,
)

# Step headers: buildah "STEP 2/3: RUN x", docker classic "Step 2/3 : RUN x",
# BuildKit plain progress "#7 [2/3] RUN x" (or "#7 [stage 2/3] RUN x").
_STEP_RES = (
    re.compile(r"^(?:\[\d+/\d+\] )?STEP (\d+(?:/\d+)?): (.*)$"),
    re.compile(r"^Step (\d+/\d+) : (.*)$"),
    re.compile(r"^#\d+ \[(?:[\w.-]+ )?(\d+/\d+)\] (.*)$"),
)
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass
class ProcessOutcome:
    returncode: int
    tail: list[str]
    last_step: str | None
    timed_out: bool = False


def run_streaming(
    command: Sequence[str],
    log: LogSink,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    tail_lines: int = 40,
    timeout: float | None = None,
) -> ProcessOutcome:
    """Run a build tool, hand every output line to `log`, keep the tail for errors."""
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    last_step: str | None = None
    try:
        process = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            text=True,
            errors="replace",
            bufsize=1,
        )
    except FileNotFoundError:
        raise BuildFailed(
            f"{command[0]!r} is not installed or not on PATH: install it, or pick another "
            "builder (builder.kind in configcenter.yaml)"
        ) from None
    timed_out = threading.Event()

    def _kill() -> None:
        timed_out.set()
        process.kill()

    timer = threading.Timer(timeout, _kill) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            for step_re in _STEP_RES:
                match = step_re.match(line)
                if match:
                    last_step = f"STEP {match.group(1)}: {match.group(2)}"
                    break
            log(line)
        returncode = process.wait()
    finally:
        if timer:
            timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    return ProcessOutcome(returncode, list(tail), last_step, timed_out.is_set())


def split_target(target: str) -> tuple[str, str]:
    """ "host/repo:tag" -> ("host/repo", "tag"); the port separator is not a tag."""
    name, sep, tag = target.rpartition(":")
    if not sep or "/" in tag or not name:
        raise BuildFailed(f"invalid push target {target!r}: expected 'registry/repository:tag'")
    return name, tag


def write_auth_file(directory: Path, credentials: Mapping[str, RegistryCredentials]) -> Path:
    """A containers-auth.json / docker config.json, readable by us only."""
    auths = {
        host: {
            "auth": base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode("ascii")
        }
        for host, cred in credentials.items()
    }
    path = directory / "config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"auths": auths}, handle)
    return path


def failure_message(tool: str, service: str, outcome: ProcessOutcome, timeout: float | None) -> str:
    if outcome.timed_out:
        return f"{tool} build of {service} timed out after {timeout:g}s"
    step = f" at {outcome.last_step}" if outcome.last_step else ""
    error_lines = [ln for ln in outcome.tail if "error" in ln.lower()]
    detail = f": {error_lines[-1].strip()}" if error_lines else ""
    return f"{tool} build of {service} failed{step} (exit status {outcome.returncode}){detail}"


# The CLI builders (buildah, docker) run the same steps around their own command
# lines: the helpers below are those steps, so both fail and report alike.


def check_build_inputs(request: BuildRequest, executable: str, install: str) -> str:
    """Refuse before any work when the tool or the context is missing; the target's repository."""
    repository, _tag = split_target(request.target)
    if shutil.which(executable) is None:
        raise BuildFailed(
            f"{executable!r} is not installed: {install}, or pick "
            "another builder (builder.kind in configcenter.yaml)"
        )
    if not request.context_dir.is_dir():
        raise BuildFailed(f"build context {request.context_dir} is not a directory")
    return repository


# Run by a separate process: wait until configcenter is gone (its end of the pipe closes,
# which happens however it ends, SIGKILL included), then remove the build's directory.
_REAPER = (
    "import shutil, sys\nsys.stdin.buffer.read()\nshutil.rmtree(sys.argv[1], ignore_errors=True)\n"
)


@contextmanager
def _reaped(directory: Path) -> Iterator[None]:
    """Remove `directory` when this block ends, and also if this process is killed.

    An exception or a signal Python handles ends the block normally; SIGKILL (or a
    crash) runs no cleanup at all, so a reaper process in its own session holds the
    other end of a pipe and removes the directory once that pipe closes.
    """
    import sys

    reaper = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _REAPER, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        assert reaper.stdin is not None
        reaper.stdin.close()
        reaper.wait()


@contextmanager
def build_workspace(prefix: str, request: BuildRequest) -> Iterator[tuple[Path, Path]]:
    """A private temporary directory holding the rendered Dockerfile and the registry auth
    file, gone after the build, whatever ends it (SIGKILL of configcenter included)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    with _reaped(work):
        dockerfile = work / "Dockerfile"
        dockerfile.write_text(request.dockerfile)
        yield work, dockerfile


@dataclass(frozen=True)
class BuildSteps:
    """Build then push one request with a CLI tool, both streaming into one log."""

    tool: str
    request: BuildRequest
    log: LogSink
    tail_lines: int
    timeout: float | None

    def build(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        """Run the build command; a failure names the step that broke."""
        build = run_streaming(
            command, self.log, env=env, tail_lines=self.tail_lines, timeout=self.timeout
        )
        if build.returncode != 0:
            raise BuildFailed(
                failure_message(self.tool, self.request.service, build, self.timeout),
                "\n".join(build.tail),
            )

    def push(self, command: Sequence[str]) -> ProcessOutcome:
        """Run the push command; the outcome's tail may carry the pushed digest."""
        push = run_streaming(command, self.log, tail_lines=self.tail_lines, timeout=self.timeout)
        if push.returncode != 0:
            last = push.tail[-1].strip() if push.tail else ""
            raise BuildFailed(
                f"{self.tool} push of {self.request.service} to {self.request.target} failed "
                f"(exit status {push.returncode}): {last}",
                "\n".join(push.tail),
            )
        return push


#: Instructions whose cached step buildah matches by the build args' values too: RUN (its
#: history names them) and FROM (the base image it resolves to). Any other instruction
#: that reads an arg is matched by its text alone.
_ARG_AWARE = frozenset({"RUN", "FROM", "ARG"})
_INSTRUCTION_RE = re.compile(r"^\s*([A-Za-z]+)\b(.*)$", re.S)


def args_read_outside_run(request: BuildRequest) -> list[tuple[int, str, str]]:
    """Steps other than RUN and FROM that read a build arg, as (line, instruction, arg).

    buildah's layer cache reuses such a step whatever the arg's value (a `LABEL
    flavor=${FLAVOR}` built with FLAVOR=demo gets the cached FLAVOR=dev layer), so a
    build that has one cannot use the cache. ARGs whose default reads a build arg count
    as build args too.
    """
    tainted = set(request.build_args)
    found: list[tuple[int, str, str]] = []
    for line, text in _instructions(request.dockerfile):
        match = _INSTRUCTION_RE.match(text)
        if match is None:
            continue
        instruction, rest = match.group(1).upper(), match.group(2)
        reads = [n for n in sorted(tainted) if re.search(rf"\$\{{?{re.escape(n)}\b", rest)]
        if instruction == "ARG":
            name = rest.strip().split("=", 1)[0].strip()
            if reads and name:
                tainted.add(name)
        elif reads and instruction not in _ARG_AWARE:
            found.append((line, instruction, reads[0]))
    return found


def _instructions(dockerfile: str) -> Iterator[tuple[int, str]]:
    """Each instruction with its first line number, continuation lines joined; comments and
    blank lines skipped."""
    start = 0
    parts: list[str] = []
    for number, raw in enumerate(dockerfile.splitlines(), start=1):
        stripped = raw.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1])
            continue
        parts.append(stripped)
        yield start, " ".join(parts)
        parts = []
    if parts:
        yield start, " ".join(parts)


@dataclass
class BuildahBuilder:
    """Builds with buildah; defaults suit a root CI machine without overlayfs."""

    storage_driver: str | None = "vfs"
    isolation: str | None = "chroot"
    root: Path | None = None  # storage root; None: buildah's default
    runroot: Path | None = None
    layers: bool = True
    timestamp: int | None = 0
    insecure_registries: frozenset[str] = frozenset()  # hosts spoken to without TLS verify
    credentials: Mapping[str, RegistryCredentials] = field(default_factory=dict, repr=False)
    executable: str = "buildah"
    timeout: float | None = 3600.0
    tail_lines: int = 40

    def global_args(self) -> list[str]:
        args = [self.executable]
        if self.storage_driver:
            args += ["--storage-driver", self.storage_driver]
        if self.root:
            args += ["--root", str(self.root)]
        if self.runroot:
            args += ["--runroot", str(self.runroot)]
        return args

    def build_command(
        self, request: BuildRequest, dockerfile: Path, authfile: Path | None
    ) -> list[str]:
        host = request.target.split("/", 1)[0]
        cmd = [*self.global_args(), "build"]
        if self.isolation:
            cmd += ["--isolation", self.isolation]
        if self.timestamp is not None:
            cmd += ["--timestamp", str(self.timestamp)]
        if self.layers and request.cache and not args_read_outside_run(request):
            cmd.append("--layers")
            if request.cache_repo:
                cmd += ["--cache-from", request.cache_repo, "--cache-to", request.cache_repo]
        else:
            cmd += ["--layers=false", "--no-cache"]
        if host in self.insecure_registries or self._any_insecure(request.dockerfile):
            cmd.append("--tls-verify=false")
        if authfile:
            cmd += ["--authfile", str(authfile)]
        for key in sorted(request.build_args):
            cmd += ["--build-arg", f"{key}={request.build_args[key]}"]
        cmd += ["-f", str(dockerfile), "-t", request.target, str(request.context_dir)]
        return cmd

    def push_command(
        self, request: BuildRequest, digestfile: Path, authfile: Path | None
    ) -> list[str]:
        host = request.target.split("/", 1)[0]
        cmd = [*self.global_args(), "push", "--digestfile", str(digestfile)]
        if host in self.insecure_registries:
            cmd.append("--tls-verify=false")
        if authfile:
            cmd += ["--authfile", str(authfile)]
        cmd += [request.target, f"docker://{request.target}"]
        return cmd

    def _any_insecure(self, dockerfile: str) -> bool:
        """A base image from an insecure registry needs --tls-verify=false to pull."""
        return any(
            f"{host}/" in line
            for line in dockerfile.splitlines()
            if line.strip().upper().startswith("FROM")
            for host in self.insecure_registries
        )

    def build_and_push(self, request: BuildRequest, log: LogSink) -> BuildResult:
        repository = check_build_inputs(request, self.executable, "apt-get install buildah")
        uncached = args_read_outside_run(request) if self.layers and request.cache else []
        if uncached:
            line, instruction, arg = uncached[0]
            log(
                f"layer cache off for this build: {instruction} on line {line} of the "
                f"Dockerfile reads build arg {arg}, and buildah would reuse a cached {instruction} "
                "step whatever the arg's value (containers/buildah#5501)"
            )
        with build_workspace("cc-buildah-", request) as (work, dockerfile):
            authfile = write_auth_file(work, self.credentials) if self.credentials else None
            steps = BuildSteps("buildah", request, log, self.tail_lines, self.timeout)
            steps.build(self.build_command(request, dockerfile, authfile))
            digestfile = work / "digest"
            steps.push(self.push_command(request, digestfile, authfile))
            digest = digestfile.read_text().strip() if digestfile.exists() else ""
        if not _DIGEST_RE.match(digest):
            raise BuildFailed(
                f"buildah push of {request.service} wrote no manifest digest (got {digest!r})"
            )
        return BuildResult(reference=f"{repository}@{digest}", digest=digest)


def open_builder(settings: Mapping[str, Any], context: BuilderContext) -> BuildahBuilder:
    """The registry's factory (`configcenter.core.kinds`) for `builder: {kind: buildah}`."""
    return BuildahBuilder(
        storage_driver=settings.get("storage_driver", "vfs"),
        isolation=settings.get("isolation", "chroot"),
        insecure_registries=context.registry.insecure_hosts,
        credentials=context.registry.credentials_by_host,
    )
