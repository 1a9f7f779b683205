"""Reading the state records of an environment from the deploy repo, in one batch.

The records are ``<env>/.state/<service>.json`` (format 2), or a format-1
``<env>/state.yaml`` not yet migrated: both are read by one ``ls-tree`` and one
``cat-file`` pass. A record that cannot be used is a ``StateError`` naming the
file, the key, the commit that last changed it and how to restore it.
"""

from __future__ import annotations

from configcenter.core.state import (
    VERSION_KEY,
    EnvState,
    ServiceState,
    StateError,
    env_record_path,
    legacy_state_path,
    state_dir,
    state_path,
)
from configcenter.ports.deploy_repo import DeployRepo


def state_paths(env: str) -> list[str]:
    """What holds an environment's state in the deploy repo, in either format."""
    return [state_dir(env), legacy_state_path(env)]


def read_env_state(repo: DeployRepo, env: str, rev: str | None) -> EnvState:
    """The env's state at ``rev`` (empty when ``rev`` is None: nothing committed yet)."""
    if rev is None:
        return EnvState(env)
    files = repo.read_under(state_paths(env), rev)
    try:
        return EnvState.from_files(env, files, f"deploy repo commit {rev[:10]}")
    except StateError as exc:
        raise explained(repo, exc, rev) from None


def read_service_state(repo: DeployRepo, env: str, service: str, rev: str) -> ServiceState | None:
    """One service's record at ``rev``: only its file is read (and the env's, and a format-1
    ``state.yaml`` if the commit still has one), not every record of the environment."""
    paths = [state_path(env, service), env_record_path(env), legacy_state_path(env)]
    files = repo.read_under(paths, rev)
    try:
        state = EnvState.from_files(env, files, f"deploy repo commit {rev[:10]}")
    except StateError as exc:
        raise explained(repo, exc, rev) from None
    return state.services.get(service)


def explained(repo: DeployRepo, exc: StateError, rev: str) -> StateError:
    """``exc`` with the commit that last changed the broken file, so the fix is concrete."""
    try:
        last = repo.log(prefix=exc.path, limit=1, rev=rev)
    except Exception:  # the error about the file matters more than this detail
        return exc
    if not last:
        return exc
    commit = last[0]
    undo = (
        f"undo that change in the deploy repo (in a clone: `git revert {commit.sha[:10]}` or "
        f"`git checkout {commit.sha[:10]}~1 -- {exc.path}`, commit, push) and run the "
        "command again"
    )
    changed = (
        f"it was last changed by commit {commit.sha[:10]} ({commit.subject!r}, {commit.author})"
    )
    if exc.key == VERSION_KEY and "newer" in exc.problem:
        fix = f"{exc.fix}. {changed}: if no newer configcenter should write here, {undo}"
    else:
        fix = f"{changed}; this file is written by configcenter, so {undo}"
    return StateError(exc.path, exc.where, exc.key, exc.problem, fix)
