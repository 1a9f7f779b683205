"""GitLab webhooks: token check and parsing, with no web framework in sight.

`serve` (or anything else that receives HTTP) hands over the headers and raw
body; this module says whether the sender knew the shared secret and what
happened: a push to a branch, or a merge request event. Payload fields follow
GitLab's webhook events reference
(https://docs.gitlab.com/ee/user/project/integrations/webhook_events.html).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from configcenter.core.errors import UserError

EventKind = Literal["push", "merge_request"]

#: `X-Gitlab-Event` values per payload `object_kind`; a system hook sends the
#: same payloads under "System Hook".
HOOK_HEADERS: dict[str, EventKind] = {
    "Push Hook": "push",
    "Merge Request Hook": "merge_request",
}
SYSTEM_HOOK = "System Hook"
BRANCH_PREFIX = "refs/heads/"


class WebhookError(UserError):
    """The request is not a usable GitLab webhook; the message says what is wrong."""


class UnsupportedEvent(WebhookError):
    """A well-formed GitLab event of a kind configcenter does not act on (answer 2xx, ignore)."""


@dataclass(frozen=True)
class GitLabEvent:
    """What a GitLab webhook reported. MR fields are None for pushes, push fields for MRs."""

    kind: EventKind
    delivery_id: str | None
    project: str | None  # path_with_namespace, e.g. "ops/shop-config"
    idempotency_key: str | None = None
    project_id: int | None = None  # the project's numeric id (project.id / project_id)
    user: str | None = None  # who pushed or merged (user_username / user.username)
    # merge_request
    iid: int | None = None
    action: str | None = None  # open, update, merge, close, reopen, approved, ...
    state: str | None = None  # opened, merged, closed, locked
    source_branch: str | None = None
    target_branch: str | None = None
    merged: bool = False  # this event is the merge itself (action "merge")
    merge_commit_sha: str | None = None
    last_commit: str | None = None  # object_attributes.last_commit.id
    title: str | None = None
    # push
    ref: str | None = None
    before: str | None = None
    after: str | None = None

    @property
    def natural_key(self) -> str | None:
        """What makes two deliveries the same event when GitLab sends no Idempotency-Key.

        A push is the move of `ref` from `before` to `after` (a later force-push
        back to an older commit has another `before`, so it is a new event); a
        merge is MR `iid` merged as `merge_commit_sha` (the source head for
        fast-forward merges, which have none). Other merge request events apply
        nothing and have no natural key.
        """
        project = str(self.project_id) if self.project_id is not None else self.project or "?"
        if self.kind == "push":
            return f"push:{project}:{self.ref}:{self.before}:{self.after}"
        if self.merged:
            commit = self.merge_commit_sha or self.last_commit or "?"
            return f"merge:{project}:!{self.iid}:{commit}"
        return None

    def matches_project(self, configured: str) -> bool:
        """Whether the event is about forge.project, given as a numeric id or a full path.

        GitLab paths are case-insensitive, so the comparison is too. An event
        without project information matches (a hand-built test delivery).
        """
        wanted = configured.strip().strip("/")
        if not wanted or (self.project is None and self.project_id is None):
            return True
        if wanted.isdigit():
            return self.project_id is not None and int(wanted) == self.project_id
        return self.project is not None and self.project.casefold() == wanted.casefold()

    @property
    def branch(self) -> str | None:
        """The pushed branch name, or None for tags and MR events."""
        if self.ref is not None and self.ref.startswith(BRANCH_PREFIX):
            return self.ref.removeprefix(BRANCH_PREFIX)
        return None


def verify_gitlab_token(expected: str, header_value: str | None) -> bool:
    """Whether `X-Gitlab-Token` equals the configured secret, compared in constant time."""
    if not expected:
        raise WebhookError(
            "the webhook secret is empty, so any request would pass: configure a secret "
            "and enter the same value as the webhook's Secret token in GitLab"
        )
    if header_value is None:
        return False
    return hmac.compare_digest(expected.encode(), header_value.encode())


def parse_gitlab_event(headers: Mapping[str, str], body: bytes) -> GitLabEvent:
    """Parse a GitLab webhook request; WebhookError when it is malformed."""
    lowered = {name.lower(): value for name, value in headers.items()}
    header_event = lowered.get("x-gitlab-event")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise WebhookError(
            f"webhook body is not JSON ({error}): send GitLab's webhook payload as the body"
        ) from None
    if not isinstance(payload, dict):
        raise WebhookError(
            f"webhook body is a JSON {type(payload).__name__}, not an object: "
            "send GitLab's webhook payload as the body"
        )
    kind = payload.get("object_kind")
    if not isinstance(kind, str):
        raise WebhookError("webhook body has no object_kind: this is not a GitLab webhook payload")
    if kind not in ("push", "merge_request"):
        raise UnsupportedEvent(
            f"GitLab event {kind!r} ({header_event or 'no X-Gitlab-Event'}) is not acted on: "
            "only Push Hook and Merge Request Hook are"
        )
    if header_event not in (None, SYSTEM_HOOK) and HOOK_HEADERS.get(header_event or "") != kind:
        raise WebhookError(
            f"X-Gitlab-Event {header_event!r} does not match the payload's object_kind "
            f"{kind!r}: the request was altered or built by hand"
        )
    project = payload.get("project")
    delivery_id = lowered.get("x-gitlab-event-uuid") or lowered.get("x-gitlab-webhook-uuid")
    idempotency_key = lowered.get("idempotency-key")
    project_path = (
        _optional_str(project.get("path_with_namespace")) if isinstance(project, dict) else None
    )
    project_id = _optional_int(project.get("id")) if isinstance(project, dict) else None
    if project_id is None:
        project_id = _optional_int(payload.get("project_id"))
    user_of = payload.get("user")
    user = _optional_str(payload.get("user_username")) or (
        _optional_str(user_of.get("username")) if isinstance(user_of, dict) else None
    )
    if kind == "push":
        return GitLabEvent(
            kind="push",
            ref=_required_str(payload, "ref", "push"),
            before=_required_str(payload, "before", "push"),
            after=_required_str(payload, "after", "push"),
            delivery_id=delivery_id,
            idempotency_key=idempotency_key,
            project=project_path,
            project_id=project_id,
            user=user,
        )
    attributes = payload.get("object_attributes")
    if not isinstance(attributes, dict):
        raise WebhookError(
            "merge_request webhook has no object_attributes object: "
            "this is not a GitLab merge request payload"
        )
    iid = attributes.get("iid")
    if not isinstance(iid, int) or isinstance(iid, bool):
        raise WebhookError(
            f"merge_request webhook object_attributes.iid is {iid!r}, not an integer: "
            "this is not a GitLab merge request payload"
        )
    state = _required_str(attributes, "state", "merge_request object_attributes")
    action = _optional_str(attributes.get("action"))
    last_commit = attributes.get("last_commit")
    return GitLabEvent(
        kind="merge_request",
        iid=iid,
        action=action,
        state=state,
        source_branch=_required_str(attributes, "source_branch", "merge_request object_attributes"),
        target_branch=_required_str(attributes, "target_branch", "merge_request object_attributes"),
        # Only the merge itself: GitLab also sends `update` (label, assignee,
        # time spent) and other actions for MRs that are long merged, with
        # state "merged"; those must not apply anything again.
        merged=action == "merge",
        merge_commit_sha=_optional_str(attributes.get("merge_commit_sha")),
        last_commit=_optional_str(last_commit.get("id")) if isinstance(last_commit, dict) else None,
        title=_optional_str(attributes.get("title")),
        delivery_id=delivery_id,
        idempotency_key=idempotency_key,
        project=project_path,
        project_id=project_id,
        user=user,
    )


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _required_str(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise WebhookError(
            f"{where} webhook field {key!r} is {value!r}, not a non-empty string: "
            "this is not a GitLab webhook payload"
        )
    return value


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
