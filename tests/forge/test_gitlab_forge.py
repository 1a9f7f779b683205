"""The GitLab forge adapter, through python-gitlab, against the GitLab API v4 double."""

from __future__ import annotations

import re
import subprocess
import sys
import traceback

import pytest

from configcenter.adapters.gitlab_forge import GitLabForge
from configcenter.ports.forge import (
    Forge,
    ForgeAuthError,
    ForgeError,
    MergeRequest,
    MergeRequestNotFound,
)
from configcenter.usecases.webhooks import parse_gitlab_event, verify_gitlab_token
from tests.support.gitlab_double import GitLabDouble
from tests.support.gitlab_fixtures import GITLAB_PROJECT_PATH, GitLabConfigRepo, run_git
from tests.support.helpers import free_port


@pytest.fixture
def forge(gitlab_server: GitLabDouble, gitlab_config_repo: GitLabConfigRepo) -> GitLabForge:
    return GitLabForge(gitlab_server.url, GITLAB_PROJECT_PATH, gitlab_server.token)


def promote(forge: Forge, title: str = "Promote dev to demo", draft: bool = False) -> MergeRequest:
    return forge.open(
        source_branch="promote/dev-to-demo",
        target_branch="demo",
        title=title,
        description="api: template 1.4.0 -> 1.5.0",
        labels=["promotion", "env::demo"],
        draft=draft,
    )


@pytest.fixture
def promotion_branch(gitlab_config_repo: GitLabConfigRepo) -> str:
    return gitlab_config_repo.commit_on(
        "promote/dev-to-demo", "environments/demo/api.yaml", "template: 1.5.0\n", "Pin api 1.5.0"
    )


def test_open_creates_a_merge_request_gitlab_lists_as_open(
    forge: GitLabForge, gitlab_server: GitLabDouble, promotion_branch: str
) -> None:
    mr = promote(forge)

    assert mr.iid == 1
    assert mr.state == "opened"
    assert (mr.source_branch, mr.target_branch) == ("promote/dev-to-demo", "demo")
    assert mr.title == "Promote dev to demo"
    assert mr.description == "api: template 1.4.0 -> 1.5.0"
    assert mr.labels == ("promotion", "env::demo")
    assert not mr.draft
    assert mr.web_url == f"{gitlab_server.url}/{GITLAB_PROJECT_PATH}/-/merge_requests/1"
    [stored] = gitlab_server.merge_requests(GITLAB_PROJECT_PATH)
    assert stored["sha"] == promotion_branch
    assert forge.find_open("promote/dev-to-demo", "demo") == mr
    assert forge.get(1) == mr


def test_find_open_ignores_other_branches_and_merged_requests(
    forge: GitLabForge, gitlab_server: GitLabDouble, promotion_branch: str
) -> None:
    assert forge.find_open("promote/dev-to-demo", "demo") is None
    mr = promote(forge)

    assert forge.find_open("promote/dev-to-demo", "prod") is None
    assert forge.find_open("promote/demo-to-prod", "demo") is None

    gitlab_server.merge(GITLAB_PROJECT_PATH, mr.iid)
    assert forge.find_open("promote/dev-to-demo", "demo") is None
    assert forge.get(mr.iid).state == "merged"


def test_second_open_for_the_same_branches_updates_the_first_through_the_409(
    forge: GitLabForge, gitlab_server: GitLabDouble, promotion_branch: str
) -> None:
    first = promote(forge)
    second = forge.open(
        "promote/dev-to-demo",
        "demo",
        "Promote dev to demo, again",
        "api and web",
        ["promotion"],
        draft=False,
    )

    assert second.iid == first.iid
    assert second.title == "Promote dev to demo, again"
    assert second.description == "api and web"
    assert second.labels == ("promotion",)
    assert len(gitlab_server.merge_requests(GITLAB_PROJECT_PATH)) == 1
    mr_path = f"/projects/{gitlab_server.project(GITLAB_PROJECT_PATH).id}/merge_requests"
    assert gitlab_server.count_requests("POST", mr_path) == 2  # the second got the 409
    assert gitlab_server.count_requests("PUT", f"{mr_path}/{first.iid}") == 1


def test_open_after_losing_a_race_updates_the_winner(
    forge: GitLabForge, gitlab_server: GitLabDouble, promotion_branch: str
) -> None:
    winner = gitlab_server.insert_open_merge_request(
        GITLAB_PROJECT_PATH, "promote/dev-to-demo", "demo", "Opened by hand"
    )

    mr = promote(forge)

    assert mr.iid == winner["iid"]
    assert mr.title == "Promote dev to demo"
    assert [m["title"] for m in gitlab_server.merge_requests(GITLAB_PROJECT_PATH)] == [
        "Promote dev to demo"
    ]


def test_draft_is_the_title_prefix_gitlab_reads(
    forge: GitLabForge, gitlab_server: GitLabDouble, promotion_branch: str
) -> None:
    mr = promote(forge, draft=True)

    assert mr.draft
    assert mr.title == "Promote dev to demo"
    [stored] = gitlab_server.merge_requests(GITLAB_PROJECT_PATH)
    assert stored["title"] == "Draft: Promote dev to demo"
    assert stored["draft"] and stored["work_in_progress"]

    ready = forge.update(mr.iid, "Draft: Promote dev to demo", "ready", ["promotion"], False)

    assert not ready.draft
    assert ready.title == "Promote dev to demo"
    [stored] = gitlab_server.merge_requests(GITLAB_PROJECT_PATH)
    assert stored["title"] == "Promote dev to demo"
    assert not stored["draft"]

    again = forge.update(mr.iid, "[Draft] Promote dev to demo", "on hold", [], True)
    assert again.draft
    assert gitlab_server.merge_requests(GITLAB_PROJECT_PATH)[0]["title"] == (
        "Draft: Promote dev to demo"
    )
    assert again.labels == ()


def test_notes_land_on_the_merge_request(
    forge: GitLabForge, gitlab_server: GitLabDouble, promotion_branch: str
) -> None:
    mr = promote(forge)

    forge.add_note(mr.iid, "plan: api update (values)")
    forge.add_note(mr.iid, "applied to demo: healthy")

    notes = gitlab_server.notes(GITLAB_PROJECT_PATH, mr.iid)
    assert [n["body"] for n in notes] == ["plan: api update (values)", "applied to demo: healthy"]
    assert all(n["noteable_type"] == "MergeRequest" for n in notes)
    with pytest.raises(ForgeError, match="empty note"):
        forge.add_note(mr.iid, "  ")


def test_unknown_merge_request_is_not_found(forge: GitLabForge, gitlab_config_repo: object) -> None:
    with pytest.raises(MergeRequestNotFound, match="!42"):
        forge.get(42)
    with pytest.raises(MergeRequestNotFound, match="!42"):
        forge.add_note(42, "hello")
    with pytest.raises(MergeRequestNotFound, match="!42"):
        forge.update(42, "t", "d", [], False)


def test_gitlab_validation_errors_are_reported_with_gitlab_s_reason(
    forge: GitLabForge, gitlab_config_repo: GitLabConfigRepo
) -> None:
    missing = r'HTTP 422.*Source branch "promote/nowhere" does not exist'
    with pytest.raises(ForgeError, match=missing):
        forge.open("promote/nowhere", "demo", "t", "d", [], False)
    with pytest.raises(ForgeError, match="into itself"):
        forge.open("demo", "demo", "t", "d", [], False)
    with pytest.raises(ForgeError, match="comma"):
        forge.open("dev", "demo", "t", "d", ["a,b"], False)
    with pytest.raises(ForgeError, match="title"):
        forge.open("dev", "demo", "Draft: ", "d", [], True)


def test_bad_token_is_a_clear_error_that_never_shows_the_token(
    gitlab_server: GitLabDouble, gitlab_config_repo: GitLabConfigRepo
) -> None:
    wrong = "glpat-wrong-but-secret-value-123"
    forge = GitLabForge(gitlab_server.url, GITLAB_PROJECT_PATH, wrong)

    with pytest.raises(ForgeAuthError) as caught:
        promote(forge)

    message = str(caught.value)
    assert "rejected the token" in message and "401" in message
    assert gitlab_server.url in message and GITLAB_PROJECT_PATH in message
    rendered = "".join(traceback.format_exception(caught.value))
    for text in (message, repr(caught.value), rendered, repr(forge)):
        assert wrong not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert gitlab_server.merge_requests(GITLAB_PROJECT_PATH) == []


def test_unknown_project_names_the_setting_to_fix(
    gitlab_server: GitLabDouble, gitlab_config_repo: GitLabConfigRepo
) -> None:
    forge = GitLabForge(gitlab_server.url, "ops/no-such-config", gitlab_server.token)

    with pytest.raises(ForgeError, match=r"forge\.project") as caught:
        forge.find_open("dev", "demo")

    assert "ops/no-such-config" in str(caught.value)
    assert gitlab_server.token not in str(caught.value)


def test_unreachable_gitlab_is_a_clear_error(gitlab_config_repo: GitLabConfigRepo) -> None:
    port = free_port()  # nothing listens there
    token = "glpat-unreachable-secret-456"
    forge = GitLabForge(f"http://127.0.0.1:{port}", GITLAB_PROJECT_PATH, token, timeout=5)

    with pytest.raises(ForgeError, match="cannot reach GitLab") as caught:
        forge.find_open("dev", "demo")

    assert token not in "".join(traceback.format_exception(caught.value))


@pytest.mark.parametrize(
    ("url", "project", "token", "setting"),
    [
        ("gitlab.example.com", "ops/shop-config", "t0ken", "forge.url"),
        ("https://gitlab.example.com", "/", "t0ken", "forge.project"),
        ("https://gitlab.example.com", "ops/shop-config", "", "forge.token"),
    ],
)
def test_bad_settings_are_refused_before_any_request(
    url: str, project: str, token: str, setting: str
) -> None:
    with pytest.raises(ForgeError, match=re.escape(setting)):
        GitLabForge(url, project, token)


def test_merging_in_the_double_merges_the_bare_repo_and_sends_a_verifiable_hook(
    forge: GitLabForge,
    gitlab_server: GitLabDouble,
    gitlab_config_repo: GitLabConfigRepo,
    promotion_branch: str,
) -> None:
    mr = promote(forge)
    demo_before = gitlab_config_repo.branch_sha("demo")

    delivery = gitlab_server.merge(GITLAB_PROJECT_PATH, mr.iid)

    merge_commit = gitlab_config_repo.branch_sha("demo")
    parents = run_git(gitlab_config_repo.bare, "rev-list", "--parents", "-n", "1", merge_commit)
    assert parents.split()[1:] == [demo_before, promotion_branch]
    shown = run_git(gitlab_config_repo.bare, "show", f"{merge_commit}:environments/demo/api.yaml")
    assert shown == "template: 1.5.0"
    assert gitlab_server.webhook_token is not None
    assert verify_gitlab_token(gitlab_server.webhook_token, delivery.headers["X-Gitlab-Token"])
    event = parse_gitlab_event(delivery.headers, delivery.body)
    assert event.kind == "merge_request" and event.merged
    assert (event.iid, event.action, event.state) == (mr.iid, "merge", "merged")
    assert event.merge_commit_sha == merge_commit
    assert event.project == GITLAB_PROJECT_PATH
    assert event.delivery_id == delivery.headers["X-Gitlab-Event-UUID"]


def test_importing_the_forges_loads_no_client_library() -> None:
    code = (
        "import sys, configcenter.adapters.gitlab_forge, configcenter.adapters.local_forge, "
        "configcenter.usecases.webhooks; "
        "print(sorted(m for m in ('gitlab', 'requests', 'git') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
