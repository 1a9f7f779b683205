"""core.promotion: the promotion rules (order, branch names, which pins a service carries)."""

from __future__ import annotations

import pytest

from configcenter.core.model import Config
from configcenter.core.promotion import (
    Pin,
    PromotionError,
    Skipped,
    SourceRelease,
    branch_name,
    check_order,
    choose_pin,
    downgrades,
    parse_branch,
)
from configcenter.core.state import Release, ServiceState
from tests.support.configrepo import MemoryRepo


def config(environments: str = "[dev, stage, prod]", promotion: str = "") -> Config:
    repo = MemoryRepo.basic()
    project = repo.read("configcenter.yaml").replace("[dev, prod]", environments)
    repo.write("configcenter.yaml", project + promotion)
    for name in ("_env", "api", "db"):  # stage: as prod
        repo.write(f"environments/stage/{name}.yaml", repo.read(f"environments/prod/{name}.yaml"))
    return repo.load()


def release(rid: str, outcome: str, at: str, tag: str = "1.1.0", image: str = "") -> Release:
    return Release(rid, outcome, at, template_tag=tag, image=image or f"registry/api:{rid}")


def record(
    current: Release | None, good: Release | None, failed: Release | None = None
) -> ServiceState:
    return ServiceState(
        template_tag="1.1.0",
        template_commit=None,
        template_tree="tree",
        values_digest="values",
        values={},
        replicas=1,
        image="registry/api:x",
        image_digest=None,
        build_key=None,
        rendered_digest="rendered",
        inputs_digest="inputs",
        files={},
        release=current,
        last_good=good,
        last_failed=failed,
    )


def test_branch_names_round_trip_also_when_an_environment_name_holds_to() -> None:
    envs = ["dev", "go-to-prod", "prod"]
    assert branch_name("dev", "go-to-prod") == "promote/dev-to-go-to-prod"
    assert parse_branch("promote/dev-to-go-to-prod", envs) == ("dev", "go-to-prod", None)
    assert parse_branch(branch_name("go-to-prod", "prod", "api"), envs) == (
        "go-to-prod",
        "prod",
        "api",
    )
    assert parse_branch("promote/dev-to-nowhere", envs) is None
    assert parse_branch("main", envs) is None


def test_promotions_go_forward_one_step() -> None:
    cfg = config()
    check_order(cfg, "dev", "stage")
    with pytest.raises(PromotionError, match="promotions go forward only"):
        check_order(cfg, "prod", "stage")
    with pytest.raises(PromotionError, match="skips stage"):
        check_order(cfg, "dev", "prod")
    with pytest.raises(PromotionError, match="to itself"):
        check_order(cfg, "dev", "dev")
    with pytest.raises(PromotionError, match="unknown environment 'qa'"):
        check_order(cfg, "dev", "qa")


def test_allow_skip_lets_a_promotion_skip_environments() -> None:
    check_order(config(promotion="promotion: {allow_skip: true}\n"), "dev", "prod")


def test_a_service_never_released_or_never_good_is_skipped_with_why() -> None:
    cfg = config()
    never = choose_pin(cfg, "dev", "stage", "api", None)
    assert never == Skipped("api", "dev has never released it: apply dev first")
    bad = release("api-2", "failed", "2026-11-02T00:00:00Z")
    skipped = choose_pin(cfg, "dev", "stage", "api", record(bad, None, bad))
    assert isinstance(skipped, Skipped)
    assert "no good release" in skipped.reason and "api-2 failed" in skipped.reason


def test_the_last_good_release_is_carried_over_a_newer_failed_one() -> None:
    cfg = config()
    good = release("api-1", "healthy", "2026-11-01T00:00:00Z", tag="1.1.0")
    bad = release("api-2", "failed", "2026-11-02T00:00:00Z", tag="1.2.0")
    pin = choose_pin(cfg, "dev", "stage", "api", record(bad, good, bad))
    assert isinstance(pin, Pin)
    assert (pin.template, pin.template_before, pin.release) == ("1.1.0", "1.0.0", good)
    assert pin.image == "registry/api:api-1"  # a given image is carried as written
    assert pin.image_before == "registry.example.com/shop/api:1.0"
    assert pin.image_note == "promoted from dev release api-1"
    assert len(pin.notes) == 1 and "api-2 (1.2.0) failed" in pin.notes[0]


def test_a_template_from_the_work_tree_is_not_carried_where_head_is_not_allowed() -> None:
    cfg = config()
    head = release("api-1", "healthy", "2026-11-01T00:00:00Z", tag="HEAD")
    skipped = choose_pin(cfg, "dev", "stage", "api", record(head, head))
    assert isinstance(skipped, Skipped) and "work tree (HEAD)" in skipped.reason


def pin(
    template: str = "1.1.0",
    before: str = "1.1.0",
    image: str | None = None,
    image_before: str = "",
    at: str = "2026-11-10T00:00:00Z",
) -> Pin:
    carried = release("api-carried", "succeeded", at, template, image or "registry/api:x")
    return Pin("api", template, before, image, image_before, "", carried)


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.9.0", "1.10.0"),
        ("1.2", "1.2.1"),
        ("v1.2.0", "v2"),
        ("2.0.0-rc.1", "2.0.0"),
        ("0.9", "1.0.0"),
    ],
)
def test_a_lower_template_version_is_a_downgrade(older: str, newer: str) -> None:
    (down,) = downgrades(pin(template=older, before=newer))
    assert (down.what, down.before, down.after, down.why) == (
        "template",
        newer,
        older,
        "a lower version",
    )
    assert downgrades(pin(template=newer, before=older)) == ()


def test_equal_versions_and_head_are_no_downgrade() -> None:
    assert downgrades(pin(template="1.2", before="1.2.0")) == ()
    assert downgrades(pin(template="HEAD", before="1.2.0")) == ()
    assert downgrades(pin(template="1.0.0", before="HEAD")) == ()


def test_image_tags_compare_as_versions_within_one_repository() -> None:
    (down,) = downgrades(
        pin(image="registry:5000/shop/api:1.9", image_before="registry:5000/shop/api:1.10")
    )
    assert (down.what, down.why) == ("image", "a lower version")
    # Another repository's tag says nothing about age; nor does a digest without history.
    assert downgrades(pin(image="other/api:1.0", image_before="shop/api:2.0")) == ()
    assert downgrades(pin(image="shop/api@sha256:" + "a" * 64, image_before="shop/api:2")) == ()


def test_without_versions_the_source_history_says_what_is_newer() -> None:
    """dev ran blue, then green (promoted to prod), then went back to blue by a rollback:
    carrying blue takes prod back to what dev ran before green."""
    blue, green = "shop/api@sha256:" + "b" * 64, "shop/api@sha256:" + "c" * 64
    history = [
        SourceRelease("api-3", "2026-11-12T00:00:00Z", "1.1.0", blue),  # the rollback
        SourceRelease("api-2", "2026-11-11T00:00:00Z", "1.1.0", green),
        SourceRelease("api-1", "2026-11-10T00:00:00Z", "1.1.0", blue),
    ]
    carried = pin(image=blue, image_before=green, at="2026-11-12T00:00:00Z")
    (down,) = downgrades(carried, history)
    assert (down.what, down.before, down.after) == ("image", green, blue)
    assert down.why == f"{green} is newer in the source: first released in api-2"
    # Forward: prod runs blue, dev moved on to green.
    assert downgrades(pin(image=green, image_before=blue, at="2026-11-11T00:00:00Z"), history) == ()
    # What the source never ran cannot be placed: no downgrade claimed.
    assert downgrades(pin(image=blue, image_before="shop/api:hand-made"), history) == ()
