"""Planning: per service, what changed (template, values, image) against the deploy repo state.

A service whose inputs digest (template tree + values + image + settings)
matches the state record is a no-op without rendering anything, which keeps a
no-op plan of hundreds of services well under a second.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from configcenter.core.errors import ConfigError, Problem, ProblemList, Source
from configcenter.core.model import Config, ServiceConfig
from configcenter.core.render import Renderer, RenderError, platform_settings
from configcenter.core.state import EnvState, ServiceState
from configcenter.core.values import MASK, canonical, digest, flatten, masked, to_value

RENDER_VERSION = 1  # bump when rendering semantics change, so every service re-renders
ACTIONS = ("create", "update", "delete", "noop", "blocked")


@dataclass(frozen=True)
class ResolvedImage:
    """An image known by digest (after a build, or resolved from a registry)."""

    ref: str
    digest: str | None = None
    build_key: str | None = None


@dataclass
class DesiredImage:
    ref: str
    digest: str | None
    build_key: str | None
    pending_build: bool  # must be built before it can be deployed
    description: str  # for plans: the ref, or what will be built


@dataclass
class ValueChange:
    before: Any
    after: Any
    source: str


@dataclass
class ServicePlan:
    service: str
    action: str
    reasons: list[str] = field(default_factory=list)
    template_from: str | None = None
    template_to: str | None = None
    image_from: str | None = None
    image_to: str | None = None
    changed: dict[str, ValueChange] = field(default_factory=dict)
    added: dict[str, ValueChange] = field(default_factory=dict)
    removed: dict[str, ValueChange] = field(default_factory=dict)
    replicas: tuple[int | None, int] | None = None
    diffs: dict[str, str] = field(default_factory=dict)
    blocked: str | None = None
    # What apply needs (not printed):
    config: ServiceConfig | None = None
    image: DesiredImage | None = None
    files: dict[str, bytes] | None = None
    values_digest: str = ""
    inputs_digest: str = ""
    rendered_digest: str = ""
    previous: ServiceState | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "service": self.service,
            "action": self.action,
            "reasons": self.reasons,
            "template": {"from": self.template_from, "to": self.template_to},
            "image": {"from": self.image_from, "to": self.image_to},
            "values": {
                "changed": {k: _change_json(v) for k, v in self.changed.items()},
                "added": {k: _change_json(v) for k, v in self.added.items()},
                "removed": {k: _change_json(v) for k, v in self.removed.items()},
            },
            "files": dict(self.diffs),
        }
        if self.replicas is not None:
            data["replicas"] = {"from": self.replicas[0], "to": self.replicas[1]}
        if self.blocked:
            data["blocked"] = self.blocked
        return data


def _change_json(change: ValueChange) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if change.before is not _ABSENT:
        data["from"] = change.before
    if change.after is not _ABSENT:
        data["to"] = change.after
    data["source"] = change.source
    return data


_ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "<absent>"})()


@dataclass
class Plan:
    env: str
    services: list[ServicePlan]
    config_commit: str | None = None

    @property
    def changes(self) -> list[ServicePlan]:
        return [s for s in self.services if s.action in ("create", "update", "delete")]

    def to_json(self) -> dict[str, Any]:
        return {"env": self.env, "services": [s.to_json() for s in self.services]}


def image_registry_repo(config: Config, service: str) -> str:
    host = str(config.project.registry.get("url", "localhost:5000")).removeprefix("http://")
    return f"{host.removeprefix('https://').rstrip('/')}/{config.project.name}/{service}"


def build_key(config: Config, service: ServiceConfig) -> str | None:
    """What a source-built image depends on, as far as the config repo knows."""
    spec = service.image
    if spec is None or not spec.is_build:
        return None
    build = service.template.build or {}
    args = {name: canonical(service.values.tree.get(name)) for name in build.get("args") or []}
    return digest(
        {
            "repo": spec.repo,
            "ref": spec.source_ref,
            "context": spec.context,
            "template": service.template.tree_id,
            "args": args,
            "registry": image_registry_repo(config, service.name),
        }
    )


def desired_image(
    config: Config,
    service: ServiceConfig,
    previous: ServiceState | None,
    resolved: Mapping[str, ResolvedImage],
) -> DesiredImage:
    if service.name in resolved:
        r = resolved[service.name]
        return DesiredImage(r.ref, r.digest, r.build_key, False, r.ref)
    spec = service.image
    if spec is None:
        return DesiredImage("", None, None, False, "(none)")
    if not spec.is_build:
        assert spec.ref is not None
        return DesiredImage(spec.ref, None, None, False, spec.ref)
    key = build_key(config, service)
    if previous is not None and previous.build_key == key and previous.image:
        return DesiredImage(previous.image, previous.image_digest, key, False, previous.image)
    ref = f"{image_registry_repo(config, service.name)}:{spec.source_ref.replace('/', '-')}"
    return DesiredImage(ref, None, key, True, f"build {spec.repo}@{spec.source_ref}")


def inputs_digest(config: Config, service: ServiceConfig, image: DesiredImage) -> str:
    return digest(
        {
            "v": RENDER_VERSION,
            "project": config.project.name,
            "env": service.env,
            "service": service.name,
            "template": service.template.tree_id,
            "tag": service.template.tag,
            "values": service.values.tree,
            "replicas": service.replicas,
            "image": image.ref,
            "platform": platform_settings(config, service),
        }
    )


def files_digest(files: Mapping[str, bytes]) -> tuple[str, dict[str, str]]:
    per_file = {name: "sha256:" + hashlib.sha256(data).hexdigest() for name, data in files.items()}
    h = hashlib.sha256()
    for name in sorted(per_file):
        h.update(f"{name}\0{per_file[name]}\n".encode())
    return "sha256:" + h.hexdigest(), per_file


PreviousFile = Callable[[str], bytes | None]


def make_plan(
    config: Config,
    env: str,
    state: EnvState,
    renderer: Renderer,
    previous_file: PreviousFile,
    *,
    only: Collection[str] | None = None,
    retry: Collection[str] = (),
    resolved_images: Mapping[str, ResolvedImage] | None = None,
    render_all: bool = False,
) -> Plan:
    """Plan `env` against `state`; raises ConfigError on render errors or moved tags."""
    environment = config.environment(env)
    if only:
        unknown = [s for s in only if s not in environment.services and s not in state.services]
        if unknown:
            raise ConfigError(
                [
                    Problem(
                        Source(f"environments/{env}/{u}.yaml"),
                        f"service '{u}' is not deployed in {env}",
                        "known: " + (", ".join(sorted(environment.services)) or "none"),
                    )
                    for u in unknown
                ]
            )
    problems = ProblemList()
    plans: list[ServicePlan] = []
    resolved = resolved_images or {}
    for name in environment.order:
        if only and name not in only:
            continue
        service = environment.services[name]
        try:
            plans.append(
                _plan_service(
                    config,
                    service,
                    state.services.get(name),
                    renderer,
                    previous_file,
                    retry=name in retry,
                    resolved=resolved,
                    render_all=render_all,
                    problems=problems,
                )
            )
        except RenderError as exc:
            problems.items.append(exc.problem)
    for name in sorted(set(state.services) - set(environment.services)):
        if only and name not in only:
            continue
        plans.append(_plan_delete(env, name, state.services[name], previous_file))
    problems.raise_if_errors()
    return Plan(env, plans, config.commit)


def _plan_service(
    config: Config,
    service: ServiceConfig,
    previous: ServiceState | None,
    renderer: Renderer,
    previous_file: PreviousFile,
    *,
    retry: bool,
    resolved: Mapping[str, ResolvedImage],
    render_all: bool,
    problems: ProblemList,
) -> ServicePlan:
    image = desired_image(config, service, previous, resolved)
    template = service.template
    plan = ServicePlan(
        service=service.name,
        action="noop",
        template_from=previous.template_tag if previous else None,
        template_to=template.tag,
        image_from=previous.image if previous else None,
        image_to=image.description,
        config=service,
        image=image,
        values_digest=digest(service.values.tree),
        inputs_digest=inputs_digest(config, service, image),
        previous=previous,
    )
    if (
        previous is not None
        and previous.template_tag == template.tag
        and previous.template_commit
        and template.commit
        and previous.template_commit != template.commit
    ):
        problems.error(
            service.source("template"),
            f"template tag {service.name}/{template.tag} moved: the deploy repo recorded commit "
            f"{previous.template_commit[:12]}, the tag now points at {template.commit[:12]}",
            "released tags must not move; release a new version instead",
        )
        return plan
    # The deploy repo holds exactly these inputs, but their release failed and nothing
    # was rolled back (a first deploy, or a rollback that failed too): blocked, not noop.
    failed_here = (
        previous is not None
        and previous.inputs_digest == plan.inputs_digest
        and previous.release is not None
        and previous.release.outcome == "failed"
    )
    if (
        previous is not None
        and previous.inputs_digest == plan.inputs_digest
        and not render_all
        and not (failed_here and retry)
    ):
        plan.rendered_digest = previous.rendered_digest
        if failed_here and previous.release is not None:
            plan.action = "blocked"
            plan.blocked = (
                f"release {previous.release.id} (released {previous.release.at}) "
                "with these inputs failed"
                + (f": {previous.release.reason}" if previous.release.reason else "")
                + f"; change its inputs or run apply --retry {service.name}"
            )
        return plan
    rendered = renderer.render(config, service, image.ref)
    plan.files = rendered.files
    plan.rendered_digest, _ = files_digest(rendered.files)
    if previous is None:
        plan.action = "create"
        plan.reasons = _reasons_for_create(service)
        for key, entry in service.values.flat():
            plan.added[key] = ValueChange(_ABSENT, masked(entry.value), str(entry.source))
    else:
        _diff_values(plan, service, previous)
        if previous.template_tag != template.tag or previous.template_tree != template.tree_id:
            plan.reasons.append("template")
        if plan.changed or plan.added or plan.removed or plan.replicas:
            plan.reasons.append("values")
        if previous.image != image.ref or image.pending_build:
            plan.reasons.append("image")
        if previous.rendered_digest != plan.rendered_digest and not plan.reasons:
            plan.reasons.append("template")  # settings or engine changed the output
        plan.action = "update" if plan.reasons or (failed_here and retry) else "noop"
    if plan.action != "noop":
        env_dir = f"{service.env}/{service.name}/"
        old_names = set(previous.files) if previous else set()
        for name in sorted(old_names | set(rendered.files)):
            before = previous_file(env_dir + name) if name in old_names else None
            after = rendered.files.get(name)
            if before != after:
                plan.diffs[name] = unified_diff(env_dir + name, before, after)
    failed = previous.last_failed if previous else None
    if (
        plan.action != "noop"
        and failed is not None
        and failed.inputs_digest == plan.inputs_digest
        and not retry
    ):
        plan.action = "blocked"
        verb = "was rolled back" if failed.outcome == "rolled_back" else "failed"
        plan.blocked = (
            # `at` is when the release was made, not when it failed or was rolled back.
            f"release {failed.id} (released {failed.at}) with these inputs {verb}"
            + (f": {failed.reason}" if failed.reason else "")
            + f"; change its inputs or run apply --retry {service.name}"
        )
    return plan


def _reasons_for_create(service: ServiceConfig) -> list[str]:
    return ["template", "values"] + (["image"] if service.image else [])


def _diff_values(plan: ServicePlan, service: ServiceConfig, previous: ServiceState) -> None:
    before = flatten(to_value(previous.values))
    after = flatten(service.values.tree)
    sources = {key: str(entry.source) for key, entry in service.values.flat()}
    for key in sorted(set(before) | set(after)):
        old = before.get(key, _ABSENT)
        new = after.get(key, _ABSENT)
        if canonical(old) == canonical(new):
            continue
        change = ValueChange(
            masked(old) if old is not _ABSENT else _ABSENT,
            masked(new) if new is not _ABSENT else _ABSENT,
            sources.get(key, ""),
        )
        if old is _ABSENT:
            plan.added[key] = change
        elif new is _ABSENT:
            plan.removed[key] = change
        else:
            plan.changed[key] = change
    if previous.replicas != service.replicas:
        plan.replicas = (previous.replicas, service.replicas)


def _plan_delete(
    env: str, name: str, previous: ServiceState, previous_file: PreviousFile
) -> ServicePlan:
    plan = ServicePlan(
        service=name,
        action="delete",
        template_from=previous.template_tag,
        image_from=previous.image,
        previous=previous,
    )
    for output in sorted(previous.files):
        path = f"{env}/{name}/{output}"
        plan.diffs[output] = unified_diff(path, previous_file(path), None)
    for key, value in flatten(to_value(previous.values)).items():
        plan.removed[key] = ValueChange(masked(value), _ABSENT, "")
    return plan


def unified_diff(path: str, before: bytes | None, after: bytes | None) -> str:
    a = _lines(before)
    b = _lines(after)
    header_a = f"a/{path}" if before is not None else "/dev/null"
    header_b = f"b/{path}" if after is not None else "/dev/null"
    return "".join(difflib.unified_diff(a, b, header_a, header_b))


def _lines(data: bytes | None) -> list[str]:
    if data is None:
        return []
    lines = data.decode("utf-8", "replace").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


__all__ = ["MASK", "Plan", "ResolvedImage", "ServicePlan", "make_plan"]
