"""Fixture modules every test can use: one entry per tests/support/*_fixtures.py."""

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
