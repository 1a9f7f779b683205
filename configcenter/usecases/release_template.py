"""`template release SERVICE VERSION`: validate the work-tree template, then tag it."""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from configcenter import wiring
from configcenter.core.errors import (
    ConfigError,
    Problem,
    ProblemList,
    Source,
    TransientFailure,
    UserError,
)
from configcenter.core.model import HEAD, Template
from configcenter.core.plan import desired_image
from configcenter.core.render import RenderError
from configcenter.core.schema import TEMPLATE
from configcenter.core.source import LINK_HINT, TemplateTree
from configcenter.core.state import EnvState
from configcenter.core.yamldoc import parse_yaml
from configcenter.usecases.workspace import Workspace

if TYPE_CHECKING:
    from configcenter.adapters.config_git import ConfigGit
    from configcenter.core.yamldoc import ParseCache
    from configcenter.ports.config_repo import ConfigRepo

VERSION_RE = re.compile(r"^\d+\.\d+\.\d+([.-][0-9A-Za-z.-]+)?$")


@dataclass
class Released:
    tag: str
    commit: str
    rendered_for: list[str]  # environments the template was rendered for
    notes: list[Problem]  # what environments must add before they can pin this version


def release_template(ws: Workspace, service: str, version: str, dry_run: bool = False) -> Released:
    return release_templates(ws, [service], version, dry_run)[0]


def all_templates(ws: Workspace) -> list[str]:
    """Every template in the work tree (templates/<service>/template.yaml)."""
    root = ws.root / "templates"
    return sorted(p.parent.name for p in root.glob("*/template.yaml")) if root.is_dir() else []


def release_templates(
    ws: Workspace, services: Sequence[str], version: str, dry_run: bool = False
) -> list[Released]:
    """Validate and tag SERVICE/VERSION for each service, as one step.

    Environments are loaded as if all the new tags existed, so a fresh repo whose
    environments already pin VERSION for every service can release them together.
    """
    if not services:
        raise ConfigError(
            [Problem(Source("templates"), "no templates to release", "create templates/<service>/")]
        )
    if not VERSION_RE.match(version):
        raise ConfigError(
            [
                Problem(
                    Source(f"templates/{services[0]}/template.yaml"),
                    f"'{version}' is not a version",
                    "use MAJOR.MINOR.PATCH, e.g. 1.4.0",
                )
            ]
        )
    head = ws.source.head_commit()
    pending: dict[str, Template] = {}
    tags = ws.source.tags()
    for service in services:
        where = Source(f"templates/{service}/template.yaml")
        tag = f"{service}/{version}"
        if tag in tags:
            raise ConfigError(
                [
                    Problem(
                        where,
                        f"tag {tag} already exists",
                        "released tags never move: pick a new version",
                    )
                ]
            )
        if head is None:
            raise ConfigError(
                [
                    Problem(
                        where,
                        "the config repo has no commits",
                        "commit the template, then release it",
                    )
                ]
            )
        dirty = _git(ws).run("status", "--porcelain", "--", f"templates/{service}")
        if dirty:
            raise ConfigError(
                [
                    Problem(
                        where,
                        f"templates/{service} has uncommitted changes:\n{dirty}",
                        "commit them first: the tag points at a commit, not at the work tree",
                    )
                ]
            )
        pending[service] = _work_tree_template(ws, service)
    assert head is not None
    # Load as if the tags existed, so environments that already pin them validate too.
    ws.__dict__["source"] = _WithPendingTags(ws.source, {f"{s}/{version}": head for s in services})
    try:
        config = ws.config
    except ConfigError as exc:
        raise ConfigError(_release_together_hints(exc.problems, services, version)) from None
    results: list[Released] = []
    problems = ProblemList()
    notes: dict[str, list[Problem]] = {}
    rendered: dict[str, list[str]] = {}
    for service, template in pending.items():
        tag = f"{service}/{version}"
        rendered[service] = []
        notes[service] = []
        for env, environment in config.environments.items():
            if service not in environment.services:
                continue
            svc = replace(environment.services[service], template=template)
            missing = [k for k in template.env_keys if k not in svc.values.tree]
            for key in missing:
                notes[service].append(
                    Problem(
                        svc.source("template"),
                        f"{tag} needs ENV key '{key}', which has no value in {env}",
                        f"add {key}: under values: before pinning {env} to {version}",
                    )
                )
            if missing:
                continue
            image = desired_image(config, svc, EnvState(env).services.get(service), {})
            try:
                ws.renderer.render(config, svc, image.ref)
                rendered[service].append(env)
            except RenderError as exc:
                problems.items.append(exc.problem)
    # Missing keys only block environments that will pin the new version later; renders must pass.
    problems.raise_if_errors()
    for service in pending:
        tag = f"{service}/{version}"
        commit = head if dry_run else ws.source.create_tag(tag, f"{service} template {version}")
        results.append(Released(tag, commit, rendered[service], notes[service]))
    return results


_MISSING_TAG = re.compile(r"^template tag '([^/']+)/([^']+)' does not exist$")


def _release_together_hints(
    problems: Sequence[Problem], releasing: Sequence[str], version: str
) -> list[Problem]:
    """Other services pinned to VERSION but not released: say how to release them together."""
    missing = sorted(
        {
            m.group(1)
            for p in problems
            if (m := _MISSING_TAG.match(p.message)) and m.group(2) == version
        }
    )
    if not missing:
        return list(problems)
    together = " ".join(sorted({*releasing, *missing}))
    hint = (
        f"environments pin {version} for templates not released yet: release them together "
        f"with configcenter template release {together} {version} "
        f"(or template release --all {version})"
    )
    return [
        replace(p, hint=hint)
        if (m := _MISSING_TAG.match(p.message)) and m.group(2) == version
        else p
        for p in problems
    ]


class _WithPendingTags:
    """The config repo, plus the tags about to be created pointing at the work tree."""

    def __init__(self, inner: ConfigRepo, pending: Mapping[str, str]) -> None:
        self.inner = inner
        self.root = inner.root
        self.pending = dict(pending)

    @property
    def parse_cache(self) -> ParseCache | None:
        return self.inner.parse_cache

    def read_file(self, rel: str, max_bytes: int) -> bytes | None:
        return self.inner.read_file(rel, max_bytes)

    def list_dir(self, rel: str) -> list[tuple[str, str]] | None:
        return self.inner.list_dir(rel)

    def path_kind(self, rel: str) -> str | None:
        return self.inner.path_kind(rel)

    def head_commit(self) -> str | None:
        return self.inner.head_commit()

    def tags(self) -> Mapping[str, str]:
        return {**self.inner.tags(), **self.pending}

    def template_tree(self, service: str, tag: str | None) -> TemplateTree | None:
        if f"{service}/{tag}" in self.pending:
            return self.inner.template_tree(service, None)
        return self.inner.template_tree(service, tag)

    def create_tag(self, name: str, message: str) -> str:
        return self.inner.create_tag(name, message)

    @property
    def consumption_cache(self) -> MutableMapping[str, tuple[str, ...]]:
        return self.inner.consumption_cache

    def save_caches(self) -> None:
        self.inner.save_caches()


def _work_tree_template(ws: Workspace, service: str) -> Template:
    tree = ws.source.template_tree(service, None)
    if tree is not None and tree.refused:  # a link is never read, so never released either
        paths = [(f"templates/{service}/{name}".rstrip("/"), kind) for name, kind in tree.refused]
        raise ConfigError(
            [
                Problem(Source(p), f"{p} is a {kind}, not a regular file", LINK_HINT)
                for p, kind in paths
            ]
        )
    raw = tree.read("template.yaml") if tree is not None else None
    rel = f"templates/{service}/template.yaml"
    if tree is None or raw is None:
        raise ConfigError([Problem(Source(rel), "template.yaml does not exist", "create it")])
    problems = ProblemList()
    doc = parse_yaml(raw.decode(), rel, problems)
    if doc is not None:
        TEMPLATE.check(doc, doc.data, (), problems)
    problems.raise_if_errors()
    assert doc is not None
    data = doc.data
    outputs = list(data.get("outputs") or [])
    for index, output in enumerate(outputs):
        if tree.read(output + ".j2") is None:
            problems.error(doc.source("outputs", index), f"output '{output}' has no {output}.j2")
    problems.raise_if_errors()
    return Template(
        service=service,
        tag=HEAD,
        commit=None,
        tree=tree,
        outputs=outputs,
        env_keys=list(data.get("env") or []),
        build=data.get("build"),
        depends_on=list(data.get("depends_on") or []),
        doc=doc,
    )


def tag_remote(ws: Workspace) -> str | None:
    """The remote released tags go to: the current branch's upstream, else origin, else one."""

    git = _git(ws)
    remotes = git.run("remote", check=False).split()
    if not remotes:
        return None
    upstream = git.run("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}", check=False)
    remote = upstream.split("/", 1)[0] if upstream else ""
    if remote in remotes:
        return remote
    return "origin" if "origin" in remotes else remotes[0]


class TagPushError(TransientFailure):
    """The tags were created locally but could not be pushed; the message gives the
    `git push` that finishes the job."""


def push_tags(ws: Workspace, remote: str, tags: Sequence[str]) -> None:
    proc = _git(ws).attempt(
        "push", "--quiet", remote, *(f"refs/tags/{t}" for t in tags), timeout=120
    )
    if proc.returncode != 0:
        why = ws.redactor.redact(
            proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        )
        raise TagPushError(
            f"tagged {', '.join(tags)} locally, but pushing to {remote} failed: {why}; "
            f"push them with: git push {remote} " + " ".join(tags)
        )


def _git(ws: Workspace) -> ConfigGit:
    """git as the user's own command runs it (it may ask for credentials)."""
    return wiring.open_config_git(ws.root, UserError, prompt=True)
