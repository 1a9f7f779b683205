"""Load and validate a config repo into a `Config`, collecting every problem.

One pass reports all problems at once (file:line, message, hint), so a user
fixes a config in one go rather than one error per run.
"""

from __future__ import annotations

import difflib
import hashlib
import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from configcenter.core.errors import ProblemList, Source
from configcenter.core.limits import DEFAULT_LIMITS, SETTINGS, Limits, human_size, parse_size
from configcenter.core.model import (
    HEAD,
    Config,
    Environment,
    ImageSpec,
    PlatformSpec,
    Project,
    ServiceConfig,
    Template,
)
from configcenter.core.order import CycleError, dependency_order
from configcenter.core.source import LINK_HINT, ConfigSource, FileTooLarge, RepoPathError
from configcenter.core.stages import template_stages
from configcenter.core.values import Layered
from configcenter.core.yamldoc import ParseCache, YamlDoc, parse_yaml

if TYPE_CHECKING:
    # The schema is imported by the first load that reads a file (`_bind_schema`), not with
    # this module: a command whose load is kept (configcenter.core.load_trace) checks none.
    from configcenter.core import schema
    from configcenter.core.consumed import Consumption

PROJECT_FILE = "configcenter.yaml"
RESERVED_NAMES = frozenset(
    {"values", "env", "service", "project", "template_tag", "replicas", "image", "platform"}
)


@dataclass
class LoadMemo:
    """What a load lends the next one: the services and tagged templates it loaded without
    a single problem, with the digests of the bytes they were made from.

    A service is the same while its file, configcenter.yaml, _defaults.yaml and its
    environment's _env.yaml have the same bytes and its pinned tag the same commit (Git
    objects never change); a tagged template is the same while its tag names the same
    commit and configcenter.yaml (its limits) the same bytes. Only for sources whose
    tagged trees are immutable (the Git adapter), and never for HEAD pins (the work tree
    is read again).
    """

    services: dict[tuple[str, str], tuple[str, ServiceConfig]] = field(default_factory=dict)
    templates: dict[tuple[str, str], tuple[str, Template]] = field(default_factory=dict)


def load_config(
    source: ConfigSource,
    problems: ProblemList | None = None,
    environments: Collection[str] | None = None,
    services: Collection[str] | None = None,
    *,
    memo: LoadMemo | None = None,
    lend: LoadMemo | None = None,
) -> Config:
    """Load everything (or only `environments`, for commands about one environment).

    `services` loads only those services' files of each environment (`()`: none, the
    environments' own settings alone), for commands that need no more (history of one
    service, deciding which environments auto-apply). Such a Config is not the whole
    environment: never plan or apply from it.

    `memo` (an earlier load's `lend`) lets unchanged services and templates be taken as
    they are instead of built again; `lend` is filled with this load's.

    Raises ConfigError when there are errors (warnings are kept).
    """
    problems = problems if problems is not None else ProblemList()
    _bind_schema()
    reuse = memo if memo is not None and getattr(source, "tagged_trees_immutable", False) else None
    loader = _Loader(source, problems, environments, services, reuse, lend)
    config = loader.load()
    problems.raise_if_errors()
    assert config is not None
    return config


def _bind_schema() -> None:
    """Import the schema (its specs are 15 dataclasses: ~5 ms) as this module's `schema`."""
    global schema
    from configcenter.core import schema


def _seconds(raw: Any) -> float | None:
    """A duration the schema has checked (None when absent or already reported)."""
    if raw is None:
        return None
    try:
        return schema.parse_duration(raw)
    except ValueError:
        return None


class _Loader:
    def __init__(
        self,
        source: ConfigSource,
        problems: ProblemList,
        only: Collection[str] | None = None,
        services: Collection[str] | None = None,
        memo: LoadMemo | None = None,
        lend: LoadMemo | None = None,
    ) -> None:
        self.only = set(only) if only is not None else None
        self.services = set(services) if services is not None else None
        self.source = source
        self.memo = memo
        self.lend = lend
        # An adapter may keep parses across runs, keyed by content digest. A load with a
        # memo parses only what changed: opening the whole cache would cost more.
        self.parse_cache: ParseCache | None = None if memo is not None else source.parse_cache
        self._digests: dict[str, str] = {}  # rel -> digest of the bytes read
        self._unread: set[str] = set()  # files there but not read: their problem is named
        self._clean: set[tuple[str, str]] = set()  # tagged templates loaded without a problem
        self._lendable: list[tuple[str, str, str, ServiceConfig]] = []
        self.problems = problems
        self.root = source.root
        self._templates: dict[tuple[str, str], Template | None] = {}
        self._tag_cache: dict[str, str] | None = None
        # configcenter.yaml itself is read with the defaults; its limits: apply to the rest.
        self.limits: Limits = DEFAULT_LIMITS
        # secrets: {file: {allow: [...]}, k8s: {allow: [...]}} of configcenter.yaml.
        self.allow_file: list[str] = []
        self.allow_k8s: list[str] = []

    # -- files -------------------------------------------------------------------------------

    def _refuse(self, rel: str, kind: str) -> None:
        self.problems.error(Source(rel), f"{rel} is a {kind}, not a regular file", LINK_HINT)

    def _read_doc(self, rel: str, spec: schema.Spec) -> YamlDoc | None:
        raw = self._read_raw(rel)
        doc = None if raw is None else self._doc(raw, rel, spec)
        if doc is None and self._digests.get(rel) != "-":
            self._unread.add(rel)
        return doc

    def _read_raw(self, rel: str) -> bytes | None:
        try:
            raw = self.source.read_file(rel, self.limits.yaml_file_bytes)
        except RepoPathError as exc:
            self._refuse(exc.rel, exc.kind)
            return None
        except FileTooLarge as exc:
            self._too_large(rel, exc.size, self.limits.yaml_file_bytes, "yaml_file_size")
            return None
        self._digests[rel] = "-" if raw is None else hashlib.sha256(raw).hexdigest()
        return raw

    def _lend_digest(self, rel: str) -> str | None:
        """The digest of `rel` without reading it, when the source can tell (None: read the
        file as usual, which reports any problem)."""
        file_digest = getattr(self.source, "file_digest", None)
        if file_digest is None:
            return None
        try:
            digest: str | None = file_digest(rel, self.limits.yaml_file_bytes)
        except (RepoPathError, FileTooLarge):
            return None
        if digest is not None:
            self._digests[rel] = digest
        return digest

    def _doc(self, raw: bytes, rel: str, spec: schema.Spec) -> YamlDoc | None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            self.problems.error(Source(rel, line), "file is not UTF-8 text", "save it as UTF-8")
            return None
        return self._parse(text, rel, spec)

    def _too_large(self, rel: str, size: int, limit: int, setting: str) -> None:
        self.problems.error(
            Source(rel),
            f"{rel} is {size} bytes, over the limit of {human_size(limit)} (limits.{setting})",
            f"split it up; if it must be this large, raise limits.{setting} in {PROJECT_FILE}",
        )

    def _parse(self, text: str, rel: str, spec: schema.Spec) -> YamlDoc | None:
        doc = parse_yaml(
            text,
            rel,
            self.problems,
            self.parse_cache,
            max_nodes=self.limits.yaml_nodes,
            max_depth=self.limits.yaml_depth,
        )
        if doc is None:
            return None
        if doc.data is None:
            doc.data = {}
        spec.check(doc, doc.data, (), self.problems)
        if not isinstance(doc.data, dict):
            return None
        if rel == PROJECT_FILE:
            self._read_allowlists(doc.data.get("secrets"))
        self._check_secret_refs(doc, doc.data, ())
        return doc

    def _read_allowlists(self, raw: Any) -> None:
        raw = raw if isinstance(raw, dict) else {}
        for scheme, target in (("file", self.allow_file), ("k8s", self.allow_k8s)):
            section = raw.get(scheme)
            allow = section.get("allow") if isinstance(section, dict) else None
            if isinstance(allow, list):
                target.extend(a for a in allow if isinstance(a, str) and a)

    def _check_secret_refs(self, doc: YamlDoc, value: Any, path: tuple[str | int, ...]) -> None:
        """file: and k8s: references must be allowed by configcenter.yaml's secrets: lists."""
        if isinstance(value, dict):
            ref = value.get("secret")
            if set(value) == {"secret"} and isinstance(ref, str):
                why = schema.secret_allowed(ref, self.allow_file, self.allow_k8s)
                if why is not None:
                    scheme = ref.partition(":")[0]
                    self.problems.error(
                        doc.source(*path, "secret"),
                        f"secret reference '{schema.short(ref, 120)}' is refused: {why}",
                        f"list it (or a glob matching it) under secrets: {{{scheme}: {{allow: "
                        f"[...]}}}} in {PROJECT_FILE}; nothing is allowed by default",
                    )
                return
            for key, item in value.items():
                self._check_secret_refs(doc, item, (*path, str(key)))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._check_secret_refs(doc, item, (*path, index))

    # -- project -----------------------------------------------------------------------------

    def load(self) -> Config | None:
        doc = self._read_doc(PROJECT_FILE, schema.PROJECT)
        if doc is None:
            if self.source.path_kind(PROJECT_FILE) is None:
                self.problems.error(
                    Source(PROJECT_FILE),
                    f"no {PROJECT_FILE} in {self.root}: this is not a configcenter config repo",
                    "run in the config repo (or below it), pass -C PATH, or create one: "
                    "configcenter init",
                )
            return None
        project = self._project(doc)
        self.limits = project.limits
        # Read once: every environment layers on it, and its problems are reported once.
        defaults = self._read_doc("environments/_defaults.yaml", schema.DEFAULTS)
        environments = {
            name: self._environment(project, name, defaults)
            for name in project.environments
            if self.only is None or name in self.only
        }
        self._check_env_dirs(project)
        self._check_dependencies(environments)
        if self.lend is not None:
            self._fill(self.lend)
        return Config(self.root, self.source.head_commit(), project, environments)

    def _fill(self, lend: LoadMemo) -> None:
        project = self._digests.get(PROJECT_FILE, "")
        for key in self._clean:
            template = self._templates.get(key)
            if template is not None:
                lend.templates[key] = (project, template)
        for env, name, fingerprint, service in self._lendable:
            if (name, service.template.tag) in self._clean:
                lend.services[(env, name)] = (fingerprint, service)

    def _project(self, doc: YamlDoc) -> Project:
        data = doc.data
        # A name the schema refused (../../outside, .git, --help) is never used as a path.
        raw_envs = data.get("environments")
        envs = [
            e
            for e in (raw_envs if isinstance(raw_envs, list) else [])
            if isinstance(e, str) and schema.name_problem(e) is None
        ]
        seen: set[str] = set()
        for index, env in enumerate(envs):
            if env in seen:
                self.problems.error(
                    doc.source("environments", index), f"environment '{env}' is listed twice"
                )
            seen.add(env)
        platforms = {}
        for name, spec in (data.get("platforms") or {}).items():
            if isinstance(spec, dict) and isinstance(spec.get("kind"), str):
                settings = {
                    # A secret setting keeps its reference ("env:NAME"), resolved by the adapter.
                    k: str(v["secret"]) if isinstance(v, dict) and "secret" in v else str(v)
                    for k, v in spec.items()
                    if k != "kind"
                }
                platforms[str(name)] = PlatformSpec(str(name), spec["kind"], settings)
        repo = data.get("deploy_repo") or {}
        run_store = data.get("run_store") or {}
        return Project(
            name=str(data.get("project") or ""),
            environments=list(dict.fromkeys(envs)),
            deploy_repo_url=repo.get("url") if isinstance(repo, dict) else None,
            deploy_repo_branch=str(repo.get("branch", "main"))
            if isinstance(repo, dict)
            else "main",
            registry=dict(data.get("registry") or {}),
            builder=dict(data.get("builder") or {"kind": "buildah"}),
            platforms=platforms,
            forge=dict(data["forge"]) if isinstance(data.get("forge"), dict) else None,
            promotion=dict(data.get("promotion") or {}),
            run_store_url=run_store.get("url") if isinstance(run_store, dict) else None,
            doc=doc,
            limits=self._limits(data.get("limits")),
            deploy_repo_timeout=_seconds(repo.get("timeout")) if isinstance(repo, dict) else None,
            deploy_repo_plan_timeout=_seconds(repo.get("plan_timeout"))
            if isinstance(repo, dict)
            else None,
        )

    @staticmethod
    def _limits(raw: Any) -> Limits:
        """The limits: section over the defaults (the schema reported what is out of bounds)."""
        if not isinstance(raw, dict):
            return DEFAULT_LIMITS
        changes: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in SETTINGS:
                continue
            field_name, kind, low, high = SETTINGS[key]
            try:
                if kind == "duration":
                    number: float = schema.parse_duration(value)
                elif kind == "size":
                    number = parse_size(value)
                elif isinstance(value, int) and not isinstance(value, bool):
                    number = value
                else:
                    continue
            except ValueError:
                continue
            if low <= number <= high:
                changes[field_name] = number
        return Limits(**{**DEFAULT_LIMITS.__dict__, **changes})

    def _exists(self, rel: str) -> bool:
        """Whether `rel` is there in any form (a link or a linked directory on the way counts:
        reading it reports the refusal)."""
        try:
            return self.source.path_kind(rel) is not None
        except RepoPathError:
            return True

    def _list_dir(self, rel: str) -> list[tuple[str, str]]:
        try:
            return self.source.list_dir(rel) or []
        except RepoPathError as exc:
            self._refuse(exc.rel, exc.kind)
            return []

    def _check_env_dirs(self, project: Project) -> None:
        # A config repo with templates only (no environments/) has nothing deployed yet.
        for name, kind in self._list_dir("environments"):
            if kind not in ("directory", "file"):
                self._refuse(f"environments/{name}", kind)
            elif kind == "directory" and name not in project.environments:
                close = difflib.get_close_matches(name, project.environments, n=1)
                hint = (
                    f"did you mean '{close[0]}'?"
                    if close
                    else f"add '{name}' to environments: in {PROJECT_FILE}, or remove it"
                )
                self.problems.error(
                    Source(f"environments/{name}/"),
                    f"environment '{schema.short(name)}' is not in {PROJECT_FILE}'s environments",
                    hint,
                )

    # -- environments --------------------------------------------------------------------------

    def _environment(self, project: Project, name: str, defaults: YamlDoc | None) -> Environment:
        env_rel = f"environments/{name}/_env.yaml"
        env_doc = self._read_doc(env_rel, schema.ENVIRONMENT)
        env_data: dict[str, Any] = env_doc.data if env_doc else {}
        platform = env_data.get("platform")
        if isinstance(platform, str) and env_doc is not None:
            self._check_platform(project, platform, env_doc.source("platform"))
        reconcile = env_data.get("reconcile") or {}
        rollout = env_data.get("rollout")
        environment = Environment(
            name=name,
            platform=platform if isinstance(platform, str) else None,
            allow_head=env_data.get("allow_head") is True,
            auto_apply=env_data.get("auto_apply") is True,
            reconcile_interval=reconcile.get("interval") if isinstance(reconcile, dict) else None,
            reconcile_heal=isinstance(reconcile, dict) and reconcile.get("heal") is True,
            rollout_timeout=rollout.get("timeout") if isinstance(rollout, dict) else None,
        )
        shared = "\0".join(
            self._digests.get(rel, "?")
            for rel in (PROJECT_FILE, "environments/_defaults.yaml", env_rel)
        )
        for file, kind in self._list_dir(f"environments/{name}"):
            rel = f"environments/{name}/{file}"
            if not file.endswith(".yaml"):
                if kind not in ("file", "directory"):
                    self._refuse(rel, kind)
                continue
            if kind != "file":
                self._refuse(rel, kind)
                continue
            if file.startswith("_"):
                if file != "_env.yaml":
                    self.problems.error(
                        Source(rel),
                        f"unknown file '{file}'",
                        "only _env.yaml may start with '_'; a service file is <service>.yaml",
                    )
                continue
            stem = file.removesuffix(".yaml")
            if self.services is not None and stem not in self.services:
                continue
            why = schema.name_problem(stem)
            if why is not None:
                self.problems.error(
                    Source(rel),
                    f"'{schema.short(stem)}' cannot be a service name: it {why}",
                    f"rename the file, for example to {schema.suggest_name(stem)}.yaml",
                )
                continue
            service = self._service(project, environment, stem, defaults, env_doc, shared)
            if service is not None:
                environment.services[service.name] = service
        return environment

    def _check_platform(self, project: Project, platform: str, where: Source) -> None:
        if platform not in project.platforms:
            close = difflib.get_close_matches(platform, list(project.platforms), n=1)
            known = ", ".join(sorted(project.platforms)) or "none defined"
            self.problems.error(
                where,
                f"platform '{platform}' is not defined in {PROJECT_FILE} (platforms: {known})",
                f"did you mean '{close[0]}'?" if close else "add it under platforms:",
            )

    # -- services ------------------------------------------------------------------------------

    def _service(
        self,
        project: Project,
        environment: Environment,
        name: str,
        defaults: YamlDoc | None,
        env_doc: YamlDoc | None,
        shared: str,
    ) -> ServiceConfig | None:
        rel = f"environments/{environment.name}/{name}.yaml"
        # Its file's digest is asked first only when the memo could lend it (same shared
        # layers): else the file is read below anyway, and would be hashed twice.
        found = self.memo.services.get((environment.name, name)) if self.memo is not None else None
        lendable = found is not None and found[0].startswith(f"{shared}\0")
        digest = self._lend_digest(rel) if lendable else None
        if digest is not None:
            fingerprint = f"{shared}\0{digest}"
            kept = self._kept_service(environment.name, name, fingerprint)
            if kept is not None:  # lent without reading its file
                self._lendable.append((environment.name, name, fingerprint, kept))
                return kept
        raw = self._read_raw(rel)
        if raw is None:
            return None
        fingerprint = f"{shared}\0{self._digests[rel]}"
        kept = self._kept_service(environment.name, name, fingerprint)
        if kept is not None:
            self._lendable.append((environment.name, name, fingerprint, kept))
            return kept
        before = len(self.problems.items)
        service = self._new_service(project, environment, name, defaults, env_doc, raw, rel)
        if service is not None:
            service.inputs_print = fingerprint
            if len(self.problems.items) == before:
                self._lendable.append((environment.name, name, fingerprint, service))
        return service

    def _kept_service(self, env: str, name: str, fingerprint: str) -> ServiceConfig | None:
        """The memo's service when all it was made from is unchanged (see LoadMemo)."""
        found = self.memo.services.get((env, name)) if self.memo is not None else None
        if found is None or found[0] != fingerprint:
            return None
        service = found[1]
        template = service.template
        if template.commit is None or self._tags().get(f"{name}/{template.tag}") != template.commit:
            return None
        key = (name, template.tag)
        if key not in self._templates:
            self._templates[key] = template
            self._clean.add(key)
        else:
            current = self._templates[key]
            if current is None:
                return None
            service.template = current  # the same commit: one Template for every environment
        return service

    def _new_service(
        self,
        project: Project,
        environment: Environment,
        name: str,
        defaults: YamlDoc | None,
        env_doc: YamlDoc | None,
        raw: bytes,
        rel: str,
    ) -> ServiceConfig | None:
        doc = self._doc(raw, rel, schema.SERVICE)
        if doc is None:
            return None
        data = doc.data
        pin = data.get("template")
        if isinstance(pin, int | float) and not isinstance(pin, bool):
            pin = str(pin)
        if not isinstance(pin, str):
            return None
        template = self._resolve_template(name, pin, environment, doc)
        if template is None:
            return None
        platform = data.get("platform", environment.platform)
        if isinstance(data.get("platform"), str):
            self._check_platform(project, data["platform"], doc.source("platform"))
        values = Layered()
        if defaults is not None:
            values.merge("defaults", defaults, defaults.data.get("values"))
        if env_doc is not None:
            values.merge("environment", env_doc, env_doc.data.get("values"))
        values.merge("service", doc, data.get("values"))
        service = ServiceConfig(
            env=environment.name,
            name=name,
            template=template,
            image=self._image(data.get("image")),
            replicas=_replicas(data.get("replicas", 1)),
            platform=platform if isinstance(platform, str) else None,
            values=values,
            doc=doc,
        )
        self._check_values(service)
        return service

    @staticmethod
    def _image(raw: Any) -> ImageSpec | None:
        if not isinstance(raw, dict):
            return None
        source = raw.get("source")
        if isinstance(source, dict) and isinstance(source.get("repo"), str):
            return ImageSpec(
                repo=source["repo"],
                source_ref=str(source.get("ref", "HEAD")),
                context=str(source.get("context", ".")),
            )
        if isinstance(raw.get("ref"), str):
            return ImageSpec(ref=raw["ref"])
        return None

    def _check_values(self, service: ServiceConfig) -> None:
        declared = set(service.template.env_keys)
        for key in service.values.tree:
            if key in RESERVED_NAMES:
                item = service.values.entries.get((key,))
                where = item.source if item else service.source("values", key)
                self.problems.error(
                    where,
                    f"value '{key}' clashes with the template variable '{key}'",
                    "rename the value; templates already see a variable of that name",
                )
        layers = ("environments/_defaults.yaml", f"environments/{service.env}/_env.yaml")
        # A layer that could not be read may hold the key: its own problem is the one to fix.
        unread = any(rel in self._unread for rel in layers)
        for key in service.template.env_keys:
            if key not in service.values.tree and not unread:
                self.problems.error(
                    service.source("template"),
                    f"{service.name} in {service.env}: ENV key '{key}' (required by "
                    f"{service.template.label}/template.yaml) has no value in any layer",
                    f"add {key}: under values: in {service.file} or "
                    f"environments/{service.env}/_env.yaml",
                )
        own = service.doc.data.get("values")
        own = own if isinstance(own, dict) else {}
        undeclared = [str(key) for key in own if str(key) not in declared]
        # A key the templates read is declared by use; only one nothing reads is a
        # likely typo (parsed only when there is such a key: the common case reads nothing).
        reads = _template_reads(service.template) if undeclared else None
        for key in undeclared:
            if reads is not None and reads.covers(key):
                continue
            close = difflib.get_close_matches(key, sorted(declared), n=1)
            self.problems.warning(
                service.source("values", key),
                f"'{key}' is not in {service.template.label}/template.yaml's env list "
                "and no template of it reads it",
                f"did you mean '{close[0]}'?"
                if close
                else "declare it under env: in the template, use it in a template, or remove it",
            )
        if service.image is None and service.doc.data.get("image") is not None:
            self.problems.error(
                service.source("image"),
                "image needs either ref: (use an image) or source: {repo, ref} (build it)",
                "for example image: {ref: registry.example.com/shop/api:2.3.1}",
            )
        if service.image is not None and service.image.is_build and not service.template.build:
            self.problems.error(
                service.source("image", "source"),
                f"image.source builds an image, but {service.template.label}/template.yaml "
                "has no build: section",
                "add build: {dockerfile: Dockerfile, args: [...]} to the template",
            )

    # -- templates -----------------------------------------------------------------------------

    def _tags(self) -> dict[str, str]:
        if self._tag_cache is None:
            self._tag_cache = dict(self.source.tags())
        return self._tag_cache

    def _resolve_template(
        self, service: str, pin: str, environment: Environment, doc: YamlDoc
    ) -> Template | None:
        where = doc.source("template")
        if pin == HEAD:
            if not environment.allow_head:
                self.problems.error(
                    where,
                    f"'{environment.name}' does not allow HEAD templates",
                    f"pin a released tag (configcenter template release {service} VERSION), "
                    f"or set allow_head: true in environments/{environment.name}/_env.yaml",
                )
                return None
        elif f"{service}/{pin}" not in self._tags():
            released = sorted(
                t.split("/", 1)[1] for t in self._tags() if t.startswith(service + "/")
            )
            if released:
                hint = "released: " + ", ".join(released)
            elif not self._exists(f"templates/{service}/template.yaml"):
                hint = (
                    f"there is no template '{service}': create templates/{service}/"
                    f"template.yaml and its .j2 files, commit, then release them "
                    f"(configcenter template release {service} {pin})"
                )
            else:
                hint = (
                    f"release it: configcenter template release {service} {pin} "
                    f"(a fresh repo: configcenter template release --all {pin})"
                )
            self.problems.error(where, f"template tag '{service}/{pin}' does not exist", hint)
            return None
        key = (service, pin)
        if key not in self._templates:
            kept = self._kept_template(service, pin)
            if kept is not None:
                self._templates[key] = kept
                self._clean.add(key)
            else:
                before = len(self.problems.items)
                self._templates[key] = self._load_template(service, pin, where)
                if pin != HEAD and len(self.problems.items) == before:
                    self._clean.add(key)
        return self._templates[key]

    def _kept_template(self, service: str, pin: str) -> Template | None:
        found = self.memo.templates.get((service, pin)) if self.memo is not None else None
        if found is None or pin == HEAD:
            return None
        project, template = found
        if project != self._digests.get(PROJECT_FILE):
            return None
        if template.commit is None or template.commit != self._tags().get(f"{service}/{pin}"):
            return None
        return template

    def _load_template(self, service: str, pin: str, where: Source) -> Template | None:
        tag = None if pin == HEAD else pin
        tree = self.source.template_tree(service, tag)
        label = f"templates/{service}" + ("" if tag is None else f"@{pin}")
        refused = list(tree.refused) if tree is not None else []
        for name, kind in refused:
            rel = f"{label}/{name}" if name else label
            self._refuse(rel, kind)
        if refused:
            return None
        if tree is None or not tree.has("template.yaml"):
            self.problems.error(
                where,
                f"{label}/template.yaml does not exist",
                f"create templates/{service}/template.yaml (outputs, env, build, depends_on)",
            )
            return None
        raw = tree.read("template.yaml") or b""
        if len(raw) > self.limits.template_file_bytes:
            self._too_large(
                f"{label}/template.yaml", len(raw), self.limits.template_file_bytes, "template_size"
            )
            return None
        doc = self._parse(raw.decode("utf-8", "replace"), f"{label}/template.yaml", schema.TEMPLATE)
        if doc is None:
            return None
        data = doc.data
        # Names are interned: thousands of templates name the same keys and files, and a
        # kept load pickles (and unpickles) each distinct string object once.
        outputs = [sys.intern(o) for o in data.get("outputs") or [] if isinstance(o, str)]
        for index, output in enumerate(outputs):
            parts = output.split("/")
            if output.startswith("/") or any(p in ("", ".", "..") for p in parts):
                self.problems.error(
                    doc.source("outputs", index),
                    f"output '{output}' is not a relative path inside the service's folder",
                    "name outputs like app.env or conf/nginx.conf (no leading /, no . or ..)",
                )
                continue
            if not tree.has(output + ".j2"):
                self.problems.error(
                    doc.source("outputs", index),
                    f"output '{output}' has no source {label}/{output}.j2",
                    f"create {output}.j2 next to template.yaml, or remove it from outputs",
                )
        build = data.get("build") if isinstance(data.get("build"), dict) else None
        if build is not None:
            dockerfile = str(build.get("dockerfile", "Dockerfile"))
            if dockerfile not in outputs:
                self.problems.error(
                    doc.source("build", "dockerfile"),
                    f"build.dockerfile '{dockerfile}' is not one of the outputs",
                    f"add {dockerfile} to outputs: (rendered from {dockerfile}.j2)",
                )
        template_stages(data, outputs, doc.source, self.problems)  # hooks: and verify:
        return Template(
            service=service,
            tag=pin,
            commit=self._tags().get(f"{service}/{pin}") if tag else None,
            tree=tree,
            outputs=outputs,
            env_keys=[sys.intern(k) for k in data.get("env") or [] if isinstance(k, str)],
            build=build,
            depends_on=[sys.intern(d) for d in data.get("depends_on") or [] if isinstance(d, str)],
            doc=doc,
        )

    # -- dependencies --------------------------------------------------------------------------

    def _check_dependencies(self, environments: dict[str, Environment]) -> None:
        known = {name for name, kind in self._list_dir("templates") if kind == "directory"}
        known |= {t.split("/", 1)[0] for t in self._tags()}
        for environment in environments.values():
            deps: dict[str, list[str]] = {}
            for service in environment.services.values():
                deps[service.name] = []
                for index, dep in enumerate(service.template.depends_on):
                    if dep not in known:
                        close = difflib.get_close_matches(dep, sorted(known), n=1)
                        self.problems.error(
                            # asked only here: a kept load's documents are read on first use
                            service.template.doc.source("depends_on", index),
                            f"depends_on names unknown service '{dep}'",
                            f"did you mean '{close[0]}'?"
                            if close
                            else "known: " + ", ".join(sorted(known)),
                        )
                    elif dep not in environment.services:
                        if self._exists(f"environments/{environment.name}/{dep}.yaml"):
                            continue  # it exists but did not load: its own problem says why
                        self.problems.error(
                            service.source("template"),
                            f"{service.name} depends on {dep}, which is not deployed in "
                            f"{environment.name}",
                            f"add environments/{environment.name}/{dep}.yaml",
                        )
                    else:
                        deps[service.name].append(dep)
            try:
                environment.order = dependency_order(deps)
            except CycleError as exc:
                first = environment.services[exc.cycle[0]]
                self.problems.error(
                    first.template.doc.source("depends_on"),
                    f"dependency cycle in {environment.name}: " + " -> ".join(exc.cycle),
                    "remove one depends_on entry to break the cycle",
                )
                environment.order = sorted(environment.services)


def _replicas(value: object) -> int | None:
    """`auto` (None): an autoscaler owns the count; anything invalid was reported already."""
    if value == "auto":
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def _template_reads(template: Template) -> Consumption:
    """The value names `template` reads, from its Jinja source (parsing only, no rendering)."""
    import jinja2

    from configcenter.core.consumed import find_consumption

    return find_consumption(template, jinja2.Environment())
