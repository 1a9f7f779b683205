"""The platform contract: every platform adapter passes the same tests, judged on the platform.

Each test runs on every bed of tests/platform/conftest.py: Kubernetes on the test
bed's API server, Marathon on its REST double, and the in-memory fake platform
that shows what adding an adapter takes. Nothing is skipped: a test of a
capability (`object_drift_bed`) runs on exactly the platforms whose registry
entry declares it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import pytest

from configcenter.ports.platform import (
    Drift,
    ObjectDriftPlatform,
    PlatformError,
    RolloutStatus,
    SecretsRotated,
)
from tests.platform.conftest import Bed, ObjectDriftBed


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


def test_only_the_secret_whose_value_changed_is_reported_rotated(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC_CONTRACT_DB", "db-value-one")
    monkeypatch.setenv("CC_CONTRACT_PAY", "pay-value-one")
    secrets = {"DB_PASSWORD": "env:CC_CONTRACT_DB", "PAYMENTS_KEY": "env:CC_CONTRACT_PAY"}
    first = bed.release("r1", secrets=secrets)
    bed.platform.apply(first)
    assert bed.platform.wait(first, timeout=bed.healthy_timeout).state == "healthy"
    assert bed.platform.secrets_match(first, [1]) == 1, "nothing rotated yet"

    monkeypatch.setenv("CC_CONTRACT_PAY", "pay-value-two")
    found = bed.platform.secrets_match(first, [1])

    assert found == SecretsRotated(("env:CC_CONTRACT_PAY",)), found
    assert "value" not in repr(found), "no secret value in the answer"

    second = replace(first, release_id="r2", secrets_generation=2)
    bed.platform.apply(second)
    assert bed.platform.wait(second, timeout=bed.healthy_timeout).state == "healthy"
    assert bed.platform.secrets_match(second, [2, 1]) == 2, "the new generation holds it"
    monkeypatch.setenv("CC_CONTRACT_DB", "db-value-two")
    assert bed.platform.secrets_match(second, [2, 1]) == SecretsRotated(("env:CC_CONTRACT_DB",))
    assert bed.platform.secrets_unavailable() is None, "a platform that answers can compare"


def test_a_generation_the_platform_does_not_hold_cannot_be_compared_whatever_others_hold(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release committed but not rolled out yet (an apply killed between its commit and
    its rollout) has a generation the platform does not hold. An older generation that is
    there (the plan also asks the failed release's) says nothing about it: the answer is
    "cannot tell", exactly as when it is asked alone, never "may have rotated", which
    would make the plan move to yet another generation and restart the pods for nothing."""
    monkeypatch.setenv("CC_CONTRACT_DB", "db-value-one")
    first = bed.release("r1", secrets={"DB_PASSWORD": "env:CC_CONTRACT_DB"})
    bed.platform.apply(first)
    assert bed.platform.wait(first, timeout=bed.healthy_timeout).state == "healthy"
    monkeypatch.setenv("CC_CONTRACT_DB", "db-value-two")
    committed = replace(first, release_id="r2", secrets_generation=2)

    alone = bed.platform.secrets_match(committed, [2])
    with_older = bed.platform.secrets_match(committed, [2, 1])

    assert isinstance(alone, str), alone
    assert isinstance(with_older, str), with_older
    monkeypatch.setenv("CC_CONTRACT_DB", "db-value-one")
    assert bed.platform.secrets_match(committed, [2, 1]) == 1, "the older one holds them"


def test_diff_of_what_just_rolled_out_is_empty(bed: Bed) -> None:
    release = bed.release("r1", replicas=2)
    bed.platform.apply(release)
    assert bed.platform.wait(release, timeout=bed.healthy_timeout).state == "healthy"

    found = bed.platform.diff(release, bed.platform.observe()["api"])

    assert found.drifts == ()
    assert (found.image, found.replicas) == (release.image, 2)


def test_diff_of_a_service_that_does_not_run_is_one_missing_service(bed: Bed) -> None:
    release = bed.release("r1", replicas=2)

    found = bed.platform.diff(release, None)

    assert found.drifts == (Drift("api", "service", "running", None, "missing"),)
    assert (found.image, found.replicas) == (release.image, 2)


def test_a_hand_made_scale_is_drift_until_the_release_is_applied_again(bed: Bed) -> None:
    release = bed.release("r1", replicas=2)
    bed.platform.apply(release)
    assert bed.platform.wait(release, timeout=bed.healthy_timeout).state == "healthy"

    bed.scale_by_hand("api", 3)
    drifted = bed.platform.diff(release, bed.platform.observe()["api"])

    assert Drift("api", "replicas", "2", "3") in drifted.drifts
    assert [d for d in drifted.drifts if d.field == "release"] == []

    bed.platform.apply(release)
    assert bed.platform.wait(release, timeout=bed.healthy_timeout).state == "healthy"
    assert bed.platform.diff(release, bed.platform.observe()["api"]).drifts == ()


def test_a_changed_release_is_drift_on_its_digest_and_release(bed: Bed) -> None:
    running = bed.release("r1")
    bed.platform.apply(running)
    assert bed.platform.wait(running, timeout=bed.healthy_timeout).state == "healthy"
    wanted = bed.release("r2", values={"REGION": "us"})

    found = bed.platform.diff(wanted, bed.platform.observe()["api"])

    fields = {d.field: (d.desired, d.live) for d in found.drifts}
    assert fields["config_digest"] == (wanted.config_digest, running.config_digest)
    assert fields["release"] == ("r2", "r1")
    assert "image" not in fields and "replicas" not in fields


def test_a_field_another_manager_added_inside_an_object_is_drift_until_replaced(
    object_drift_bed: ObjectDriftBed,
) -> None:
    bed = object_drift_bed
    platform = cast(ObjectDriftPlatform, bed.platform)
    release = bed.release("r1")
    platform.apply(release)
    assert platform.wait(release, timeout=bed.healthy_timeout).state == "healthy"

    bed.add_env_by_hand("api", "EXTRA", "by-hand")
    platform.apply(release)  # sets the release's fields only: the entry stays
    assert platform.wait(release, timeout=bed.healthy_timeout).state == "healthy"
    drifted = platform.diff(release, platform.observe()["api"])

    extra = [d for d in drifted.drifts if "EXTRA" in d.field]
    assert extra and all(d.kind == "changed" and d.desired is None for d in extra), drifted
    assert "by-hand" in {d.live for d in extra}
    refs = sorted({d.field.split(" ", 1)[0] for d in extra})

    assert platform.replace_drifted(release, refs) == refs
    platform.apply(release)
    assert platform.wait(release, timeout=bed.healthy_timeout).state == "healthy"
    assert platform.diff(release, platform.observe()["api"]).drifts == ()


def test_a_new_release_applied_replacing_an_edited_object_drops_what_was_added(
    object_drift_bed: ObjectDriftBed,
) -> None:
    """The next release of a service whose object was changed by hand: `apply_replacing`
    applies it with that object replaced whole, so it runs as released at once."""
    bed = object_drift_bed
    platform = cast(ObjectDriftPlatform, bed.platform)
    first = bed.release("r1")
    platform.apply(first)
    assert platform.wait(first, timeout=bed.healthy_timeout).state == "healthy"
    bed.add_env_by_hand("api", "EXTRA", "by-hand")
    refs = sorted(
        {
            d.field.split(" ", 1)[0]
            for d in platform.diff(first, platform.observe()["api"]).drifts
            if "EXTRA" in d.field
        }
    )
    assert refs
    second = bed.release("r2", values={"LOG_LEVEL": "debug"})

    assert platform.apply_replacing(second, refs) == refs

    assert platform.wait(second, timeout=bed.healthy_timeout).state == "healthy"
    assert platform.diff(second, platform.observe()["api"]).drifts == ()
