"""Planning: per service, what changed (template, values, image, secrets, replicas).

A service changes when, and only when, something it consumes changes: its
values digest and diffs cover only the values its templates read (see
`core.consumed`). A service whose inputs digest (template tree + consumed
values + replicas + image + settings + secrets generation) matches the state
record is a no-op without rendering anything, which keeps a no-op plan of
hundreds of services well under a second.

Secret values are never hashed. Whether they rotated is asked of the platform
through a `SecretCheck` (it compares the freshly resolved values with the
immutable Secret of a generation); a rotation moves the service's secrets
generation, which names the objects that carry them.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from configcenter.core.consumed import Consumption
from configcenter.core.errors import ConfigError, Problem, ProblemList, Source
from configcenter.core.model import Config, ServiceConfig
from configcenter.core.render import Renderer, RenderError, platform_settings
from configcenter.core.secretrefs import SecretsRotated
from configcenter.core.state import EnvState, Release, ServiceState
from configcenter.core.values import MASK, SecretRef, canonical, digest, flatten, masked, to_value

RENDER_VERSION = 2  # bump when rendering semantics change, so every service re-renders
ACTIONS = ("create", "update", "delete", "noop", "blocked")
REASONS = ("template", "values", "image", "secrets", "replicas")
#: A `SecretCheck`'s `SecretsRotated.why` when the values could not be compared but the
#: references the release's Secrets hold differ from the recorded release's.
REFERENCES_CHANGED = "the references its Secrets hold changed"


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
    replicas: tuple[int | None, int | None] | None = None
    #: Secret keys whose values rotated (values never shown); "cannot tell" reason otherwise.
    rotated: list[str] = field(default_factory=list)
    #: Secret keys that may have rotated: the platform cannot tell them apart (`why`).
    maybe_rotated: list[str] = field(default_factory=list)
    maybe_rotated_why: str = ""
    secrets_unknown: str | None = None
    #: The secret values could not be compared, but the references the Secrets hold
    #: differ from the recorded release's: a generation of other content is never reused.
    secrets_references_changed: bool = False
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
    consumption: Consumption | None = None
    secrets_generation: int = 0

    @property
    def rotates(self) -> bool:
        """Whether the platform found secret values that differ from the release's."""
        return bool(self.rotated or self.maybe_rotated)

    @property
    def consumed_values(self) -> dict[str, Any]:
        """The part of the merged values this service consumes (what its release records)."""
        assert self.config is not None
        if self.consumption is None:
            return dict(self.config.values.tree)
        return self.consumption.select(self.config.values.tree)

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
        if self.rotates:
            data["secrets"] = {"rotated": list(self.rotated)}
        if self.maybe_rotated:
            data["secrets"]["cannot_separate"] = {
                "keys": list(self.maybe_rotated),
                "why": self.maybe_rotated_why,
            }
        if self.secrets_unknown:
            data["secrets"] = {"unknown": self.secrets_unknown}
        if self.blocked:
            data["blocked"] = self.blocked
        return data


def service_record(
    plan: ServicePlan,
    release: Release,
    *,
    last_good: Release | None,
    last_failed: Release | None,
    config_commit: str | None = None,
    stages: dict[str, Any] | None = None,
) -> ServiceState:
    """The state record of a planned service once `release` of it is committed."""
    service, image = plan.config, plan.image
    assert service is not None and image is not None, f"{plan.service} has nothing to apply"
    if plan.files is not None:
        per_file = files_digest(plan.files)[1]
    else:  # a no-op keeps what was recorded
        assert plan.previous is not None
        per_file = dict(plan.previous.files)
    return ServiceState(
        template_tag=service.template.tag,
        template_commit=service.template.commit,
        template_tree=service.template.tree_id,
        values_digest=plan.values_digest,
        values=canonical(plan.consumed_values),
        replicas=service.replicas,
        image=image.ref,
        image_digest=image.digest,
        build_key=image.build_key,
        rendered_digest=plan.rendered_digest,
        inputs_digest=plan.inputs_digest,
        files=per_file,
        platform=service.platform,
        env_keys=list(service.template.env_keys),
        consumes=plan.consumption.to_record() if plan.consumption else None,
        secrets_generation=plan.secrets_generation,
        release=release,
        last_good=last_good,
        last_failed=last_failed,
        config_commit=config_commit,
        stages=dict(stages or {}),
    )


#: Asks the platform whether the secret values a service's release carries are those of one of
#: `generations` (tried in order). `files` are the release's rendered files (None: the ones the
#: deploy repo holds). Returns the matching generation, the references whose values rotated
#: when the live values differ from every candidate, or a sentence when the platform cannot
#: tell.
SecretCheck = Callable[
    [ServicePlan, Mapping[str, bytes] | None, list[int]], int | SecretsRotated | str
]


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


def inputs_digest(
    config: Config,
    service: ServiceConfig,
    image: DesiredImage,
    consumed: Mapping[str, Any],
    secrets_generation: int = 0,
) -> str:
    """Everything a release is made of, secret values excepted (their generation stands in).

    The digest of {v: RENDER_VERSION, project, env, service, template (tree id), tag,
    values (consumed), replicas, image (ref), platform (its settings), secrets (the
    generation)}, as `digest` encodes it.
    """
    return _Consumed(consumed).inputs_digest(
        config, service, image, secrets_generation, platform_settings(config, service)
    )


class _Consumed:
    """A service's consumed values encoded once, as `digest` encodes them: its values digest
    and its inputs digest (`inputs_digest`, for any secrets generation) are hashed from the
    same text, and whether it holds a secret is learnt on the way.

    `consumed` may be a callable that selects them: with `known` digests they are only
    selected when asked for (a kept load's value trees stay unread)."""

    def __init__(
        self,
        consumed: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
        known: tuple[str, bool] | None = None,
    ) -> None:
        self._select = consumed if callable(consumed) else None
        self._consumed: Mapping[str, Any] = {} if callable(consumed) else consumed
        self._text: str | None = None
        if known is None:
            self.secrets = False
            self.digest = _sha256(self.text)
        else:  # (digest, secrets) of these values, from `PlanDigests`: encoded on demand
            self.digest, self.secrets = known

    @property
    def values(self) -> Mapping[str, Any]:
        """The consumed values."""
        if self._select is not None:
            self._consumed = self._select()
            self._select = None
        return self._consumed

    @property
    def text(self) -> str:
        if self._text is None:
            self.secrets = False
            self._text = json.dumps(
                self.values, sort_keys=True, separators=(",", ":"), default=self._leaf
            )
        return self._text

    def _leaf(self, value: Any) -> Any:
        if isinstance(value, SecretRef):
            self.secrets = True
            return {"secret": value.ref}
        return str(value)

    def inputs_digest(
        self,
        config: Config,
        service: ServiceConfig,
        image: DesiredImage,
        secrets_generation: int,
        platform: Mapping[str, str],
    ) -> str:
        """`inputs_digest(...)` of these values: the same text, the values encoded once.

        Their key, "values", sorts after every other key, so the text is the others' text
        with the values appended.
        """
        others = _other_inputs(config, service, image, secrets_generation, platform, self._leaf)
        return _sha256(others[:-1] + ',"values":' + self.text + "}")


def _other_inputs(
    config: Config,
    service: ServiceConfig,
    image: DesiredImage,
    secrets_generation: int,
    platform: Mapping[str, str],
    leaf: Callable[[Any], Any] = str,
) -> str:
    """Every input of the inputs digest but the values, as the digest encodes them."""
    return json.dumps(
        {
            "v": RENDER_VERSION,
            "project": config.project.name,
            "env": service.env,
            "service": service.name,
            "template": service.template.tree_id,
            "tag": service.template.tag,
            "replicas": service.replicas,
            "image": image.ref,
            "platform": platform,
            "secrets": secrets_generation,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=leaf,
    )


def _sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


#: Inputs key -> (values digest, inputs digest, holds a secret), kept between plans by the
#: caller: encoding 5,000 services' consumed values for their digests is most of a no-op
#: plan's own work. The key names every input of both digests (the service's values by
#: `ServiceConfig.inputs_print`, the bytes they were layered from), so it cannot be stale.
class PlanDigests(Protocol):
    def get(self, key: str, /) -> tuple[str, str, bool] | None: ...

    def __setitem__(self, key: str, value: tuple[str, str, bool], /) -> None: ...


def _digests_key(
    prefix: str,
    service: ServiceConfig,
    image: DesiredImage,
    generation: int,
    consumption: Consumption,
) -> str | None:
    """The inputs digest's own other inputs, the values by what they were layered from and
    what the service consumes of them (None: its values' origin is not known).

    `prefix` names the inputs every service of the env on one platform shares
    (`_key_prefix`). Every part is a string, an int or None, so the `repr` of their
    tuple names them unambiguously, at a tenth of the cost of JSON.
    """
    if service.inputs_print is None:
        return None
    template = service.template
    text = repr(
        (
            prefix,
            service.name,
            template.tree_id,
            template.tag,
            service.replicas,
            image.ref,
            generation,
            service.inputs_print,
            consumption.to_record(),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _key_prefix(config: Config, env: str, platform: Mapping[str, str]) -> str:
    """What `_digests_key` names once per env and platform: the format, the render version,
    the project and the platform's settings."""
    return repr(("key 2", RENDER_VERSION, config.project.name, env, sorted(platform.items())))


def secret_refs(tree: Mapping[str, Any]) -> dict[str, str]:
    """Dotted key -> reference of every secret in a value tree."""
    return {k: v.ref for k, v in flatten(tree).items() if isinstance(v, SecretRef)}


def files_digest(files: Mapping[str, bytes]) -> tuple[str, dict[str, str]]:
    per_file = {name: "sha256:" + hashlib.sha256(data).hexdigest() for name, data in files.items()}
    h = hashlib.sha256()
    for name in sorted(per_file):
        h.update(f"{name}\0{per_file[name]}\n".encode())
    return "sha256:" + h.hexdigest(), per_file


PreviousFile = Callable[[str], bytes | None]


def check_moved_tag(
    service: ServiceConfig, previous: ServiceState | None, problems: ProblemList
) -> bool:
    """A released tag that points elsewhere than the deploy repo recorded is an error.
    True when it moved."""
    template = service.template
    if (
        previous is None
        or previous.template_tag != template.tag
        or not previous.template_commit
        or not template.commit
        or previous.template_commit == template.commit
    ):
        return False
    problems.error(
        service.source("template"),
        f"template tag {service.name}/{template.tag} moved: the deploy repo recorded commit "
        f"{previous.template_commit[:12]}, the tag now points at {template.commit[:12]}",
        "released tags must not move; release a new version instead",
    )
    return True


def check_known(config: Config, env: str, state: EnvState, services: Collection[str]) -> None:
    """ConfigError naming each of `services` that is neither in `env`'s config nor deployed."""
    environment = config.environment(env)
    unknown = [s for s in services if s not in environment.services and s not in state.services]
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
    secret_check: SecretCheck | None = None,
    digests: PlanDigests | None = None,
) -> Plan:
    """Plan `env` against `state`; raises ConfigError on render errors or moved tags.

    Without `secret_check` (validate, render, offline) secrets keep their generation.
    `digests` are used and filled (see `PlanDigests`).
    """
    environment = config.environment(env)
    if only:
        check_known(config, env, state, only)
    problems = ProblemList()
    plans: list[ServicePlan] = []
    resolved = resolved_images or {}
    # Each platform's settings rendered for the env once: they are the same for every
    # service of the env on it (the settings see only {{ env }} and {{ project }}).
    platforms: dict[str | None, tuple[dict[str, str], str]] = {}
    for name in environment.order:
        if only and name not in only:
            continue
        service = environment.services[name]
        if service.platform not in platforms:
            settings = platform_settings(config, service)
            platforms[service.platform] = (settings, _key_prefix(config, env, settings))
        settings, prefix = platforms[service.platform]
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
                    secret_check=secret_check,
                    platform=settings,
                    digests=digests,
                    key_prefix=prefix,
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
    secret_check: SecretCheck | None = None,
    platform: Mapping[str, str] | None = None,
    digests: PlanDigests | None = None,
    key_prefix: str | None = None,
) -> ServicePlan:
    settings = platform_settings(config, service) if platform is None else platform
    image = desired_image(config, service, previous, resolved)
    template = service.template
    consumption = _consumption(service, previous, renderer)
    generation = previous.secrets_generation if previous else 1
    key = None
    if digests is not None:
        prefix = key_prefix or _key_prefix(config, service.env, settings)
        key = _digests_key(prefix, service, image, generation, consumption)
    known = digests.get(key) if digests is not None and key is not None else None
    if known is not None:  # the values are read only when they are needed
        encoded = _Consumed(lambda: consumption.select(service.values.tree), (known[0], known[2]))
        inputs_digest = known[1]
    else:
        encoded = _Consumed(consumption.select(service.values.tree))
        inputs_digest = encoded.inputs_digest(config, service, image, generation, settings)
        if digests is not None and key is not None:
            digests[key] = (encoded.digest, inputs_digest, encoded.secrets)
    plan = ServicePlan(
        service=service.name,
        action="noop",
        template_from=previous.template_tag if previous else None,
        template_to=template.tag,
        image_from=previous.image if previous else None,
        image_to=image.description,
        config=service,
        image=image,
        values_digest=encoded.digest,
        inputs_digest=inputs_digest,
        previous=previous,
        consumption=consumption,
        secrets_generation=generation,
    )
    if check_moved_tag(service, previous, problems):
        return plan
    unchanged = previous is not None and previous.inputs_digest == plan.inputs_digest
    refs = secret_check is not None and encoded.secrets
    if refs and secret_check is not None and unchanged:
        # Same inputs as the deploy repo holds: only the values behind its secrets may differ.
        _check_secrets(plan, service, previous, None, secret_check, rotation=True)
        unchanged = plan.secrets_generation == generation
        if not unchanged:
            plan.inputs_digest = encoded.inputs_digest(
                config, service, image, plan.secrets_generation, settings
            )
    # The deploy repo holds exactly these inputs, but their release failed and nothing
    # was rolled back (a first deploy, or a rollback that failed too): blocked, not noop.
    failed_here = (
        previous is not None
        and previous.inputs_digest == plan.inputs_digest
        and previous.release is not None
        and previous.release.outcome == "failed"
    )
    if unchanged and previous is not None and not render_all and not (failed_here and retry):
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
    consumed = encoded.values
    rendered = renderer.render(config, service, image.ref)
    plan.files = rendered.files
    plan.rendered_digest, _ = files_digest(rendered.files)
    if refs and secret_check is not None and previous is not None and not plan.rotates:
        if secret_refs(to_value(previous.values)) == secret_refs(consumed):
            # Other inputs changed too: did the values behind the same references rotate?
            # (Asked against the recorded release's files, so a changed file that holds a
            # secret is not mistaken for a rotation.)
            _check_secrets(plan, service, previous, None, secret_check, rotation=True)
            plan.secrets_generation = generation
        # New inputs: reuse the current generation only if the platform holds exactly the
        # secret values this rendering delivers (its Secrets are immutable).
        _check_secrets(plan, service, previous, rendered.files, secret_check, rotation=False)
        failed = previous.last_failed
        if (
            plan.secrets_references_changed
            and failed is not None
            and failed.secrets_generation
            and encoded.inputs_digest(config, service, image, failed.secrets_generation, settings)
            == failed.inputs_digest
        ):
            # Exactly the inputs of the release that failed (or was rolled back): its
            # generation holds these references, so the plan says blocked, not a new try.
            plan.secrets_generation = failed.secrets_generation
        plan.inputs_digest = encoded.inputs_digest(
            config, service, image, plan.secrets_generation, settings
        )
    if previous is None:
        plan.action = "create"
        plan.reasons = _reasons_for_create(service)
        for key, value in sorted(flatten(consumed).items()):
            source = service.values.entries.get(tuple(key.split(".")))
            plan.added[key] = ValueChange(
                _ABSENT, masked(value), str(source.source) if source else ""
            )
    else:
        _diff_values(plan, service, previous, consumed)
        if previous.template_tag != template.tag or previous.template_tree != template.tree_id:
            plan.reasons.append("template")
        if plan.changed or plan.added or plan.removed:
            plan.reasons.append("values")
        if previous.image != image.ref or image.pending_build:
            plan.reasons.append("image")
        # `secrets` is a rotation (or Secrets the platform lost), not a new generation that
        # a changed file holding a secret needs anyway: that change has its own reason.
        if plan.rotates or (plan.secrets_generation != generation and not plan.reasons):
            plan.reasons.append("secrets")
        if plan.replicas:
            plan.reasons.append("replicas")
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
    if plan.action == "noop" or failed is None or retry:
        return plan
    unproven = None
    if failed.inputs_digest != plan.inputs_digest:
        unproven = _secrets_unproven(
            plan, rendered.files, failed, secret_check, refs, encoded, config, service, settings
        )
        if unproven is None:
            return plan
        plan.secrets_generation = failed.secrets_generation
        plan.inputs_digest = failed.inputs_digest
    plan.action = "blocked"
    verb = "was rolled back" if failed.outcome == "rolled_back" else "failed"
    plan.blocked = (
        # `at` is when the release was made, not when it failed or was rolled back.
        f"release {failed.id} (released {failed.at}) with these inputs {verb}"
        + (f": {failed.reason}" if failed.reason else "")
        + (
            f" (its secret values cannot be compared with the ones now: {unproven})"
            if unproven
            else ""
        )
        + f"; change its inputs or run apply --retry {service.name}"
    )
    return plan


def _secrets_unproven(
    plan: ServicePlan,
    files: Mapping[str, bytes],
    failed: Release,
    check: SecretCheck | None,
    refs: bool,
    encoded: _Consumed,
    config: Config,
    service: ServiceConfig,
    settings: Mapping[str, str],
) -> str | None:
    """Whether the plan's inputs are the failed release's although their secrets generation
    differs: None when they are not, "" when the platform holds the failed release's values,
    else why the platform cannot tell.

    Every input but the secrets generation is the failed release's, and the platform cannot
    show that the secret values differ from those the failed release's generation holds
    (its Secrets went with a deleted namespace, say): the inputs that failed are not tried
    again by a rotation nobody can see. A value the platform shows rotated is a change.
    """
    generation = failed.secrets_generation
    if not refs or not generation or generation == plan.secrets_generation:
        return None
    image = plan.image
    assert image is not None
    if encoded.inputs_digest(config, service, image, generation, settings) != failed.inputs_digest:
        return None
    verdict = check(plan, files, [generation]) if check is not None else "not asked"
    if isinstance(verdict, int):
        return "" if verdict == generation else None  # "": the failed release's values
    if isinstance(verdict, str):
        return verdict
    if verdict.refs or verdict.together or verdict.why != REFERENCES_CHANGED:
        return None  # rotated since the failed release: new inputs
    return "the platform does not hold that release's Secrets"


def _consumption(
    service: ServiceConfig, previous: ServiceState | None, renderer: Renderer
) -> Consumption:
    """What the service's template version reads; recorded per tree, so a no-op parses nothing."""
    if previous is not None and previous.template_tree == service.template.tree_id:
        recorded = Consumption.from_record(previous.consumes)
        if recorded is not None:
            return recorded
    return renderer.consumption(service.template)


def _check_secrets(
    plan: ServicePlan,
    service: ServiceConfig,
    previous: ServiceState | None,
    files: Mapping[str, bytes] | None,
    check: SecretCheck,
    *,
    rotation: bool,
) -> None:
    """Ask the platform which generation holds the values the secrets resolve to now.

    The failed release's generation is a candidate too: a rotation that was rolled back
    is asked for again by the same values, and must show as blocked, not be retried.
    """
    current = plan.secrets_generation
    candidates = [current]
    failed = previous.last_failed if previous else None
    if failed is not None and failed.secrets_generation and failed.secrets_generation != current:
        candidates.append(failed.secrets_generation)
    verdict = check(plan, files, candidates)
    if isinstance(verdict, str):
        plan.secrets_unknown = verdict
        return
    if isinstance(verdict, SecretsRotated):
        plan.secrets_references_changed = verdict.why == REFERENCES_CHANGED and not (
            verdict.refs or verdict.together
        )
        newest = max([*candidates, previous.secrets_generation if previous else 0])
        plan.secrets_generation = newest + 1
    else:
        plan.secrets_generation = verdict
    if rotation and plan.secrets_generation != current:
        if not isinstance(verdict, SecretsRotated):
            # Another generation (a rotation rolled back) holds the values: which of them
            # differ from the release's own generation is asked of that one alone.
            verdict = check(plan, files, [current])
        _name_rotated(plan, verdict)


def _name_rotated(plan: ServicePlan, verdict: int | SecretsRotated | str) -> None:
    """The consumed keys behind the references the platform found rotated (by reference: a
    key is named, never its value); those it cannot tell apart are named as such."""
    keys = secret_refs(plan.consumed_values)
    if not isinstance(verdict, SecretsRotated):
        plan.maybe_rotated = sorted(keys)
        plan.maybe_rotated_why = (
            verdict if isinstance(verdict, str) else "the platform did not say which one differs"
        )
        return
    rotated = set(verdict.refs)
    together = set(verdict.together) - rotated
    plan.rotated = sorted(k for k, ref in keys.items() if ref in rotated)
    plan.maybe_rotated = sorted(k for k, ref in keys.items() if ref in together)
    plan.maybe_rotated_why = verdict.why
    if not plan.rotated and not plan.maybe_rotated:
        # The platform found a difference it did not place on a key: say which may have.
        plan.maybe_rotated = sorted(keys)
        plan.maybe_rotated_why = verdict.why or "the platform did not say which one differs"


def _reasons_for_create(service: ServiceConfig) -> list[str]:
    return ["template", "values"] + (["image"] if service.image else [])


def _diff_values(
    plan: ServicePlan,
    service: ServiceConfig,
    previous: ServiceState,
    consumed: Mapping[str, Any],
) -> None:
    """Consumed values by dotted key against the release's; replicas apart (a scale)."""
    recorded = to_value(previous.values)
    was = Consumption.from_record(previous.consumes)
    now = plan.consumption
    if was is None and now is not None:
        # A record from before consumption was tracked holds every merged value.
        recorded = now.select(recorded)
    before = flatten(recorded)
    after = flatten(consumed)
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
