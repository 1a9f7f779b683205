"""Bullet 9: one stray CONFIGCENTER_CRASH_AT in a production shell does not kill an apply."""

from __future__ import annotations

import signal

from configcenter.crashpoints import CRASH_ENV, crash_env
from tests.support.e2e_fixtures import World


def test_stray_crash_variable_is_ignored_with_a_warning(world: World) -> None:
    result = world.cc("apply", "dev", "--no-rollout", extra_env={CRASH_ENV: "apply:before-push"})
    assert result.code == 0, result.output
    assert "crash injection is not armed" in result.stderr
    assert world.head() is not None, "the apply committed and pushed"


def test_the_test_helper_still_arms_it(world: World) -> None:
    result = world.cc("apply", "dev", "--no-rollout", extra_env=crash_env("apply:before-push"))
    assert result.code == -signal.SIGKILL
    assert world.head() is None
