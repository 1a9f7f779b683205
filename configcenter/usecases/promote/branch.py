"""The promotion branch in the config repo, through the config-repo Git adapter.

The edit is committed in a temporary worktree on top of the promotion branch and
pushed to `origin`; a second run adds a commit on top (history is kept, and
anything a person pushed to the branch, such as a missing ENV key, survives).
The branch is rebuilt from the default branch, with `--force-with-lease`, only
when it can no longer be merged with it (a conflict): then there is nothing of
ours left to keep and the lease guarantees nobody else's work is dropped unseen.
Without an `origin`, the local branch is moved instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from configcenter import wiring
from configcenter.core.promotion import BRANCH_PREFIX, Pin, PromotionError
from configcenter.usecases.promote.pinning import pin_file

if TYPE_CHECKING:
    from configcenter.adapters.config_git import ConfigGit


def open_git(root: Path) -> ConfigGit:
    """git in the config repo checkout; its failures are PromotionErrors."""
    return wiring.open_config_git(root, PromotionError, work_branch_prefix=BRANCH_PREFIX)


@dataclass
class Refs:
    default: str
    base: str  # the default branch's tip sha
    branch_tip: str | None  # the promotion branch's tip sha, if it exists
    remote: bool


def sync_refs(git: ConfigGit, branch: str) -> Refs:
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
        short = "refs/remotes/origin/" if remote else "refs/heads/"
        merged = [
            ref.removeprefix(short)
            for ref in sorted(clash)
            if git.ok("merge-base", "--is-ancestor", ref, base)
        ]
        way = "merge or close that promotion first, then run this one"
        if merged:
            delete = "git push origin --delete" if remote else "git branch -D"
            way = (
                f"{', '.join(merged)} is merged already: delete it "
                f"(`{delete} {' '.join(merged)}`), then run this one"
            )
        raise PromotionError(
            f"branch {branch} cannot coexist with {', '.join(sorted(clash))} (Git refs cannot "
            f"be both a branch and a folder): {way}"
        )
    return Refs(default, base, tip, remote)


def differs(git: ConfigGit, base: str, target: str, pin: Pin) -> bool:
    rel = f"environments/{target}/{pin.service}.yaml"
    text = git.read(base, rel)
    if text is None:
        return True
    return pin_file(text, pin, rel) != text


def merge_default(git: ConfigGit, tree: Path, refs: Refs) -> bool:
    """Bring the default branch into the promotion branch; False (and reset) on a conflict."""
    if git.ok("merge", "--no-edit", "--quiet", refs.base, cwd=tree):
        return True
    git.run("merge", "--abort", cwd=tree, check=False)
    git.run("checkout", "--quiet", "--detach", refs.base, cwd=tree)
    return False


def push_branch(
    git: ConfigGit, refs: Refs, branch: str, sha: str, rebuilt: bool, local_branch: bool
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
