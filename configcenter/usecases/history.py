"""history: releases from the deploy repo's commits, joined with the run store's runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from configcenter.core.state import STATE_FILE, EnvState, Release
from configcenter.usecases.inspect import check_env
from configcenter.usecases.workspace import Workspace


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
    ws.without_environments_if_broken(warn or (lambda text: None))
    check_env(ws.config, env)
    if not ws.deploy_repo_exists():
        return []
    repo = ws.deploy_repo
    if repo.sync() is None:
        return []
    latest: dict[str, Release] = {}  # release id -> newest record of it
    introduced: dict[str, tuple[str, str]] = {}  # release id -> (service, commit)
    order: list[str] = []
    # release id -> (index of the oldest commit naming it, its place among that commit's
    # trailers): releases of one commit keep the order the commit lists them in.
    position: dict[str, tuple[int, int]] = {}
    for index, info in enumerate(repo.log(prefix=f"{env}/", limit=max(limit * 4, 50))):
        state = EnvState.from_yaml(env, repo.read(f"{env}/{STATE_FILE}", info.sha))
        for slot, value in enumerate(info.trailer_values("Configcenter-Release")):
            svc, _, release_id = value.partition(" ")
            if service and svc != service:
                continue
            record = state.services.get(svc)
            for candidate in (
                (record.release, record.last_good, record.last_failed) if record else ()
            ):
                if candidate and candidate.id == release_id:
                    latest.setdefault(release_id, candidate)
            if release_id not in order:
                order.append(release_id)
            introduced[release_id] = (svc, info.sha)  # oldest commit naming it wins
            position[release_id] = (index, slot)
        # Later outcome commits name the release again; states also hold last_good/last_failed.
        for svc, snapshot in state.services.items():
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
            )
        )
    return entries
