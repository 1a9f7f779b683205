"""Fixture modules every test can use: one entry per tests/support/*_fixtures.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Tests run git in repos of their own (tmp_path). Run from a git hook, `git rebase --exec`
# or `git bisect run`, the environment names the repository the tests were started from:
# every `git init` and commit of a test would then land in it (a test run once set
# core.bare=true in the checkout's own .git/config and tagged its commits there).
for _name in (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
):
    os.environ.pop(_name, None)

pytest_plugins = [
    "tests.support.k8s_fixtures",
    "tests.support.marathon_fixtures",
    "tests.support.gitlab_fixtures",
    "tests.support.registry_fixtures",
    "tests.support.postgres_fixtures",
    "tests.support.deployrepo_fixtures",
    "tests.support.promote_fixtures",
    "tests.support.serve_fixtures",
    "tests.support.e2e_fixtures",
    "tests.support.rollout_fixtures",
]


@pytest.fixture(autouse=True, scope="session")
def _private_cache_and_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test writes configcenter's caches or run stores into the user's ~/.cache or
    ~/.local/state; tests that need their own set these again. (The test bed's binaries
    live in ~/.cache/configcenter/k8s whatever XDG_CACHE_HOME says: built once, kept.)"""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))
        yield
