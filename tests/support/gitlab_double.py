"""A GitLab REST API v4 test double, backed by real bare Git repositories.

GitLab cannot run on the test machine, so the GitLab forge adapter is tested
against this server through python-gitlab, the same client it uses in
production. It follows GitLab's published contracts closely enough that the
adapter code works unchanged against the real service:

* Projects API, `GET /projects/:id` with a numeric id or a URL-encoded
  namespace path (https://docs.gitlab.com/ee/api/projects.html#get-a-single-project,
  https://docs.gitlab.com/ee/api/rest/#namespaced-paths).
* Merge requests API (https://docs.gitlab.com/ee/api/merge_requests.html):
  list project merge requests filtered by `state`, `source_branch`,
  `target_branch` (paginated with `page` / `per_page`, `X-Page`,
  `X-Total`, `X-Next-Page` and `Link` headers as in
  https://docs.gitlab.com/ee/api/rest/#pagination), get one by `iid`, create
  (`201`; `409 {"message": ["Another open merge request already exists for
  this source branch: !N"]}` when an open one has the same source and target
  branch; `422` for an identical source and target or a branch that does not
  exist; `400 {"error": "title is missing"}` for a missing required
  attribute; `remove_source_branch` becomes `force_remove_source_branch`, and
  `merge()` then deletes the source branch as GitLab does) and update (`title`,
  `description`, `labels`, `add_labels`,
  `remove_labels`, `target_branch`, `state_event`). Draft state follows the
  title, as GitLab does: a title starting with `Draft:`, `[Draft]` or
  `(Draft)` (any case) makes `draft` (and its deprecated alias
  `work_in_progress`) true.
* Notes API, `POST/GET /projects/:id/merge_requests/:merge_request_iid/notes`
  (https://docs.gitlab.com/ee/api/notes.html#create-new-merge-request-note).
* Authentication with the `PRIVATE-TOKEN` header (or `Authorization: Bearer`);
  a missing or wrong token gets `401 {"message": "401 Unauthorized"}`
  (https://docs.gitlab.com/ee/api/rest/authentication.html). Unknown projects
  and merge requests get `404 {"message": "404 Project Not Found"}` /
  `404 {"message": "404 Not found"}`.
* Webhook events (https://docs.gitlab.com/ee/user/project/integrations/webhook_events.html):
  `merge()` merges the source branch into the target branch of the backing
  bare repository with real git and returns the `Merge Request Hook` delivery
  GitLab would send; `push_event()` builds the `Push Hook` delivery from the
  repository's real commits. Headers as in
  https://docs.gitlab.com/ee/user/project/integrations/webhooks.html#delivery-headers.

Only what the configcenter flow uses is implemented; anything else answers
`404` so a new call in the adapter fails loudly here instead of passing
against an imagined API.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from tests.support.loopback_http import LoopbackServer

DRAFT_TITLE = re.compile(r"^\s*(\[draft\]|\(draft\)|draft:)\s*", re.IGNORECASE)
CONFLICT_MESSAGE = "Another open merge request already exists for this source branch: !{iid}"
GITLAB_VERSION = "17.5.0"
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Administrator",
    "GIT_AUTHOR_EMAIL": "admin@example.com",
    "GIT_COMMITTER_NAME": "Administrator",
    "GIT_COMMITTER_EMAIL": "admin@example.com",
}
USER = {
    "id": 1,
    "username": "root",
    "name": "Administrator",
    "state": "active",
    "avatar_url": None,
}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def is_draft_title(title: str) -> bool:
    return DRAFT_TITLE.match(title) is not None


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **GIT_IDENTITY}
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args],
        capture_output=True,
        text=True,
        env=env,
        check=check,
    )


class GitLabDoubleError(Exception):
    """A helper of the double (merge, push event) was asked for something impossible."""


@dataclass
class ApiError(Exception):
    status: int
    body: dict[str, Any]


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook request as GitLab would send it: headers plus the raw JSON body."""

    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    def post(self, url: str, timeout: float = 10.0) -> tuple[int, bytes]:
        """POST the delivery to a receiver; returns its status code and body.

        Each request carries a new `X-Gitlab-Webhook-UUID`, as GitLab's
        WebHookService sets it (`SecureRandom.uuid` per request); a retry of
        the same delivery keeps its `Idempotency-Key` and `X-Gitlab-Event-UUID`.
        """
        headers = {**self.headers, "X-Gitlab-Webhook-UUID": str(uuid.uuid4())}
        request = urllib.request.Request(url, data=self.body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def resend(self) -> WebhookDelivery:
        """The delivery as "Resend request" in the webhook's Recent events sends it again.

        Same body and `Idempotency-Key` (when the GitLab version sends one); a
        new request, so a new `X-Gitlab-Event-UUID`.
        """
        return WebhookDelivery(
            headers={**self.headers, "X-Gitlab-Event-UUID": str(uuid.uuid4())}, body=self.body
        )


@dataclass
class Project:
    id: int
    path_with_namespace: str
    repo: Path
    default_branch: str
    web_url: str
    next_iid: int = 1
    merge_requests: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path_with_namespace.rsplit("/", 1)[-1]

    def as_json(self, base_url: str) -> dict[str, Any]:
        namespace = self.path_with_namespace.rsplit("/", 1)[0]
        return {
            "id": self.id,
            "name": self.name,
            "path": self.name,
            "path_with_namespace": self.path_with_namespace,
            "name_with_namespace": self.path_with_namespace.replace("/", " / "),
            "description": "",
            "default_branch": self.default_branch,
            "visibility": "private",
            "web_url": self.web_url,
            "http_url_to_repo": f"{self.web_url}.git",
            "ssh_url_to_repo": f"git@127.0.0.1:{self.path_with_namespace}.git",
            "namespace": {"id": 1, "name": namespace, "path": namespace, "full_path": namespace},
            "merge_requests_enabled": True,
            "created_at": "2024-01-01T00:00:00.000Z",
            "_links": {"self": f"{base_url}/api/v4/projects/{self.id}"},
        }

    def hook_json(self) -> dict[str, Any]:
        """The `project` object of webhook payloads."""
        namespace = self.path_with_namespace.rsplit("/", 1)[0]
        return {
            "id": self.id,
            "name": self.name,
            "description": "",
            "web_url": self.web_url,
            "avatar_url": None,
            "git_ssh_url": f"git@127.0.0.1:{self.path_with_namespace}.git",
            "git_http_url": f"{self.web_url}.git",
            "namespace": namespace,
            "visibility_level": 0,
            "path_with_namespace": self.path_with_namespace,
            "default_branch": self.default_branch,
            "homepage": self.web_url,
            "url": f"{self.web_url}.git",
            "ssh_url": f"git@127.0.0.1:{self.path_with_namespace}.git",
            "http_url": f"{self.web_url}.git",
        }

    def branch_sha(self, branch: str) -> str | None:
        result = git(
            self.repo,
            "rev-parse",
            "--verify",
            "--quiet",
            f"refs/heads/{branch}^{{commit}}",
            check=False,
        )
        return result.stdout.strip() or None

    def open_conflict(self, mr: Mapping[str, Any]) -> dict[str, Any] | None:
        for other in self.merge_requests.values():
            if (
                other["iid"] != mr["iid"]
                and other["state"] == "opened"
                and other["source_branch"] == mr["source_branch"]
                and other["target_branch"] == mr["target_branch"]
            ):
                return other
        return None


def split_labels(value: object) -> list[str]:
    """GitLab takes labels as a comma-separated string (or an array); trims and dedups."""
    items = value if isinstance(value, list) else str(value).split(",")
    labels: list[str] = []
    for item in items:
        label = str(item).strip()
        if label and label not in labels:
            labels.append(label)
    return labels


class GitLabDouble:
    """The server and its state. Start with `start()`, register projects with `add_project`."""

    def __init__(
        self,
        token: str,
        webhook_token: str | None = None,
        *,
        idempotency_keys: bool = True,
        path_prefix: str = "",
    ) -> None:
        self.token = token
        self.webhook_token = webhook_token
        #: GitLab sends `Idempotency-Key` since 17.4; False models older versions.
        self.idempotency_keys = idempotency_keys
        #: A relative URL root (GitLab under `https://host/gitlab`): the API is at
        #: `<prefix>/api/v4`, and nothing answers without the prefix.
        self.path_prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
        self.instance_uuid = str(uuid.uuid4())
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._projects: dict[int, Project] = {}
        self._next_project_id = 1
        self._next_mr_id = 1
        self._next_note_id = 1
        self._throttled = 0
        self._retry_after = 1
        self._http = LoopbackServer("gitlab-double")

    # -- lifecycle -----------------------------------------------------------------

    @property
    def url(self) -> str:
        port = self._http.port
        if port is None:
            raise GitLabDoubleError("the GitLab double is not started: call start() first")
        return f"http://127.0.0.1:{port}{self.path_prefix}"

    def start(self) -> None:
        double = self

        class Handler(ApiHandler):
            server_double = double

        self._http.start(Handler)

    def stop(self) -> None:
        self._http.stop()

    # -- test-side helpers ---------------------------------------------------------

    def add_project(
        self, path_with_namespace: str, repo: Path, default_branch: str = "main"
    ) -> Project:
        """Serve `repo` (a bare Git repository on disk) as project `path_with_namespace`."""
        if not (repo / "HEAD").is_file():
            raise GitLabDoubleError(f"{repo} is not a bare Git repository")
        with self._lock:
            project = Project(
                id=self._next_project_id,
                path_with_namespace=path_with_namespace,
                repo=repo,
                default_branch=default_branch,
                web_url=f"{self.url}/{path_with_namespace}",
            )
            self._next_project_id += 1
            self._projects[project.id] = project
            return project

    def project(self, ref: str | int) -> Project:
        with self._lock:
            found = self._find_project(str(ref))
        if found is None:
            raise GitLabDoubleError(f"no project {ref!r} in the GitLab double")
        return found

    def merge_requests(self, project: str | int) -> list[dict[str, Any]]:
        """Every merge request of the project, oldest first (copies)."""
        with self._lock:
            return [
                json.loads(json.dumps(mr)) for mr in self.project(project).merge_requests.values()
            ]

    def notes(self, project: str | int, iid: int) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.project(project).notes.get(iid, []))

    def throttle(self, requests: int, retry_after: int = 1) -> None:
        """Answer the next `requests` API calls with GitLab's rate-limit response.

        GitLab's Rack::Attack throttle answers `429` with the plain-text body
        `Retry later` and `Retry-After` plus the `RateLimit-*` headers
        (https://docs.gitlab.com/ee/user/admin_area/settings/user_and_ip_rate_limits.html,
        "Response headers").
        """
        with self._lock:
            self._throttled = requests
            self._retry_after = retry_after

    def count_requests(self, method: str, path_suffix: str) -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and p.endswith(path_suffix))

    def insert_open_merge_request(
        self, project: str | int, source_branch: str, target_branch: str, title: str
    ) -> dict[str, Any]:
        """Create an MR behind the client's back, as another user or a racing run would."""
        with self._lock:
            proj = self.project(project)
            return self._create_mr(
                proj,
                {"source_branch": source_branch, "target_branch": target_branch, "title": title},
            )

    def merge(self, project: str | int, iid: int) -> WebhookDelivery:
        """Merge MR `iid` with a real merge commit in the bare repo; returns the MR hook."""
        with self._lock:
            proj = self.project(project)
            mr = proj.merge_requests.get(iid)
            if mr is None:
                raise GitLabDoubleError(f"no merge request !{iid} in {proj.path_with_namespace}")
            if mr["state"] != "opened":
                raise GitLabDoubleError(f"merge request !{iid} is {mr['state']}, not opened")
            if mr["draft"]:
                raise GitLabDoubleError(f"merge request !{iid} is a draft and cannot be merged")
            source = proj.branch_sha(mr["source_branch"])
            target = proj.branch_sha(mr["target_branch"])
            if source is None or target is None:
                raise GitLabDoubleError(f"a branch of merge request !{iid} no longer exists")
            tree = git(proj.repo, "merge-tree", "--write-tree", target, source, check=False)
            if tree.returncode != 0:
                raise GitLabDoubleError(f"merge request !{iid} has conflicts:\n{tree.stdout}")
            message = (
                f"Merge branch '{mr['source_branch']}' into '{mr['target_branch']}'\n\n"
                f"{mr['title']}\n\nSee merge request {proj.path_with_namespace}!{iid}\n"
            )
            tree_sha = tree.stdout.splitlines()[0].strip()
            commit = git(
                proj.repo, "commit-tree", tree_sha, "-p", target, "-p", source, "-m", message
            ).stdout.strip()
            git(proj.repo, "update-ref", f"refs/heads/{mr['target_branch']}", commit, target)
            if mr.get("force_remove_source_branch"):
                # GitLab deletes the source branch after the merge when the request asked.
                git(proj.repo, "update-ref", "-d", f"refs/heads/{mr['source_branch']}", source)
            stamp = now_iso()
            mr.update(
                state="merged",
                merged_at=stamp,
                updated_at=stamp,
                merged_by=USER,
                merge_user=USER,
                sha=source,
                merge_commit_sha=commit,
            )
            return self._merge_request_hook(proj, mr, action="merge", previous_state="opened")

    def label_event(self, project: str | int, iid: int, add: list[str]) -> WebhookDelivery:
        """Add labels to MR `iid` (in any state, merged included) as a user in the UI would.

        Returns the `Merge Request Hook` GitLab sends for it: action `update`,
        the MR's current `state` (still `merged` for a merged one) and
        `changes.labels`.
        """
        with self._lock:
            proj = self.project(project)
            mr = proj.merge_requests.get(iid)
            if mr is None:
                raise GitLabDoubleError(f"no merge request !{iid} in {proj.path_with_namespace}")
            before = list(mr["labels"])
            mr["labels"] = split_labels([*before, *add])
            mr["updated_at"] = now_iso()
            delivery = self._merge_request_hook(
                proj, mr, action="update", previous_state=mr["state"]
            )
            payload = delivery.payload
            payload["changes"] = {
                "labels": {
                    "previous": [{"id": i + 1, "title": t} for i, t in enumerate(before)],
                    "current": payload["labels"],
                },
                "updated_at": {"previous": mr["created_at"], "current": mr["updated_at"]},
            }
            return WebhookDelivery(headers=delivery.headers, body=json.dumps(payload).encode())

    def push_event(
        self, project: str | int, branch: str, before: str, after: str | None = None
    ) -> WebhookDelivery:
        """The `Push Hook` for moving `branch` from `before` to `after` (default: its tip)."""
        with self._lock:
            proj = self.project(project)
            after = after or proj.branch_sha(branch)
            if after is None:
                raise GitLabDoubleError(f"branch {branch!r} does not exist in {proj.repo}")
            commits = self._commits(proj, before, after)
            payload = {
                "object_kind": "push",
                "event_name": "push",
                "before": before,
                "after": after,
                "ref": f"refs/heads/{branch}",
                "ref_protected": branch == proj.default_branch,
                "checkout_sha": after,
                "message": None,
                "user_id": USER["id"],
                "user_name": USER["name"],
                "user_username": USER["username"],
                "user_email": "",
                "user_avatar": None,
                "project_id": proj.id,
                "project": proj.hook_json(),
                "commits": commits[:20],
                "total_commits_count": len(commits),
                "push_options": {},
                "repository": self._hook_repository(proj),
            }
            return self._delivery(proj, "Push Hook", payload)

    # -- internals -------------------------------------------------------------------

    def _find_project(self, ref: str) -> Project | None:
        if ref.isdigit():
            return self._projects.get(int(ref))
        for project in self._projects.values():
            if project.path_with_namespace == ref:
                return project
        return None

    def _commits(self, proj: Project, before: str, after: str) -> list[dict[str, Any]]:
        zero = set("0")
        span = after if set(before) <= zero else f"{before}..{after}"
        log = git(proj.repo, "log", "--reverse", "--format=%H%x1f%aI%x1f%an%x1f%ae%x1f%B%x1e", span)
        commits = []
        for record in log.stdout.split("\x1e"):
            record = record.strip("\n")
            if not record:
                continue
            sha, stamp, name, email, message = record.split("\x1f", 4)
            changes = git(
                proj.repo, "diff-tree", "--root", "--no-commit-id", "--name-status", "-r", sha
            ).stdout
            added: list[str] = []
            modified: list[str] = []
            removed: list[str] = []
            for line in changes.splitlines():
                status, _, path = line.partition("\t")
                {"A": added, "D": removed}.get(status[:1], modified).append(path)
            commits.append(
                {
                    "id": sha,
                    "message": message,
                    "title": message.splitlines()[0] if message else "",
                    "timestamp": stamp,
                    "url": f"{proj.web_url}/-/commit/{sha}",
                    "author": {"name": name, "email": email},
                    "added": added,
                    "modified": modified,
                    "removed": removed,
                }
            )
        return commits

    def _hook_repository(self, proj: Project) -> dict[str, Any]:
        return {
            "name": proj.name,
            "url": f"{proj.web_url}.git",
            "description": "",
            "homepage": proj.web_url,
            "git_http_url": f"{proj.web_url}.git",
            "git_ssh_url": f"git@127.0.0.1:{proj.path_with_namespace}.git",
            "visibility_level": 0,
        }

    def _merge_request_hook(
        self, proj: Project, mr: dict[str, Any], action: str, previous_state: str
    ) -> WebhookDelivery:
        state_ids = {"opened": 1, "closed": 2, "merged": 3, "locked": 4}
        attributes = {
            "id": mr["id"],
            "iid": mr["iid"],
            "target_branch": mr["target_branch"],
            "source_branch": mr["source_branch"],
            "source_project_id": proj.id,
            "target_project_id": proj.id,
            "author_id": USER["id"],
            "assignee_ids": [],
            "reviewer_ids": [],
            "title": mr["title"],
            "description": mr["description"],
            "created_at": mr["created_at"],
            "updated_at": mr["updated_at"],
            "state": mr["state"],
            "state_id": state_ids[mr["state"]],
            "merge_status": mr["merge_status"],
            "detailed_merge_status": mr["detailed_merge_status"],
            "merge_commit_sha": mr["merge_commit_sha"],
            "url": mr["web_url"],
            "action": action,
            "draft": mr["draft"],
            "work_in_progress": mr["work_in_progress"],
            "labels": [{"id": i + 1, "title": label} for i, label in enumerate(mr["labels"])],
            "source": proj.hook_json(),
            "target": proj.hook_json(),
            "last_commit": {"id": mr["sha"], "url": f"{proj.web_url}/-/commit/{mr['sha']}"},
        }
        payload = {
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "user": {**USER, "email": "[REDACTED]"},
            "project": proj.hook_json(),
            "object_attributes": attributes,
            "labels": attributes["labels"],
            "changes": {
                "state_id": {
                    "previous": state_ids[previous_state],
                    "current": state_ids[mr["state"]],
                },
                "updated_at": {"previous": mr["created_at"], "current": mr["updated_at"]},
            },
            "repository": self._hook_repository(proj),
        }
        return self._delivery(proj, "Merge Request Hook", payload)

    def _delivery(self, proj: Project, event: str, payload: dict[str, Any]) -> WebhookDelivery:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"GitLab/{GITLAB_VERSION}",
            "X-Gitlab-Event": event,
            "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
            "X-Gitlab-Instance": self.url,
            "X-Gitlab-Event-UUID": str(uuid.uuid4()),
        }
        if self.idempotency_keys:
            headers["Idempotency-Key"] = str(uuid.uuid4())
        if self.webhook_token is not None:
            headers["X-Gitlab-Token"] = self.webhook_token
        return WebhookDelivery(headers=headers, body=json.dumps(payload).encode())

    def _create_mr(self, proj: Project, params: Mapping[str, Any]) -> dict[str, Any]:
        for required in ("source_branch", "target_branch", "title"):
            if not params.get(required):
                raise ApiError(400, {"error": f"{required} is missing"})
        source, target = str(params["source_branch"]), str(params["target_branch"])
        if source == target:
            raise ApiError(
                422, {"message": ["You can't use same project/branch for source and target"]}
            )
        source_sha = proj.branch_sha(source)
        for kind, branch, sha in (
            ("Source", source, source_sha),
            ("Target", target, proj.branch_sha(target)),
        ):
            if sha is None:
                raise ApiError(422, {"message": [f'{kind} branch "{branch}" does not exist']})
        title = str(params["title"])
        stamp = now_iso()
        iid = proj.next_iid
        mr: dict[str, Any] = {
            "id": self._next_mr_id,
            "iid": iid,
            "project_id": proj.id,
            "title": title,
            "description": str(params.get("description") or ""),
            "state": "opened",
            "created_at": stamp,
            "updated_at": stamp,
            "merged_by": None,
            "merge_user": None,
            "merged_at": None,
            "closed_by": None,
            "closed_at": None,
            "target_branch": target,
            "source_branch": source,
            "user_notes_count": 0,
            "upvotes": 0,
            "downvotes": 0,
            "author": USER,
            "assignees": [],
            "assignee": None,
            "reviewers": [],
            "source_project_id": proj.id,
            "target_project_id": proj.id,
            "labels": split_labels(params.get("labels") or ""),
            "draft": is_draft_title(title),
            "work_in_progress": is_draft_title(title),
            "milestone": None,
            "merge_when_pipeline_succeeds": False,
            "merge_status": "can_be_merged",
            "detailed_merge_status": "mergeable",
            "sha": source_sha,
            "merge_commit_sha": None,
            "squash_commit_sha": None,
            "discussion_locked": None,
            "should_remove_source_branch": None,
            "force_remove_source_branch": bool(params.get("remove_source_branch", False)),
            "reference": f"!{iid}",
            "references": {
                "short": f"!{iid}",
                "relative": f"!{iid}",
                "full": f"{proj.path_with_namespace}!{iid}",
            },
            "web_url": f"{proj.web_url}/-/merge_requests/{iid}",
            "time_stats": {
                "time_estimate": 0,
                "total_time_spent": 0,
                "human_time_estimate": None,
                "human_total_time_spent": None,
            },
            "squash": False,
            "task_completion_status": {"count": 0, "completed_count": 0},
            "has_conflicts": False,
            "blocking_discussions_resolved": True,
        }
        conflict = proj.open_conflict(mr)
        if conflict is not None:
            raise ApiError(409, {"message": [CONFLICT_MESSAGE.format(iid=conflict["iid"])]})
        proj.next_iid += 1
        self._next_mr_id += 1
        proj.merge_requests[iid] = mr
        return mr

    def _update_mr(self, proj: Project, mr: dict[str, Any], params: Mapping[str, Any]) -> None:
        known = (
            "title",
            "description",
            "labels",
            "add_labels",
            "remove_labels",
            "target_branch",
            "state_event",
        )
        if not any(name in params for name in known):
            raise ApiError(
                400,
                {"error": f"{', '.join(known)} are missing, at least one parameter is required"},
            )
        if "title" in params and not str(params["title"]).strip():
            raise ApiError(400, {"message": {"title": ["can't be blank"]}})
        changed = dict(mr)
        if "title" in params:
            changed["title"] = str(params["title"])
        if "description" in params:
            changed["description"] = str(params["description"] or "")
        if "labels" in params:
            changed["labels"] = split_labels(params["labels"] or "")
        if "add_labels" in params:
            changed["labels"] = split_labels(
                [*changed["labels"], *split_labels(params["add_labels"])]
            )
        if "remove_labels" in params:
            gone = set(split_labels(params["remove_labels"]))
            changed["labels"] = [label for label in changed["labels"] if label not in gone]
        if "target_branch" in params:
            target = str(params["target_branch"])
            if proj.branch_sha(target) is None:
                raise ApiError(422, {"message": [f'Target branch "{target}" does not exist']})
            changed["target_branch"] = target
        event = params.get("state_event")
        if event is not None:
            if event not in ("close", "reopen"):
                raise ApiError(400, {"error": "state_event does not have a valid value"})
            if mr["state"] == "merged":
                raise ApiError(422, {"message": ["Cannot change the state of a merged request"]})
            changed["state"] = "closed" if event == "close" else "opened"
            changed["closed_at"] = now_iso() if event == "close" else None
            changed["closed_by"] = USER if event == "close" else None
        if changed["state"] == "opened":
            conflict = proj.open_conflict(changed)
            if conflict is not None:
                raise ApiError(409, {"message": [CONFLICT_MESSAGE.format(iid=conflict["iid"])]})
        changed["draft"] = changed["work_in_progress"] = is_draft_title(changed["title"])
        changed["updated_at"] = now_iso()
        mr.update(changed)

    def handle(
        self, method: str, path: str, query: dict[str, str], body: dict[str, Any], token: str | None
    ) -> tuple[int, Any, dict[str, str]]:
        """Route one API call; returns status, JSON body and extra headers."""
        with self._lock:
            self.requests.append((method, path))
            if self.path_prefix:
                if not path.startswith(self.path_prefix + "/"):
                    raise ApiError(404, {"error": "404 Not Found"})
                path = path.removeprefix(self.path_prefix)
            if self._throttled:
                self._throttled -= 1
                raise RateLimited(self._retry_after)
            if token != self.token:
                raise ApiError(401, {"message": "401 Unauthorized"})
            parts = path.split("/")
            if parts[:4] != ["", "api", "v4", "projects"] or len(parts) < 5:
                raise ApiError(404, {"error": "404 Not Found"})
            proj = self._find_project(unquote(parts[4]))
            if proj is None:
                raise ApiError(404, {"message": "404 Project Not Found"})
            rest = parts[5:]
            params = {**query, **body}
            if not rest and method == "GET":
                return 200, proj.as_json(self.url), {}
            if rest == ["merge_requests"] and method == "GET":
                return self._list_mrs(proj, path, query)
            if rest == ["merge_requests"] and method == "POST":
                return 201, self._create_mr(proj, params), {}
            if len(rest) >= 2 and rest[0] == "merge_requests":
                mr = proj.merge_requests.get(int(rest[1])) if rest[1].isdigit() else None
                if mr is None:
                    raise ApiError(404, {"message": "404 Not found"})
                if len(rest) == 2 and method == "GET":
                    return 200, mr, {}
                if len(rest) == 2 and method == "PUT":
                    self._update_mr(proj, mr, params)
                    return 200, mr, {}
                if rest[2:] == ["notes"] and method == "POST":
                    return 201, self._add_note(proj, mr, params), {}
                if rest[2:] == ["notes"] and method == "GET":
                    return 200, list(proj.notes.get(mr["iid"], [])), {}
            raise ApiError(404, {"error": "404 Not Found"})

    def _add_note(
        self, proj: Project, mr: dict[str, Any], params: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = params.get("body")
        if not body:
            raise ApiError(400, {"error": "body is missing"})
        stamp = now_iso()
        note = {
            "id": self._next_note_id,
            "type": None,
            "body": str(body),
            "attachment": None,
            "author": USER,
            "created_at": stamp,
            "updated_at": stamp,
            "system": False,
            "noteable_id": mr["id"],
            "noteable_type": "MergeRequest",
            "project_id": proj.id,
            "noteable_iid": mr["iid"],
            "resolvable": False,
            "confidential": False,
            "internal": False,
        }
        self._next_note_id += 1
        proj.notes.setdefault(mr["iid"], []).append(note)
        mr["user_notes_count"] += 1
        return note

    def _list_mrs(
        self, proj: Project, path: str, query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        state = query.get("state", "all")
        if state not in ("opened", "closed", "locked", "merged", "all"):
            raise ApiError(400, {"error": "state does not have a valid value"})
        found = [
            mr
            for mr in proj.merge_requests.values()
            if (state == "all" or mr["state"] == state)
            and mr["source_branch"] == query.get("source_branch", mr["source_branch"])
            and mr["target_branch"] == query.get("target_branch", mr["target_branch"])
        ]
        found.sort(key=lambda mr: mr["id"], reverse=query.get("sort", "desc") == "desc")
        try:
            page = max(1, int(query.get("page", "1")))
            per_page = min(MAX_PER_PAGE, max(1, int(query.get("per_page", DEFAULT_PER_PAGE))))
        except ValueError as error:
            raise ApiError(400, {"error": "page is invalid"}) from error
        total_pages = max(1, math.ceil(len(found) / per_page))
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Total": str(len(found)),
            "X-Total-Pages": str(total_pages),
            "X-Next-Page": str(page + 1) if page < total_pages else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
        }

        def link(to: int) -> str:
            return f"{self.url}{path}?{urlencode({**query, 'page': to, 'per_page': per_page})}"

        links = []
        if page > 1:
            links.append(f'<{link(page - 1)}>; rel="prev"')
        if page < total_pages:
            links.append(f'<{link(page + 1)}>; rel="next"')
        links += [f'<{link(1)}>; rel="first"', f'<{link(total_pages)}>; rel="last"']
        headers["Link"] = ", ".join(links)
        return 200, found[(page - 1) * per_page : page * per_page], headers


class ApiHandler(BaseHTTPRequestHandler):
    """HTTP front of the double: parses the request and serialises the answer."""

    server_double: GitLabDouble
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, keep-alive clients
    # wait ~40 ms for a delayed ACK on every call.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `GitLabDouble.requests` instead of stderr."""

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        token = self.headers.get("PRIVATE-TOKEN")
        auth = self.headers.get("Authorization", "")
        if token is None and auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ")
        try:
            body = self._parse_body(raw)
            status, data, headers = self.server_double.handle(
                method, split.path, query, body, token
            )
        except ApiError as error:
            status, data, headers = error.status, error.body, {}
        except RateLimited as limited:
            reset = int(time.time()) + limited.retry_after
            self._answer(
                429,
                b"Retry later\n",
                "text/plain",
                {
                    "Retry-After": str(limited.retry_after),
                    "RateLimit-Name": "throttle_authenticated_api",
                    "RateLimit-Limit": "60",
                    "RateLimit-Observed": "61",
                    "RateLimit-Remaining": "0",
                    "RateLimit-Reset": str(reset),
                    "RateLimit-ResetTime": time.strftime(
                        "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(reset)
                    ),
                },
            )
            return
        self._answer(status, json.dumps(data).encode(), "application/json", headers)

    def _answer(self, status: int, payload: bytes, kind: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _parse_body(self, raw: bytes) -> dict[str, Any]:
        if not raw:
            return {}
        kind = self.headers.get("Content-Type", "").split(";")[0].strip()
        if kind == "application/json":
            try:
                data = json.loads(raw)
            except ValueError as error:
                raise ApiError(400, {"error": "body is not valid JSON"}) from error
            if not isinstance(data, dict):
                raise ApiError(400, {"error": "body must be a JSON object"})
            return data
        return {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")
