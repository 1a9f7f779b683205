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
    lazy_record,
    legacy_state_path,
    record_summary,
    state_dir,
    state_path,
)
from configcenter.ports.deploy_repo import CachedRecords, DeployRepo, RecordCache


def state_paths(env: str) -> list[str]:
    """What holds an environment's state in the deploy repo, in either format."""
    return [state_dir(env), legacy_state_path(env)]


def read_env_state(
    repo: DeployRepo,
    env: str,
    rev: str | None,
    cache: RecordCache | None = None,
    cache_name: str = "",
) -> EnvState:
    """The env's state at ``rev`` (empty when ``rev`` is None: nothing committed yet).

    With a ``cache`` (its entries under ``cache_name``: the deploy repo and env), the
    records are looked up by path and blob id first; only the others are read and
    parsed, and the cache is left holding exactly the records of ``rev`` (the files that
    are not a service's record by their bytes alone, with an empty summary).
    """
    if rev is None:
        return EnvState(env)
    where = f"deploy repo commit {rev[:10]}"
    if cache is None:
        try:
            return EnvState.from_files(env, repo.read_under(state_paths(env), rev), where)
        except StateError as exc:
            raise explained(repo, exc, rev) from None
    ids = repo.blob_ids(state_paths(env), rev)
    kept = cache.load(cache_name)
    fetched = repo.read_blobs([b for p, b in ids.items() if (p, b) not in kept])
    files: dict[str, bytes] = {}
    parsed: dict[str, ServiceState] = {}
    for path, blob in ids.items():
        entry = kept.get((path, blob))
        if entry is not None:
            summary, raw, canonical = entry
            files[path] = raw
            if summary:  # () keeps the bytes of a file that is not a service's record
                parsed[path] = lazy_record(summary, path, raw, canonical)
        elif blob in fetched:
            files[path] = fetched[blob]
    try:
        state = EnvState.from_files(env, files, where, parsed)
    except StateError as exc:
        raise explained(repo, exc, rev) from None
    records: CachedRecords = {}
    for name, record in state.services.items():
        path = state_path(env, name)
        if path not in ids or path not in files:
            continue
        key = (path, ids[path])
        entry = kept.get(key)
        if entry is None:  # parsed now: checked, and its canonical form compared once
            entry = (record_summary(record), files[path], record.to_json(name) == files[path])
        records[key] = entry
    # The environment's own record (and a format-1 state.yaml): kept as bytes, so a command
    # whose records are all kept starts no `cat-file` at all.
    for path, blob in ids.items():
        if (path, blob) not in records and path in files and path not in parsed:
            records[(path, blob)] = ((), files[path], False)
    if records.keys() != kept.keys():
        cache.save(cache_name, records)
    return state


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
