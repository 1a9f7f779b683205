"""Webhooks from the GitLab double: a merged promotion applies its target, a push applies dev.

Each delivery goes the one way serve takes it: stored as a job (a second
delivery of the same event is a duplicate), then carried out by a worker, which
fast-forwards serve's checkout and applies through the triggers use case. The
token check in front of it is serve's (tests/serve/test_serve_http.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from configcenter.serve import ServeOptions, build
from configcenter.serve.engine import Engine
from configcenter.serve.handlers import gitlab_job, run_job
from configcenter.usecases.promote import PromotionError, promote
from configcenter.usecases.triggers import handle_gitlab_event
from configcenter.usecases.webhooks import parse_gitlab_event
from configcenter.usecases.workspace import Workspace
from tests.support.configrepo import git
from tests.support.gitlab_double import GitLabDouble, WebhookDelivery
from tests.support.promote_fixtures import GITLAB_PROJECT, PromotionBed


@dataclass
class Outcome:
    state: str  # done | failed | ignored, or "duplicate" when serve stored nothing
    runs: list[str]
    note: str


@dataclass
class Serve:
    """serve's engine on the bed's serve checkout, its jobs carried out in this process."""

    engine: Engine

    def deliver(self, delivery: WebhookDelivery) -> Outcome:
        event = parse_gitlab_event(delivery.headers, delivery.body)
        if not self.engine.submit(gitlab_job(event, delivery.headers, delivery.body)):
            return Outcome("duplicate", [], "")
        job = self.engine.jobs.claim(self.engine.identity)
        assert job is not None
        state, runs, note = run_job(self.engine, job)
        self.engine.jobs.finish(job.id, state, runs, note)
        return Outcome(state, runs, note)


@pytest.fixture
def serve(gitlab_bed: tuple[PromotionBed, GitLabDouble]) -> Iterator[Serve]:
    bed, _ = gitlab_bed
    engine, _app = build(Workspace(bed.serve_checkout()), ServeOptions(workers=1, identity="t"))
    try:
        yield Serve(engine)
    finally:
        engine.jobs.close()


def test_merging_a_promotion_applies_the_target_environment(
    gitlab_bed: tuple[PromotionBed, GitLabDouble], serve: Serve
) -> None:
    bed, gitlab = gitlab_bed
    opened = promote(bed.ws(), "dev", "demo")
    assert opened.merge_request is not None
    deploy_before = bed.deploy_head()
    assert bed.state("demo").services["api"].template_tag == "1.0.0"

    delivery = gitlab.merge(GITLAB_PROJECT, opened.merge_request.iid)
    outcome = serve.deliver(delivery)

    assert (outcome.state, len(outcome.runs)) == ("done", 1), outcome
    assert "demo: succeeded" in outcome.note and "dev:" not in outcome.note
    applied = bed.deploy_head()
    assert applied != deploy_before
    api = bed.state("demo").services["api"]
    assert (api.template_tag, api.image) == ("1.1.0", "registry.example.com/shop/api:1.1")
    message = git(bed.deploy, "log", "-1", "--format=%B", "main")
    assert "Configcenter-Env: demo" in message
    # the serve checkout followed the merge
    merged = git(bed.origin, "rev-parse", "main").strip()
    assert git(bed.serve_checkout(), "rev-parse", "HEAD").strip() == merged
    # and the same delivery again is a duplicate: nothing runs, no second commit
    assert serve.deliver(delivery).state == "duplicate"
    assert bed.deploy_head() == applied


def test_a_push_to_the_default_branch_applies_auto_apply_environments(
    gitlab_bed: tuple[PromotionBed, GitLabDouble], serve: Serve
) -> None:
    bed, gitlab = gitlab_bed
    before = git(bed.origin, "rev-parse", "main").strip()
    bed.change(
        "environments/dev/api.yaml",
        "template: 1.2.0\nimage: {ref: registry.example.com/shop/api:1.2}\n"
        "values:\n  FEATURE_FLAGS: checkout-v2\n",
        "dev: api 1.2.0",
    )

    delivery = gitlab.push_event(GITLAB_PROJECT, "main", before)
    outcome = serve.deliver(delivery)

    assert (outcome.state, len(outcome.runs)) == ("done", 1), outcome
    assert "dev: succeeded" in outcome.note  # only dev has auto_apply: true
    assert "demo:" not in outcome.note
    assert bed.state("dev").services["api"].template_tag == "1.2.0"
    assert bed.state("demo").services["api"].template_tag == "1.0.0"


def test_events_that_ask_for_nothing_do_nothing(
    gitlab_bed: tuple[PromotionBed, GitLabDouble], serve: Serve
) -> None:
    bed, gitlab = gitlab_bed
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

    not_promotion = serve.deliver(merged)
    assert (not_promotion.state, not_promotion.runs) == ("ignored", [])
    assert "is not a promotion branch" in not_promotion.note
    other_branch = serve.deliver(push)
    assert (other_branch.state, other_branch.runs) == ("ignored", [])
    assert "only pushes to the default branch 'main' apply" in other_branch.note
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
    gitlab_bed: tuple[PromotionBed, GitLabDouble], serve: Serve
) -> None:
    """GitLab sends `action: update` with `state: merged` for a label, time spent or a
    thread on an old MR; only the merge event itself applies the target."""
    bed, gitlab = gitlab_bed
    opened = promote(bed.ws(), "dev", "demo")
    assert opened.merge_request is not None
    iid = opened.merge_request.iid
    merged = gitlab.merge(GITLAB_PROJECT, iid)
    first = serve.deliver(merged)
    assert first.state == "done" and "demo: succeeded" in first.note
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

    outcome = serve.deliver(labelled)

    assert (outcome.state, outcome.runs) == (
        "ignored",
        [],
    ) and "only the merge applies" in outcome.note
    assert bed.deploy_head() == applied
    assert bed.state("demo").services["api"].template_tag == "1.1.0"


def test_forge_project_may_be_the_numeric_id(
    gitlab_bed: tuple[PromotionBed, GitLabDouble], serve: Serve
) -> None:
    bed, gitlab = gitlab_bed
    project_id = gitlab.project(GITLAB_PROJECT).id
    text = (bed.config / "configcenter.yaml").read_text()
    bed.change(
        "configcenter.yaml",
        text.replace(f"project: {GITLAB_PROJECT}", f'project: "{project_id}"'),
        "forge.project by id",
    )
    opened = promote(bed.ws(), "dev", "demo")
    assert opened.merge_request is not None
    merged = gitlab.merge(GITLAB_PROJECT, opened.merge_request.iid)

    outcome = serve.deliver(merged)

    assert outcome.state == "done" and "demo: succeeded" in outcome.note, outcome
    assert bed.state("demo").services["api"].template_tag == "1.1.0"
    # Another project's hook (same path spelled differently is the same project).
    other = merged.payload
    other["project"] = dict(other["project"], id=project_id + 100, path_with_namespace="x/y")
    headers = {**merged.headers, "Idempotency-Key": "another-projects-delivery"}
    ignored = serve.deliver(WebhookDelivery(headers, json.dumps(other).encode()))
    assert (ignored.state, ignored.runs) == ("ignored", [])
    assert f"not forge.project '{project_id}'" in ignored.note


def test_a_webhook_run_names_the_gitlab_user_who_merged_or_pushed(
    gitlab_bed: tuple[PromotionBed, GitLabDouble], serve: Serve
) -> None:
    """history's BY and the console's "who" are the run's actor: for a webhook it is the
    GitLab user of the event (`user.username` of a merge, `user_username` of a push)."""
    bed, gitlab = gitlab_bed
    opened = promote(bed.ws(), "dev", "demo")
    assert opened.merge_request is not None
    merged = serve.deliver(gitlab.merge(GITLAB_PROJECT, opened.merge_request.iid))
    git(bed.config, "checkout", "-q", "main")
    git(bed.config, "pull", "-q", "--ff-only", "origin", "main")
    before = git(bed.origin, "rev-parse", "main").strip()
    bed.change(
        "environments/dev/api.yaml",
        "template: 1.2.0\nimage: {ref: registry.example.com/shop/api:1.2}\n"
        "values:\n  FEATURE_FLAGS: checkout-v2\n",
        "dev: api 1.2.0",
    )
    pushed = serve.deliver(gitlab.push_event(GITLAB_PROJECT, "main", before))

    actors = []
    for outcome in (merged, pushed):
        assert (outcome.state, len(outcome.runs)) == ("done", 1), outcome
        run = serve.engine.run_store.get(outcome.runs[0])
        assert run is not None
        actors.append(run.actor)
    assert actors == [
        f"gitlab merge request !{opened.merge_request.iid} by root",
        "gitlab push to main by root",
    ]


def test_serve_follows_a_promotion_branch_replaced_by_a_service_branch(
    gitlab_bed: tuple[PromotionBed, GitLabDouble], serve: Serve
) -> None:
    """serve's checkout saw promote/dev-to-demo; it was merged (and removed), then
    promote/dev-to-demo/api was pushed. Fetching must prune the stale remote-tracking
    branch, or git refuses the new one ("cannot lock ref") and every job fails."""
    bed, gitlab = gitlab_bed
    whole = promote(bed.ws(), "dev", "demo")
    assert whole.merge_request is not None
    serve.engine.update_config_repo()  # the checkout now tracks promote/dev-to-demo
    assert serve.deliver(gitlab.merge(GITLAB_PROJECT, whole.merge_request.iid)).state == "done"
    git(bed.config, "checkout", "-q", "main")
    git(bed.config, "pull", "-q", "--ff-only", "origin", "main")
    bed.change(
        "environments/dev/api.yaml",
        "template: 1.1.0\nimage: {ref: registry.example.com/shop/api:1.1.1}\n",
        "dev: api 1.1.1",
    )
    bed.apply("dev")
    one = promote(bed.ws(), "dev", "demo", service="api")
    assert one.merge_request is not None, one.message
    # While that request is open, a push to main: serve fetches, the new branch included.
    before = git(bed.origin, "rev-parse", "main").strip()
    bed.change("NOTES.md", "a note\n", "a note")

    pushed = serve.deliver(gitlab.push_event(GITLAB_PROJECT, "main", before))

    assert pushed.state in ("done", "ignored"), pushed.note
    merged = serve.deliver(gitlab.merge(GITLAB_PROJECT, one.merge_request.iid))
    assert merged.state == "done", merged.note
    assert "demo: succeeded" in merged.note
