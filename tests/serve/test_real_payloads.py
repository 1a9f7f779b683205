"""Every webhook kind serve accepts, with the documented bodies (tests/fixtures/README.md)."""

from __future__ import annotations

import json

from tests.serve.conftest import Served
from tests.support.helpers import poll
from tests.support.payloads import delivery, load
from tests.support.serve_fixtures import http


def post(served: Served, headers: dict[str, str], body: bytes, path: str = "/hooks/gitlab") -> dict:
    result = http("POST", served.url + path, headers=headers, body=body)
    assert result.status == 202, (result.status, result.body[:300])
    answer: dict = result.json()
    return answer


def test_documented_gitlab_and_registry_bodies_are_parsed_queued_and_explained(
    served: Served,
) -> None:
    token = served.tokens["webhook"]
    queued = {}
    for rel in (
        "gitlab/push_hook.json",
        "gitlab/merge_request_hook_open.json",
        "gitlab/merge_request_hook_merge.json",
        "gitlab/merge_request_hook_update_merged.json",
        "gitlab/system_hook_merge_request.json",
    ):
        headers, body = delivery(rel, token)
        assert post(served, headers, body)["accepted"] == 1, rel
        queued[rel] = f"gitlab:{headers['Idempotency-Key']}"
    for rel in ("gitlab/tag_push_hook.json", "gitlab/note_hook.json"):
        answer = post(served, *delivery(rel, token))
        assert answer["accepted"] is False and "not acted on" in answer["ignored"], rel
    # GitLab before 17.4: no Idempotency-Key; a resend is recognised by the push itself.
    bare, body = delivery("gitlab/push_hook.json", token, idempotency_key=True)
    assert post(served, bare, body)["accepted"] == 1
    resent = {**bare, "X-Gitlab-Event-UUID": "0f0f0f0f-0000-4000-8000-000000000000"}
    assert post(served, resent, body)["duplicates"] == 1
    registry = load("registry/notification_push.json")
    headers = {**registry["headers"], "Authorization": f"Bearer {served.tokens['registry']}"}
    assert (
        post(served, headers, json.dumps(registry["body"]).encode(), "/hooks/registry")["accepted"]
        == 1
    )

    done = poll(served.settled, 120, "every job to finish")
    jobs = {job["id"]: job for job in done["jobs"]}
    assert {job["state"] for job in jobs.values()} == {"ignored"}, jobs
    notes = {rel: jobs[job_id]["note"] for rel, job_id in queued.items()}
    assert "only pushes to the default branch 'main' apply" in notes["gitlab/push_hook.json"]
    assert "is not its merge" in notes["gitlab/merge_request_hook_open.json"]
    assert "is not its merge" in notes["gitlab/merge_request_hook_update_merged.json"]
    merge_note = notes["gitlab/merge_request_hook_merge.json"]
    assert "targets 'master', not the default branch" in merge_note
    assert "targets 'master'" in notes["gitlab/system_hook_merge_request.json"]
    assert "registry:320678d8-ca14-430f-8bb6-4ca139cd83f7" in jobs
    assert served.runs(kind="apply") == []
