"""GitLab's documented payloads through the parser, the job naming and the forge adapter,
and the GitLab double checked against them (tests/fixtures/README.md names the pages)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from configcenter.adapters.gitlab_forge import GitLabForge, to_merge_request
from configcenter.serve.handlers import gitlab_job
from configcenter.usecases.webhooks import UnsupportedEvent, parse_gitlab_event
from tests.support.configrepo import git
from tests.support.gitlab_double import GitLabDouble
from tests.support.payloads import delivery, load, missing_fields

PUSH = "gitlab/push_hook.json"
MERGE = "gitlab/merge_request_hook_merge.json"


def test_push_hook() -> None:
    headers, body = delivery(PUSH)
    event = parse_gitlab_event(headers, body)

    assert (event.kind, event.branch, event.project, event.project_id) == (
        "push",
        "master",
        "mike/diaspora",
        15,
    )
    assert event.after == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    assert event.matches_project("15") and event.matches_project("Mike/Diaspora")
    assert not event.matches_project("16") and not event.matches_project("mike/other")
    assert event.natural_key == (
        "push:15:refs/heads/master:95790bf891e76fee5e1747ab589903a6a1f80f22:"
        "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    )


def test_merge_request_hooks_only_the_merge_is_a_merge() -> None:
    opened = parse_gitlab_event(*delivery("gitlab/merge_request_hook_open.json"))
    merged = parse_gitlab_event(*delivery(MERGE))
    updated = parse_gitlab_event(*delivery("gitlab/merge_request_hook_update_merged.json"))
    system = parse_gitlab_event(*delivery("gitlab/system_hook_merge_request.json"))

    assert (opened.action, opened.merged) == ("open", False)
    assert (merged.action, merged.state, merged.merged) == ("merge", "merged", True)
    assert merged.merge_commit_sha == "5a2a9f8e0c71f8a2e3e8c6f1b0f3b1d0c9e8a7b6"
    assert merged.project_id == 1 and merged.project == "gitlabhq/gitlab-test"
    assert merged.natural_key == "merge:1:!1:5a2a9f8e0c71f8a2e3e8c6f1b0f3b1d0c9e8a7b6"
    assert (updated.action, updated.state, updated.merged) == ("update", "merged", False)
    assert updated.natural_key is None
    assert system.merged and system.iid == 1


@pytest.mark.parametrize("rel", ["gitlab/tag_push_hook.json", "gitlab/note_hook.json"])
def test_events_serve_does_not_act_on_are_unsupported(rel: str) -> None:
    with pytest.raises(UnsupportedEvent):
        parse_gitlab_event(*delivery(rel))


def test_jobs_are_named_by_idempotency_key_else_by_the_natural_key() -> None:
    headers, body = delivery(PUSH)
    with_key = gitlab_job(parse_gitlab_event(headers, body), headers, body)
    bare_headers, _ = delivery(PUSH, idempotency_key=True)
    resent = {**bare_headers, "X-Gitlab-Event-UUID": "ffffffff-0000-4000-8000-00000000000f"}
    first = gitlab_job(parse_gitlab_event(bare_headers, body), bare_headers, body)
    again = gitlab_job(parse_gitlab_event(resent, body), resent, body)

    assert with_key.id == f"gitlab:{headers['Idempotency-Key']}"
    assert first.id == again.id == "gitlab:" + str(parse_gitlab_event(headers, body).natural_key)


def test_the_doubles_deliveries_have_the_real_headers_and_fields(
    gitlab_server: GitLabDouble, tmp_path: Path
) -> None:
    repo = tmp_path / "shop.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(repo))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(repo), str(work))
    (work / "a.txt").write_text("a\n")
    git(work, "add", "a.txt")
    git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a")
    git(work, "push", "-q", "origin", "main")
    git(work, "checkout", "-q", "-b", "promote/dev-to-demo")
    (work / "b.txt").write_text("b\n")
    git(work, "add", "b.txt")
    git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "b")
    git(work, "push", "-q", "origin", "promote/dev-to-demo")
    gitlab_server.add_project("ops/shop", repo)
    push = gitlab_server.push_event("ops/shop", "main", "0" * 40)
    mr = gitlab_server.insert_open_merge_request("ops/shop", "promote/dev-to-demo", "main", "t")
    gitlab_server.label_event("ops/shop", mr["iid"], ["promotion"])
    merge = gitlab_server.merge("ops/shop", mr["iid"])
    labelled = gitlab_server.label_event("ops/shop", mr["iid"], ["qa"])

    real_push, real_merge = load(PUSH), load(MERGE)
    real_update = load("gitlab/merge_request_hook_update_merged.json")
    wanted_headers = set(real_push["headers"]) - {"Content-Type"}
    assert wanted_headers <= set(push.headers) and wanted_headers <= set(merge.headers)
    read = [
        "object_kind",
        "ref",
        "before",
        "after",
        "project_id",
        "project.id",
        "project.path_with_namespace",
        "user_username",
        "commits[].id",
        "total_commits_count",
    ]
    assert missing_fields(real_push["body"], push.payload, read) == []
    mr_read = [
        "object_kind",
        "user.username",
        "project.id",
        "project.path_with_namespace",
        "object_attributes.iid",
        "object_attributes.action",
        "object_attributes.state",
        "object_attributes.source_branch",
        "object_attributes.target_branch",
        "object_attributes.merge_commit_sha",
        "object_attributes.last_commit.id",
        "object_attributes.title",
        "object_attributes.labels[].title",
        "labels[].title",
        "changes.state_id.current",
    ]
    assert missing_fields(real_merge["body"], merge.payload, mr_read) == []
    update_read = ["object_attributes.action", "object_attributes.state", "changes.labels.current"]
    assert missing_fields(real_update["body"], labelled.payload, update_read) == []
    assert labelled.payload["object_attributes"]["state"] == "merged"
    # Per request, as GitLab: two posts of one delivery never share X-Gitlab-Webhook-UUID.
    assert merge.headers["X-Gitlab-Webhook-UUID"] != labelled.headers["X-Gitlab-Webhook-UUID"]


def test_merge_request_rest_body_maps_and_the_double_answers_the_same_fields(
    gitlab_server: GitLabDouble, tmp_path: Path
) -> None:
    real = load("gitlab/merge_request_rest.json")["body"]
    mapped = to_merge_request(real)
    assert (mapped.iid, mapped.state, mapped.draft, mapped.labels) == (133, "opened", False, ())
    assert mapped.web_url.endswith("/-/merge_requests/133")

    repo = tmp_path / "r.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(repo))
    work = tmp_path / "w"
    git(tmp_path, "clone", "-q", str(repo), str(work))
    identity = ("-c", "user.name=t", "-c", "user.email=t@t")
    git(work, *identity, "commit", "-q", "--allow-empty", "-m", "a")
    git(work, "push", "-q", "origin", "main", "main:feature")
    gitlab_server.add_project("ops/r", repo)
    ours = gitlab_server.insert_open_merge_request("ops/r", "feature", "main", "t")
    fields = [
        "iid",
        "web_url",
        "source_branch",
        "target_branch",
        "title",
        "description",
        "draft",
        "work_in_progress",
        "state",
        "labels",
        "sha",
        "merge_commit_sha",
    ]
    assert missing_fields(real, ours, fields) == []


def test_the_forge_works_under_a_path_prefix_and_waits_out_a_429(tmp_path: Path) -> None:
    real = load("gitlab/rate_limited.json")
    repo = tmp_path / "r.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(repo))
    double = GitLabDouble(token="glpat-prefix", path_prefix="/gitlab")
    double.start()
    try:
        double.add_project("ops/r", repo)
        assert double.url.endswith("/gitlab")
        forge = GitLabForge(double.url, "ops/r", "glpat-prefix")
        double.throttle(1, retry_after=1)
        started = time.monotonic()

        assert forge.find_open("feature", "main") is None

        assert time.monotonic() - started >= 1.0, "python-gitlab honours Retry-After"
        statuses = [path for method, path in double.requests if method == "GET"]
        assert len(statuses) >= 2 and all(p.startswith("/gitlab/api/v4/") for p in statuses)
        bare = GitLabForge(double.url.removesuffix("/gitlab"), "ops/r", "glpat-prefix")
        with pytest.raises(Exception, match="not found"):
            bare.find_open("feature", "main")
    finally:
        double.stop()
    assert real["status"] == 429 and "Retry-After" in real["headers"]
    assert json.dumps(real["body"]) == json.dumps("Retry later\n")
