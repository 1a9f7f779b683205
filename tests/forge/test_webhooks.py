"""GitLab webhook verification and parsing, on deliveries built by the GitLab double."""

from __future__ import annotations

import json

import pytest

from configcenter.usecases.webhooks import (
    UnsupportedEvent,
    WebhookError,
    parse_gitlab_event,
    verify_gitlab_token,
)
from tests.support.gitlab_double import GitLabDouble, WebhookDelivery
from tests.support.gitlab_fixtures import GITLAB_PROJECT_PATH, GitLabConfigRepo


@pytest.fixture
def merged_delivery(
    gitlab_server: GitLabDouble, gitlab_config_repo: GitLabConfigRepo
) -> WebhookDelivery:
    gitlab_config_repo.commit_on("promote/dev-to-demo", "api.yaml", "template: 1.5.0\n", "Pin")
    mr = gitlab_server.insert_open_merge_request(
        GITLAB_PROJECT_PATH, "promote/dev-to-demo", "demo", "Promote dev to demo"
    )
    return gitlab_server.merge(GITLAB_PROJECT_PATH, mr["iid"])


def test_token_verification() -> None:
    assert verify_gitlab_token("s3cret-token", "s3cret-token")
    assert not verify_gitlab_token("s3cret-token", "s3cret-tokeN")
    assert not verify_gitlab_token("s3cret-token", "s3cret")
    assert not verify_gitlab_token("s3cret-token", "")
    assert not verify_gitlab_token("s3cret-token", None)
    assert verify_gitlab_token("sécret", "sécret")  # non-ASCII compares as UTF-8 bytes
    with pytest.raises(WebhookError, match="secret is empty"):
        verify_gitlab_token("", "anything")


def test_merged_merge_request_event(
    merged_delivery: WebhookDelivery, gitlab_config_repo: GitLabConfigRepo
) -> None:
    event = parse_gitlab_event(merged_delivery.headers, merged_delivery.body)

    assert event.kind == "merge_request"
    assert event.merged
    assert (event.iid, event.action, event.state) == (1, "merge", "merged")
    assert (event.source_branch, event.target_branch) == ("promote/dev-to-demo", "demo")
    assert event.merge_commit_sha == gitlab_config_repo.branch_sha("demo")
    assert event.title == "Promote dev to demo"
    assert event.project == GITLAB_PROJECT_PATH
    assert event.delivery_id == merged_delivery.headers["X-Gitlab-Event-UUID"]
    assert event.idempotency_key == merged_delivery.headers["Idempotency-Key"]
    assert event.ref is None and event.branch is None


def test_push_event(gitlab_server: GitLabDouble, gitlab_config_repo: GitLabConfigRepo) -> None:
    before = gitlab_config_repo.branch_sha("dev")
    after = gitlab_config_repo.commit_on("dev", "api.yaml", "replicas: 3\n", "Scale api")

    delivery = gitlab_server.push_event(GITLAB_PROJECT_PATH, "dev", before)
    event = parse_gitlab_event(delivery.headers, delivery.body)

    assert event.kind == "push"
    assert (event.ref, event.branch, event.before, event.after) == (
        "refs/heads/dev",
        "dev",
        before,
        after,
    )
    assert event.iid is None and not event.merged
    assert delivery.payload["commits"][0]["id"] == after
    assert delivery.payload["commits"][0]["added"] == ["api.yaml"]
    assert delivery.payload["total_commits_count"] == 1


def test_headers_are_case_insensitive_and_delivery_id_falls_back(
    merged_delivery: WebhookDelivery,
) -> None:
    headers = {k.lower(): v for k, v in merged_delivery.headers.items()}
    del headers["x-gitlab-event-uuid"]

    event = parse_gitlab_event(headers, merged_delivery.body)

    assert event.delivery_id == merged_delivery.headers["X-Gitlab-Webhook-UUID"]
    system = {"X-Gitlab-Event": "System Hook"}
    assert parse_gitlab_event(system, merged_delivery.body).merged


def test_malformed_bodies_are_refused_with_the_reason(merged_delivery: WebhookDelivery) -> None:
    mr_headers = {"X-Gitlab-Event": "Merge Request Hook"}
    payload = merged_delivery.payload

    def without(key: str) -> bytes:
        attributes = {k: v for k, v in payload["object_attributes"].items() if k != key}
        return json.dumps({**payload, "object_attributes": attributes}).encode()

    cases: list[tuple[dict[str, str], bytes, str]] = [
        (mr_headers, b"{not json", "not JSON"),
        (mr_headers, b"\xff\xfe", "not JSON"),
        (mr_headers, b"[1, 2]", "JSON list, not an object"),
        (mr_headers, b"{}", "no object_kind"),
        (mr_headers, json.dumps({"object_kind": "merge_request"}).encode(), "object_attributes"),
        (mr_headers, without("iid"), "iid"),
        (mr_headers, without("target_branch"), "'target_branch'"),
        (
            {"X-Gitlab-Event": "Push Hook"},
            json.dumps(
                {"object_kind": "push", "ref": "refs/heads/dev", "before": "0" * 40}
            ).encode(),
            "'after'",
        ),
        ({"X-Gitlab-Event": "Push Hook"}, merged_delivery.body, "does not match"),
    ]
    for headers, body, reason in cases:
        with pytest.raises(WebhookError, match=reason):
            parse_gitlab_event(headers, body)


def test_other_gitlab_events_are_unsupported_not_malformed() -> None:
    body = json.dumps({"object_kind": "note", "object_attributes": {"note": "hi"}}).encode()

    with pytest.raises(UnsupportedEvent, match="'note'"):
        parse_gitlab_event({"X-Gitlab-Event": "Note Hook"}, body)
