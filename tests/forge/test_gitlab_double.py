"""The GitLab double keeps GitLab's REST contract where the adapter does not look directly."""

from __future__ import annotations

import gitlab
import requests

from tests.support.gitlab_double import GitLabDouble
from tests.support.gitlab_fixtures import GITLAB_PROJECT_PATH, GitLabConfigRepo


def test_auth_and_not_found_bodies_match_gitlab(
    gitlab_server: GitLabDouble, gitlab_config_repo: GitLabConfigRepo
) -> None:
    api = f"{gitlab_server.url}/api/v4/projects"
    auth = {"PRIVATE-TOKEN": gitlab_server.token}

    missing = requests.get(f"{api}/ops%2Fshop-config", timeout=10)
    wrong = requests.get(f"{api}/1", headers={"PRIVATE-TOKEN": "nope"}, timeout=10)
    bearer = requests.get(
        f"{api}/1", headers={"Authorization": f"Bearer {gitlab_server.token}"}, timeout=10
    )
    by_path = requests.get(f"{api}/ops%2Fshop-config", headers=auth, timeout=10)
    unknown = requests.get(f"{api}/ops%2Fnope", headers=auth, timeout=10)
    no_mr = requests.get(f"{api}/1/merge_requests/9", headers=auth, timeout=10)

    assert (missing.status_code, missing.json()) == (401, {"message": "401 Unauthorized"})
    assert (wrong.status_code, wrong.json()) == (401, {"message": "401 Unauthorized"})
    assert bearer.status_code == 200
    assert by_path.json()["id"] == 1
    assert by_path.json()["path_with_namespace"] == GITLAB_PROJECT_PATH
    assert (unknown.status_code, unknown.json()) == (404, {"message": "404 Project Not Found"})
    assert (no_mr.status_code, no_mr.json()) == (404, {"message": "404 Not found"})


def test_create_conflict_and_pagination_through_python_gitlab(
    gitlab_server: GitLabDouble, gitlab_config_repo: GitLabConfigRepo
) -> None:
    client = gitlab.Gitlab(gitlab_server.url, private_token=gitlab_server.token)
    project = client.projects.get(GITLAB_PROJECT_PATH)
    for n in range(5):
        gitlab_config_repo.commit_on(f"feature/{n}", f"f{n}.txt", f"{n}\n", f"Feature {n}")
        project.mergerequests.create(
            {"source_branch": f"feature/{n}", "target_branch": "main", "title": f"F{n}"}
        )

    try:
        project.mergerequests.create(
            {"source_branch": "feature/0", "target_branch": "main", "title": "again"}
        )
    except gitlab.exceptions.GitlabCreateError as error:
        assert error.response_code == 409
        message: object = error.error_message  # GitLab sends a list here; typed as str
        assert message == ["Another open merge request already exists for this source branch: !1"]
    else:
        raise AssertionError("a second open MR for the same branches was accepted")

    pages = project.mergerequests.list(state="opened", per_page=2, get_all=True)
    first_page = project.mergerequests.list(state="opened", per_page=2, page=3)
    assert [mr.iid for mr in pages] == [5, 4, 3, 2, 1]  # newest first, over three pages
    assert [mr.iid for mr in first_page] == [1]
    raw = requests.get(
        f"{gitlab_server.url}/api/v4/projects/1/merge_requests?per_page=2",
        headers={"PRIVATE-TOKEN": gitlab_server.token},
        timeout=10,
    )
    assert (raw.headers["X-Total"], raw.headers["X-Total-Pages"], raw.headers["X-Next-Page"]) == (
        "5",
        "3",
        "2",
    )
    assert 'rel="next"' in raw.headers["Link"]
