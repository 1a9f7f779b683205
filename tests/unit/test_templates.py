"""Template versions come from real Git tags; `template release` makes them safely."""

from __future__ import annotations

import pytest

from configcenter.core.errors import ConfigError
from configcenter.usecases.inspect import render
from configcenter.usecases.release_template import release_template
from configcenter.usecases.workspace import Workspace
from tests.support.configrepo import ConfigRepo

V110 = {
    "app.env.j2": "# api {{ template_tag }}\nLOG_LEVEL={{ LOG_LEVEL }}\nFEATURE=on\n",
}


def files_of(repo: ConfigRepo, env: str, service: str) -> dict[str, bytes]:
    (item,) = render(Workspace(repo.root), env, [service])
    return item.files


def test_envs_render_their_pinned_tags(repo: ConfigRepo) -> None:
    commit = repo.release("api", "1.1.0", V110)
    repo.write("environments/dev/api.yaml", "template: 1.1.0\nimage: {ref: x}\n")
    config = repo.load()
    dev = config.environment("dev").services["api"].template
    prod = config.environment("prod").services["api"].template
    assert (dev.tag, dev.commit) == ("1.1.0", commit)
    assert prod.tag == "1.0.0"
    assert dev.tree_id == repo.git("rev-parse", "api/1.1.0:templates/api").strip()
    assert prod.tree_id == repo.git("rev-parse", "api/1.0.0:templates/api").strip()
    assert files_of(repo, "dev", "api")["app.env"] == b"# api 1.1.0\nLOG_LEVEL=debug\nFEATURE=on\n"
    assert files_of(repo, "prod", "api")["app.env"].startswith(b"# api in prod (1.0.0)\n")


def test_work_tree_is_not_used_for_tagged_pins(repo: ConfigRepo) -> None:
    before = files_of(repo, "dev", "api")
    repo.write("templates/api/app.env.j2", "EDITED={{ LOG_LEVEL }}\n")
    repo.write("templates/api/template.yaml", "outputs: [app.env]\nenv: [NEW_KEY]\n")
    assert files_of(repo, "dev", "api") == before  # uncommitted edits
    repo.commit("edit templates without releasing")
    assert files_of(repo, "dev", "api") == before  # committed but untagged edits


def test_head_pin_reads_the_work_tree(repo: ConfigRepo) -> None:
    repo.write("environments/dev/api.yaml", "template: HEAD\nimage: {ref: x}\n")
    repo.write("templates/api/app.env.j2", "EDITED={{ LOG_LEVEL }}\n")
    assert files_of(repo, "dev", "api")["app.env"] == b"EDITED=debug\n"


def test_lightweight_tags_resolve_too(repo: ConfigRepo) -> None:
    repo.write("templates/api/app.env.j2", "LIGHT=1\n")
    commit = repo.commit("light")
    repo.git("tag", "api/1.2.0")
    repo.write("environments/dev/api.yaml", "template: 1.2.0\nimage: {ref: x}\n")
    assert repo.load().environment("dev").services["api"].template.commit == commit
    assert files_of(repo, "dev", "api")["app.env"] == b"LIGHT=1\n"


# -- template release --------------------------------------------------------------------------


def test_release_creates_an_annotated_tag_at_head(repo: ConfigRepo) -> None:
    repo.write("templates/api/app.env.j2", "LOG_LEVEL={{ LOG_LEVEL }}\nNEW=1\n")
    head = repo.commit("api: NEW")
    released = release_template(Workspace(repo.root), "api", "1.1.0")
    assert (released.tag, released.commit) == ("api/1.1.0", head)
    assert released.rendered_for == ["dev", "prod"]
    assert repo.git("cat-file", "-t", "api/1.1.0").strip() == "tag"
    assert repo.git("rev-parse", "api/1.1.0^{commit}").strip() == head


def test_release_dry_run_creates_nothing(repo: ConfigRepo) -> None:
    released = release_template(Workspace(repo.root), "api", "1.1.0", dry_run=True)
    assert released.tag == "api/1.1.0"
    assert "api/1.1.0" not in repo.git("tag").split()


def test_release_refuses_to_move_a_tag(repo: ConfigRepo) -> None:
    old = repo.git("rev-parse", "api/1.0.0").strip()
    repo.commit("later")
    with pytest.raises(ConfigError) as caught:
        release_template(Workspace(repo.root), "api", "1.0.0")
    (problem,) = caught.value.problems
    assert problem.message == "tag api/1.0.0 already exists"
    assert problem.hint == "released tags never move: pick a new version"
    assert repo.git("rev-parse", "api/1.0.0").strip() == old


@pytest.mark.parametrize("change", ["modified", "untracked"])
def test_release_refuses_a_dirty_template_dir(repo: ConfigRepo, change: str) -> None:
    if change == "modified":
        repo.write("templates/api/app.env.j2", "CHANGED=1\n")
    else:
        repo.write("templates/api/extra.conf.j2", "X=1\n")
    with pytest.raises(ConfigError) as caught:
        release_template(Workspace(repo.root), "api", "1.1.0")
    (problem,) = caught.value.problems
    assert problem.source.file == "templates/api/template.yaml"
    assert problem.message.startswith("templates/api has uncommitted changes:")
    assert "commit them first" in problem.hint
    assert "api/1.1.0" not in repo.git("tag").split()


def test_release_ignores_changes_outside_the_template(repo: ConfigRepo) -> None:
    repo.write("environments/dev/api.yaml", "template: 1.0.0\nimage: {ref: y}\nreplicas: 2\n")
    assert release_template(Workspace(repo.root), "api", "1.1.0").tag == "api/1.1.0"


def test_release_refuses_a_template_that_does_not_render(repo: ConfigRepo) -> None:
    repo.write("templates/api/app.env.j2", "X={{ NOT_A_VALUE }}\n")
    repo.commit("broken")
    with pytest.raises(ConfigError) as caught:
        release_template(Workspace(repo.root), "api", "1.1.0")
    assert caught.value.problems[0].source.file == "templates/api/app.env.j2"
    assert "'NOT_A_VALUE' is undefined" in caught.value.problems[0].message
    assert "api/1.1.0" not in repo.git("tag").split()


def test_release_notes_keys_environments_must_add(repo: ConfigRepo) -> None:
    repo.write(
        "templates/api/template.yaml",
        "outputs: [app.env]\nenv: [LOG_LEVEL, CACHE_URL]\ndepends_on: [db]\n",
    )
    repo.write("templates/api/app.env.j2", "C={{ CACHE_URL | default('none') }}\n")
    repo.write(
        "environments/dev/api.yaml",
        "template: 1.0.0\nimage: {ref: x}\nvalues:\n  CACHE_URL: redis://c\n",
    )
    repo.commit("api needs CACHE_URL")
    released = release_template(Workspace(repo.root), "api", "1.1.0")
    assert released.rendered_for == ["dev"]
    (note,) = released.notes
    assert note.source.file == "environments/prod/api.yaml"
    assert note.message == "api/1.1.0 needs ENV key 'CACHE_URL', which has no value in prod"


@pytest.mark.parametrize("version", ["1.0", "v1.2.3", "latest", "1.2.3/x"])
def test_release_refuses_a_bad_version(repo: ConfigRepo, version: str) -> None:
    with pytest.raises(ConfigError) as caught:
        release_template(Workspace(repo.root), "api", version)
    assert caught.value.problems[0].message == f"'{version}' is not a version"


def test_moved_tag_is_visible_to_the_loader(repo: ConfigRepo) -> None:
    first = repo.load().environment("dev").services["api"].template.commit
    repo.write("templates/api/app.env.j2", "MOVED=1\n")
    moved = repo.commit("move it")
    repo.tag("api/1.0.0", force=True)
    assert first != moved
    assert repo.load().environment("dev").services["api"].template.commit == moved
