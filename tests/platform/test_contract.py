"""The platform contract: every platform adapter passes the same tests, judged on the platform.

Each test runs on every bed of tests/platform/conftest.py: Kubernetes on the test
bed's API server, Marathon on its REST double, and the in-memory fake platform
that shows what adding an adapter takes.
"""

from __future__ import annotations

from typing import cast

import pytest

from configcenter.core import kinds
from configcenter.ports.platform import ObjectDriftPlatform, PlatformError, RolloutStatus
from tests.platform.conftest import Bed


def test_a_new_release_rolls_out_healthy_and_observe_reports_it(bed: Bed) -> None:
    release = bed.release("r1", replicas=2)
    seen: list[RolloutStatus] = []

    bed.platform.apply(release)
    status = bed.platform.wait(release, timeout=bed.healthy_timeout, progress=seen.append)

    assert status.state == "healthy", status
    assert (status.desired, status.ready, status.available) == (2, 2, 2)
    assert seen and seen[-1] == status
    assert bed.running_image() == release.image
    observed = bed.platform.observe()["api"]
    assert (observed.image, observed.replicas, observed.config_digest, observed.release_id) == (
        release.image,
        2,
        release.config_digest,
        "r1",
    )


def test_a_value_change_rolls_a_new_revision_and_an_unchanged_apply_does_not(bed: Bed) -> None:
    first = bed.release("r1")
    bed.platform.apply(first)
    assert bed.platform.wait(first, timeout=bed.healthy_timeout).state == "healthy"
    before = bed.revision()

    second = bed.release("r2", values={"REGION": "us"})
    assert second.image == first.image and second.config_digest != first.config_digest
    bed.platform.apply(second)
    assert bed.platform.wait(second, timeout=bed.healthy_timeout).state == "healthy"
    rolled = bed.revision()
    assert rolled is not None and rolled != before, "a value-only change must roll"

    bed.platform.apply(second)
    assert bed.platform.wait(second, timeout=bed.healthy_timeout).state == "healthy"
    assert bed.revision() == rolled, "re-applying the running release changed it"
    assert bed.platform.observe()["api"].release_id == "r2"


def test_a_release_that_never_gets_healthy_fails_and_the_last_good_one_heals(bed: Bed) -> None:
    good, bad = bed.release("r1"), bed.release("r2", failing=True)
    bed.platform.apply(good)
    assert bed.platform.wait(good, timeout=bed.healthy_timeout).state == "healthy"
    good_revision = bed.revision()

    bed.platform.apply(bad)
    failed = bed.platform.wait(bad, timeout=bed.failing_timeout)
    assert failed.state == "failed", failed
    assert failed.reason and failed.message

    bed.platform.apply(good)
    healed = bed.platform.wait(good, timeout=bed.healthy_timeout)

    assert healed.state == "healthy", healed
    assert bed.running_image() == good.image
    assert bed.platform.observe()["api"].release_id == "r1"
    if bed.rollback_reuses_revision:
        assert bed.revision() == good_revision


def test_a_dry_run_changes_nothing(bed: Bed) -> None:
    release = bed.release("r1")
    bed.platform.apply(release, dry_run=True)
    assert bed.leftovers("api") == []
    assert bed.platform.observe() == {}

    bed.platform.apply(release)
    assert bed.platform.wait(release, timeout=bed.healthy_timeout).state == "healthy"
    before = bed.revision()
    bed.platform.apply(bed.release("r2", values={"LOG_LEVEL": "debug"}), dry_run=True)
    assert bed.revision() == before
    assert bed.platform.observe()["api"].release_id == "r1"


def test_delete_removes_only_that_service_and_is_idempotent(bed: Bed) -> None:
    api, worker = bed.release("r1"), bed.release("r1", service="worker", replicas=1)
    for release in (api, worker):
        bed.platform.apply(release)
    for release in (api, worker):
        assert bed.platform.wait(release, timeout=bed.healthy_timeout).state == "healthy"

    bed.platform.delete("worker")
    bed.platform.delete("worker")  # already gone: nothing to do

    assert set(bed.platform.observe()) == {"api"}
    assert bed.leftovers("worker") == []
    assert bed.running_image("api") == api.image


def test_an_unresolvable_secret_is_named_and_nothing_is_deployed(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CC_CONTRACT_MISSING", raising=False)
    release = bed.release("r1", secrets={"DB_PASSWORD": "env:CC_CONTRACT_MISSING"})

    with pytest.raises(PlatformError, match=r"DB_PASSWORD.*CC_CONTRACT_MISSING is not set"):
        bed.platform.apply(release)

    assert bed.leftovers("api") == []


def test_object_drift_platforms_say_which_objects_they_would_apply(bed: Bed) -> None:
    """With the object-drift capability, desired objects are keyed like observed ones."""
    if not kinds.REGISTRY.supports("platform", bed.kind, kinds.OBJECT_DRIFT):
        pytest.skip(f"{bed.kind} reports drift on image, replicas, digest and release only")
    release = bed.release("r1")
    bed.platform.apply(release)
    assert bed.platform.wait(release, timeout=bed.healthy_timeout).state == "healthy"
    platform = cast(ObjectDriftPlatform, bed.platform)

    desired = platform.desired_objects(release)

    assert set(desired) == set(platform.observe()["api"].objects)
