"""usecases.promote.pinning: the pins written into a target's service file (text in, text out)."""

from __future__ import annotations

import textwrap

import pytest

from configcenter.core.promotion import Pin, PromotionError
from configcenter.core.state import Release
from configcenter.usecases.promote.pinning import pin_file

REL = "environments/demo/api.yaml"
TARGET = textwrap.dedent(
    """\
    # demo's api: values stay here
    template: 1.0.0   # pinned by promotion
    image:
      source: {repo: https://git.example.com/shop/api.git, ref: main}
    values:
      LOG_LEVEL: warn  # quieter than dev
    """
)
GOOD = Release("api-1", "healthy", "2026-11-01T00:00:00Z", template_tag="1.1.0")


def pin(image: str | None = "registry/api@sha256:" + "a" * 64) -> Pin:
    return Pin(
        service="api",
        template="1.1.0",
        template_before="1.0.0",
        image=image,
        image_before="build https://git.example.com/shop/api.git@main",
        image_note="promoted from dev release api-1" if image else "",
        release=GOOD,
    )


def test_the_pins_are_written_and_everything_else_is_kept() -> None:
    out = pin_file(TARGET, pin(), REL)
    assert out.startswith(
        "# demo's api: values stay here\ntemplate: 1.1.0   # pinned by promotion\n"
    )
    assert f"ref: registry/api@sha256:{'a' * 64}  # promoted from dev release api-1" in out
    assert "source:" not in out
    assert out.endswith("values:\n  LOG_LEVEL: warn  # quieter than dev\n")


def test_a_pin_without_image_keeps_the_targets_image() -> None:
    out = pin_file(TARGET, pin(image=None), REL)
    assert "source: {repo: https://git.example.com/shop/api.git, ref: main}" in out
    assert "template: 1.1.0" in out


def test_a_file_already_pinned_comes_back_as_it_is() -> None:
    once = pin_file(TARGET, pin(), REL)
    assert pin_file(once, pin(), REL) is once


@pytest.mark.parametrize(
    ("text", "problem"), [("template: [1.0\n", "is not valid YAML"), ("- a\n", "is not a mapping")]
)
def test_a_broken_target_file_is_named(text: str, problem: str) -> None:
    with pytest.raises(PromotionError, match=f"{REL} {problem}"):
        pin_file(text, pin(), REL)
