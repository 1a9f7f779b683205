"""Build use case: build an image only when its inputs changed, push it, record the digest.

Change detection is content-based (like werf): the inputs digest covers the
source commit, the rendered Dockerfile, the build args and the build context's
content (its git tree id plus any extra files). The image tag is derived from
that digest, so "was this exact input already built?" is one manifest HEAD on
the registry, and a build skipped here can never be a stale image.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from configcenter.core.errors import UserError
from configcenter.ports.builder import Builder, BuildRequest, LogSink, SourceOrigin
from configcenter.ports.registry import Registry, validate_repository
from configcenter.ports.source import SourceCheckouts

INPUTS_VERSION = 1  # bump when the digest recipe changes, so every image rebuilds once
TAG_PREFIX = "cc-"
_ARG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ImageBuildSpec:
    """Everything that decides one service's image, already rendered."""

    service: str
    source_repo: str  # any git URL or local path
    source_ref: str  # branch, tag or commit
    dockerfile: str  # rendered Dockerfile text
    build_args: Mapping[str, str]
    registry_host: str  # "host[:port]"
    repository: str  # "<project>/<service>"
    insecure: bool = False
    context_dir: str = "."  # build context inside the source repository
    # Extra files laid over the context (e.g. rendered config the Dockerfile COPYs).
    context_files: Mapping[str, bytes] = field(default_factory=dict)
    # Layer cache (`build: {cache: false}` turns it off); `cache_repository` is a
    # repository on `registry_host` where layers are shared ("" : local cache only).
    # Not an input of the image: the cache changes how fast it builds, not what.
    cache: bool = True
    cache_repository: str = ""


@dataclass(frozen=True)
class BuildOutcome:
    service: str
    reference: str  # "host/repo@sha256:..."
    digest: str
    tag: str  # "cc-<16 hex of inputs digest>"
    inputs_digest: str  # "sha256:..."
    source_commit: str
    built: bool  # False: an image with these inputs already existed
    would_build: bool = False  # dry run: these inputs have no image yet


class BuildsFailed(Exception):
    """Some builds of a batch failed; the others finished and are in `outcomes`."""

    def __init__(self, failures: Mapping[str, Exception], outcomes: list[BuildOutcome]) -> None:
        names = ", ".join(f"{svc} ({exc})" for svc, exc in failures.items())
        super().__init__(f"{len(failures)} image build(s) failed: {names}")
        self.failures = dict(failures)
        self.outcomes = outcomes


def validate_spec(spec: ImageBuildSpec) -> None:
    """Catch bad input before any fetch or build, naming the field and the fix."""
    where = f"image build of {spec.service!r}"
    if not spec.dockerfile.strip():
        raise UserError(f"{where}: the rendered Dockerfile is empty")
    if not spec.registry_host or "/" in spec.registry_host:
        raise UserError(
            f"{where}: registry host {spec.registry_host!r} is invalid: give host[:port], "
            "e.g. 127.0.0.1:5000"
        )
    validate_repository(spec.repository)
    if spec.cache_repository:
        validate_repository(spec.cache_repository)
    for key, value in spec.build_args.items():
        if not _ARG_RE.match(key):
            raise UserError(
                f"{where}: build arg name {key!r} is invalid: use letters, digits and _"
            )
        if not isinstance(value, str):
            raise UserError(
                f"{where}: build arg {key} must be a string, got {type(value).__name__}"
            )
    for name in spec.context_files:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise UserError(
                f"{where}: context file {name!r} must be a relative path inside the context"
            )


def inputs_digest(source_commit: str, context_tree: str, spec: ImageBuildSpec) -> str:
    """sha256 over every input that can change the image, in a canonical encoding."""
    extra = {
        name: hashlib.sha256(data).hexdigest() for name, data in sorted(spec.context_files.items())
    }
    payload = {
        "v": INPUTS_VERSION,
        "source_commit": source_commit,
        "context_tree": context_tree,
        "context_files": extra,
        "dockerfile": spec.dockerfile,
        "build_args": dict(sorted(spec.build_args.items())),
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def tag_for(digest: str) -> str:
    return TAG_PREFIX + digest.removeprefix("sha256:")[:16]


def build_image(
    spec: ImageBuildSpec,
    builder: Builder,
    registry: Registry,
    sources: SourceCheckouts | Path,
    log: LogSink,
    *,
    fetch: bool = True,
    dry_run: bool = False,
) -> BuildOutcome:
    """Build and push `spec`'s image unless the registry already has these inputs.

    `fetch=False` skips fetching the source repository (the caller just did);
    `dry_run` stops before building and says whether a build would happen.
    """
    validate_spec(spec)
    checkouts = _checkouts(sources)
    source = checkouts.resolve(spec.source_repo, spec.source_ref, spec.context_dir, fetch=fetch)
    digest_of_inputs = inputs_digest(source.commit, source.tree, spec)
    tag = tag_for(digest_of_inputs)
    image = f"{spec.registry_host}/{spec.repository}"
    existing = registry.manifest_digest(spec.repository, tag)
    if existing is not None:
        log(f"{spec.service}: {image}:{tag} already built ({existing}), skipping build")
        return BuildOutcome(
            service=spec.service,
            reference=f"{image}@{existing}",
            digest=existing,
            tag=tag,
            inputs_digest=digest_of_inputs,
            source_commit=source.commit,
            built=False,
        )
    if dry_run:
        log(f"{spec.service}: would build {image}:{tag} from {spec.source_ref}")
        return BuildOutcome(
            service=spec.service,
            reference=f"{image}:{tag}",
            digest="",
            tag=tag,
            inputs_digest=digest_of_inputs,
            source_commit=source.commit,
            built=False,
            would_build=True,
        )
    log(f"{spec.service}: building {image}:{tag} from {spec.source_ref} ({source.commit[:12]})")
    tree = checkouts.export(source)
    with tempfile.TemporaryDirectory(prefix="cc-context-") as tmp:
        context = tree
        if spec.context_files:
            # The exported tree is shared by concurrent builds: overlay on a copy.
            context = Path(tmp) / "context"
            shutil.copytree(tree, context, symlinks=True)
            for name, data in spec.context_files.items():
                target = context / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink():
                    target.unlink()
                target.write_bytes(data)
        result = builder.build_and_push(
            BuildRequest(
                service=spec.service,
                context_dir=context,
                dockerfile=spec.dockerfile,
                build_args=dict(spec.build_args),
                target=f"{image}:{tag}",
                cache=spec.cache,
                cache_repo=(
                    f"{spec.registry_host}/{spec.cache_repository}"
                    if spec.cache and spec.cache_repository
                    else None
                ),
                source=SourceOrigin(
                    url=spec.source_repo,
                    commit=source.commit,
                    subdir=source.subdir,
                    overlay=dict(spec.context_files),
                ),
            ),
            log,
        )
    log(f"{spec.service}: pushed {result.reference}")
    return BuildOutcome(
        service=spec.service,
        reference=result.reference,
        digest=result.digest,
        tag=tag,
        inputs_digest=digest_of_inputs,
        source_commit=source.commit,
        built=True,
    )


def build_many(
    specs: Iterable[ImageBuildSpec],
    builder: Builder,
    registry: Registry,
    sources: SourceCheckouts | Path,
    log: Callable[[str, str], None],
    jobs: int = 2,
) -> list[BuildOutcome]:
    """Build independent services concurrently; `log(service, line)` gets every line.

    Calls to `log` are serialised, so a callback need not be thread-safe. Every
    build runs to its end even when another fails; then BuildsFailed lists the
    failures with the outcomes that did succeed. Results keep the specs' order.
    """
    spec_list = list(specs)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    names = [spec.service for spec in spec_list]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"services listed twice in one build batch: {', '.join(duplicates)}")
    lock = threading.Lock()
    checkouts = _checkouts(sources)

    def sink_for(service: str) -> LogSink:
        def sink(line: str) -> None:
            with lock:
                log(service, line)

        return sink

    fetched: dict[str, Exception | None] = {}

    def one(spec: ImageBuildSpec) -> BuildOutcome:
        error = fetched.get(spec.source_repo)
        if error is not None:
            raise error
        return build_image(spec, builder, registry, checkouts, sink_for(spec.service), fetch=False)

    def fetch(url: str) -> None:
        try:
            checkouts.fetch(url)
            fetched[url] = None
        except Exception as exc:  # every service built from this repository reports it
            fetched[url] = exc

    outcomes: list[BuildOutcome] = []
    failures: dict[str, Exception] = {}
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="cc-build") as pool:
        # Each source repository is fetched once per batch, however many services use it.
        list(pool.map(fetch, dict.fromkeys(spec.source_repo for spec in spec_list)))
        futures = [(spec.service, pool.submit(one, spec)) for spec in spec_list]
        for service, future in futures:
            try:
                outcomes.append(future.result())
            except Exception as exc:  # reported per service, after the others finish
                failures[service] = exc
    if failures:
        raise BuildsFailed(failures, outcomes)
    return outcomes


def _checkouts(sources: SourceCheckouts | Path) -> SourceCheckouts:
    """The checkouts given, or the Git mirrors kept in directory `sources`."""
    if isinstance(sources, Path):
        from configcenter import wiring

        return wiring.open_source_checkouts(sources)
    return sources
