"""Read-only use cases: validate, explain, render, plan. Nothing here writes anything
(`render --out` writes its directory: configcenter.usecases.render_out)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from configcenter import wiring
from configcenter.core.errors import ConfigError, Problem, ProblemList, Source
from configcenter.core.model import Config, ServiceConfig
from configcenter.core.plan import (
    Plan,
    ResolvedImage,
    check_known,
    check_moved_tag,
    desired_image,
    make_plan,
)
from configcenter.core.render import Rendered, RenderError
from configcenter.core.state import EnvState
from configcenter.core.values import Entry
from configcenter.usecases.workspace import Workspace


def check_env(config: Config, env: str) -> None:
    if env not in config.project.environments:
        raise ConfigError(
            [
                Problem(
                    config.project.doc.source("environments"),
                    f"unknown environment '{env}'",
                    "environments: " + ", ".join(config.project.environments),
                )
            ]
        )


def service_config(config: Config, env: str, service: str) -> ServiceConfig:
    check_env(config, env)
    environment = config.environment(env)
    if service not in environment.services:
        import difflib

        known = sorted(environment.services)
        close = difflib.get_close_matches(service, known, n=1)
        raise ConfigError(
            [
                Problem(
                    # The file that would deploy it (configcenter.yaml has nothing wrong).
                    Source(f"environments/{env}/{service}.yaml"),
                    f"service '{service}' is not deployed in {env}",
                    (f"did you mean '{close[0]}'? " if close else "")
                    + f"deployed in {env}: "
                    + (", ".join(known) or "none")
                    + f"; to deploy it, create environments/{env}/{service}.yaml",
                )
            ]
        )
    return environment.services[service]


def check_service_known(ws: Workspace, env: str, service: str) -> None:
    """A service name given on the command line must be one of ENV's services.

    A config loaded with some services only (history of one) is loaded whole here, to
    name the others; one that did not load (history went on from the deploy repo
    alone) cannot say, and the warning about it was given.
    """
    config = ws.config
    if ws.services is not None:
        whole = Workspace(ws.root, ws.deploy_repo_url, ws.run_store_url, ws.strict, (env,))
        try:
            config = whole.config
        except ConfigError:
            return
    if env not in config.environments:
        return
    service_config(config, env, service)


@dataclass
class ValidationReport:
    environments: int
    services: int
    renders: int
    warnings: list[Problem]


def validate(ws: Workspace) -> ValidationReport:
    """Load everything and render every service in every environment."""
    config = ws.config
    problems = ProblemList()
    renders = 0
    for env, environment in config.environments.items():
        state = EnvState(env)
        for service in environment.services.values():
            image = desired_image(config, service, state.services.get(service.name), {})
            try:
                rendered = ws.renderer.render(config, service, image.ref)
                renders += 1
            except RenderError as exc:
                problems.items.append(exc.problem)
                continue
            _check_file_delivery(config, service, rendered.files, problems)
    _check_moved_tags(ws, problems)
    if problems.errors:  # with the load's warnings: one often explains an error
        raise ConfigError(problems.items, strict=ws.strict).with_warnings(ws.problems.warnings)
    problems.raise_if_errors(ws.strict)
    services = sum(len(e.services) for e in config.environments.values())
    return ValidationReport(len(config.environments), services, renders, ws.problems.warnings)


def _check_file_delivery(
    config: Config, service: ServiceConfig, files: Mapping[str, bytes], problems: ProblemList
) -> None:
    """Rendered config files need a platform that can hand them out, as configured."""
    name = service.platform
    spec = config.project.platforms.get(name) if name else None
    if spec is None or name is None:
        return
    undelivered = wiring.check_config_files(spec.kind, name, spec.settings, files)
    if undelivered is None:
        return
    problems.error(
        service.source("platform") if "platform" in (service.doc.data or {}) else service.source(),
        f"{service.name} {undelivered.message}",
        undelivered.hint,
    )


def _check_moved_tags(ws: Workspace, problems: ProblemList) -> None:
    """A released tag that now points elsewhere than the deploy repo recorded (as plan does).

    Only when the deploy repo is a reachable path or URL; validate never needs it.
    """
    from configcenter.core.errors import TransientFailure
    from configcenter.ports.deploy_repo import DeployRepoError, DeployRepoMissing

    config = ws.config
    try:
        if not ws.has_deploy_repo():
            return
    except DeployRepoMissing as exc:  # a local path where nothing exists
        ws.problems.warning(
            config.project.doc.source("deploy_repo", "url"),
            f"moved tags not checked: {exc.message}",
            exc.hint,
        )
        return
    for env, environment in config.environments.items():
        try:
            state = ws.peek_state(env)  # read only: no copy
        except (DeployRepoError, TransientFailure) as exc:
            ws.problems.warning(
                config.project.doc.source("deploy_repo"),
                f"deploy repo not read, moved tags not checked: {exc}",
            )
            return
        for name, service in environment.services.items():
            check_moved_tag(service, state.services.get(name), problems)


@dataclass
class Explained:
    key: str
    entry: Entry
    consumed: bool = True  # read by the service (its ENV list, build args, templates)


def explain(ws: Workspace, env: str, service: str, key: str | None) -> list[Explained]:
    import jinja2

    from configcenter.core.consumed import find_consumption

    svc = service_config(ws.config, env, service)
    reads = find_consumption(svc.template, jinja2.Environment())
    rows = [
        Explained(".".join(path), entry, reads.covers(path[0]))
        for path, entry in sorted(svc.values.entries.items())
    ]
    if key is None:
        return rows
    picked = [r for r in rows if r.key == key or r.key.startswith(key + ".")]
    if not picked:
        known = ", ".join(r.key for r in rows)
        raise ConfigError(
            [
                Problem(
                    svc.source(),
                    f"'{key}' has no value for {service} in {env}",
                    f"values are: {known}",
                )
            ]
        )
    return picked


def render(ws: Workspace, env: str, services: Collection[str] | None = None) -> list[Rendered]:
    """Render as apply would (images as the deploy repo last recorded them), without writing."""
    return render_env(ws, env, services).rendered


@dataclass
class RenderResult:
    rendered: list[Rendered]
    images: dict[str, str]  # service -> the image reference the files name
    unverified: dict[str, str]  # service -> why its image could not be pinned to a digest
    warnings: list[Problem]


def render_env(ws: Workspace, env: str, services: Collection[str] | None = None) -> RenderResult:
    """`render`: the files apply would write, with the images the plan would name (given
    images pinned by the registry, built ones as the deploy repo last recorded them), and
    the same errors (render errors of every service, moved tags, unknown services). None
    of the rest of a plan: no diffs, no value provenance, no platform asked whether secrets
    rotated. Works offline: an image the registry could not pin is a warning."""
    from configcenter.usecases.images import resolve_given_images

    config = ws.config
    check_env(config, env)
    environment = config.environment(env)
    state = ws.peek_state(env)  # only read: recorded images and template commits
    if services:
        check_known(config, env, state, services)
    unreachable: dict[str, str] = {}
    pinned = resolve_given_images(config, env, ws.redactor, only=services, unreachable=unreachable)
    problems = ProblemList()
    rendered: list[Rendered] = []
    images: dict[str, str] = {}
    for name in environment.order:
        if services and name not in services:
            continue
        service = environment.services[name]
        previous = state.services.get(name)
        image = desired_image(config, service, previous, pinned)
        images[name] = image.ref
        if check_moved_tag(service, previous, problems):
            continue
        try:
            rendered.append(ws.renderer.render(config, service, image.ref))
        except RenderError as exc:
            problems.items.append(exc.problem)
    if problems.errors:  # with the load's warnings, as validate and plan
        raise ConfigError(problems.errors).with_warnings(ws.problems.warnings)
    return RenderResult(rendered, images, unreachable, _unpinned(config, env, unreachable))


@dataclass
class CheckedPlan:
    plan: Plan
    unverified: dict[str, str]  # service -> why its image is not pinned by digest
    warnings: list[Problem]


def plan_env_checked(
    ws: Workspace,
    env: str,
    *,
    only: Collection[str] | None = None,
    retry: Collection[str] = (),
    render_all: bool = False,
) -> CheckedPlan:
    """`plan` and `render`: like plan_env, but an unreachable registry is a warning.

    Images whose tag could not be pinned to a digest plan as written and are listed as
    unverified; apply (plan_env) still requires the registry.
    """
    unreachable: dict[str, str] = {}
    try:
        plan = plan_env(
            ws, env, only=only, retry=retry, render_all=render_all, unreachable=unreachable
        )
    except ConfigError as exc:
        raise exc.with_warnings(ws.problems.warnings) from None
    return CheckedPlan(plan, unreachable, _unpinned(ws.config, env, unreachable))


def _unpinned(config: Config, env: str, unreachable: Mapping[str, str]) -> list[Problem]:
    """Warnings for images whose tag the registry could not be asked to pin."""
    return [
        Problem(
            config.environment(env).services[service].source("image", "ref"),
            f"{service}: image not pinned to a digest, registry unreachable ({why})",
            "render/plan show the tag as written; apply needs the registry",
            "warning",
        )
        for service, why in sorted(unreachable.items())
    ]


def plan_env(
    ws: Workspace,
    env: str,
    *,
    only: Collection[str] | None = None,
    retry: Collection[str] = (),
    resolved_images: dict[str, ResolvedImage] | None = None,
    render_all: bool = False,
    unreachable: dict[str, str] | None = None,
    check_secrets: bool = True,
) -> Plan:
    """Plan `env`; `check_secrets` asks the platforms whether secret values rotated."""
    from configcenter.usecases.images import resolve_given_images
    from configcenter.usecases.secret_check import secret_checker

    check_env(ws.config, env)
    state = ws.read_state(env)
    # Given images on our registry plan as the digest their tag names now, as apply deploys.
    pinned = resolve_given_images(ws.config, env, ws.redactor, only=only, unreachable=unreachable)
    previous_file = ws.previous_file()
    return make_plan(
        ws.config,
        env,
        state,
        ws.renderer,
        previous_file,
        only=only,
        retry=retry,
        resolved_images={**pinned, **(resolved_images or {})},
        render_all=render_all,
        secret_check=secret_checker(ws, env, previous_file) if check_secrets else None,
        digests=ws.plan_digests(env),
    )
