"""Whether a service's secret values rotated, asked of its platform at plan time.

The plan never hashes secret values; it hands each service with secrets to its
platform, which resolves the references now and compares them with the
immutable Secrets a generation was made with, and names the references whose
values differ (never the values). A platform that cannot be
reached (or cannot read its secrets back) makes the plan say it cannot tell; it is
asked that once per platform, so a no-op plan of thousands of services does not
read every service's files to learn, service by service, that it cannot tell.
"""

from __future__ import annotations

from collections.abc import Mapping

from configcenter.core.plan import REFERENCES_CHANGED, PreviousFile, SecretCheck, ServicePlan
from configcenter.core.redact import Redactor
from configcenter.core.secretrefs import has_refs
from configcenter.core.values import to_value
from configcenter.ports.platform import Deployable, Platform, PlatformError, SecretsRotated
from configcenter.usecases.platforms import NoPlatform, config_digest, env_values, open_platform
from configcenter.usecases.workspace import Workspace


def secret_checker(ws: Workspace, env: str, previous_file: PreviousFile) -> SecretCheck:
    """A `SecretCheck` for `env` that opens each platform once, on first use."""
    platforms: dict[str, Platform | str] = {}
    unavailable: dict[str, str | None] = {}
    redactor: Redactor = ws.redactor

    def platform_for(name: str) -> Platform | str:
        if name not in platforms:
            try:
                platforms[name] = open_platform(ws.config, env, name, redactor)
            except (NoPlatform, PlatformError) as exc:
                platforms[name] = redactor.redact(str(exc))
        return platforms[name]

    def unavailable_on(name: str, platform: Platform) -> str | None:
        """Why the platform cannot compare any of the env's secrets now, asked once."""
        if name not in unavailable:
            try:
                why = platform.secrets_unavailable()
            except PlatformError as exc:
                why = str(exc)
            unavailable[name] = None if why is None else redactor.redact(why)
        return unavailable[name]

    def check(
        plan: ServicePlan, files: Mapping[str, bytes] | None, generations: list[int]
    ) -> int | SecretsRotated | str:
        service = plan.config
        assert service is not None and plan.image is not None
        if not service.platform:
            return "the service has no platform"
        platform = platform_for(service.platform)
        if isinstance(platform, str):
            return platform
        rendered = files is not None
        why = unavailable_on(service.platform, platform)
        if why is not None and not rendered:
            # Inputs unchanged and a platform that cannot be asked: nothing to compare, so
            # neither the recorded files are read nor the release built, per service.
            return why
        previous = plan.previous
        names = previous.files if previous is not None else {}
        found = {n: previous_file(f"{env}/{service.name}/{n}") for n in names}
        found_before = {n: data for n, data in found.items() if data is not None}
        if files is None:
            files = found_before
        values, secrets = env_values(plan.consumed_values, list(service.template.env_keys))
        target = Deployable(
            env=env,
            service=service.name,
            release_id=plan.previous.release.id
            if plan.previous is not None and plan.previous.release is not None
            else "",
            image=plan.image.ref,
            config_digest=config_digest(plan.previous) if plan.previous is not None else "",
            files=dict(files),
            values=values,
            secrets=secrets,
            replicas=service.replicas,
            secrets_generation=generations[0] if generations else 1,
        )
        try:
            verdict = platform.secrets_match(target, generations)
        except PlatformError as exc:
            verdict = redactor.redact(str(exc))
        if (
            isinstance(verdict, str)
            and rendered
            and _references_changed(plan, target, found_before)
        ):
            # The values cannot be compared now, but the release's Secrets differ from the
            # recorded generation's by their references alone (a file that holds a secret
            # changed, a secret was added): no generation can be reused, whatever the values.
            return SecretsRotated(why=REFERENCES_CHANGED)
        return verdict

    return check


def _references_changed(
    plan: ServicePlan, target: Deployable, before: Mapping[str, bytes] | None
) -> bool:
    """Whether what the release puts into Secrets differs from the recorded release's, as
    references (never values): the files holding a secret, and the ENV list's secrets."""
    previous = plan.previous
    if previous is None or before is None:
        return True
    now = {n: data for n, data in target.files.items() if has_refs(data.decode(errors="replace"))}
    was = {n: data for n, data in before.items() if has_refs(data.decode(errors="replace"))}
    if now != was:
        return True
    env_keys = list(plan.config.template.env_keys) if plan.config is not None else []
    _, secrets_before = env_values(to_value(previous.values), env_keys)
    return secrets_before != target.secrets
