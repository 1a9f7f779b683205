"""Which services a pushed image deploys: a registry's push notification, routed to services.

serve turns each manifest push of a Distribution notification into a job; this
use case says which services of which `auto_apply: true` environments run the
pushed repository (and tag, when the push names one), so the job applies just
those.
"""

from __future__ import annotations

from configcenter.core.model import Config
from configcenter.usecases.images import ImageName


def services_for_pushed_image(
    config: Config, repository: str, tag: str | None
) -> dict[str, list[str]]:
    """Environment -> services (in config order) whose `image.ref` names `repository` on any
    registry host, with the pushed `tag` (a ref without a tag means `latest`); `tag` None
    (a push by digest) matches every tag. Only environments with `auto_apply: true`."""
    targets: dict[str, list[str]] = {}
    for env in config.project.environments:
        environment = config.environment(env)
        if not environment.auto_apply:
            continue
        for name, service in environment.services.items():
            ref = service.image.ref if service.image else None
            if ref and names_pushed_image(ref, repository, tag):
                targets.setdefault(env, []).append(name)
    return targets


def names_pushed_image(ref: str, repository: str, tag: str | None) -> bool:
    """Whether image reference `ref` names this registry repository (and tag, when pushed)."""
    image = ImageName.parse(ref)
    return image.repository == repository and (tag is None or tag == (image.tag or "latest"))
