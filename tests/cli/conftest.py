"""CLI tests: the shared config repo fixtures (tests/support/configrepo_fixtures.py)."""

from tests.support.configrepo_fixtures import private_cache, repo

__all__ = ["private_cache", "repo"]
