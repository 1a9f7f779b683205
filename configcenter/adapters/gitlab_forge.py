"""The forge port on GitLab, through python-gitlab (imported lazily).

Promotions open or refresh one merge request per source/target branch pair:
a second run for the same pair updates the open one, and a creation that
loses a race (GitLab's 409 "Another open merge request already exists") finds
the winner and updates it. Every python-gitlab or requests failure is turned
into a ForgeError that names the GitLab URL, the project and the fix, with the
token scrubbed and the original exception (which may carry request details)
dropped from the chain.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from configcenter.adapters.local_forge import check_branches, check_note, clean_labels
from configcenter.ports.forge import (
    ForgeAuthError,
    ForgeContext,
    ForgeError,
    MergeRequest,
    MergeRequestNotFound,
)

if TYPE_CHECKING:
    from gitlab.v4.objects import Project

#: GitLab treats these title prefixes (any case) as marking a draft.
DRAFT_PREFIX = re.compile(r"^\s*(\[draft\]|\(draft\)|draft:)\s*", re.IGNORECASE)
DRAFT_TITLE_PREFIX = "Draft: "
MASK = "***"


def strip_draft_prefix(title: str) -> str:
    """The title without any leading draft markers GitLab recognises."""
    while (match := DRAFT_PREFIX.match(title)) is not None:
        title = title[match.end() :]
    return title.strip()


def gitlab_title(title: str, draft: bool) -> str:
    """GitLab has no draft flag on create/update: the `Draft: ` title prefix is the flag."""
    plain = strip_draft_prefix(title)
    if not plain:
        raise ForgeError(
            f"merge request title {title!r} is empty once the draft marker is removed: "
            "give the promotion a title"
        )
    return f"{DRAFT_TITLE_PREFIX}{plain}" if draft else plain


def labels_param(labels: Sequence[str]) -> str:
    """GitLab takes labels as one comma-separated string, so a comma cannot be in a name."""
    for label in labels:
        if "," in label:
            raise ForgeError(
                f"label {label!r} contains a comma, which GitLab reads as a separator: "
                "rename the label"
            )
    return ",".join(clean_labels(labels))


def to_merge_request(data: Mapping[str, Any]) -> MergeRequest:
    """Map a GitLab merge request (REST JSON) to the port's MergeRequest."""
    raw_title = str(data.get("title") or "")
    if "draft" in data:
        draft = bool(data["draft"])
    elif "work_in_progress" in data:
        draft = bool(data["work_in_progress"])
    else:
        draft = DRAFT_PREFIX.match(raw_title) is not None
    return MergeRequest(
        iid=int(data["iid"]),
        web_url=str(data.get("web_url") or ""),
        source_branch=str(data["source_branch"]),
        target_branch=str(data["target_branch"]),
        title=strip_draft_prefix(raw_title),
        description=str(data.get("description") or ""),
        draft=draft,
        state=str(data["state"]),
        labels=tuple(str(label) for label in data.get("labels") or ()),
    )


class GitLabForge:
    """Merge requests in one GitLab project. The token is a resolved secret: never shown."""

    def __init__(
        self,
        url: str,
        project_path: str,
        token: str,
        *,
        timeout: float = 30.0,
        ssl_verify: bool | str = True,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ForgeError(
                f"forge.url {url!r} is not an http(s) URL: "
                "set it to the GitLab base URL, e.g. https://gitlab.example.com"
            )
        if not project_path.strip("/"):
            raise ForgeError(
                "forge.project is empty: set it to the project's full path, e.g. ops/shop-config"
            )
        if not token:
            raise ForgeError(
                "the GitLab token is empty: point forge.token at a secret holding an access "
                "token with the api scope, e.g. {secret: env:GITLAB_TOKEN}"
            )
        self.url = url.rstrip("/")
        self.project_path = project_path.strip("/")
        self._token = token
        self._timeout = timeout
        self._ssl_verify = ssl_verify
        self._project_obj: Project | None = None

    def __repr__(self) -> str:
        return f"GitLabForge(url={self.url!r}, project_path={self.project_path!r}, token={MASK!r})"

    # -- the port --------------------------------------------------------------------

    def find_open(self, source_branch: str, target_branch: str) -> MergeRequest | None:
        project = self._project()
        with self._errors(f"listing open merge requests {source_branch} -> {target_branch}"):
            found = project.mergerequests.list(
                source_branch=source_branch,
                target_branch=target_branch,
                state="opened",
                get_all=True,
            )
        candidates = [to_merge_request(mr.attributes) for mr in found]
        # GitLab filters server-side; checking again guards against a server
        # that ignores a filter and would have us update someone else's MR.
        matching = [
            mr
            for mr in candidates
            if mr.source_branch == source_branch
            and mr.target_branch == target_branch
            and mr.state == "opened"
        ]
        return min(matching, key=lambda mr: mr.iid) if matching else None

    def open(
        self,
        source_branch: str,
        target_branch: str,
        title: str,
        description: str,
        labels: Sequence[str],
        draft: bool,
    ) -> MergeRequest:
        import gitlab.exceptions

        check_branches(source_branch, target_branch)
        project = self._project()
        data = {
            "source_branch": source_branch,
            "target_branch": target_branch,
            "title": gitlab_title(title, draft),
            "description": description,
            "labels": labels_param(labels),
            # The promotion branch is ours: gone once merged, so the next promotion (of
            # the whole environment or one service) starts afresh and never clashes.
            "remove_source_branch": True,
        }
        conflict: str | None = None
        with self._errors(f"opening a merge request {source_branch} -> {target_branch}"):
            try:
                created = project.mergerequests.create(data)
            except gitlab.exceptions.GitlabCreateError as error:
                if error.response_code != 409:
                    raise
                conflict = self._scrub(str(error.error_message))
            else:
                return to_merge_request(created.attributes)
        # Someone (a racing run, a person) opened one first: update it instead.
        existing = self.find_open(source_branch, target_branch)
        if existing is None:
            iid = re.search(r"!(\d+)", conflict or "")
            if iid is None:
                raise ForgeError(
                    f"GitLab at {self.url} refused to open a merge request "
                    f"{source_branch} -> {target_branch} in {self.project_path} ({conflict}) "
                    "but lists no open one for these branches: close the conflicting "
                    "merge request and run the promotion again"
                )
            return self.update(int(iid.group(1)), title, description, labels, draft)
        return self.update(existing.iid, title, description, labels, draft)

    def update(
        self, iid: int, title: str, description: str, labels: Sequence[str], draft: bool
    ) -> MergeRequest:
        project = self._project()
        data = {
            "title": gitlab_title(title, draft),
            "description": description,
            "labels": labels_param(labels),
        }
        with self._errors(f"updating merge request !{iid}", iid=iid):
            result = project.mergerequests.update(iid, data)
        return to_merge_request(result)

    def get(self, iid: int) -> MergeRequest:
        project = self._project()
        with self._errors(f"reading merge request !{iid}", iid=iid):
            mr = project.mergerequests.get(iid)
        return to_merge_request(mr.attributes)

    def add_note(self, iid: int, body: str) -> None:
        check_note(iid, body)
        project = self._project()
        with self._errors(f"adding a note to merge request !{iid}", iid=iid):
            project.mergerequests.get(iid, lazy=True).notes.create({"body": body})

    # -- internals -------------------------------------------------------------------

    def _project(self) -> Project:
        """Connect on first use, so building the forge from config never touches the network."""
        if self._project_obj is None:
            import gitlab

            client = gitlab.Gitlab(
                self.url,
                private_token=self._token,
                timeout=self._timeout,
                ssl_verify=self._ssl_verify,
            )
            with self._errors("opening the project"):
                self._project_obj = client.projects.get(self.project_path)
        return self._project_obj

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, MASK) if self._token else text

    @contextmanager
    def _errors(self, action: str, iid: int | None = None) -> Iterator[None]:
        """Translate client failures into ForgeErrors without the token or the raw request."""
        import gitlab.exceptions
        import requests

        where = f"GitLab at {self.url}, project {self.project_path}"
        try:
            yield
        except gitlab.exceptions.GitlabError as error:
            code = error.response_code
            detail = self._scrub(str(error.error_message))
            if code == 401 or isinstance(error, gitlab.exceptions.GitlabAuthenticationError):
                raise ForgeAuthError(
                    f"{where} rejected the token while {action} (HTTP 401: {detail}): "
                    "check that forge.token resolves to a valid, unexpired access token "
                    "with the api scope"
                ) from None
            if code == 403:
                raise ForgeAuthError(
                    f"{where} refused {action} (HTTP 403: {detail}): the token's user needs "
                    "at least the Developer role on the project and the api scope"
                ) from None
            if code == 404 and iid is not None:
                raise MergeRequestNotFound(
                    f"{where} has no merge request !{iid} (HTTP 404): check the iid"
                ) from None
            if code == 404:
                raise ForgeError(
                    f"{where}: the project was not found while {action} (HTTP 404): set "
                    "forge.project to its full path (group/name) and check the token's user "
                    "can see it"
                ) from None
            status = f"HTTP {code}" if code is not None else "no HTTP status"
            raise ForgeError(
                f"{where} failed while {action} ({status}: {detail}): "
                "fix what GitLab reports and run again"
            ) from None
        except requests.RequestException as error:
            raise ForgeError(
                f"cannot reach GitLab at {self.url} while {action} "
                f"({type(error).__name__}: {self._scrub(str(error))}): "
                "check forge.url and that GitLab is reachable from here"
            ) from None


def open_forge(settings: Mapping[str, Any], context: ForgeContext) -> GitLabForge:
    """The registry's factory (`configcenter.core.kinds`); the token is resolved now."""
    token = settings.get("token")
    if not isinstance(token, dict) or "secret" not in token:
        raise ForgeError(
            "forge.token in configcenter.yaml must be a secret reference, never a token in "
            'Git: write token: {secret: "env:GITLAB_TOKEN"}'
        )
    value = context.resolve_secret(str(token["secret"]), "forge.token")
    return GitLabForge(str(settings.get("url", "")), str(settings.get("project", "")), value)
