"""A fresh deploy repo cache opened by many at once (serve's workers, its API, other
processes): every one of them gets the same valid cache, none an error."""

from __future__ import annotations

import threading
from pathlib import Path

from configcenter.adapters.git_deploy_repo import GitDeployRepo
from tests.support.deployrepo_fixtures import BareRemote


def sync_all_at_once(repos: list[GitDeployRepo]) -> tuple[list[str | None], list[str]]:
    """Each repo's `sync()` in its own thread, all released together: heads and errors."""
    start = threading.Barrier(len(repos))
    heads: list[str | None] = []
    errors: list[str] = []

    def run(repo: GitDeployRepo) -> None:
        start.wait()
        try:
            heads.append(repo.sync())
        except Exception as exc:  # collected: the assertion names them
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(repo,)) for repo in repos]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return heads, errors


def test_a_new_cache_opened_by_many_threads_at_once_is_made_once_and_valid(
    tmp_path: Path, bare_remote: BareRemote
) -> None:
    seed = GitDeployRepo(bare_remote.url, bare_remote.branch, tmp_path / "seed")
    seed.sync()
    sha = seed.commit({"dev/api/app.env": b"A=1\n"}, "first", parent=None)
    assert sha is not None and seed.push(sha)
    for round_ in range(8):
        cache = tmp_path / f"cache-{round_}"
        repos = [GitDeployRepo(bare_remote.url, bare_remote.branch, cache) for _ in range(8)]

        heads, errors = sync_all_at_once(repos)

        assert errors == []
        assert heads == [sha] * len(repos)
        config = (cache / "config").read_text()
        assert "autoDetach = false" in config and not (cache / "config.lock").exists()
