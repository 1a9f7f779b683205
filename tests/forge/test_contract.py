"""The forge contract: every forge adapter passes the same tests (tests/forge/conftest.py)."""

from __future__ import annotations

import pytest

from configcenter.ports.forge import ForgeError, MergeRequest, MergeRequestNotFound
from tests.forge.conftest import SOURCE, ForgeBed


def open_promotion(bed: ForgeBed, title: str = "Promote dev to demo") -> MergeRequest:
    return bed.forge.open(SOURCE, "demo", title, "api: 1.4.0 -> 1.5.0", ["promotion"], False)


def test_open_records_an_open_request_that_find_open_and_get_return(forge_bed: ForgeBed) -> None:
    mr = open_promotion(forge_bed)

    assert (mr.state, mr.source_branch, mr.target_branch) == ("opened", SOURCE, "demo")
    assert (mr.title, mr.description, mr.labels, mr.draft) == (
        "Promote dev to demo",
        "api: 1.4.0 -> 1.5.0",
        ("promotion",),
        False,
    )
    [stored] = forge_bed.stored()
    assert (stored["title"], stored["source_branch"], stored["target_branch"]) == (
        "Promote dev to demo",
        SOURCE,
        "demo",
    )
    assert forge_bed.forge.find_open(SOURCE, "demo") == mr
    assert forge_bed.forge.find_open(SOURCE, "prod") is None
    assert forge_bed.forge.get(mr.iid) == mr


def test_a_second_open_for_the_same_branches_updates_the_first(forge_bed: ForgeBed) -> None:
    first = open_promotion(forge_bed)

    second = forge_bed.forge.open(SOURCE, "demo", "Promote again", "two", ["x"], True)

    assert second.iid == first.iid
    assert (second.title, second.description, second.labels, second.draft) == (
        "Promote again",
        "two",
        ("x",),
        True,
    )
    assert len(forge_bed.stored()) == 1


def test_notes_land_on_the_request_in_order(forge_bed: ForgeBed) -> None:
    mr = open_promotion(forge_bed)

    forge_bed.forge.add_note(mr.iid, "plan: api update")
    forge_bed.forge.add_note(mr.iid, "applied: healthy")

    assert forge_bed.stored_notes(mr.iid) == ["plan: api update", "applied: healthy"]
    with pytest.raises(ForgeError, match="empty note"):
        forge_bed.forge.add_note(mr.iid, "  ")


def test_an_unknown_request_is_not_found(forge_bed: ForgeBed) -> None:
    with pytest.raises(MergeRequestNotFound):
        forge_bed.forge.get(42)


def test_a_merged_request_is_no_longer_open(forge_bed: ForgeBed) -> None:
    mr = open_promotion(forge_bed)

    forge_bed.merge(mr)

    assert forge_bed.forge.find_open(SOURCE, "demo") is None
    assert forge_bed.forge.get(mr.iid).state == "merged"
