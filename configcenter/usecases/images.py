"""From plans to image builds: which services need one, and what to build."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from configcenter import wiring
from configcenter.core.errors import ConfigError, Problem, UserError
from configcenter.core.model import Config, ServiceConfig
from configcenter.core.plan import ResolvedImage, ServicePlan
from configcenter.core.redact import Redactor
from configcenter.core.values import SecretRef
from configcenter.usecases.workspace import cache_home

if TYPE_CHECKING:  # imported by what builds or asks the registry (a plan may do neither)
    from configcenter.ports.builder import Builder, RegistryAccess
    from configcenter.ports.registry import Registry
    from configcenter.usecases.build import BuildOutcome, ImageBuildSpec

#: The project's layer cache on its registry, shared by its services: three path
#: components, so no service's own repository (`<project>/<service>`) can be named so.
CACHE_REPOSITORY = "build-cache/layers"


def needs_build(plan: ServicePlan) -> bool:
    return (
        plan.action in ("create", "update") and plan.image is not None and plan.image.pending_build
    )


def build_spec(config: Config, plan: ServicePlan) -> ImageBuildSpec:
    service = plan.config
    assert service is not None and service.image is not None and plan.files is not None
    build = service.template.build or {}
    dockerfile = plan.files[str(build.get("dockerfile", "Dockerfile"))].decode()
    args: dict[str, str] = {}
    for name in build.get("args") or []:
        value = service.values.tree.get(name)
        if value is None or isinstance(value, SecretRef | dict | list):
            raise UserError(
                f"{service.file}: build arg {name} of {service.name} needs a plain value in "
                f"{service.env} (it has {'none' if value is None else 'a secret or a map'})"
            )
        args[name] = str(value).lower() if isinstance(value, bool) else str(value)
    repo = str(service.image.repo)
    if "://" not in repo and not repo.startswith("git@") and not Path(repo).is_absolute():
        repo = str((config.root / repo).resolve())
    registry = config.project.registry
    host = str(registry.get("url", "")).removeprefix("http://").removeprefix("https://")
    from configcenter.usecases.build import ImageBuildSpec

    return ImageBuildSpec(
        service=service.name,
        source_repo=repo,
        source_ref=service.image.source_ref,
        dockerfile=dockerfile,
        build_args=args,
        registry_host=host.rstrip("/"),
        repository=f"{config.project.name}/{service.name}",
        insecure=bool(registry.get("insecure", False)),
        context_dir=service.image.context,
        cache=build.get("cache", True) is not False,
        cache_repository=f"{config.project.name}/{CACHE_REPOSITORY}",
    )


def _registry_access(config: Config, redactor: Redactor) -> RegistryAccess:
    """Host, insecure flag and credentials (secrets resolved now, registered for masking)."""
    from configcenter.ports.builder import RegistryAccess
    from configcenter.ports.registry import RegistryCredentials

    registry = config.project.registry
    host = str(registry.get("url", "")).removeprefix("http://").removeprefix("https://")
    credentials = None
    if registry.get("username") and registry.get("password"):
        user = registry["username"]
        if isinstance(user, dict):
            user = wiring.resolve_secret(user["secret"], redactor)
        password = wiring.resolve_secret(registry["password"]["secret"], redactor)
        credentials = RegistryCredentials(str(user), password)
    return RegistryAccess(host.rstrip("/"), bool(registry.get("insecure", False)), credentials)


def open_builder(config: Config, redactor: Redactor) -> Builder:
    """The builder configcenter.yaml names (`builder.kind`, buildah by default)."""
    from configcenter.ports.builder import BuilderContext

    context = BuilderContext(
        _registry_access(config, redactor), lambda: open_registry(config, redactor)
    )
    return wiring.open_builder(config.project.builder, context)


def open_registry(config: Config, redactor: Redactor) -> Registry:
    access = _registry_access(config, redactor)
    return wiring.open_registry(access)


def build_images(
    config: Config,
    plans: Iterable[ServicePlan],
    redactor: Redactor,
    log: Callable[[str, str], None],
    jobs: int = 2,
) -> dict[str, ResolvedImage]:
    """Build (or find already built) the images of `plans`; by service name."""
    from configcenter.usecases.build import build_many

    chosen = list(plans)
    specs = [build_spec(config, p) for p in chosen]
    keys = {p.service: p.image.build_key if p.image else None for p in chosen}
    outcomes: list[BuildOutcome] = build_many(
        specs,
        open_builder(config, redactor),
        open_registry(config, redactor),
        cache_home() / "sources",
        log,
        jobs=jobs,
    )
    return {o.service: ResolvedImage(o.reference, o.digest, keys.get(o.service)) for o in outcomes}


# -- given images (image.ref) on our registry: pinned by digest ---------------------------------

#: Concurrent manifest lookups: enough to hide round trips for 50 services, gentle on a registry.
RESOLVE_JOBS = 8


class ImageResolveError(UserError):
    """Our registry could not say which image a tag names (unreachable, refused)."""


@dataclass(frozen=True)
class ImageName:
    """`host/repository[:tag][@digest]`, split as Distribution's reference grammar does."""

    ref: str  # as written
    host: str | None
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, ref: str) -> ImageName:
        name, _, digest = ref.partition("@")
        tag: str | None = None
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
        first, sep, rest = name.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            return cls(ref, first.lower(), rest, tag, digest or None)
        return cls(ref, None, name, tag, digest or None)

    def pinned(self, digest: str) -> str:
        """`host/repo:tag@digest`: the runtime pulls by digest, people still see the tag."""
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.host}/{self.repository}{tag}@{digest}"


def _registry_host(config: Config) -> str:
    url = str(config.project.registry.get("url", ""))
    return url.removeprefix("http://").removeprefix("https://").rstrip("/").lower()


def given_on_registry(
    config: Config, service: ServiceConfig, host: str | None = None
) -> ImageName | None:
    """The service's image.ref when it names our own registry (the only one we can ask).

    `host`: `_registry_host(config)`, when the caller asks for many services."""
    if service.image is None or service.image.is_build or not service.image.ref:
        return None
    host = _registry_host(config) if host is None else host
    ref = service.image.ref
    if not host or ref[: len(host) + 1].lower() != f"{host}/":
        return None  # its first component is not our host: no need to parse it
    name = ImageName.parse(ref)
    return name if name.host == host else None


def resolve_given_images(
    config: Config,
    env: str,
    redactor: Redactor,
    *,
    only: Collection[str] | None = None,
    registry: Registry | None = None,
    jobs: int = RESOLVE_JOBS,
    unreachable: dict[str, str] | None = None,
) -> dict[str, ResolvedImage]:
    """Pin every image.ref on our registry to the digest its tag names right now.

    A tag can be pushed again; deploying the tag would let the plan miss the new
    image and let the cluster run either. Images on other registries stay as
    written: we hold credentials for our registry only. One HEAD per distinct
    tag, concurrently; an unknown tag is a ConfigError at the service's image line.

    With `unreachable` (render and plan, which work offline), a tag the registry could
    not be asked about is recorded there (service -> why) and left unpinned instead of
    failing; apply passes nothing, so it still requires the registry.
    """
    if not config.project.registry.get("pin_digests", True):
        return {}
    wanted: dict[str, tuple[ServiceConfig, ImageName]] = {}
    host = _registry_host(config)
    for name, service in config.environment(env).services.items():
        if only and name not in only:
            continue
        image = given_on_registry(config, service, host)
        if image is not None:
            wanted[name] = (service, image)
    if not wanted:
        return {}
    resolved: dict[str, ResolvedImage] = {}
    lookups: dict[tuple[str, str], list[str]] = {}  # (repository, tag) -> services
    for name, (_, image) in wanted.items():
        if image.digest is not None:  # already pinned: nothing to ask
            resolved[name] = ResolvedImage(image.ref, image.digest)
        else:
            lookups.setdefault((image.repository, image.tag or "latest"), []).append(name)
    if not lookups:
        return resolved
    from concurrent.futures import ThreadPoolExecutor  # only when the registry is asked

    client = registry if registry is not None else open_registry(config, redactor)
    keys = list(lookups)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(keys)))) as pool:
            outcomes = list(pool.map(lambda key: _lookup(client, *key), keys))
    finally:
        if registry is None:
            client.close()
    problems: list[Problem] = []
    failures: list[str] = []
    for key, (digest, error, offline) in zip(keys, outcomes, strict=True):
        for name in lookups[key]:
            service, image = wanted[name]
            where = service.source("image", "ref")
            if error is not None and offline and unreachable is not None:
                unreachable[name] = redactor.redact(
                    f"{image.host}/{image.repository}:{key[1]}: {error}"
                )
            elif error is not None:
                failures.append(f"{where}: {name} ({image.repository}:{key[1]}): {error}")
            elif digest is None:
                problems.append(
                    Problem(
                        where,
                        f"image tag '{key[1]}' of {image.host}/{key[0]} does not exist on the "
                        f"registry ({name} in {env})",
                        "push the image first or fix the tag; a ref by digest "
                        "(@sha256:...) is used as written",
                    )
                )
            else:
                resolved[name] = ResolvedImage(image.pinned(digest), digest)
    if problems:
        raise ConfigError(problems)
    if failures:
        raise ImageResolveError(
            redactor.redact(
                "cannot pin given images to their digests: "
                + "; ".join(failures)
                + " (check the registry settings in configcenter.yaml, or set "
                "registry: {pin_digests: false} to deploy tags as written)"
            )
        )
    return resolved


def _lookup(registry: Registry, repository: str, tag: str) -> tuple[str | None, str | None, bool]:
    """(digest or None when absent, error text, whether the registry could not be asked).

    Errors are kept apart from absence; a refusal of our credentials is an answer, not
    an unreachable registry.
    """
    from configcenter.ports.registry import RegistryAuthError, RegistryError

    try:
        digest = registry.manifest_digest(repository, tag)
    except RegistryAuthError as exc:
        return None, str(exc), False
    except RegistryError as exc:
        return None, str(exc), True
    return (str(digest) if digest else None), None, False
