"""Webhooks from the GitLab double: a merged promotion applies its target, a push applies dev."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from configcenter.usecases.promote import PromotionError, promote
from configcenter.usecases.triggers import (
    WebhookUnauthorized,
    handle_gitlab_event,
    handle_gitlab_webhook,
)
from configcenter.usecases.webhooks import parse_gitlab_event
from configcenter.usecases.workspace import Workspace
from tests.support.configrepo import git
from tests.support.gitlab_double import GitLabDouble
from tests.support.promote_fixtures import GITLAB_PROJECT, PromotionBed


def factory(bed: PromotionBed) -> Callable[[], Workspace]:
    checkout = bed.serve_checkout()

    def make() -> Workspace:
        return Workspace(checkout)

    return make


def test_merging_a_promotion_applies_the_target_environment(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    make = factory(bed)
    opened = promote(bed.ws(), "dev", "demo")
    assert opened.merge_request is not None
    deploy_before = bed.deploy_head()
    assert bed.state("demo").services["api"].template_tag == "1.0.0"

    delivery = gitlab.merge(GITLAB_PROJECT, opened.merge_request.iid)
    results = handle_gitlab_webhook(make, delivery.headers, delivery.body)

    assert [r.env for r in results] == ["demo"]
    assert results[0].commit is not None and results[0].commit == bed.deploy_head()
    assert bed.deploy_head() != deploy_before
    api = bed.state("demo").services["api"]
    assert (api.template_tag, api.image) == ("1.1.0", "registry.example.com/shop/api:1.1")
    message = git(bed.deploy, "log", "-1", "--format=%B", "main")
    assert "Configcenter-Env: demo" in message
    # the serve checkout followed the merge
    merged = git(bed.origin, "rev-parse", "main").strip()
    assert git(bed.serve_checkout(), "rev-parse", "HEAD").strip() == merged
    # and the same delivery again is a no-op apply, not a second commit
    again = handle_gitlab_webhook(make, delivery.headers, delivery.body)
    assert again[0].commit is None and bed.deploy_head() == results[0].commit


def test_a_wrong_webhook_token_runs_nothing(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    make = factory(bed)
    opened = promote(bed.ws(), "dev", "demo")
    assert opened.merge_request is not None
    delivery = gitlab.merge(GITLAB_PROJECT, opened.merge_request.iid)
    serve_head = git(bed.serve_checkout(), "rev-parse", "HEAD").strip()
    deploy_before = bed.deploy_head()

    forged = {**delivery.headers, "X-Gitlab-Token": "guessed"}
    with pytest.raises(WebhookUnauthorized) as caught:
        handle_gitlab_webhook(make, forged, delivery.body)
    assert caught.value.status == 401
    assert gitlab.webhook_token is not None
    assert gitlab.webhook_token not in str(caught.value)
    missing = {k: v for k, v in delivery.headers.items() if k != "X-Gitlab-Token"}
    with pytest.raises(WebhookUnauthorized):
        handle_gitlab_webhook(make, missing, delivery.body)

    assert bed.deploy_head() == deploy_before
    assert git(bed.serve_checkout(), "rev-parse", "HEAD").strip() == serve_head


def test_a_push_to_the_default_branch_applies_auto_apply_environments(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    make = factory(bed)
    before = git(bed.origin, "rev-parse", "main").strip()
    bed.change(
        "environments/dev/api.yaml",
        "template: 1.2.0\nimage: {ref: registry.example.com/shop/api:1.2}\n"
        "values:\n  FEATURE_FLAGS: checkout-v2\n",
        "dev: api 1.2.0",
    )

    delivery = gitlab.push_event(GITLAB_PROJECT, "main", before)
    results = handle_gitlab_webhook(make, delivery.headers, delivery.body)

    assert [r.env for r in results] == ["dev"]  # only dev has auto_apply: true
    assert bed.state("dev").services["api"].template_tag == "1.2.0"
    assert bed.state("demo").services["api"].template_tag == "1.0.0"


def test_events_that_ask_for_nothing_do_nothing(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    make = factory(bed)
    deploy_before = bed.deploy_head()
    work = bed.root / "feature-work"
    git(bed.root, "clone", "-q", str(bed.origin), str(work))
    git(work, "checkout", "-q", "-b", "feature/readme")
    (work / "README").write_text("notes\n")
    git(work, "add", "README")
    git(work, "commit", "-q", "-m", "notes")
    git(work, "push", "-q", "origin", "feature/readme")
    gitlab.insert_open_merge_request(GITLAB_PROJECT, "feature/readme", "main", "Notes")

    merged = gitlab.merge(GITLAB_PROJECT, 1)  # not a promotion branch
    push = gitlab.push_event(GITLAB_PROJECT, "feature/readme", "0" * 40)  # not the default

    assert handle_gitlab_webhook(make, merged.headers, merged.body) == []
    assert handle_gitlab_webhook(make, push.headers, push.body) == []
    assert bed.deploy_head() == deploy_before


def test_serve_passes_a_workspace_it_already_updated(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    checkout = bed.serve_checkout()
    opened = promote(bed.ws(), "dev", "demo")
    assert opened.merge_request is not None
    delivery = gitlab.merge(GITLAB_PROJECT, opened.merge_request.iid)
    event = parse_gitlab_event(delivery.headers, delivery.body)

    with pytest.raises(PromotionError, match="is not on main"):
        handle_gitlab_event(Workspace(checkout), event)  # not pulled yet
    git(checkout, "pull", "-q", "--ff-only")
    results = handle_gitlab_event(Workspace(checkout), event)

    assert [r.env for r in results] == ["demo"]
    assert results.runs == [results[0].run_id]
    assert results.summary.startswith("demo: succeeded (")
    assert bed.state("demo").services["api"].template_tag == "1.1.0"


def test_an_update_of_a_merged_promotion_applies_nothing(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    """GitLab sends `action: update` with `state: merged` for a label, time spent or a
    thread on an old MR; only the merge event itself applies the target."""
    bed, gitlab = gitlab_bed
    make = factory(bed)
    opened = promote(bed.ws(), "dev", "demo")
    assert opened.merge_request is not None
    iid = opened.merge_request.iid
    merged = gitlab.merge(GITLAB_PROJECT, iid)
    assert [r.env for r in handle_gitlab_webhook(make, merged.headers, merged.body)] == ["demo"]
    applied = bed.deploy_head()
    # Later, main changes demo (not yet applied), and someone labels the old MR.
    git(bed.config, "pull", "-q", "origin", "main")
    bed.change(
        "environments/demo/api.yaml",
        "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\n",
        "demo back to 1.0.0",
    )
    labelled = gitlab.label_event(GITLAB_PROJECT, iid, ["reviewed"])
    event = parse_gitlab_event(labelled.headers, labelled.body)
    assert (event.action, event.state, event.merged) == ("update", "merged", False)

    results = handle_gitlab_webhook(make, labelled.headers, labelled.body)

    assert results == [] and "only the merge applies" in results.summary
    assert bed.deploy_head() == applied
    assert bed.state("demo").services["api"].template_tag == "1.1.0"


def test_forge_project_may_be_the_numeric_id(
    gitlab_bed: tuple[PromotionBed, GitLabDouble],
) -> None:
    bed, gitlab = gitlab_bed
    project_id = gitlab.project(GITLAB_PROJECT).id
    text = (bed.config / "configcenter.yaml").read_text()
    bed.change(
        "configcenter.yaml",
        text.replace(f"project: {GITLAB_PROJECT}", f'project: "{project_id}"'),
        "forge.project by id",
    )
    make = factory(bed)
    opened = promote(bed.ws(), "dev", "demo")
    assert opened.merge_request is not None
    merged = gitlab.merge(GITLAB_PROJECT, opened.merge_request.iid)

    results = handle_gitlab_webhook(make, merged.headers, merged.body)

    assert [r.env for r in results] == ["demo"]
    assert bed.state("demo").services["api"].template_tag == "1.1.0"
    # Another project's hook (same path spelled differently is the same project).
    other = merged.payload
    other["project"] = dict(other["project"], id=project_id + 100, path_with_namespace="x/y")
    ignored = handle_gitlab_webhook(make, merged.headers, json.dumps(other).encode())
    assert ignored == [] and f"not forge.project '{project_id}'" in ignored.summary
