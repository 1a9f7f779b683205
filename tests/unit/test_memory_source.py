"""The core loads through its ConfigSource: a repo held in memory loads like one on disk."""

from __future__ import annotations

import pytest

from configcenter.core.plan import make_plan
from configcenter.core.render import Renderer
from configcenter.core.source import FileTooLarge, MemorySource, RepoPathError
from configcenter.core.state import EnvState
from tests.support.configrepo import ConfigRepo, MemoryRepo, deploy_files


def test_the_basic_repo_in_memory_plans_the_same_files_as_on_disk(
    repo: ConfigRepo, memory_repo: MemoryRepo
) -> None:
    on_disk, in_memory = repo.load(), memory_repo.load()
    assert in_memory.project.environments == on_disk.project.environments == ["dev", "prod"]
    for env in ("dev", "prod"):
        disk_env, memory_env = on_disk.environment(env), in_memory.environment(env)
        assert memory_env.order == disk_env.order
        for name, service in disk_env.services.items():
            mine = memory_env.services[name]
            assert mine.template.outputs == service.template.outputs
            assert mine.values.tree == service.values.tree
        plans = [
            make_plan(config, env, EnvState(env), Renderer(), {}.get)
            for config in (on_disk, in_memory)
        ]
        assert deploy_files(plans[1]) == deploy_files(plans[0])
        assert deploy_files(plans[0])  # something was rendered at all


def test_a_change_in_memory_is_what_the_next_load_sees(memory_repo: MemoryRepo) -> None:
    memory_repo.write("environments/dev/api.yaml", "template: HEAD\nimage: {ref: x}\nreplicas: 4\n")
    assert memory_repo.load().environment("dev").services["api"].replicas == 4
    memory_repo.remove("environments/dev/api.yaml")
    assert "api" not in memory_repo.load().environment("dev").services


def test_memory_source_reads_like_the_work_tree() -> None:
    source = MemorySource(
        {"configcenter.yaml": "project: p\n", "environments/dev/api.yaml": b"x: 1\n"},
        {"api/1.0.0": {"template.yaml": "outputs: []\n"}},
        head="c0ffee",
    )
    assert source.read_file("environments/dev/api.yaml", 100) == b"x: 1\n"
    assert source.read_file("environments/dev/web.yaml", 100) is None
    assert source.read_file("nowhere/at/all.yaml", 100) is None
    assert source.list_dir("") == [("configcenter.yaml", "file"), ("environments", "directory")]
    assert source.list_dir("environments/dev") == [("api.yaml", "file")]
    assert source.list_dir("templates") is None
    assert source.path_kind("environments") == "directory"
    assert source.path_kind("configcenter.yaml") == "file"
    assert source.path_kind("templates/api/template.yaml") is None
    assert source.head_commit() == "c0ffee"
    assert set(source.tags()) == {"api/1.0.0"}
    tagged = source.template_tree("api", "1.0.0")
    assert tagged is not None and tagged.read("template.yaml") == b"outputs: []\n"
    assert source.template_tree("api", "2.0.0") is None
    assert source.template_tree("api", None) is None  # not in the work tree


def test_memory_source_refuses_what_the_disk_reader_refuses() -> None:
    source = MemorySource(
        {"configcenter.yaml": "project: p\n", "templates/api": "not a directory\n"}
    )
    with pytest.raises(RepoPathError) as error:
        source.read_file("templates", 100)
    assert (error.value.rel, error.value.kind) == ("templates", "directory")
    with pytest.raises(RepoPathError) as error:
        source.read_file("templates/api/template.yaml", 100)  # a file on the way
    assert (error.value.rel, error.value.kind) == ("templates/api", "file")
    with pytest.raises(RepoPathError):
        source.list_dir("configcenter.yaml")
    with pytest.raises(FileTooLarge) as too_large:
        source.read_file("configcenter.yaml", 4)
    assert (too_large.value.size, too_large.value.limit) == (11, 4)
    tree = source.template_tree("api", None)
    assert tree is not None and list(tree.refused) == [("", "file")] and not tree.files()


def test_equal_template_trees_share_an_id_and_different_ones_do_not() -> None:
    source = MemorySource(
        {"templates/a/x.j2": "1", "templates/b/x.j2": "1", "templates/c/x.j2": "2"}
    )
    ids = {name: source.template_tree(name, None) for name in "abc"}
    assert all(tree is not None for tree in ids.values())
    a, b, c = (ids[n].tree_id for n in "abc")  # type: ignore[union-attr]
    assert a == b != c
