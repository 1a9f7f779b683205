"""What the platforms of an environment run, for plan and apply (see `core.converge`).

One `observe()` per platform: one list call per kind for Kubernetes, one app
listing for Marathon. Only the release each service's objects carry is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from configcenter.core.converge import Converged, LiveServices, converge
from configcenter.core.errors import TransientFailure
from configcenter.core.model import Config
from configcenter.core.plan import Plan
from configcenter.core.state import EnvState
from configcenter.ports.deploy_repo import DeployRepoError
from configcenter.ports.platform import ObservedService
from configcenter.usecases.platforms import open_platform
from configcenter.usecases.workspace import Workspace


class ObserveError(TransientFailure):
    """A platform of the environment could not be observed (unreachable, or refused)."""


def env_platforms(config: Config, env: str, state: EnvState) -> list[str]:
    """Platforms the deploy repo or the config puts services of `env` on (known ones only)."""
    names = {s.platform for s in state.services.values() if s.platform}
    if env in config.environments:
        environment = config.environment(env)
        names |= {environment.platform or ""}
        names |= {s.platform or "" for s in environment.services.values()}
    return sorted(n for n in names if n and n in config.project.platforms)


def observe_env(
    ws: Workspace,
    env: str,
    state: EnvState,
    log: Callable[[str], None] | None = None,
) -> dict[str, LiveServices]:
    """Platform name -> service -> the release its objects carry. Raises ObserveError."""
    live: dict[str, LiveServices] = {}
    for name in env_platforms(ws.config, env, state):
        try:
            observed = open_platform(ws.config, env, name, ws.redactor).observe()
        except Exception as exc:
            raise ObserveError(
                f"platform '{name}' for {env} cannot be reached: {ws.redactor.redact(str(exc))}"
            ) from None
        live[name] = live_releases(observed)
        if log is not None:
            log(f"{env}: observed {len(observed)} service(s) on platform {name}")
            for service, item in observed.items():
                if item.missing:
                    log(f"{service}: {', '.join(item.missing)} missing on platform {name}")
    return only_ours(ws, env, state, live, log)


def only_ours(
    ws: Workspace,
    env: str,
    state: EnvState,
    live: Mapping[str, LiveServices],
    log: Callable[[str], None] | None = None,
) -> dict[str, LiveServices]:
    """`live` without services this deploy repo never deployed to `env`.

    A service on the platform that neither the config nor the state has is pruned by
    apply, but only if this deploy repo's history of the environment has it: another
    project sharing the namespace (and the environment's name) is left alone.
    """
    known = set(state.services)
    if env in ws.config.environments:
        known |= set(ws.config.environment(env).services)
    kept: dict[str, LiveServices] = {}
    for platform, services in live.items():
        mine: dict[str, str | None] = {}
        for service, release in services.items():
            if service in known or _deployed_before(ws, env, service):
                mine[service] = release
            elif log is not None:
                log(
                    f"{service}: runs on {platform} with {env}'s labels, but this deploy repo "
                    "never deployed it; left alone"
                )
        kept[platform] = mine
    return kept


def converged_plan(
    ws: Workspace,
    env: str,
    *,
    only: Collection[str] | None = None,
    retry: Collection[str] = (),
    warn: Callable[[str], None] | None = None,
) -> Converged:
    """`plan_env`, with what the platforms run folded in (see `converge_observed`)."""
    from configcenter.usecases.inspect import plan_env

    return converge_observed(
        ws, env, plan_env(ws, env, only=only, retry=retry), only=only, warn=warn
    )


def converge_observed(
    ws: Workspace,
    env: str,
    plan: Plan,
    *,
    only: Collection[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Converged:
    """`plan` with what the platforms run folded in. A platform that cannot be observed
    is reported through `warn` and left out: the plan is then the deploy repo's alone
    for its services."""
    state = ws.peek_state(env)  # only read: its service names and platforms
    live: dict[str, LiveServices] = {}
    for name in env_platforms(ws.config, env, state):
        try:
            observed = open_platform(ws.config, env, name, ws.redactor).observe()
        except Exception as exc:
            if warn is not None:
                warn(
                    f"platform '{name}' not observed ({ws.redactor.redact(str(exc))}); "
                    "the plan compares with the deploy repo only for its services"
                )
            continue
        live[name] = live_releases(observed)
    return converge(plan, state, only_ours(ws, env, state, live, warn), only=only)


def live_releases(observed: Mapping[str, ObservedService]) -> LiveServices:
    """Service -> the release it runs. A release some of whose objects are gone does not
    run whole (None: an unknown release), so converge rolls it out again."""
    return {
        service: None if item.missing else item.release_id for service, item in observed.items()
    }


def _deployed_before(ws: Workspace, env: str, service: str) -> bool:
    if not ws.has_deploy_repo():
        return False
    try:
        return bool(ws.deploy_repo.log(prefix=f"{env}/{service}/", limit=1))
    except DeployRepoError:
        return False
