"""promote against the GitLab double: branch, commit, merge request, re-runs, rules."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import yaml

from configcenter.core.state import Release
from configcenter.usecases.promote import PromotionError, promote
from tests.support.configrepo import git
from tests.support.gitlab_double import GitLabDouble
from tests.support.promote_fixtures import (
    DB_SECRET_ENV,
    GITLAB_PROJECT,
    TOKEN_ENV,
    PromotionBed,
    read_marker,
)

BRANCH = "promote/dev-to-demo"
DEMO_API = "environments/demo/api.yaml"


def test_opens_one_merge_request_carrying_dev_pins(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    good = bed.state("dev").services["api"].last_good
    assert good is not None

    result = promote(bed.ws(), "dev", "demo")

    assert result.status == "opened"
    mrs = gitlab.merge_requests(GITLAB_PROJECT)
    assert len(mrs) == 1
    mr = mrs[0]
    assert (mr["source_branch"], mr["target_branch"]) == (BRANCH, "main")
    assert mr["labels"] == ["promotion", "env::demo"]
    assert mr["draft"] is False
    assert mr["title"] == "Promote dev -> demo: api 1.1.0"
    promoted = bed.origin_file(BRANCH, DEMO_API)
    assert promoted.splitlines() == [
        "# The api in demo: reviewed by the shop team.",
        "template: 1.1.0   # pinned tag",
        "image:",
        f"  ref: registry.example.com/shop/api:1.1  # promoted from dev release {good.id}",
        "replicas: 2       # two for the demo load",
        "values:",
        "  LOG_LEVEL: warning   # quieter than dev",
    ]
    assert "checkout-v2" not in promoted  # dev's own values never travel
    message = git(bed.origin, "log", "-1", "--format=%B", BRANCH)
    assert message.startswith("Promote dev -> demo: api 1.1.0\n")
    assert "Configcenter-Promotion: dev -> demo" in message
    assert f"Configcenter-Release: api {good.id}" in message
    description = mr["description"]
    assert "| api | `1.0.0` → `1.1.0` |" in description
    assert "#### api: update (template, image)" in description
    assert "<details><summary>Rendered file diffs (1)</summary>" in description
    assert "+IMAGE=registry.example.com/shop/api:1.1" in description
    assert os.environ[DB_SECRET_ENV] not in description
    assert gitlab.token not in description
    marker = read_marker(description)
    assert marker is not None
    assert marker["from"] == "dev" and marker["to"] == "demo"
    assert marker["services"] == {
        "api": {
            "template": "1.1.0",
            "image": "registry.example.com/shop/api:1.1",
            "release": good.id,
        }
    }
    # main is untouched until someone merges
    assert "template: 1.0.0" in bed.origin_file("main", DEMO_API)


def test_promoting_again_updates_the_same_request_with_a_new_commit(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    first = promote(bed.ws(), "dev", "demo")
    assert first.merge_request is not None
    first_tip = bed.log(BRANCH)[0]

    # A reviewer labels the request; re-running promote must keep that label.
    gitlab.label_event(GITLAB_PROJECT, first.merge_request.iid, ["needs-qa"])
    bed.change(
        "environments/dev/api.yaml",
        "template: 1.1.0\nimage: {ref: registry.example.com/shop/api:1.1.1}\n"
        "values:\n  FEATURE_FLAGS: checkout-v2\n",
        "dev: api 1.1.1",
    )
    bed.apply("dev")
    again = promote(bed.ws(), "dev", "demo")

    assert again.status == "updated"
    assert again.merge_request is not None
    assert again.merge_request.iid == first.merge_request.iid
    assert len(gitlab.merge_requests(GITLAB_PROJECT)) == 1
    history = bed.log(BRANCH)
    # New commits on top (main moved, so it was merged in first): nothing rewritten.
    assert history[0] != first_tip and first_tip in history
    assert "ref: registry.example.com/shop/api:1.1.1" in bed.origin_file(BRANCH, DEMO_API)
    mr = gitlab.merge_requests(GITLAB_PROJECT)[0]
    assert "registry.example.com/shop/api:1.1.1" in mr["description"]
    assert mr["labels"] == ["promotion", "env::demo", "needs-qa"]

    same = promote(bed.ws(), "dev", "demo")
    assert same.status == "unchanged"
    assert bed.log(BRANCH)[0] == history[0]


def test_nothing_to_promote_opens_nothing(gitlab_bed: tuple[PromotionBed, GitLabDouble]) -> None:
    bed, gitlab = gitlab_bed
    result = promote(bed.ws(), "demo", "prod")  # demo and prod both run api/db 1.0.0

    assert result.status == "nothing"
    assert "Nothing to promote from demo to prod: prod already pins what demo" in result.message
    assert gitlab.merge_requests(GITLAB_PROJECT) == []
    assert bed.origin_branches() == ["main"]


def test_a_failed_release_is_never_promoted_the_last_good_one_is(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    state = bed.state("dev")
    api = state.services["api"]
    good = api.last_good
    assert good is not None and good.template_tag == "1.1.0"
    failed = Release(
        id="api-20990101.000000-f41led",
        outcome="rolled_back",
        at="2099-01-01T00:00:00Z",
        template_tag="1.2.0",
        image="registry.example.com/shop/api:1.2",
        reason="readiness probe failed",
    )
    state.services["api"] = replace(
        api, template_tag="1.2.0", release=failed, last_failed=failed, last_good=good
    )
    bed.publish_state(state)

    result = promote(bed.ws(), "dev", "demo")

    assert [(p.service, p.template, p.release.id) for p in result.pins] == [
        ("api", "1.1.0", good.id)
    ]
    promoted = yaml.safe_load(bed.origin_file(BRANCH, DEMO_API))
    # By field: a substring test for "1.2" also matched the good release's image tag
    # whenever its timestamp read ...1201.2x (any evening of the first of a month).
    assert str(promoted["template"]) == "1.1.0"
    assert promoted["image"]["ref"] != failed.image and not promoted["image"]["ref"].endswith(
        ":1.2"
    )
    description = gitlab.merge_requests(GITLAB_PROJECT)[0]["description"]
    assert f"newer release {failed.id} (1.2.0) rolled_back" in description


def test_a_service_with_no_good_release_is_skipped_with_the_reason(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    state = bed.state("dev")
    failed = Release(id="api-x", outcome="failed", at="2099-01-01T00:00:00Z")
    state.services["api"] = replace(
        state.services["api"], release=failed, last_failed=failed, last_good=None
    )
    bed.publish_state(state)

    result = promote(bed.ws(), "dev", "demo")

    assert result.status == "nothing"
    assert "api: dev has no good release of it; its last release api-x failed" in result.message
    assert gitlab.merge_requests(GITLAB_PROJECT) == []


def test_a_service_the_target_does_not_have_is_named_not_silently_left_out(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    (bed.config / DEMO_API).unlink()
    bed.commit("demo: no api yet")
    bed.push()

    result = promote(bed.ws(), "dev", "demo")

    assert result.status == "nothing"
    assert [s.service for s in result.skipped] == ["api"]
    assert "api: not in demo: create environments/demo/api.yaml with its values" in (result.message)
    assert gitlab.merge_requests(GITLAB_PROJECT) == []


def test_out_of_order_promotion_is_refused_unless_allowed(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    with pytest.raises(PromotionError, match=r"skips demo .*allow_skip: true"):
        promote(bed.ws(), "dev", "prod")
    with pytest.raises(PromotionError, match="forward only"):
        promote(bed.ws(), "demo", "dev")
    with pytest.raises(PromotionError, match="unknown environment 'staging'"):
        promote(bed.ws(), "dev", "staging")
    assert gitlab.merge_requests(GITLAB_PROJECT) == []

    bed.set_project("promotion: {allow_skip: true, approvals: 2}\n")
    result = promote(bed.ws(), "dev", "prod")

    assert result.status == "opened"
    mr = gitlab.merge_requests(GITLAB_PROJECT)[0]
    assert mr["source_branch"] == "promote/dev-to-prod"
    assert "Approvals required: **2**" in mr["description"]
    assert read_marker(mr["description"])["approvals"] == 2  # type: ignore[index]


def test_missing_env_key_makes_a_draft_that_says_so_until_ops_add_it(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    bed.change(
        "environments/dev/api.yaml",
        "template: 1.2.0\nimage: {ref: registry.example.com/shop/api:1.2}\n"
        "values:\n  FEATURE_FLAGS: checkout-v2\n",
        "dev: api 1.2.0 needs FEATURE_FLAGS",
    )
    bed.apply("dev")

    result = promote(bed.ws(), "dev", "demo")

    assert result.draft and result.missing == {"api": ["FEATURE_FLAGS"]}
    mr = gitlab.merge_requests(GITLAB_PROJECT)[0]
    assert mr["draft"] is True and mr["title"].startswith("Draft: ")
    assert "lacks ENV keys" in mr["description"]
    assert "> - api: `FEATURE_FLAGS` (template api/1.2.0)" in mr["description"]
    assert "checkout-v2" not in bed.origin_file(BRANCH, DEMO_API)

    # Ops add demo's own value on the promotion branch; the next run keeps it.
    work = bed.root / "ops-work"
    git(bed.root, "clone", "-q", "-b", BRANCH, str(bed.origin), str(work))
    path = work / DEMO_API
    path.write_text(path.read_text() + "  FEATURE_FLAGS: none   # not in demo yet\n")
    git(work, "commit", "-q", "-am", "demo: FEATURE_FLAGS")
    git(work, "push", "-q", "origin", BRANCH)
    ops_commit = bed.log(BRANCH)[0]

    again = promote(bed.ws(), "dev", "demo")

    assert not again.draft and again.missing == {}
    # Nothing to commit, but the request left draft: it was updated, and says so.
    assert again.status == "updated" and again.message.startswith("Updated"), again.message
    mr = gitlab.merge_requests(GITLAB_PROJECT)[0]
    assert mr["draft"] is False and len(gitlab.merge_requests(GITLAB_PROJECT)) == 1
    assert ops_commit in bed.log(BRANCH)
    assert "FEATURE_FLAGS: none   # not in demo yet" in bed.origin_file(BRANCH, DEMO_API)


def test_a_built_image_is_carried_by_digest_with_where_it_came_from(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, _ = gitlab_bed
    digest_ref = "127.0.0.1:5000/shop/api@sha256:" + "ab" * 32
    state = bed.state("dev")
    api = state.services["api"]
    assert api.last_good is not None
    good = replace(api.last_good, image=digest_ref)
    state.services["api"] = replace(api, image=digest_ref, release=good, last_good=good)
    bed.publish_state(state)

    promote(bed.ws(), "dev", "demo")

    promoted = bed.origin_file(BRANCH, DEMO_API)
    assert f"  ref: {digest_ref}  # promoted from dev release {good.id}" in promoted


def test_main_moving_on_is_merged_into_the_promotion_branch(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    promote(bed.ws(), "dev", "demo")
    first_tip = bed.log(BRANCH)[0]
    bed.change("environments/demo/db.yaml", DEMO_DB_WITH_COMMENT, "demo: note on db")
    bed.change(
        "environments/dev/api.yaml",
        "template: 1.1.0\nimage: {ref: registry.example.com/shop/api:1.1.2}\n",
        "dev: api 1.1.2",
    )
    bed.apply("dev")

    result = promote(bed.ws(), "dev", "demo")

    assert result.status == "updated" and not result.rebuilt
    assert first_tip in bed.log(BRANCH)
    assert bed.log("main")[0] in bed.log(BRANCH)
    mr = gitlab.merge_requests(GITLAB_PROJECT)[0]
    gitlab.merge(GITLAB_PROJECT, mr["iid"])  # the double refuses a merge with conflicts
    assert "api:1.1.2" in bed.origin_file("main", DEMO_API)


DEMO_DB_WITH_COMMENT = """\
template: 1.0.0   # db stays on 1.0.0 until the migration
image: {ref: docker.io/library/postgres:16}
"""


def test_a_bad_forge_token_is_a_clear_error_without_the_token(
    gitlab_bed: tuple[PromotionBed, GitLabDouble], monkeypatch: pytest.MonkeyPatch
) -> None:
    bed, gitlab = gitlab_bed
    wrong = "glpat-wrong-token-0123456789"
    monkeypatch.setenv(TOKEN_ENV, wrong)
    with pytest.raises(PromotionError) as caught:
        promote(bed.ws(), "dev", "demo")
    assert "rejected the token" in str(caught.value)
    assert wrong not in str(caught.value)
    assert gitlab.merge_requests(GITLAB_PROJECT) == []


def test_one_service_gets_its_own_branch(gitlab_bed: tuple[PromotionBed, GitLabDouble]) -> None:
    bed, gitlab = gitlab_bed
    result = promote(bed.ws(), "dev", "demo", service="api")
    assert result.branch == "promote/dev-to-demo/api"
    assert gitlab.merge_requests(GITLAB_PROJECT)[0]["source_branch"] == result.branch
    with pytest.raises(PromotionError, match="'cache' is not deployed in demo"):
        promote(bed.ws(), "dev", "demo", service="cache")


def test_a_branch_that_conflicts_with_main_is_rebuilt_from_it_with_a_lease(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    promote(bed.ws(), "dev", "demo")
    old_tip = bed.log(BRANCH)[0]
    # Someone edits the very lines the promotion changed, on main.
    bed.change(
        DEMO_API,
        "# The api in demo: reviewed by the shop team.\n"
        "template: 1.0.0   # pinned tag (frozen for the fair)\n"
        "image: {ref: registry.example.com/shop/api:1.0}   # frozen too\n"
        "replicas: 2\n",
        "demo: freeze api",
    )

    result = promote(bed.ws(), "dev", "demo")

    assert result.rebuilt and result.status == "updated"
    assert old_tip not in bed.log(BRANCH)
    assert bed.log(BRANCH)[1] == bed.log("main")[0]  # one commit on top of main
    assert len(gitlab.merge_requests(GITLAB_PROJECT)) == 1
    mr = gitlab.merge_requests(GITLAB_PROJECT)[0]
    assert "rebuilt from it" in mr["description"]
    promoted = bed.origin_file(BRANCH, DEMO_API)
    assert "template: 1.1.0   # pinned tag (frozen for the fair)" in promoted
    gitlab.merge(GITLAB_PROJECT, mr["iid"])


def test_a_head_template_is_not_promoted_where_head_is_not_allowed(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    bed.change(
        "environments/dev/api.yaml",
        "template: HEAD\nimage: {ref: registry.example.com/shop/api:1.1}\n"
        "values:\n  FEATURE_FLAGS: checkout-v2\n",
        "dev: api from the work tree",
    )
    bed.apply("dev")

    result = promote(bed.ws(), "dev", "demo")

    assert result.status == "nothing"
    assert "runs its template from the work tree (HEAD)" in result.message
    assert "configcenter template release api VERSION" in result.message
    assert gitlab.merge_requests(GITLAB_PROJECT) == []


def test_a_service_branch_cannot_sit_beside_the_whole_env_branch(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    promote(bed.ws(), "dev", "demo")
    with pytest.raises(PromotionError, match=r"cannot coexist with .*promote/dev-to-demo"):
        promote(bed.ws(), "dev", "demo", service="api")
    assert len(gitlab.merge_requests(GITLAB_PROJECT)) == 1


def test_git_errors_never_show_credentials_from_the_remote_url(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, _ = gitlab_bed
    secret_url = "https://ops:glpat-s3cr3t-value@127.0.0.1:9/ops/shop-config.git"
    git(bed.config, "remote", "set-url", "origin", secret_url)
    with pytest.raises(PromotionError) as caught:
        promote(bed.ws(), "dev", "demo")
    assert "glpat-s3cr3t-value" not in str(caught.value)
    assert "check the config repo's origin (git remote -v)" in str(caught.value)


def test_a_merged_promotion_removes_its_branch_so_a_service_promotion_can_follow(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    """Promotion branches are the tool's own: the request asks GitLab to remove the
    source branch on merge (`remove_source_branch`), so promote/dev-to-demo does not
    linger and block promote/dev-to-demo/api (Git refs cannot be file and folder)."""
    bed, gitlab = gitlab_bed
    whole = promote(bed.ws(), "dev", "demo")
    assert whole.merge_request is not None
    [opened] = gitlab.merge_requests(GITLAB_PROJECT)
    assert opened["force_remove_source_branch"] is True
    gitlab.merge(GITLAB_PROJECT, whole.merge_request.iid)
    assert "promote/dev-to-demo" not in bed.origin_branches()
    git(bed.config, "checkout", "-q", "main")
    git(bed.config, "pull", "-q", "--ff-only", "origin", "main")
    bed.change(
        "environments/dev/api.yaml",
        "template: 1.2.0\nimage: {ref: registry.example.com/shop/api:1.2}\n"
        "values:\n  FEATURE_FLAGS: checkout-v2\n",
        "dev: api 1.2.0",
    )
    bed.apply("dev")

    one = promote(bed.ws(), "dev", "demo", service="api")

    assert one.merge_request is not None and one.status == "opened", one.message
    assert "promote/dev-to-demo/api" in bed.origin_branches()


def test_a_merged_branch_in_the_way_is_named_with_the_command_that_removes_it(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    """A GitLab project (or a person) that kept a merged promotion branch: the way out is
    deleting it, not "merge or close that promotion" (it is merged)."""
    bed, gitlab = gitlab_bed
    whole = promote(bed.ws(), "dev", "demo")
    assert whole.merge_request is not None
    [opened] = gitlab.merge_requests(GITLAB_PROJECT)
    gitlab.merge(GITLAB_PROJECT, whole.merge_request.iid)
    git(bed.origin, "update-ref", "refs/heads/promote/dev-to-demo", opened["sha"])

    with pytest.raises(PromotionError) as refused:
        promote(bed.ws(), "dev", "demo", service="api")

    assert "promote/dev-to-demo is merged already: delete it" in str(refused.value)
    assert "`git push origin --delete promote/dev-to-demo`" in str(refused.value)
