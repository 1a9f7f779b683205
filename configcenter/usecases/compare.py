"""Read-only comparisons: services of an environment, two environments, two releases.

Secrets never appear: values are masked (`***`) as in plans, and rendered files hold
secret references, never their values.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from configcenter.core.consumed import Consumption
from configcenter.core.errors import ConfigError, Problem, ProblemList, TransientFailure, UserError
from configcenter.core.model import Template
from configcenter.core.source import ConfigSource, MemorySource
from configcenter.core.state import EnvState, Release, ServiceState
from configcenter.core.values import canonical, flatten, masked, to_value
from configcenter.ports.deploy_repo import DeployRepoError
from configcenter.usecases.inspect import check_env, plan_env_checked
from configcenter.usecases.state_store import read_service_state
from configcenter.usecases.workspace import Workspace

if TYPE_CHECKING:
    from configcenter.usecases.history import HistoryEntry


def _consumed(entries: Mapping[Any, Any], consumption: Consumption | None) -> dict[str, Any]:
    """Flat key -> entry of the values `consumption` covers (all when it is not known)."""
    return {
        ".".join(path): entries[path]
        for path in sorted(entries)
        if consumption is None or consumption.covers(path[0])
    }


# -- services ENV ----------------------------------------------------------------------------


@dataclass
class ServiceRow:
    env: str
    service: str
    template: str  # the tag the config repo pins
    image: str  # as the config repo gives it (ref, or source repo@ref to build)
    platform: str | None
    platform_kind: str | None
    replicas: int | None  # None: replicas: auto
    depends_on: list[str]
    #: release, outcome, template, image from the deploy repo; `blocked` (release, outcome,
    #: reason, at) when its newest release failed: the release above is the one it runs.
    deployed: dict[str, Any] | None
    #: Its templates render a DaemonSet and no Deployment or StatefulSet: one pod per node,
    #: `replicas` is not used.
    per_node: bool = False

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: A workload kind as a manifest template names it: `kind: DaemonSet` at a line's start.
_KIND_LINE = re.compile(rb"^kind:\s*[\"']?(Deployment|StatefulSet|DaemonSet)\b", re.M)


def _per_node(template: Template, seen: dict[str, bool]) -> bool:
    """Whether the template's outputs render a DaemonSet and no Deployment or StatefulSet
    (read from its sources: `services` renders nothing), kept by template tree."""
    known = seen.get(template.tree_id)
    if known is None:
        kinds: set[bytes] = set()
        for output in template.outputs:
            source = template.tree.read(f"{output}.j2")
            if source is not None:
                kinds |= set(_KIND_LINE.findall(source))
        known = seen[template.tree_id] = kinds == {b"DaemonSet"}
    return known


def list_services(ws: Workspace, envs: Collection[str]) -> list[ServiceRow]:
    config = ws.config
    rows = []
    per_node: dict[str, bool] = {}
    for env in envs:
        check_env(config, env)
        environment = config.environment(env)
        try:
            state = ws.read_state(env)
        except (DeployRepoError, TransientFailure) as exc:  # still list what the config says
            ws.problems.warning(
                config.project.doc.source("deploy_repo"),
                f"deploy repo not read, deployed releases unknown: {exc}",
            )
            state = EnvState(env)
        for name in environment.order or sorted(environment.services):
            svc = environment.services[name]
            platform = svc.platform or environment.platform
            spec = config.project.platforms.get(platform) if platform else None
            image = ""
            if svc.image is not None:
                image = (
                    f"build {svc.image.repo}@{svc.image.source_ref}"
                    if svc.image.is_build
                    else svc.image.ref or ""
                )
            record = state.services.get(name)
            deployed: dict[str, Any] | None = None
            if record is not None:
                release = record.release
                deployed = {
                    "release": release.id if release else "",
                    "outcome": release.outcome if release else "",
                    "template": record.template_tag,
                    "image": record.image,
                }
                failed = blocked_release(record)
                if failed is not None:
                    deployed["blocked"] = {
                        "release": failed.id,
                        "outcome": failed.outcome,
                        "reason": failed.reason,
                        "at": failed.at,
                    }
            rows.append(
                ServiceRow(
                    env,
                    name,
                    svc.template.tag,
                    image,
                    platform,
                    spec.kind if spec else None,
                    svc.replicas,
                    list(svc.template.depends_on),
                    deployed,
                    spec is not None
                    and spec.kind == "kubernetes"
                    and _per_node(svc.template, per_node),
                )
            )
    return rows


def blocked_release(record: ServiceState) -> Release | None:
    """The failed (or rolled back) release that is the service's newest, when there is one:
    its inputs are blocked (`plan` shows them so until they change or `apply --retry`), and
    the record's release is the one the platform runs (its last good one, or the failed one
    when there was none to go back to)."""
    failed = record.last_failed
    release = record.release
    if failed is None or release is None:
        return None
    if release.id == failed.id or release.outcome == "failed":
        return release
    return failed if failed.id != release.id and failed.at >= release.at else None


# -- diff ENV1 ENV2 --------------------------------------------------------------------------


@dataclass
class Side:
    value: Any
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source}


@dataclass
class ServiceDiff:
    service: str
    only_in: str | None = None  # the one environment that has it
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # template, image, ...
    values: dict[str, tuple[Side | None, Side | None]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # name -> unified diff

    @property
    def same(self) -> bool:
        return not (self.only_in or self.fields or self.values or self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "only_in": self.only_in,
            "same": self.same,
            "fields": {k: {"from": a, "to": b} for k, (a, b) in self.fields.items()},
            "values": {
                k: {
                    "from": a.to_json() if a else None,
                    "to": b.to_json() if b else None,
                }
                for k, (a, b) in self.values.items()
            },
            "files": dict(self.files),
        }


@dataclass
class EnvDiff:
    left: str
    right: str
    services: list[ServiceDiff]
    unverified: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.left,
            "to": self.right,
            "services": [s.to_json() for s in self.services],
            "unverified": self.unverified,
        }


def _file_diff(label_a: str, a: bytes | None, label_b: str, b: bytes | None) -> str:
    def lines(data: bytes | None) -> list[str]:
        if data is None:
            return []
        text = data.decode("utf-8", "replace").splitlines(keepends=True)
        if text and not text[-1].endswith("\n"):
            text[-1] += "\n"
        return text

    return "".join(
        difflib.unified_diff(
            lines(a),
            lines(b),
            label_a if a is not None else "/dev/null",
            label_b if b is not None else "/dev/null",
        )
    )


def diff_envs(ws: Workspace, left: str, right: str, only: Collection[str] = ()) -> EnvDiff:
    """What differs between two environments: pins, values by key (with provenance), files."""
    ws.focus = None
    config = ws.config
    check_env(config, left)
    check_env(config, right)
    envs = (config.environment(left), config.environment(right))
    names = sorted(set(envs[0].services) | set(envs[1].services))
    for name in only:
        if name not in names:
            raise ConfigError(
                [
                    Problem(
                        config.project.doc.source("environments"),
                        f"service '{name}' is in neither {left} nor {right}",
                        "services: " + ", ".join(names),
                    )
                ]
            )
    chosen = [n for n in names if not only or n in only]
    wanted = {env.name: [n for n in chosen if n in env.services] for env in envs}
    rendered: dict[str, dict[str, dict[str, bytes]]] = {}
    images: dict[str, dict[str, str]] = {}
    consumes: dict[str, dict[str, Consumption | None]] = {left: {}, right: {}}
    unverified: dict[str, str] = {}
    for env in envs:
        if not wanted[env.name]:
            rendered[env.name], images[env.name] = {}, {}
            continue
        checked = plan_env_checked(ws, env.name, only=wanted[env.name], render_all=True)
        rendered[env.name] = {
            s.service: dict(s.files or {}) for s in checked.plan.services if s.files is not None
        }
        images[env.name] = {
            s.service: s.image.ref for s in checked.plan.services if s.image is not None
        }
        consumes[env.name] = {s.service: s.consumption for s in checked.plan.services}
        unverified.update({f"{env.name}/{k}": v for k, v in checked.unverified.items()})
    out = []
    for name in chosen:
        a = envs[0].services.get(name)
        b = envs[1].services.get(name)
        diff = ServiceDiff(name)
        if a is None or b is None:
            diff.only_in = right if a is None else left
            out.append(diff)
            continue
        pairs = {
            "template": (a.template.tag, b.template.tag),
            "image": (images[left].get(name), images[right].get(name)),
            "replicas": (a.replicas, b.replicas),
            "platform": (a.platform or envs[0].platform, b.platform or envs[1].platform),
        }
        diff.fields = {k: v for k, v in pairs.items() if v[0] != v[1]}
        # Only what each side's templates consume: a shared key a service does not read
        # is no difference for it (as in its plan and its releases).
        left_values = _consumed(a.values.entries, consumes[left].get(name))
        right_values = _consumed(b.values.entries, consumes[right].get(name))
        for key in sorted(set(left_values) | set(right_values)):
            x, y = left_values.get(key), right_values.get(key)
            if x is not None and y is not None and canonical(x.value) == canonical(y.value):
                continue
            diff.values[key] = (
                Side(masked(x.value), str(x.source)) if x else None,
                Side(masked(y.value), str(y.source)) if y else None,
            )
        files_a, files_b = rendered[left].get(name, {}), rendered[right].get(name, {})
        for file in sorted(set(files_a) | set(files_b)):
            if files_a.get(file) != files_b.get(file):
                diff.files[file] = _file_diff(
                    f"{left}/{name}/{file}",
                    files_a.get(file),
                    f"{right}/{name}/{file}",
                    files_b.get(file),
                )
        out.append(diff)
    return EnvDiff(left, right, out, unverified)


# -- show ENV RELEASE, history --diff A B ----------------------------------------------------


@dataclass
class ReleaseView:
    env: str
    service: str
    release: str
    outcome: str
    at: str
    commit: str
    reason: str
    template: str
    image: str
    replicas: int | None  # None: replicas: auto
    values: dict[str, Any]  # flat keys, secrets masked
    files: dict[str, bytes]
    config_commit: str | None = None  # the config repo commit it was made from
    secrets_generation: int = 0  # which generation of the secret values it runs with

    def to_json(self, with_files: bool = True) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "files"}
        if with_files:
            data["files"] = {k: v.decode("utf-8", "replace") for k, v in self.files.items()}
        return data


class UnknownRelease(UserError):
    """A release name (show, history --diff, the console's diff) that ENV's history does not
    have. Not a problem of a config repo file: it names what was asked, the nearest release
    names and the command that lists them."""

    def __init__(
        self,
        env: str,
        release: str,
        entries: list[HistoryEntry],
        *,
        message: str = "",
        hint: str = "",
    ) -> None:
        self.env, self.release = env, release
        super().__init__(
            message or f"no release '{release}' in {env}",
            hint=hint or _release_hint(env, release, entries),
        )


def _release_hint(env: str, release: str, entries: list[HistoryEntry]) -> str:
    """The nearest release names to `release`, and how to list them all.

    Release ids start with their service's name (`api-20261123.044600-3f4e82`), so a
    name that starts with a service's gets that service's releases."""
    if not entries:
        return f"{env} has no releases yet: `configcenter apply {env}` makes them"
    services = {e.service for e in entries}
    service = max((s for s in services if release.startswith(f"{s}-")), key=len, default=None)
    pool = [e.release for e in entries if service is None or e.service == service]
    near = difflib.get_close_matches(release, pool, n=3, cutoff=0.5)
    newest = [r for r in pool if r not in near][: max(0, 3 - len(near))]
    words = []
    if near:
        words.append("did you mean " + " or ".join(near) + "?")
    if newest:
        words.append(
            ("newest: " if service is None else f"newest of {service}: ") + ", ".join(newest)
        )
    if service is not None:
        words.append(f"all of them: configcenter history {env} --service {service}")
    else:
        words.append(
            f"release names start with the service's ({', '.join(sorted(services)[:5])}); "
            f"all of them: configcenter history {env}"
        )
    return "; ".join(words)


def find_release(
    ws: Workspace, env: str, release: str, entries: list[HistoryEntry] | None = None
) -> ReleaseView:
    """A release as the deploy repo recorded it: pins, values (masked) and files.

    `entries` is the env's history when the caller has read it already (a diff of two
    releases reads it once)."""
    from configcenter.usecases.history import history

    check_env(ws.config, env)
    if entries is None:
        entries = history(ws, env, None, limit=1000)
    entry = next((e for e in entries if e.release == release), None)
    if entry is None:
        raise UnknownRelease(env, release, entries)
    repo = ws.deploy_repo
    record: ServiceState | None = read_service_state(repo, env, entry.service, entry.commit)
    if record is None:
        raise UnknownRelease(
            env,
            release,
            entries,
            message=f"release '{release}' is named by deploy repo commit {entry.commit[:10]} "
            f"but that commit's state record of {env} has no {entry.service}",
            hint=f"the deploy repo was edited by hand: compare with `git log {entry.commit[:10]}`"
            f" in it; configcenter history {env} --service {entry.service} lists the others",
        )
    prefix = f"{env}/{entry.service}/"
    paths = [p for p in repo.list_files(f"{env}/{entry.service}", entry.commit)]
    paths = [p for p in paths if p.startswith(prefix)]
    files = repo.read_many(paths, entry.commit) if paths else {}
    return ReleaseView(
        env=env,
        service=entry.service,
        release=release,
        outcome=entry.outcome,
        at=entry.at,
        commit=entry.commit,
        reason=entry.reason,
        template=record.template_tag,
        image=record.image,
        replicas=record.replicas,
        values=masked(flatten(to_value(record.values))),
        files={p.removeprefix(prefix): data for p, data in sorted(files.items())},
        config_commit=record.config_commit or entry.config_commit or None,
        secrets_generation=record.secrets_generation,
    )


@dataclass
class ReleaseDiff:
    before: ReleaseView
    after: ReleaseView
    fields: dict[str, tuple[Any, Any]]
    changed: dict[str, tuple[Any, Any]]
    added: dict[str, Any]
    removed: dict[str, Any]
    files: dict[str, str]
    #: key -> {"from": "file:line", "to": "file:line"}: where the config repo set each
    #: differing value at each release's config commit (with_sources=True only).
    sources: dict[str, dict[str, str | None]] | None = None
    sources_note: str | None = None  # why some sources are not known

    def to_json(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.sources is not None:
            extra = {"sources": self.sources, "sources_note": self.sources_note}
        return {
            **extra,
            "env": self.before.env,
            "from": self.before.to_json(with_files=False),
            "to": self.after.to_json(with_files=False),
            "fields": {k: {"from": a, "to": b} for k, (a, b) in self.fields.items()},
            "values": {
                "changed": {k: {"from": a, "to": b} for k, (a, b) in self.changed.items()},
                "added": {k: {"to": v} for k, v in self.added.items()},
                "removed": {k: {"from": v} for k, v in self.removed.items()},
            },
            "files": dict(self.files),
        }


class _OneServiceAt(MemorySource):
    """The files that layer one service's values, as they were at a config commit, in
    memory; released templates (tags never move) come from the config repo itself."""

    def __init__(
        self,
        files: dict[str, bytes | str],
        present: set[str],
        commit: str,
        repo: ConfigSource,
        root: Path,
    ) -> None:
        super().__init__(files, head=commit, root=root)
        self._repo = repo
        self._present = present  # the environment's other files: there, but not read

    def path_kind(self, rel: str) -> str | None:
        if rel.strip("/") in self._present:
            return "file"
        return super().path_kind(rel)

    def tags(self) -> Mapping[str, str]:
        return self._repo.tags()

    def template_tree(self, service: str, tag: str | None) -> Any:
        if tag is None:  # the work tree's template: as it was at the commit
            return super().template_tree(service, None)
        return self._repo.template_tree(service, tag)


def release_sources(ws: Workspace, view: ReleaseView) -> dict[str, str]:
    """Where each value of a release was set (key -> "file:line"), loaded from the config
    repo as it was at the release's config commit: the project file, the defaults, the
    environment's and the service's files and its work-tree template, nothing else (so
    one release costs one service's load, whatever the repo's size). UserError when that
    commit is not known or the files did not load there (the diff still stands).
    """
    from configcenter.core.load import load_config
    from configcenter.wiring import open_config_git

    commit = view.config_commit
    if not commit:
        raise UserError(f"{view.release} does not record the config commit it was made from")
    git = open_config_git(ws.root, UserError)
    if git.rev(commit) is None:
        raise UserError(
            f"config commit {commit[:10]} of {view.release} is not in this checkout of the "
            "config repo (fetch it)"
        )
    wanted = [
        "configcenter.yaml",
        "environments/_defaults.yaml",
        f"environments/{view.env}/_env.yaml",
        f"environments/{view.env}/{view.service}.yaml",
        f"templates/{view.service}",
    ]
    listed = git.run("ls-tree", "-r", "--name-only", commit, "--", *wanted).splitlines()
    files: dict[str, bytes | str] = {}
    for path in listed:
        text = git.read(commit, path)
        if text is not None:
            files[path] = text
    others = git.run("ls-tree", "--name-only", commit, "--", f"environments/{view.env}/")
    source = _OneServiceAt(files, set(others.splitlines()), commit, ws.source, ws.root)
    try:
        then = load_config(source, ProblemList(), (view.env,))
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else exc
        raise UserError(f"the config repo at {commit[:10]} does not load: {first}") from None
    service = then.environment(view.env).services.get(view.service)
    if service is None:
        return {}
    return {key: str(entry.source) for key, entry in service.values.flat()}


def diff_releases(
    ws: Workspace, env: str, a: str, b: str, *, with_sources: bool = False
) -> ReleaseDiff:
    """What changed from release A to B; `with_sources` adds where each differing value
    was set, from the config repo at each release's config commit."""
    from configcenter.usecases.history import history

    check_env(ws.config, env)
    entries = history(ws, env, None, limit=1000)
    before, after = find_release(ws, env, a, entries), find_release(ws, env, b, entries)
    fields = {
        k: (getattr(before, k), getattr(after, k))
        for k in ("service", "template", "image", "replicas", "secrets_generation")
        if getattr(before, k) != getattr(after, k)
    }
    changed, added, removed = {}, {}, {}
    for key in sorted(set(before.values) | set(after.values)):
        if key not in after.values:
            removed[key] = before.values[key]
        elif key not in before.values:
            added[key] = after.values[key]
        elif canonical(before.values[key]) != canonical(after.values[key]):
            changed[key] = (before.values[key], after.values[key])
    files = {}
    for name in sorted(set(before.files) | set(after.files)):
        if before.files.get(name) != after.files.get(name):
            files[name] = _file_diff(
                f"{a}/{name}", before.files.get(name), f"{b}/{name}", after.files.get(name)
            )
    result = ReleaseDiff(before, after, fields, changed, added, removed, files)
    if with_sources:
        keys = [*changed, *added, *removed]
        found: dict[str, dict[str, str]] = {}
        notes = []
        for label, view in (("from", before), ("to", after)):
            try:
                found[label] = release_sources(ws, view) if keys else {}
            except UserError as exc:
                found[label] = {}
                notes.append(f"sources of {view.release} not known: {exc}")
        result.sources = {
            key: {"from": found["from"].get(key), "to": found["to"].get(key)} for key in keys
        }
        result.sources_note = "; ".join(notes) or None
    return result
