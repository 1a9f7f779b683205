"""history: releases from the deploy repo's commits, joined with the run store's runs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from configcenter.core.state import (
    EnvState,
    Release,
    ServiceState,
    StateError,
    legacy_state_path,
    state_path,
)
from configcenter.ports.deploy_repo import CommitInfo, DeployRepo
from configcenter.usecases.inspect import check_env
from configcenter.usecases.state_store import state_paths
from configcenter.usecases.workspace import Workspace

logger = logging.getLogger(__name__)


@dataclass
class HistoryEntry:
    release: str
    service: str
    at: str
    outcome: str
    template_tag: str
    image: str
    values_digest: str
    commit: str
    run: str
    trigger: str
    actor: str
    reason: str = ""
    config_commit: str = ""  # the config repo commit the release was made from


def history(
    ws: Workspace,
    env: str,
    service: str | None = None,
    limit: int = 50,
    warn: Callable[[str], None] | None = None,
) -> list[HistoryEntry]:
    """Releases newest first; each with its latest known outcome.

    Read from the deploy repo: a config repo whose environment files do not load is
    reported through `warn` and does not block it.
    """
    if service and "config" not in ws.__dict__ and ws.services is None:
        # The deploy repo has the history; the config is only read to warn when it is
        # broken; of one service, only its own file (not the whole environment's: ~3.5 s
        # at 5,000 services).
        ws.services = (service,)
    ws.without_environments_if_broken(warn or (lambda text: None))
    check_env(ws.config, env)
    if not ws.has_deploy_repo():
        return []
    repo = ws.deploy_repo
    head = repo.sync()
    if head is None:
        return []
    latest: dict[str, Release] = {}  # release id -> newest record of it
    introduced: dict[str, tuple[str, str]] = {}  # release id -> (service, commit)
    made_from: dict[str, str] = {}  # release id -> config commit (of the introducing commit)
    order: list[str] = []
    # release id -> (index of the oldest commit naming it, its place among that commit's
    # trailers): releases of one commit keep the order the commit lists them in.
    position: dict[str, tuple[int, int]] = {}
    # One pass over the history: the commits with the state records each changed (a
    # commit naming a release always rewrites that service's record), read in one batch.
    paths = [state_path(env, service), legacy_state_path(env)] if service else [f"{env}/"]
    window = repo.log_changes(paths, limit=max(limit * 4, 50), rev=head, under=state_paths(env))
    records = _records(repo, env, window, warn)
    for index, (info, _changed) in enumerate(window):
        changed = records.get(info.sha, {})
        for slot, value in enumerate(info.trailer_values("Configcenter-Release")):
            svc, _, release_id = value.partition(" ")
            if service and svc != service:
                continue
            record = changed.get(svc)
            for candidate in (
                (record.release, record.last_good, record.last_failed) if record else ()
            ):
                if candidate and candidate.id == release_id:
                    latest.setdefault(release_id, candidate)
            if release_id not in order:
                order.append(release_id)
            introduced[release_id] = (svc, info.sha)  # oldest commit naming it wins
            config_commit = (record.config_commit if record else None) or next(
                iter(info.trailer_values("Configcenter-Config-Commit")), ""
            )
            made_from[release_id] = config_commit
            position[release_id] = (index, slot)
        # Later outcome commits name the release again; records also hold last_good/last_failed.
        for svc, snapshot in changed.items():
            if service and svc != service:
                continue
            for candidate in (snapshot.release, snapshot.last_good, snapshot.last_failed):
                if candidate:
                    latest.setdefault(candidate.id, candidate)
    runs = {}
    try:
        runs = {r.id: r for r in ws.run_store.list(env=env, limit=1000)}
    except Exception as exc:  # history from Git alone is still useful
        ws.problems.warning(ws.config.project.doc.source(), f"run store unavailable: {exc}")
    entries = []
    order.sort(key=lambda rid: position[rid])
    for release_id in order[:limit]:
        svc, commit = introduced[release_id]
        found = latest.get(release_id)
        run = runs.get(found.run) if found and found.run else None
        entries.append(
            HistoryEntry(
                release=release_id,
                service=svc,
                at=found.at if found else "",
                outcome=found.outcome if found else "committed",
                template_tag=found.template_tag if found else "",
                image=found.image if found else "",
                values_digest=found.values_digest if found else "",
                commit=commit,
                run=found.run if found else "",
                trigger=run.trigger if run else "",
                actor=run.actor if run else "",
                reason=found.reason if found else "",
                config_commit=made_from.get(release_id, ""),
            )
        )
    return entries


def _records(
    repo: DeployRepo,
    env: str,
    window: list[tuple[CommitInfo, dict[str, str | None]]],
    warn: Callable[[str], None] | None,
) -> dict[str, dict[str, ServiceState]]:
    """Commit -> the state records it wrote (service -> record), read in one batch.

    Format-2 commits name the records they rewrote; a format-1 commit rewrote
    `state.yaml` whole, so each counts as writing every record in it. A record that
    cannot be read is left out with a warning: history is about the past, and one
    hand-edited commit must not hide all the others.
    """
    legacy = legacy_state_path(env)
    blobs = repo.read_blobs(
        [b for _info, changed in window for p, b in changed.items() if b and p != legacy]
    )
    result: dict[str, dict[str, ServiceState]] = {}
    for info, changed in window:
        records: dict[str, ServiceState] = {}
        where = f"deploy repo commit {info.sha[:10]}"
        for path, blob in changed.items():
            if blob is None:
                continue
            try:
                if path == legacy:
                    raw = repo.read_blobs([blob]).get(blob)
                    records.update(EnvState.from_yaml(env, raw, where).services)
                elif blob in blobs:
                    state = EnvState.from_files(env, {path: blobs[blob]}, where)
                    records.update(state.services)
            except StateError as exc:
                text = f"history skips a state record it cannot read: {exc}"
                if warn is not None:
                    warn(text)
                else:
                    logger.warning("%s", text)
        result[info.sha] = records
    return result
