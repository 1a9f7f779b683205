"""What the platforms of an environment run, for plan and apply (see `core.converge`).

One `observe()` per platform: one list call per kind for Kubernetes, one app
listing for Marathon. Kept: the release each service's objects carry, and which
services carry their current release but not its image or replica count (changed
by hand: `kubectl set image`, `kubectl scale`), so apply rolls those out again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from configcenter.core.converge import Converged, HandEdits, LiveServices, converge
from configcenter.core.errors import TransientFailure
from configcenter.core.model import Config
from configcenter.core.plan import Plan
from configcenter.core.state import EnvState
from configcenter.ports.deploy_repo import DeployRepoError
from configcenter.ports.platform import ObservedService, Platform
from configcenter.usecases.platforms import deployable, open_platform
from configcenter.usecases.workspace import Workspace


class ObserveError(TransientFailure):
    """A platform of the environment could not be observed (unreachable, or refused)."""


def env_platforms(
    config: Config, env: str, state: EnvState, only: Collection[str] | None = None
) -> list[str]:
    """Platforms the deploy repo or the config puts services of `env` (or of the services
    `only` names) on (known ones only)."""
    names = {s.platform for n, s in state.services.items() if s.platform and _picked(n, only)}
    if env in config.environments:
        environment = config.environment(env)
        default = environment.platform or ""
        names |= {
            s.platform or default for n, s in environment.services.items() if _picked(n, only)
        }
        if not only:
            names.add(default)
    return sorted(n for n in names if n and n in config.project.platforms)


def _picked(service: str, only: Collection[str] | None) -> bool:
    return not only or service in only


def observe_env(
    ws: Workspace,
    env: str,
    state: EnvState,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, LiveServices], HandEdits]:
    """Platform name -> service -> the release its objects carry, and the services
    changed by hand (see `hand_edits`). Raises ObserveError."""
    live: dict[str, LiveServices] = {}
    edited: dict[str, dict[str, str]] = {}
    for name in env_platforms(ws.config, env, state):
        try:
            platform = open_platform(ws.config, env, name, ws.redactor)
            observed = platform.observe()
        except Exception as exc:
            raise ObserveError(
                f"platform '{name}' for {env} cannot be reached: {ws.redactor.redact(str(exc))}"
            ) from None
        edited[name] = hand_edits(ws, env, state, name, platform, observed)
        live[name] = live_releases(observed)
        if log is not None:
            log(f"{env}: observed {len(observed)} service(s) on platform {name}")
            for service, item in observed.items():
                if item.missing:
                    log(f"{service}: {', '.join(item.missing)} missing on platform {name}")
            for service, why in edited[name].items():
                log(f"{service}: {why}")
    return only_ours(ws, env, state, live, log), edited


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
    edited: dict[str, dict[str, str]] = {}
    for name in env_platforms(ws.config, env, state, only):
        try:
            platform = open_platform(ws.config, env, name, ws.redactor)
            observed = platform.observe()
        except Exception as exc:
            if warn is not None:
                warn(
                    f"platform '{name}' not observed ({ws.redactor.redact(str(exc))}); "
                    "the plan compares with the deploy repo only for its services"
                )
            continue
        edited[name] = hand_edits(ws, env, state, name, platform, observed)
        live[name] = live_releases(observed)
    ours = only_ours(ws, env, state, live, warn)
    return converge(plan, state, ours, only=only, edited=edited)


def live_releases(observed: Mapping[str, ObservedService]) -> LiveServices:
    """Service -> the release it runs. A release some of whose objects are gone does not
    run whole (None: an unknown release), so converge rolls it out again."""
    return {
        service: None if item.missing else item.release_id for service, item in observed.items()
    }


def hand_edits(
    ws: Workspace,
    env: str,
    state: EnvState,
    name: str,
    platform: Platform,
    observed: Mapping[str, ObservedService],
) -> dict[str, str]:
    """Service -> what differs, for workloads on platform `name` that carry their current
    release (so its annotation says all is well) but whose image or replica count is not
    the release's: someone ran `kubectl set image` or `kubectl scale`.

    Cheap first: only a service whose summary differs from its state record is read
    from the deploy repo and compared by the platform's own `diff` (a template may put
    another container first, or set replicas itself), which has the last word.
    """
    suspects = []
    for service, item in observed.items():
        current = state.services.get(service)
        release = current.release if current is not None else None
        if current is None or release is None or current.platform != name or item.missing:
            continue
        if item.release_id is None or item.release_id not in (release.id, release.scale_of):
            continue
        image = bool(item.image and current.image and item.image != current.image)
        count = None not in (item.replicas, current.replicas) and item.replicas != current.replicas
        if image or count:
            suspects.append(service)
    if not suspects:
        return {}
    paths = [f"{env}/{s}/{file}" for s in suspects for file in state.services[s].files]
    found = ws.deploy_repo.read_many(paths)
    edits: dict[str, str] = {}
    for service in suspects:
        current = state.services[service]
        assert current.release is not None
        prefix = f"{env}/{service}/"
        files = {p[len(prefix) :]: data for p, data in found.items() if p.startswith(prefix)}
        wanted = deployable(env, service, current, files, current.release.id)
        drifts = [d for d in platform.diff(wanted, observed[service]).drifts]
        what = [
            f"{d.field} {d.live} (the release's: {d.desired})"
            for d in drifts
            if d.field in ("image", "replicas")
        ]
        if what:
            edits[service] = f"{name} runs {' and '.join(what)}"
    return edits


def _deployed_before(ws: Workspace, env: str, service: str) -> bool:
    if not ws.has_deploy_repo():
        return False
    try:
        return bool(ws.deploy_repo.log(prefix=f"{env}/{service}/", limit=1))
    except DeployRepoError:
        return False
