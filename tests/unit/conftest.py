"""Core tests: the shared config repo fixtures (tests/support/configrepo_fixtures.py)."""

from tests.support.configrepo_fixtures import memory_repo, private_cache, repo

__all__ = ["memory_repo", "private_cache", "repo"]
