"""`configcenter build ENV SERVICE`: one service's image, built (or found) alone."""

from __future__ import annotations

from collections.abc import Callable

from configcenter.core.errors import UserError
from configcenter.usecases.build import BuildOutcome, build_image, build_many
from configcenter.usecases.images import build_spec, open_builder, open_registry
from configcenter.usecases.inspect import plan_env, service_config
from configcenter.usecases.workspace import Workspace, cache_home


def build_service(
    ws: Workspace, env: str, service: str, log: Callable[[str, str], None], dry_run: bool = False
) -> BuildOutcome:
    """`configcenter build ENV SERVICE`: build (or find) one service's image, alone."""
    svc = service_config(ws.config, env, service)
    if svc.image is None or not svc.image.is_build:
        raise UserError(
            f"{svc.file}: {service} in {env} uses a given image (image.ref), nothing to build; "
            "image.source: {repo, ref} builds from source"
        )
    plan = plan_env(ws, env, only=[service], render_all=True).services[0]
    if dry_run:
        return build_image(
            build_spec(ws.config, plan),
            open_builder(ws.config, ws.redactor),
            open_registry(ws.config, ws.redactor),
            cache_home() / "sources",
            lambda line: log(service, line),
            dry_run=True,
        )
    outcome: BuildOutcome = build_many(
        [build_spec(ws.config, plan)],
        open_builder(ws.config, ws.redactor),
        open_registry(ws.config, ws.redactor),
        cache_home() / "sources",
        log,
        jobs=1,
    )[0]
    return outcome
