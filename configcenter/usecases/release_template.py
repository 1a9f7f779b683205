"""`template release SERVICE VERSION`: validate the work-tree template, then tag it."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, replace

from configcenter.adapters.git_config_repo import GitConfigRepo, WorkTreeTemplate
from configcenter.core.errors import ConfigError, Problem, ProblemList, Source
from configcenter.core.model import HEAD, Template
from configcenter.core.plan import desired_image
from configcenter.core.render import RenderError
from configcenter.core.schema import TEMPLATE
from configcenter.core.source import TemplateTree
from configcenter.core.state import EnvState
from configcenter.core.yamldoc import parse_yaml
from configcenter.usecases.workspace import Workspace

VERSION_RE = re.compile(r"^\d+\.\d+\.\d+([.-][0-9A-Za-z.-]+)?$")


@dataclass
class Released:
    tag: str
    commit: str
    rendered_for: list[str]  # environments the template was rendered for
    notes: list[Problem]  # what environments must add before they can pin this version


def release_template(ws: Workspace, service: str, version: str, dry_run: bool = False) -> Released:
    where = Source(f"templates/{service}/template.yaml")
    if not VERSION_RE.match(version):
        raise ConfigError(
            [Problem(where, f"'{version}' is not a version", "use MAJOR.MINOR.PATCH, e.g. 1.4.0")]
        )
    tag = f"{service}/{version}"
    if tag in ws.source.tags():
        raise ConfigError(
            [
                Problem(
                    where,
                    f"tag {tag} already exists",
                    "released tags never move: pick a new version",
                )
            ]
        )
    head = ws.source.head_commit()
    if head is None:
        raise ConfigError(
            [
                Problem(
                    where, "the config repo has no commits", "commit the template, then release it"
                )
            ]
        )
    dirty = subprocess.run(
        ["git", "-C", str(ws.root), "status", "--porcelain", "--", f"templates/{service}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
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
    template = _work_tree_template(ws, service)
    rendered_for = []
    problems = ProblemList()
    # Load as if the tag existed, so environments that already pin it validate too.
    ws.__dict__["source"] = _WithPendingTag(ws.source, tag, head)
    config = ws.config
    for env, environment in config.environments.items():
        if service not in environment.services:
            continue
        svc = replace(environment.services[service], template=template)
        missing = [k for k in template.env_keys if k not in svc.values.tree]
        for key in missing:
            problems.error(
                svc.source("template"),
                f"{tag} needs ENV key '{key}', which has no value in {env}",
                f"add {key}: under values: before pinning {env} to {version}",
            )
        if missing:
            continue
        image = desired_image(config, svc, EnvState(env).services.get(service), {})
        try:
            ws.renderer.render(config, svc, image.ref)
            rendered_for.append(env)
        except RenderError as exc:
            problems.items.append(exc.problem)
    # Missing keys only block environments that will pin the new version later; renders must pass.
    render_errors = [p for p in problems.errors if "needs ENV key" not in p.message]
    if render_errors:
        raise ConfigError(render_errors)
    notes = [p for p in problems.errors if p not in render_errors]
    if dry_run:
        return Released(tag, head, rendered_for, notes)
    commit = ws.source.create_tag(tag, f"{service} template {version}")
    return Released(tag, commit, rendered_for, notes)


class _WithPendingTag:
    """The config repo, plus the tag about to be created pointing at the work tree."""

    def __init__(self, inner: GitConfigRepo, tag: str, head: str) -> None:
        self.inner = inner
        self.root = inner.root
        self.tag = tag
        self.head = head

    def head_commit(self) -> str | None:
        return self.inner.head_commit()

    def tags(self) -> Mapping[str, str]:
        return {**self.inner.tags(), self.tag: self.head}

    def template_tree(self, service: str, tag: str | None) -> TemplateTree | None:
        if f"{service}/{tag}" == self.tag:
            return self.inner.template_tree(service, None)
        return self.inner.template_tree(service, tag)

    def create_tag(self, name: str, message: str) -> str:
        return self.inner.create_tag(name, message)

    def save_caches(self) -> None:
        self.inner.save_caches()


def _work_tree_template(ws: Workspace, service: str) -> Template:
    root = ws.root / "templates" / service
    tree = WorkTreeTemplate(root)
    raw = tree.read("template.yaml")
    rel = f"templates/{service}/template.yaml"
    if raw is None:
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
