"""promote: carry what one environment runs successfully to the next, as a merge request.

A promotion carries pins, never values: for each service, the template tag and
the image of the source environment's last *good* release (from the deploy
repo's state records of `<from>`; a newer failed release is never promoted). They are
written into `environments/<to>/<service>.yaml` with ruamel.yaml round-trip
editing, so the target file keeps its comments, order and values.

Images: a source-built image is carried by digest (`image: {ref: repo@sha256:...}`
replacing `image.source`, with a comment naming the release it came from), so
the target runs the exact bits the source verified. The one exception is a
target that already builds the same source repo and ref: it keeps building.
A given image (`image.ref`) is carried as written.

The flow is Git plus the forge port: the edit is committed in a temporary
worktree on top of the promotion branch (`promote/<from>-to-<to>[/<service>]`)
and pushed to `origin`; a second run adds a commit on top (history is kept, and
anything a person pushed to the branch, such as a missing ENV key, survives).
The branch is rebuilt from the default branch, with `--force-with-lease`, only
when it can no longer be merged with it (a conflict): then there is nothing of
ours left to keep and the lease guarantees nobody else's work is dropped
unseen. The merge request's description is the target's plan computed against
the promoted tree, so a reviewer sees exactly what merging will apply.
"""

from __future__ import annotations

import io
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from configcenter import wiring
from configcenter.core.errors import ConfigError, UserError
from configcenter.core.kinds import LOCAL_BRANCHES
from configcenter.core.model import HEAD, Config, ImageSpec
from configcenter.core.plan import Plan, ServicePlan, ValueChange
from configcenter.core.state import Release, ServiceState
from configcenter.ports.deploy_repo import compose_message
from configcenter.ports.forge import Forge, ForgeContext, ForgeError, MergeRequest
from configcenter.usecases.workspace import Workspace

if TYPE_CHECKING:
    from ruamel.yaml import YAML

    from configcenter.adapters.config_git import ConfigGit

BRANCH_PREFIX = "promote/"
LABEL = "promotion"
MARKER = "configcenter-promotion"
#: GitLab rejects descriptions over 1,048,576 characters; diffs are cut well before.
MAX_DIFF_CHARS = 200_000

Status = Literal["nothing", "dry-run", "opened", "updated", "unchanged"]


class PromotionError(UserError):
    """The promotion cannot go ahead; the message says what is wrong and how to fix it."""


# -- what a promotion carries ------------------------------------------------------------------


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

    def to_json(self) -> dict[str, Any]:
        return {
            "template": {"from": self.template_before, "to": self.template},
            "image": {"from": self.image_before, "to": self.image or self.image_before},
            "release": self.release.id,
            "release_outcome": self.release.outcome,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Skipped:
    service: str
    reason: str


@dataclass
class PromotionResult:
    source: str
    target: str
    status: Status
    branch: str
    target_branch: str
    title: str = ""
    description: str = ""
    labels: list[str] = field(default_factory=list)
    draft: bool = False
    pins: list[Pin] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)  # service -> ENV keys
    commit: str | None = None
    rebuilt: bool = False  # the branch was rebuilt from the default branch (conflict)
    forge_kind: str = "local"
    merge_request: MergeRequest | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        mr = self.merge_request
        return {
            "from": self.source,
            "to": self.target,
            "status": self.status,
            "branch": self.branch,
            "target_branch": self.target_branch,
            "title": self.title,
            "labels": self.labels,
            "draft": self.draft,
            "commit": self.commit,
            "rebuilt": self.rebuilt,
            "services": {p.service: p.to_json() for p in self.pins},
            "skipped": {s.service: s.reason for s in self.skipped},
            "missing_env_keys": self.missing,
            "merge_request": None
            if mr is None
            else {"iid": mr.iid, "url": mr.web_url, "state": mr.state, "draft": mr.draft},
            "message": self.message,
            "description": self.description,
        }


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


# -- editing the target's YAML ------------------------------------------------------------------


def _yaml() -> YAML:
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap a user's long lines
    return y


def pin_file(text: str, pin: Pin, rel: str) -> str:
    """`text` (a service file) with the pins of `pin`; unchanged text when nothing differs."""
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.error import YAMLError

    y = _yaml()
    try:
        data = y.load(text)
    except YAMLError as error:
        raise PromotionError(f"{rel} is not valid YAML ({error}): fix it, then promote") from None
    if not isinstance(data, CommentedMap):
        raise PromotionError(f"{rel} is not a mapping: it must hold template:, image:, values:")
    changed = False
    if str(data.get("template")) != pin.template:
        data["template"] = pin.template
        changed = True
    if pin.image is not None:
        current = data.get("image")
        if not (
            isinstance(current, dict) and set(current) == {"ref"} and current["ref"] == pin.image
        ):
            image = CommentedMap()
            image["ref"] = pin.image
            if pin.image_note:
                image.yaml_add_eol_comment(pin.image_note, "ref")
            data["image"] = image
            changed = True
    if not changed:
        return text
    out = io.StringIO()
    y.dump(data, out)
    return out.getvalue()


def template_env_keys(ws: Workspace, service: str, tag: str) -> list[str]:
    """The ENV list of templates/<service> at `tag` (HEAD: the work tree)."""
    tree = ws.source.template_tree(service, None if tag == HEAD else tag)
    raw = tree.read("template.yaml") if tree is not None else None
    if raw is None:
        raise PromotionError(
            f"templates/{service}/template.yaml is missing at tag {service}/{tag}: "
            "fetch the config repo's tags (git fetch --tags) and promote again"
        )
    data = yaml.safe_load(raw) or {}
    keys = data.get("env") if isinstance(data, dict) else None
    return [str(k) for k in keys] if isinstance(keys, list) else []


# -- Git ----------------------------------------------------------------------------------------


def open_git(root: Path) -> ConfigGit:
    """git in the config repo checkout; its failures are PromotionErrors."""
    return wiring.open_config_git(root, PromotionError, work_branch_prefix=BRANCH_PREFIX)


# -- the use case -------------------------------------------------------------------------------


@dataclass
class _Refs:
    default: str
    base: str  # the default branch's tip sha
    branch_tip: str | None  # the promotion branch's tip sha, if it exists
    remote: bool


def promote(
    ws: Workspace,
    source: str,
    target: str,
    *,
    service: str | None = None,
    dry_run: bool = False,
    forge: Forge | None = None,
) -> PromotionResult:
    """Open (or update) the merge request that carries `source`'s good pins to `target`."""
    config = ws.config
    check_order(config, source, target)
    target_env = config.environment(target)
    if service is not None and service not in target_env.services:
        raise PromotionError(
            f"service '{service}' is not deployed in {target}: create "
            f"environments/{target}/{service}.yaml with its values first (values are never "
            "copied between environments)"
        )
    state = ws.read_state(source)
    if service is not None and service not in state.services:
        raise PromotionError(
            f"{source} has never released '{service}' (no record in {source}/.state/): "
            f"apply it in {source} first"
        )
    names = [service] if service else [s for s in target_env.order if s in state.services]
    pins: list[Pin] = []
    skipped = [
        Skipped(s, f"{source} has never released it: apply {source} first")
        for s in ([] if service else target_env.order)
        if s not in state.services
    ]
    for name in names:
        choice = choose_pin(config, source, target, name, state.services.get(name))
        (pins if isinstance(choice, Pin) else skipped).append(choice)  # type: ignore[arg-type]

    git = open_git(ws.root)
    refs = _sync(git, branch_name(source, target, service))
    branch = branch_name(source, target, service)
    result = PromotionResult(
        source, target, "nothing", branch, refs.default, skipped=skipped, pins=pins
    )
    result.forge_kind = str((config.project.forge or {}).get("kind", "local"))
    # Nothing to do when the default branch already pins everything we would carry.
    # Every pin is still written on the branch, so one that went back to the default
    # branch's value is reverted there too.
    all_pins = pins
    pins = [p for p in pins if _differs(git, refs.base, target, p)]
    result.pins = pins
    if not pins:
        result.message = _nothing_message(source, target, skipped, len(all_pins))
        if refs.branch_tip is not None and not dry_run:
            forge = forge or open_forge(ws)
            stale = _forge(lambda: forge.find_open(branch, refs.default))
            if stale is not None:
                result.message += (
                    f" Merge request !{stale.iid} ({branch}) carries an older state: close it."
                )
        return result

    start = refs.branch_tip or refs.base
    with git.worktree(start) as tree:
        if refs.branch_tip is not None and not git.ok(
            "merge-base", "--is-ancestor", refs.base, refs.branch_tip
        ):
            result.rebuilt = not _merge_default(git, tree, refs)
        wt_ws = Workspace(tree, ws.resolved_deploy_url(), ws.run_store_url, ws.strict)
        before = wt_ws.config  # the target's values as the branch has them
        for pin in all_pins:
            rel = f"environments/{target}/{pin.service}.yaml"
            path = tree / rel
            if not path.is_file():
                raise PromotionError(
                    f"{rel} does not exist on {refs.default}: commit and push it (with "
                    f"{target}'s own values) before promoting {pin.service}"
                )
            path.write_text(pin_file(path.read_text(encoding="utf-8"), pin, rel), encoding="utf-8")
            if pin not in pins:
                continue
            have = set(before.environment(target).services[pin.service].values.tree)
            missing = [
                k for k in template_env_keys(wt_ws, pin.service, pin.template) if k not in have
            ]
            if missing:
                result.missing[pin.service] = missing
        if git.run("status", "--porcelain", cwd=tree):
            git.run("add", "-A", "environments", cwd=tree)
            _commit(git, tree, _commit_message(source, target, pins, result.rebuilt))
        new_head = git.run("rev-parse", "HEAD", cwd=tree)
        result.commit = new_head if new_head != (refs.branch_tip or "") else None
        plan, problems = _plan_target(tree, ws, target)
        result.draft = bool(result.missing) or plan is None
        result.labels = [LABEL, f"env::{target}"]
        result.title = _title(source, target, pins)
        approvals = config.project.promotion.get("approvals")
        description = describe(
            result, plan, problems, approvals if isinstance(approvals, int) else None
        )
        result.description = ws.redactor.redact(description)
        if dry_run:
            result.status = "dry-run"
            result.commit = None
            result.message = (
                f"dry run: would push {branch} and open a merge request into {refs.default}"
            )
            return result
        forge = forge or open_forge(ws)
        if result.commit is not None:
            _push(git, refs, branch, new_head, result.rebuilt, _local_branches(result))
    existing = _forge(lambda: forge.find_open(branch, refs.default))
    if existing is None:
        mr = _forge(
            lambda: forge.open(
                branch, refs.default, result.title, result.description, result.labels, result.draft
            )
        )
        result.status = "opened"
    else:
        unchanged = (
            result.commit is None
            and existing.description == result.description
            and existing.title == result.title
            and existing.draft == result.draft
            and set(existing.labels) >= set(result.labels)
        )
        mr = existing
        if not unchanged:
            # Labels people added to the request (review, team, ...) stay: ours are added.
            labels = [*existing.labels, *(x for x in result.labels if x not in existing.labels)]
            mr = _forge(
                lambda: forge.update(
                    existing.iid, result.title, result.description, labels, result.draft
                )
            )
        result.status = "unchanged" if result.commit is None else "updated"
    result.merge_request = mr
    result.message = _done_message(result, mr, ws.root, refs.remote)
    return result


def _sync(git: ConfigGit, branch: str) -> _Refs:
    """Fetch, and find the default branch's tip and the promotion branch's tip."""
    if git.has_origin():
        try:
            git.run("fetch", "--quiet", "--tags", "--prune", "origin")
        except PromotionError as error:
            raise PromotionError(
                f"{error}; check the config repo's origin (git remote -v), its credentials "
                "and the network, then promote again"
            ) from None
        default = git.default_branch()
        base = git.rev(f"refs/remotes/origin/{default}")
        tip = git.rev(f"refs/remotes/origin/{branch}")
        remote = True
    else:
        default = git.default_branch()
        base = git.rev(f"refs/heads/{default}")
        tip = git.rev(f"refs/heads/{branch}")
        remote = False
    if base is None:
        raise PromotionError(
            f"the default branch {default!r} has no commits in {git.root}: commit and push "
            "the config repo first"
        )
    prefix = f"refs/remotes/origin/{branch}" if remote else f"refs/heads/{branch}"
    clash = [
        ref
        for ref in git.run("for-each-ref", "--format=%(refname)", prefix, f"{prefix}/").split()
        if ref != prefix
    ]
    parent = prefix.rsplit("/", 1)[0]
    if branch.count("/") > 1 and git.rev(parent):
        clash.append(parent)
    if clash:
        raise PromotionError(
            f"branch {branch} cannot coexist with {', '.join(sorted(clash))} (Git refs cannot "
            "be both a branch and a folder): merge or close that promotion first, then run "
            "this one"
        )
    return _Refs(default, base, tip, remote)


def _differs(git: ConfigGit, base: str, target: str, pin: Pin) -> bool:
    rel = f"environments/{target}/{pin.service}.yaml"
    text = git.read(base, rel)
    if text is None:
        return True
    return pin_file(text, pin, rel) != text


def _merge_default(git: ConfigGit, tree: Path, refs: _Refs) -> bool:
    """Bring the default branch into the promotion branch; False (and reset) on a conflict."""
    if git.ok("merge", "--no-edit", "--quiet", refs.base, cwd=tree):
        return True
    git.run("merge", "--abort", cwd=tree, check=False)
    git.run("checkout", "--quiet", "--detach", refs.base, cwd=tree)
    return False


def _commit(git: ConfigGit, tree: Path, message: str) -> None:
    git.commit(tree, message)


def _push(
    git: ConfigGit, refs: _Refs, branch: str, sha: str, rebuilt: bool, local_branch: bool
) -> None:
    """Push the branch to origin (a lease when rebuilding); with no origin, move the local one."""
    if not refs.remote:
        _set_local_branch(git, branch, sha)
        return
    args = ["push", "--quiet", "--porcelain", "origin"]
    if rebuilt:
        args.append(f"--force-with-lease=refs/heads/{branch}:{refs.branch_tip}")
    try:
        git.run(*args, f"{sha}:refs/heads/{branch}")
    except PromotionError as error:
        raise PromotionError(
            f"pushing {branch} to origin was refused ({error}): someone pushed to it while "
            "this ran; run promote again to build on their commit"
        ) from None
    git.run("fetch", "--quiet", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}")
    if local_branch:
        _set_local_branch(git, branch, sha)


def _set_local_branch(git: ConfigGit, branch: str, sha: str) -> None:
    """The local forge merges local branches: keep ours where the merge command expects it."""
    checked_out = f"branch refs/heads/{branch}" in git.run("worktree", "list", "--porcelain")
    if checked_out:
        raise PromotionError(
            f"{branch} is checked out in a worktree of {git.root}, so it cannot be moved to the "
            f"new promotion commit: check out another branch there and promote again"
        )
    git.run("update-ref", "-m", "configcenter promote", f"refs/heads/{branch}", sha)


def _plan_target(tree: Path, ws: Workspace, target: str) -> tuple[Plan | None, list[str]]:
    """The target's plan against the promoted tree, or the problems that prevent it."""
    from configcenter.usecases.inspect import plan_env

    promoted = Workspace(tree, ws.resolved_deploy_url(), ws.run_store_url, ws.strict)
    try:
        return plan_env(promoted, target), []
    except ConfigError as error:
        return None, [str(p) for p in error.problems if p.severity == "error"]


def _forge(call: Any) -> Any:
    try:
        return call()
    except ForgeError as error:
        raise PromotionError(str(error)) from None


def open_forge(ws: Workspace) -> Forge:
    """The forge configcenter.yaml names; a GitLab token is resolved now and masked everywhere."""
    settings = ws.config.project.forge or {"kind": "local"}
    context = ForgeContext(ws.root, lambda ref, what: _resolve(ws, ref, what))
    try:
        return wiring.open_forge(settings, context)
    except ForgeError as error:
        raise PromotionError(str(error)) from None


def _resolve(ws: Workspace, ref: str, what: str) -> str:
    try:
        return wiring.resolve_secret(ref, ws.redactor)
    except wiring.SecretError as error:
        raise PromotionError(f"{what}: {error}") from None


# -- texts --------------------------------------------------------------------------------------


def _title(source: str, target: str, pins: Sequence[Pin]) -> str:
    parts = [f"{p.service} {p.template}" for p in pins]
    title = f"Promote {source} -> {target}: " + ", ".join(parts)
    return title if len(title) <= 200 else f"Promote {source} -> {target}: {len(pins)} services"


def _commit_message(source: str, target: str, pins: Sequence[Pin], rebuilt: bool) -> str:
    lines = [
        f"Carries what {source} runs successfully (its last good releases) to {target}.",
        "Values stay per environment and are not copied.",
        "",
    ]
    for p in pins:
        line = f"- {p.service}: template {p.template_before} -> {p.template}"
        if p.image is not None and p.image != p.image_before:
            line += f", image {p.image}"
        lines.append(line + f" ({source} release {p.release.id}, {p.release.outcome})")
    if rebuilt:
        lines += ["", "The branch conflicted with the default branch and was rebuilt from it."]
    trailers = [("Configcenter-Promotion", f"{source} -> {target}")]
    trailers += [("Configcenter-Release", f"{p.service} {p.release.id}") for p in pins]
    return compose_message(_title(source, target, pins), "\n".join(lines), trailers)


def _nothing_message(source: str, target: str, skipped: Sequence[Skipped], candidates: int) -> str:
    if candidates:
        text = (
            f"Nothing to promote from {source} to {target}: {target} already pins what "
            f"{source} runs successfully."
        )
    else:
        text = f"Nothing to promote from {source} to {target}: no good release to carry."
    if skipped:
        text += " Skipped: " + "; ".join(f"{s.service}: {s.reason}" for s in skipped) + "."
    return text


def _local_branches(result: PromotionResult) -> bool:
    """The forge keeps merge requests as branches of the config repo checkout."""
    return wiring.supports("forge", result.forge_kind, LOCAL_BRANCHES)


def _done_message(
    result: PromotionResult, mr: MergeRequest, root: Path, pushed_to_origin: bool
) -> str:
    verb = {"opened": "Opened", "updated": "Updated", "unchanged": "Unchanged:"}[result.status]
    draft = " (draft: see the missing ENV keys)" if result.draft else ""
    if _local_branches(result):
        text = (
            f"{verb} local merge request !{mr.iid} for {result.branch} -> {result.target_branch}"
            f"{draft}. To merge it: {mr.web_url}"
        )
        if pushed_to_origin:
            text += f" && git -C {shlex.quote(str(root))} push origin {result.target_branch}"
        return text
    return f"{verb} merge request !{mr.iid}{draft}: {mr.web_url}"


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return "`" + str(text).replace("|", "\\|").replace("`", "'") + "`" if text != "" else "—"


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in `text`, so a diff cannot close it."""
    ticks = 3
    while "`" * ticks in text:
        ticks += 1
    return "`" * ticks


def describe(
    result: PromotionResult, plan: Plan | None, problems: Sequence[str], approvals: int | None
) -> str:
    """The merge request description: what changes and why, the target's plan, a JSON block."""
    src, dst = result.source, result.target
    out = [
        f"## Promote {src} → {dst}",
        "",
        f"Carries what **{src}** runs successfully (its last good releases in the deploy "
        f"repo) to **{dst}**: template tags and images only. Values stay per environment: "
        "nothing of the source's values is copied.",
        "",
        "| service | template | image | carried release |",
        "| --- | --- | --- | --- |",
    ]
    for p in result.pins:
        image = (
            f"{_cell(p.image_before)} → {_cell(p.image)}"
            if p.image is not None and p.image != p.image_before
            else _cell(p.image_before) + " (kept)"
        )
        out.append(
            f"| {p.service} | {_cell(p.template_before)} → {_cell(p.template)} | {image} | "
            f"{p.release.id} ({p.release.outcome}, {p.release.at}) |"
        )
    notes = [f"- **{p.service}**: {n}" for p in result.pins for n in p.notes]
    if notes:
        out += ["", "Passed over:", *notes]
    if result.skipped:
        out += ["", "Not promoted:"]
        out += [f"- **{s.service}**: {s.reason}" for s in result.skipped]
    if result.missing:
        out += [
            "",
            f"> **Draft: {dst} lacks ENV keys the promoted templates need.** Add each one "
            f"under `values:` in `environments/{dst}/<service>.yaml` or "
            f"`environments/{dst}/_env.yaml` on this branch (values are never copied from "
            f"{src}), then run `configcenter promote {src} {dst}` again.",
            ">",
        ]
        for name, keys in result.missing.items():
            out.append(
                f"> - {name}: " + ", ".join(f"`{k}`" for k in keys) + f" (template {name}/"
                f"{next(p.template for p in result.pins if p.service == name)})"
            )
    if approvals:
        out += [
            "",
            f"Approvals required: **{approvals}** (promotion.approvals in configcenter.yaml).",
        ]
    if result.rebuilt:
        out += [
            "",
            "The branch conflicted with the default branch and was rebuilt from it "
            "(force-pushed with a lease); earlier versions are in this request's history.",
        ]
    out += ["", f"### Plan for {dst} after merge", ""]
    if plan is None:
        out.append(f"Not computed: {dst} does not load with these pins yet:")
        out += [f"- `{p}`" for p in problems]
    else:
        out += _describe_plan(plan)
    data = {
        "from": src,
        "to": dst,
        "branch": result.branch,
        "target_branch": result.target_branch,
        "services": {
            p.service: {
                "template": p.template,
                "image": p.image or p.image_before,
                "release": p.release.id,
            }
            for p in result.pins
        },
        "skipped": {s.service: s.reason for s in result.skipped},
        "missing_env_keys": result.missing,
        "approvals": approvals or 0,
    }
    block = json.dumps(data, sort_keys=True).replace(">", "\\u003e")
    out += ["", f"<!-- {MARKER}", block, "-->", ""]
    return "\n".join(out)


def read_marker(description: str) -> dict[str, Any] | None:
    """The machine-readable block of a promotion description, or None."""
    start = description.find(f"<!-- {MARKER}")
    if start < 0:
        return None
    body = description[start + len(f"<!-- {MARKER}") :]
    end = body.find("-->")
    if end < 0:
        return None
    try:
        data = json.loads(body[:end])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _describe_plan(plan: Plan) -> list[str]:
    changes = plan.changes
    blocked = [s for s in plan.services if s.action == "blocked"]
    out = [
        f"Merging applies {plan.env} (`configcenter apply {plan.env}`): {len(changes)} to "
        f"change, {len(blocked)} blocked, "
        f"{len(plan.services) - len(changes) - len(blocked)} unchanged.",
    ]
    budget = MAX_DIFF_CHARS
    for s in plan.services:
        if s.action == "noop":
            continue
        out += [
            "",
            f"#### {s.service}: {s.action}" + (f" ({', '.join(s.reasons)})" if s.reasons else ""),
        ]
        if s.blocked:
            out.append(f"Blocked: {s.blocked}")
        if s.template_from != s.template_to:
            out.append(f"- template: {_cell(s.template_from or '')} → {_cell(s.template_to or '')}")
        if "image" in s.reasons:
            out.append(f"- image: {_cell(s.image_from or '')} → {_cell(s.image_to or '')}")
        if s.replicas is not None:
            out.append(f"- replicas: {s.replicas[0]} → {s.replicas[1]}")
        out += _values_table(s)
        if s.diffs:
            out += ["", f"<details><summary>Rendered file diffs ({len(s.diffs)})</summary>", ""]
            for name, diff in s.diffs.items():
                if len(diff) > budget:
                    out += [
                        f"`{name}`: diff left out ({len(diff)} characters); see "
                        f"`configcenter plan {plan.env}`",
                        "",
                    ]
                    continue
                budget -= len(diff)
                fence = _fence(diff)
                out += [f"`{name}`", "", f"{fence}diff", diff.rstrip("\n"), fence, ""]
            out.append("</details>")
    return out


def _values_table(s: ServicePlan) -> list[str]:
    rows: list[tuple[str, str, ValueChange]] = [
        *(("changed", k, v) for k, v in s.changed.items()),
        *(("added", k, v) for k, v in s.added.items()),
        *(("removed", k, v) for k, v in s.removed.items()),
    ]
    if not rows:
        return []
    out = ["", "| value | change | from | to | source |", "| --- | --- | --- | --- | --- |"]
    for kind, key, change in rows:
        before = "—" if kind == "added" else _cell(change.before)
        after = "—" if kind == "removed" else _cell(change.after)
        out.append(f"| `{key}` | {kind} | {before} | {after} | {change.source or '—'} |")
    return out
