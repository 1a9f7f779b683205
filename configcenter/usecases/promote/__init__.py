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

The parts, one module each: the rules (`configcenter.core.promotion`), writing
the pins into the target's YAML (`pinning`), the promotion branch in Git
(`branch`), the merge request's and commit's texts (`text`), and the result
(`result`); this module is the use case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from configcenter import wiring
from configcenter.core.errors import ConfigError
from configcenter.core.kinds import LOCAL_BRANCHES
from configcenter.core.plan import Plan
from configcenter.core.promotion import (
    BRANCH_PREFIX,
    Pin,
    PromotionError,
    Skipped,
    SourceRelease,
    branch_name,
    check_order,
    choose_pin,
    downgrade_refusal,
    parse_branch,
    with_downgrades,
)
from configcenter.ports.forge import Forge, ForgeContext, ForgeError
from configcenter.usecases.promote.branch import (
    differs,
    merge_default,
    open_git,
    push_branch,
    sync_refs,
)
from configcenter.usecases.promote.pinning import pin_file, template_env_keys
from configcenter.usecases.promote.result import PromotionResult, Status
from configcenter.usecases.promote.text import (
    commit_message,
    describe,
    done_message,
    nothing_message,
    title,
)
from configcenter.usecases.workspace import Workspace

LABEL = "promotion"


def promote(
    ws: Workspace,
    source: str,
    target: str,
    *,
    service: str | None = None,
    dry_run: bool = False,
    allow_downgrade: bool = False,
    forge: Forge | None = None,
) -> PromotionResult:
    """Open (or update) the merge request that carries `source`'s good pins to `target`.

    A pin older than what `target` pins now (`core.promotion.downgrades`) is refused
    unless `allow_downgrade`; a dry run shows it and says so."""
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
    if service is None:
        # A service only the source runs is not promoted (values are never copied): said,
        # so "nothing to promote" is never the whole story.
        only_source = [s for s in config.environment(source).order if s not in target_env.services]
        skipped += [
            Skipped(
                s,
                f"not in {target}: create environments/{target}/{s}.yaml with its values "
                "first (values are never copied between environments)",
            )
            for s in only_source
        ]
    for name in names:
        choice = choose_pin(config, source, target, name, state.services.get(name))
        (pins if isinstance(choice, Pin) else skipped).append(choice)  # type: ignore[arg-type]

    git = open_git(ws.root)
    refs = sync_refs(git, branch_name(source, target, service))
    branch = branch_name(source, target, service)
    result = PromotionResult(
        source, target, "nothing", branch, refs.default, skipped=skipped, pins=pins
    )
    result.forge_kind = str((config.project.forge or {}).get("kind", "local"))
    # Nothing to do when the default branch already pins everything we would carry.
    # Every pin is still written on the branch, so one that went back to the default
    # branch's value is reverted there too.
    changing = {p.service for p in pins if differs(git, refs.base, target, p)}
    if changing:
        history = _source_history(ws, source)
        pins = [
            with_downgrades(p, history.get(p.service, ())) if p.service in changing else p
            for p in pins
        ]
    all_pins = pins
    pins = [p for p in pins if p.service in changing]
    result.pins = pins
    downgraded = [p for p in pins if p.downgrades]
    if downgraded and not allow_downgrade and not dry_run:
        raise downgrade_refusal(source, target, downgraded)
    if not pins:
        result.message = nothing_message(source, target, skipped, len(all_pins))
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
            result.rebuilt = not merge_default(git, tree, refs)
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
            git.commit(tree, commit_message(source, target, pins, result.rebuilt))
        new_head = git.run("rev-parse", "HEAD", cwd=tree)
        result.commit = new_head if new_head != (refs.branch_tip or "") else None
        plan, problems = _plan_target(tree, ws, target)
        result.draft = bool(result.missing) or plan is None
        result.labels = [LABEL, f"env::{target}"]
        result.title = title(source, target, pins)
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
            if downgraded and not allow_downgrade:
                result.message += f"; it downgrades {target}: promote needs --allow-downgrade"
            return result
        forge = forge or open_forge(ws)
        if result.commit is not None:
            push_branch(git, refs, branch, new_head, result.rebuilt, _local_branches(result))
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
        # Updated: a new commit, or a title, description, draft state or labels changed.
        result.status = "unchanged" if unchanged else "updated"
    result.merge_request = mr
    result.message = done_message(result, mr, ws.root, refs.remote, _local_branches(result))
    return result


def _source_history(ws: Workspace, source: str) -> dict[str, list[SourceRelease]]:
    """Service -> its releases in `source`, newest first (the deploy repo's history), to
    tell whether what the target pins was released in the source after the carried one."""
    from configcenter.usecases.history import history

    found: dict[str, list[SourceRelease]] = {}
    for entry in history(ws, source, None, limit=200):
        found.setdefault(entry.service, []).append(
            SourceRelease(entry.release, entry.at, entry.template_tag, entry.image)
        )
    return found


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


def _local_branches(result: PromotionResult) -> bool:
    """The forge keeps merge requests as branches of the config repo checkout."""
    return wiring.supports("forge", result.forge_kind, LOCAL_BRANCHES)


__all__ = [
    "BRANCH_PREFIX",
    "LABEL",
    "Pin",
    "PromotionError",
    "PromotionResult",
    "Skipped",
    "Status",
    "branch_name",
    "check_order",
    "choose_pin",
    "describe",
    "open_forge",
    "open_git",
    "parse_branch",
    "pin_file",
    "promote",
]
