"""Fixture modules every test can use: one entry per tests/support/*_fixtures.py."""

pytest_plugins = [
    "tests.support.gitlab_fixtures",
    "tests.support.registry_fixtures",
]
