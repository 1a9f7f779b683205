"""Every webhook kind serve accepts, with the documented bodies (tests/fixtures/README.md)."""

from __future__ import annotations

import json
import uuid

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
    # GitLab before 17.4: no Idempotency-Key; a resend is recognised by the push itself
    # (another push: the same one without its key is a retry of the first delivery).
    bare, _ = delivery("gitlab/push_hook.json", token, idempotency_key=True)
    body = json.dumps({**load("gitlab/push_hook.json")["body"], "after": "d" * 40}).encode()
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


def test_a_delivery_sent_again_after_its_job_failed_runs_again(served: Served) -> None:
    """GitLab's "Resend request" after a failed job (serve answered 202, so GitLab never
    retries by itself) is the operator's retry: the job is queued again, not a duplicate.
    A resend of a job that is queued, running or done stays a duplicate."""
    token = served.tokens["webhook"]
    data = load("gitlab/push_hook.json")
    # A push to the default branch whose commit the checkout never gets: the job fails.
    body = {**data["body"], "ref": "refs/heads/main", "after": "f" * 40}
    headers = {**data["headers"], "X-Gitlab-Token": token}
    raw = json.dumps(body).encode()
    job = f"gitlab:{headers['Idempotency-Key']}"
    assert post(served, headers, raw)["accepted"] == 1

    def ended(state_of: str) -> dict | None:
        found = {j["id"]: j for j in served.jobs()["jobs"]}.get(job)
        return found if found and found["state"] == state_of else None

    first = poll(lambda: ended("failed"), 120, "the push job to fail")
    assert "is not on main" in first["note"], first

    again = post(served, headers, raw)

    assert (again["accepted"], again["duplicate"]) == (1, False), again
    second = poll(
        lambda: (j := ended("failed")) and j["finished_at"] != first["finished_at"] and j,
        120,
        "the resent job to run (and fail) again",
    )
    assert "is not on main" in second["note"], second
    done_body = {**data["body"], "ref": "refs/heads/feature"}
    done_headers = {**headers, "Idempotency-Key": "b6c1a6ec-0000-4000-8000-000000000001"}
    done_raw = json.dumps(done_body).encode()
    assert post(served, done_headers, done_raw)["accepted"] == 1
    poll(served.settled, 120, "the feature push to be ignored")
    assert post(served, done_headers, done_raw)["duplicate"] is True


def test_one_delivery_is_one_job_whichever_of_its_identifiers_a_retry_carries(
    served: Served,
) -> None:
    """GitLab's webhook docs: `Idempotency-Key` stays the same on every retry of a delivery
    (17.4 and later), `X-Gitlab-Webhook-UUID` is new on every request, `X-Gitlab-Event-UUID`
    on every resend. A retry that lost the key (or carries only the UUIDs), or the key only
    now, is still the same delivery: one job. Two deliveries with different keys are two."""
    token = served.tokens["webhook"]
    headers, body = delivery("gitlab/push_hook.json", token)
    key = headers["Idempotency-Key"]
    assert post(served, headers, body)["accepted"] == 1

    def without(*names: str, **extra: str) -> dict[str, str]:
        kept = {k: v for k, v in headers.items() if k not in names}
        return {**kept, **{k.replace("_", "-"): v for k, v in extra.items()}}

    retries = {
        "event uuid only": without(
            "Idempotency-Key", "X-Gitlab-Webhook-UUID", X_Gitlab_Event_UUID=str(uuid.uuid4())
        ),
        "new request uuids, no key": without(
            "Idempotency-Key",
            X_Gitlab_Event_UUID=str(uuid.uuid4()),
            X_Gitlab_Webhook_UUID=str(uuid.uuid4()),
        ),
        "key only": without("X-Gitlab-Event-UUID", "X-Gitlab-Webhook-UUID"),
        "no identifier": without("Idempotency-Key", "X-Gitlab-Event-UUID", "X-Gitlab-Webhook-UUID"),
        "all of them again": headers,
    }
    for what, retry in retries.items():
        answer = post(served, retry, body)
        assert (answer["accepted"], answer["duplicate"]) == (0, True), (what, answer)

    # The other way round: delivered first without a key, then retried with one.
    data = load("gitlab/push_hook.json")
    other = json.dumps({**data["body"], "after": "e" * 40}).encode()
    assert post(served, without("Idempotency-Key"), other)["accepted"] == 1
    keyed = without(Idempotency_Key=str(uuid.uuid4()))
    assert post(served, keyed, other)["duplicate"] is True
    # Another delivery of the first push with a key of its own is another delivery.
    assert post(served, without(Idempotency_Key=str(uuid.uuid4())), body)["accepted"] == 1

    done = poll(served.settled, 120, "every job to finish")
    ids = sorted(job["id"] for job in done["jobs"] if job["source"] == "gitlab")
    assert len(ids) == 3, ids
    assert f"gitlab:{key}" in ids
    assert any(i.endswith(":" + "e" * 40) for i in ids), ids
