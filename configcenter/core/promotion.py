"""Promotion rules: what promoting one environment to the next carries, and where.

A promotion carries pins, never values: for each service, the template tag and
the image of the source environment's last *good* release (from the deploy
repo's state records of `<from>`; a newer failed release is never promoted).

Images: a source-built image is carried by digest (`image: {ref: repo@sha256:...}`
replacing `image.source`, with a comment naming the release it came from), so
the target runs the exact bits the source verified. The one exception is a
target that already builds the same source repo and ref: it keeps building.
A given image (`image.ref`) is carried as written.

Promotions go forward along `environments`, one step at a time unless
`promotion: {allow_skip: true}`; each goes on its branch
`promote/<from>-to-<to>[/<service>]`. Pure: the use case
(`configcenter.usecases.promote`) reads the state and writes the pins.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from configcenter.core.errors import UserError
from configcenter.core.model import HEAD, Config, ImageSpec
from configcenter.core.state import Release, ServiceState

BRANCH_PREFIX = "promote/"


class PromotionError(UserError):
    """The promotion cannot go ahead; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Downgrade:
    """A pin that would take the target back to something older than it pins now."""

    what: str  # "template" or "image"
    before: str
    after: str
    why: str  # how we know it is older

    def to_json(self) -> dict[str, str]:
        return {"what": self.what, "from": self.before, "to": self.after, "why": self.why}

    def __str__(self) -> str:
        return f"{self.what} {self.before} -> {self.after} ({self.why})"


@dataclass(frozen=True)
class SourceRelease:
    """One release of a service in the source environment's history (newest first)."""

    id: str
    at: str
    template: str
    image: str


@dataclass(frozen=True)
class Pin:
    """One service's promoted pins: the source's last good template tag and image."""

    service: str
    template: str
    template_before: str
    image: str | None  # the ref to write; None leaves the target's image as it is
    image_before: str
    image_note: str  # the YAML comment beside the promoted ref
    release: Release  # the source release carried
    notes: tuple[str, ...] = ()  # e.g. a newer failed release that was passed over
    downgrades: tuple[Downgrade, ...] = ()  # pins older than the target's (see downgrades())

    def to_json(self) -> dict[str, Any]:
        return {
            "template": {"from": self.template_before, "to": self.template},
            "image": {"from": self.image_before, "to": self.image or self.image_before},
            "release": self.release.id,
            "release_outcome": self.release.outcome,
            "notes": list(self.notes),
            "downgrades": [d.to_json() for d in self.downgrades],
        }


@dataclass(frozen=True)
class Skipped:
    service: str
    reason: str


def branch_name(source: str, target: str, service: str | None = None) -> str:
    return f"{BRANCH_PREFIX}{source}-to-{target}" + (f"/{service}" if service else "")


def parse_branch(branch: str, environments: Sequence[str]) -> tuple[str, str, str | None] | None:
    """(from, to, service) of a promotion branch, or None; env names may contain `-to-`."""
    if not branch.startswith(BRANCH_PREFIX):
        return None
    rest = branch.removeprefix(BRANCH_PREFIX)
    pair, _, service = rest.partition("/")
    for source in environments:
        for target in environments:
            if pair == f"{source}-to-{target}":
                return source, target, service or None
    return None


def check_order(config: Config, source: str, target: str) -> None:
    """Promotions go forward along `environments`, one step unless allow_skip."""
    envs = config.project.environments
    for name in (source, target):
        if name not in envs:
            raise PromotionError(
                f"unknown environment '{name}': environments in configcenter.yaml are "
                + ", ".join(envs)
            )
    if source == target:
        raise PromotionError(f"cannot promote {source} to itself: name two environments")
    i, j = envs.index(source), envs.index(target)
    if j < i:
        raise PromotionError(
            f"{target} comes before {source} in the promotion order ({' -> '.join(envs)}): "
            "promotions go forward only; to undo a release use `configcenter rollback`"
        )
    allow_skip = config.project.promotion.get("allow_skip") is True
    if j > i + 1 and not allow_skip:
        between = ", ".join(envs[i + 1 : j])
        raise PromotionError(
            f"promoting {source} -> {target} skips {between} (order: {' -> '.join(envs)}): "
            f"promote through {between} first, or set promotion: {{allow_skip: true}} "
            "in configcenter.yaml"
        )


def choose_pin(
    config: Config, source: str, target: str, service: str, state: ServiceState | None
) -> Pin | Skipped:
    """What promoting `service` carries, from the source's state record; Skipped says why not."""
    target_cfg = config.environment(target).services[service]
    if state is None:
        return Skipped(service, f"{source} has never released it: apply {source} first")
    good = state.last_good
    failed = state.last_failed
    if good is None:
        why = f"{source} has no good release of it"
        if failed is not None:
            why += f"; its last release {failed.id} {failed.outcome} at {failed.at}"
        return Skipped(service, why + f": fix it in {source} first")
    if not good.template_tag:
        return Skipped(service, f"release {good.id} in {source} records no template tag")
    if good.template_tag == HEAD and not config.environment(target).allow_head:
        return Skipped(
            service,
            f"{source} runs its template from the work tree (HEAD), which {target} does not "
            f"allow: release it (configcenter template release {service} VERSION), pin that "
            f"in {source}, apply, then promote",
        )
    notes: list[str] = []
    if failed is not None and failed.at >= good.at and failed.id != good.id:
        notes.append(
            f"newer release {failed.id} ({failed.template_tag}) {failed.outcome} at "
            f"{failed.at} and is not promoted; carrying the last good one, {good.id}"
        )
    image, note = _image_for(config, source, target, service, state, good)
    return Pin(
        service=service,
        template=good.template_tag,
        template_before=target_cfg.template.tag,
        image=image,
        image_before=_describe_image(target_cfg.image),
        image_note=note,
        release=good,
        notes=tuple(notes),
    )


def _image_for(
    config: Config,
    source: str,
    target: str,
    service: str,
    state: ServiceState,
    good: Release,
) -> tuple[str | None, str]:
    ref = good.image
    if not ref:
        return None, ""
    source_spec = config.environment(source).services.get(service)
    src = source_spec.image if source_spec is not None else None
    dst = config.environment(target).services[service].image
    current = state.release is not None and state.release.id == good.id
    built_from = ""
    if src is not None and src.is_build and current:
        built_from = f", built from {src.repo}@{src.source_ref}"
        if dst is not None and dst.is_build and _same_source(src, dst):
            return None, ""  # the target builds the same source ref itself
    return ref, f"promoted from {source} release {good.id}{built_from}"


def _same_source(a: ImageSpec, b: ImageSpec) -> bool:
    return (a.repo, a.source_ref, a.context) == (b.repo, b.source_ref, b.context)


def _describe_image(spec: ImageSpec | None) -> str:
    if spec is None:
        return ""
    if spec.is_build:
        return f"build {spec.repo}@{spec.source_ref}"
    return spec.ref or ""


# -- downgrades ---------------------------------------------------------------------------------

_VERSION = re.compile(r"v?(\d+(?:\.\d+)*)(?:[-.+]?([0-9A-Za-z.-]*))?")


def version_key(text: str) -> tuple[tuple[int, ...], int, str] | None:
    """An order for version-like tags (1.2.0, v1.10, 2.0.0-rc.1), None for other text.

    Numbers compare as numbers (1.10 > 1.9, 1.2 == 1.2.0); a pre-release (anything after
    the numbers) comes before the release it leads to."""
    match = _VERSION.fullmatch(text)
    if match is None:
        return None
    numbers = tuple(int(n) for n in match[1].split("."))
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers = numbers[:-1]
    suffix = match[2] or ""
    return numbers, 0 if suffix else 1, suffix


def _split_image(ref: str) -> tuple[str, str | None]:
    """(repository, tag) of an image reference; the tag is None for a digest or no tag."""
    if "@" in ref:
        return ref.split("@", 1)[0], None
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, None


def downgrades(pin: Pin, history: Sequence[SourceRelease] = ()) -> tuple[Downgrade, ...]:
    """What in `pin` is older than what the target pins now.

    A template tag, or an image tag of the same repository, that reads as a lower version
    is older. Otherwise (an image by digest, tags that are not versions) the source's
    history decides: what the target pins now first appeared in the source after what is
    carried did (the source went back, by a rollback or by hand, after the target had
    been promoted the newer one)."""
    found: list[Downgrade] = []

    def first_seen(what: str, value: str) -> SourceRelease | None:
        seen = [e for e in history if getattr(e, what) == value and e.at]
        carried = SourceRelease(pin.release.id, pin.release.at, pin.template, pin.image or "")
        if getattr(carried, what) == value and carried.at:
            seen.append(carried)
        return min(seen, key=lambda e: e.at, default=None)

    def compare(what: str, before: str, after: str, old: Any, new: Any) -> None:
        if old is not None and new is not None:
            if new < old:
                found.append(Downgrade(what, before, after, "a lower version"))
            return
        now, carried = first_seen(what, before), first_seen(what, after)
        if now is not None and carried is not None and now.at > carried.at:
            why = f"{before} is newer in the source: first released in {now.id}"
            found.append(Downgrade(what, before, after, why))

    before, after = pin.template_before, pin.template
    if before and after != before and HEAD not in (before, after):
        compare("template", before, after, version_key(before), version_key(after))
    if pin.image is not None and pin.image_before and pin.image != pin.image_before:
        (repo_before, tag_before), (repo_after, tag_after) = (
            _split_image(pin.image_before),
            _split_image(pin.image),
        )
        same = repo_before == repo_after and tag_before and tag_after
        compare(
            "image",
            pin.image_before,
            pin.image,
            version_key(tag_before) if same and tag_before else None,
            version_key(tag_after) if same and tag_after else None,
        )
    return tuple(found)


def with_downgrades(pin: Pin, history: Sequence[SourceRelease] = ()) -> Pin:
    return replace(pin, downgrades=downgrades(pin, history))


def downgrade_refusal(source: str, target: str, pins: Sequence[Pin]) -> PromotionError:
    """The refusal of a promotion that would downgrade `target` (without --allow-downgrade)."""
    lines = "; ".join(f"{p.service}: " + ", ".join(map(str, p.downgrades)) for p in pins)
    return PromotionError(
        f"promoting {source} -> {target} would downgrade {target}: {lines}; nothing was pushed",
        hint=f"to go back on purpose: configcenter promote {source} {target} --allow-downgrade"
        f" (--dry-run shows the merge request); otherwise apply the newer release in "
        f"{source} first, or promote the other services alone (--service)",
    )
