"""The deploy repo's records: state and files at a commit, a release's snapshot, and
the commits that record a rollout's outcome (pushed, retried when another writer
moved the branch)."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from configcenter.core.state import EnvState, ServiceState
from configcenter.ports.deploy_repo import (
    CommitInfo,
    DeployRepo,
    DeployRepoError,
    compose_message,
    delete_prefix,
)
from configcenter.usecases.apply.report import (
    ApplyFailed,
    ApplyRefused,
    ApplyUnreachable,
    RunLog,
    ServiceResult,
)
from configcenter.usecases.state_store import read_env_state
from configcenter.usecases.workspace import Workspace

MAX_PUSH_ATTEMPTS = 8


@dataclass
class Outcome:
    """How one service's release ended, and what the state record should become."""

    result: ServiceResult
    state: ServiceState | None  # None: remove the service from the state
    files: dict[str, bytes] | None  # None: leave the files as they are


def state_at(repo: DeployRepo, env: str, rev: str | None) -> EnvState:
    return read_env_state(repo, env, rev)


def files_of(
    repo: DeployRepo, env: str, service: str, snapshot: ServiceState, rev: str | None = None
) -> dict[str, bytes]:
    prefix = f"{env}/{service}/"
    found = repo.read_many([prefix + name for name in snapshot.files], rev)
    # Output names keep their folders: dev/api/conf/app.conf is the output conf/app.conf.
    return {path[len(prefix) :]: data for path, data in found.items()}


def release_snapshot(
    repo: DeployRepo, env: str, service: str, release_id: str
) -> tuple[ServiceState, dict[str, bytes]]:
    """The state record and files a release was committed with, from deploy repo history."""
    commit = find_release_commit(repo, env, service, release_id)
    state = state_at(repo, env, commit.sha)
    snapshot = state.services.get(service)
    if snapshot is None:
        raise ApplyFailed(
            f"release {release_id}: commit {commit.sha[:10]} has no state for {service}"
        )
    return snapshot, files_of(repo, env, service, snapshot, commit.sha)


def find_release_commit(repo: DeployRepo, env: str, service: str, release_id: str) -> CommitInfo:
    for info in repo.log(prefix=f"{env}/", limit=None, grep=release_id):
        if f"{service} {release_id}" in info.trailer_values("Configcenter-Release"):
            return info
    raise ApplyRefused(
        f"release {release_id} of {service} is not in the deploy repo's history of {env}; "
        f"`configcenter history {env} --service {service}` lists releases"
    )


def push(repo: DeployRepo, sha: str, parent: str | None) -> bool:
    """Push `sha`; False when we lost a race to another writer, so the caller re-plans.

    A concurrent push can also fail the remote's ref update itself ("cannot lock ref
    ... is at X but expected Y") instead of being refused as non-fast-forward. Either
    way the branch moved under us: when the remote is no longer at our parent, the
    failure is a lost race, not an error.
    """
    try:
        return repo.push(sha)
    except DeployRepoError:
        try:
            now = repo.sync()
        except DeployRepoError:
            now = parent
        if now == sha:  # it landed after all
            return True
        if now != parent:
            return False
        raise


@dataclass(frozen=True)
class Recorded:
    """The deploy repo commit that recorded a rollout's outcome: `rollback` when it restored
    files (a release rolled back, or a skipped one put back to what it held before)."""

    sha: str
    rollback: bool


def record(
    ws: Workspace, env: str, outcomes: Mapping[str, Outcome], log: RunLog
) -> Recorded | None:
    """Commit the rollout's outcome (state, and restored files on rollback), retrying on races;
    the commit, or None when there was nothing to record (or it changed nothing)."""
    repo = ws.deploy_repo
    if not outcomes:
        return None
    with repo.lock():
        return _record_locked(repo, env, outcomes, log.run_id)


def _record_locked(
    repo: DeployRepo, env: str, outcomes: Mapping[str, Outcome], run_id: str | None
) -> Recorded | None:
    for attempt in range(1, MAX_PUSH_ATTEMPTS + 1):
        head = repo.sync()
        state = state_at(repo, env, head)
        changes: dict[str, bytes | None] = {}
        parts: list[str] = []
        trailers: list[tuple[str, str]] = [("Configcenter-Env", env)]
        if run_id is not None:
            trailers.append(("Configcenter-Run", run_id))
        for service, outcome in outcomes.items():
            parts.append(f"{service} {outcome.result.outcome}")
            if outcome.state is None:
                state.services.pop(service, None)
            else:
                state.services[service] = outcome.state
                if outcome.state.release:
                    trailers.append(
                        ("Configcenter-Release", f"{service} {outcome.state.release.id}")
                    )
            if outcome.files is not None:
                changes.update(delete_prefix(f"{env}/{service}"))
                for name, data in outcome.files.items():
                    changes[f"{env}/{service}/{name}"] = data
        changes.update(state.changes())
        kind = "rollback" if any(o.files is not None for o in outcomes.values()) else "record"
        message = compose_message(f"{kind} {env}: " + ", ".join(parts), "", trailers)
        sha = repo.commit(changes, message, parent=head)
        if sha is None:
            return None
        if push(repo, sha, head):
            return Recorded(sha, kind == "rollback")
        time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise ApplyUnreachable("could not record the rollout outcome: the deploy repo kept moving")
