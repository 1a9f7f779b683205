"""core.release_policy: a rollout's end -> the service's next state record (pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from configcenter.core import release_policy as policy
from configcenter.core.state import Release, ServiceState


def release(rid: str, outcome: str = "committed", **fields: str) -> Release:
    return Release(rid, outcome, f"2026-11-2{rid[-1]}T00:00:00Z", image=f"api:{rid}", **fields)


def record(
    current: Release | None,
    last_good: Release | None = None,
    last_failed: Release | None = None,
    image: str = "api:new",
) -> ServiceState:
    return ServiceState(
        template_tag="v2",
        template_commit=None,
        template_tree="tree",
        values_digest="values",
        values={},
        replicas=1,
        image=image,
        image_digest=None,
        build_key=None,
        rendered_digest="rendered",
        inputs_digest="inputs",
        files={"app.conf": "sha"},
        platform="k8s",
        release=current,
        last_good=last_good,
        last_failed=last_failed,
    )


GOOD = release("api-1", "healthy")
NEW = release("api-2")
#: The record the last good release was committed with (its own image and files).
SNAPSHOT = record(replace(GOOD, outcome="committed"), GOOD, image="api:old")


def test_a_healthy_release_becomes_the_last_good_one() -> None:
    settled = policy.after_rollout(record(NEW, GOOD), True)
    assert isinstance(settled, policy.Settled)
    assert (settled.outcome, settled.release, settled.reason) == ("healthy", "api-2", "")
    assert settled.record.release == replace(NEW, outcome="healthy")
    assert settled.record.last_good == settled.record.release
    assert not settled.restored


def test_a_failed_release_goes_back_to_the_last_good_one_by_rolling_it_out() -> None:
    decision = policy.after_rollout(record(NEW, GOOD), False, "ProgressDeadlineExceeded: stuck")
    assert decision == policy.GoBack(GOOD, NEW, "ProgressDeadlineExceeded: stuck", roll_out=True)


def test_a_rollback_that_becomes_healthy_restores_the_earlier_record() -> None:
    current = record(NEW, GOOD)
    back = policy.after_rollout(current, False, "crash loop")
    assert isinstance(back, policy.GoBack)
    settled = policy.after_going_back(current, back, SNAPSHOT, True)
    assert (settled.outcome, settled.release, settled.reason) == (
        "rolled_back",
        "api-2",
        "crash loop",
    )
    assert settled.restored  # the earlier release's files go back too
    assert settled.record.image == "api:old"
    assert settled.record.release == settled.record.last_good == replace(GOOD, outcome="healthy")
    assert settled.record.last_failed == replace(NEW, outcome="rolled_back", reason="crash loop")


def test_a_rollback_that_does_not_become_healthy_leaves_the_release_failed() -> None:
    current = record(NEW, GOOD)
    back = policy.after_rollout(current, False, "crash loop")
    assert isinstance(back, policy.GoBack)
    settled = policy.after_going_back(current, back, SNAPSHOT, False, "timed out")
    assert settled.outcome == "failed"
    assert settled.reason == "crash loop; rollback: timed out"
    assert not settled.restored  # the deploy repo keeps the failed release's files
    assert settled.record.image == "api:new"
    failed = replace(NEW, outcome="failed", reason="crash loop; rollback: timed out")
    assert settled.record.release == settled.record.last_failed == failed
    assert settled.record.last_good == GOOD


@pytest.mark.parametrize("last_good", [None, replace(NEW, outcome="healthy")])
def test_without_an_earlier_good_release_a_failed_one_is_left_failed(
    last_good: Release | None,
) -> None:
    for applied in (True, False):
        settled = policy.after_rollout(record(NEW, last_good), False, "bad", applied=applied)
        assert isinstance(settled, policy.Settled)
        assert (settled.outcome, settled.reason, settled.restored) == ("failed", "bad", False)
        failed = replace(NEW, outcome="failed", reason="bad")
        assert settled.record.release == settled.record.last_failed == failed
        assert settled.record.last_good == last_good


def test_a_release_nothing_of_which_was_applied_only_puts_the_record_back() -> None:
    """A pre-deploy job failed: the platform still runs the last good release."""
    current = record(NEW, GOOD)
    decision = policy.after_rollout(current, False, "pre-deploy failed: migrate", applied=False)
    assert decision == policy.GoBack(GOOD, NEW, "pre-deploy failed: migrate", roll_out=False)
    settled = policy.after_going_back(current, decision, SNAPSHOT)
    assert (settled.outcome, settled.restored) == ("failed", True)
    assert settled.record.image == "api:old"
    assert settled.record.release == settled.record.last_good == replace(GOOD, outcome="healthy")
    failed = replace(NEW, outcome="failed", reason="pre-deploy failed: migrate")
    assert settled.record.last_failed == failed  # so the same inputs are blocked


def test_not_applied_is_never_healthy() -> None:
    settled = policy.after_rollout(record(NEW), True, "pre-deploy failed", applied=False)
    assert isinstance(settled, policy.Settled) and settled.outcome == "failed"


def test_a_watched_release_is_recorded_without_rollback() -> None:
    assert policy.after_watch(record(NEW, GOOD), True).outcome == "healthy"
    settled = policy.after_watch(record(NEW, GOOD), False, "ImagePullBackOff")
    assert (settled.outcome, settled.reason, settled.restored) == (
        "failed",
        "ImagePullBackOff",
        False,
    )
    assert settled.record.last_good == GOOD


def test_a_rollback_by_hand_blocks_the_release_it_leaves() -> None:
    current = record(NEW, GOOD)
    verified = policy.rolled_back_to(
        current, SNAPSHOT, "api-1", verified=True, by="ops@host", at="2026-12-01T00:00:00Z"
    )
    assert verified.image == "api:old"
    assert verified.release == verified.last_good == replace(GOOD, outcome="healthy")
    assert verified.last_failed == replace(
        NEW, outcome="rolled_back", reason="rolled back to api-1 by ops@host"
    )
    committed = policy.rolled_back_to(
        current, SNAPSHOT, "api-1", verified=False, by="ops@host", at="2026-12-01T00:00:00Z"
    )
    assert committed.release is not None and committed.release.outcome == "committed"
    bare = policy.rolled_back_to(
        current, replace(SNAPSHOT, release=None), "api-1", verified=False, by="x", at="T"
    )
    assert bare.release == Release("api-1", "committed", "T")


def test_a_rollback_by_hand_keeps_a_newer_failure_blocked() -> None:
    """The config moved on to inputs that failed (api-3, rolled back to api-2) and then
    api-2 is rolled back by hand to api-1: api-3's inputs, which the config still asks
    for, stay blocked; blocking api-2 instead would retry api-3 on the next apply."""
    healthy = release("api-2", "healthy")
    failed = release("api-3", "rolled_back", reason="ImagePullBackOff")
    current = record(healthy, healthy, failed)

    back = policy.rolled_back_to(
        current, SNAPSHOT, "api-1", verified=True, by="ops@host", at="2026-12-01T00:00:00Z"
    )

    assert back.release == replace(GOOD, outcome="healthy")
    assert back.last_failed == failed
    older = record(NEW, GOOD, release("api-0", "failed"))
    again = policy.rolled_back_to(older, SNAPSHOT, "api-1", verified=True, by="x", at="T")
    assert again.last_failed is not None and again.last_failed.id == "api-2"


def test_failure_reason_reads_reason_then_message() -> None:
    assert policy.failure_reason("Failed", "") == "Failed"
    assert policy.failure_reason("Failed", "exit 1") == "Failed: exit 1"
