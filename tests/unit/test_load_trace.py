"""A kept config load is used again only while everything it read is unchanged.

Each test changes one input behind the kept load's back, the way a user would (a file
edited in the work tree, a file added or removed, a tag moved, a link committed, a
commit with no change), and asserts that the next load answers exactly as a fresh load
of the same files does, provenance included.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from configcenter.adapters.load_store import DiskLoadStore
from configcenter.core.errors import ConfigError, ProblemList
from configcenter.core.load import load_config
from configcenter.core.load_trace import KeptTree, load_config_kept
from configcenter.core.model import Config
from tests.support.configrepo import ConfigRepo


class SaltedStore(DiskLoadStore):
    """The disk store with another code salt (as if configcenter had been upgraded)."""

    def __init__(self, directory: Path, salt: str) -> None:
        super().__init__(directory)
        self._salt = salt

    @property
    def salt(self) -> str:
        return self._salt


@pytest.fixture
def store(tmp_path: Path) -> DiskLoadStore:
    return DiskLoadStore(tmp_path / "loads")


def summary(config: Config) -> dict[str, Any]:
    """Everything commands read from a Config, as plain data."""
    out: dict[str, Any] = {"commit": config.commit, "envs": list(config.environments)}
    for env in config.environments.values():
        out[env.name] = {
            "order": env.order,
            "services": {
                name: {
                    "values": service.values.tree,
                    "where": {k: (str(e.source), e.layer) for k, e in service.values.flat()},
                    "overrode": {
                        k: [str(o.source) for o in e.overrode] for k, e in service.values.flat()
                    },
                    "template": (service.template.tag, service.template.tree_id),
                    "files": dict(service.template.tree.files()),
                    "outputs": service.template.outputs,
                    "image": service.image,
                    "replicas": service.replicas,
                    "file": service.file,
                }
                for name, service in env.services.items()
            },
        }
    return out


def kept(repo: ConfigRepo, store: DiskLoadStore, **kwargs: Any) -> tuple[Config, ProblemList]:
    problems = ProblemList()
    return load_config_kept(repo.source(), store, problems, **kwargs), problems


def was_kept(config: Config) -> bool:
    """A kept load's tagged templates open their trees on first use."""
    return any(
        isinstance(s.template.tree, KeptTree)
        for env in config.environments.values()
        for s in env.services.values()
    )


def assert_fresh(repo: ConfigRepo, store: DiskLoadStore) -> Config:
    """The next kept load answers as a fresh load does (and is then kept itself)."""
    config, _ = kept(repo, store)
    assert summary(config) == summary(repo.load())
    again, _ = kept(repo, store)
    assert was_kept(again)
    assert summary(again) == summary(config)
    return config


def test_a_second_load_is_the_kept_one_and_answers_like_a_fresh_load(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    first, _ = kept(repo, store)
    assert not was_kept(first)
    second, _ = kept(repo, store)
    assert was_kept(second)
    assert summary(second) == summary(first) == summary(repo.load())
    entry = second.environment("dev").services["api"].values.entries[("LOG_LEVEL",)]
    line = repo.line_of("environments/dev/_env.yaml", "LOG_LEVEL")
    assert str(entry.source) == f"environments/dev/_env.yaml:{line}"
    assert [str(o.source) for o in entry.overrode] == [
        f"environments/_defaults.yaml:{repo.line_of('environments/_defaults.yaml', 'LOG_LEVEL')}"
    ]


def test_a_service_file_edited_in_the_work_tree_is_read_again(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    kept(repo, store)
    repo.write(
        "environments/dev/api.yaml",
        "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.1}\nreplicas: 2\n"
        "values:\n  LOG_LEVEL: warn\n",
    )
    config = assert_fresh(repo, store)
    api = config.environment("dev").services["api"]
    assert (api.values.tree["LOG_LEVEL"], api.replicas) == ("warn", 2)
    assert api.image is not None and api.image.ref == "registry.example.com/shop/api:1.1"


def test_a_shared_layer_edited_changes_every_service_it_feeds(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    kept(repo, store)
    repo.write("environments/_defaults.yaml", "values:\n  LOG_LEVEL: info\n  DB_HOST: db2\n"
               "  DB_NAME: shop\n")  # fmt: skip
    config = assert_fresh(repo, store)
    assert config.environment("prod").services["api"].values.tree["DB_HOST"] == "db2"


def test_a_service_file_added_or_removed_is_seen(repo: ConfigRepo, store: DiskLoadStore) -> None:
    kept(repo, store)
    repo.write("templates/web/template.yaml", "outputs: [app.env]\nenv: []\n")
    repo.write("templates/web/app.env.j2", "X=1\n")
    repo.write("environments/dev/web.yaml", "template: HEAD\n")
    config = assert_fresh(repo, store)
    assert "web" in config.environment("dev").services
    repo.remove("environments/dev/web.yaml")
    config = assert_fresh(repo, store)
    assert "web" not in config.environment("dev").services


def test_a_head_template_edited_in_the_work_tree_is_read_again(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    repo.write("environments/dev/db.yaml", "template: HEAD\nimage: {ref: postgres:16}\n")
    before = assert_fresh(repo, store).environment("dev").services["db"].template
    repo.write("templates/db/app.env.j2", "POSTGRES_DB={{ DB_NAME }}\nEDITED=1\n")
    after = assert_fresh(repo, store).environment("dev").services["db"].template
    assert after.tree_id != before.tree_id
    assert b"EDITED=1" in (after.tree.read("app.env.j2") or b"")


def test_a_moved_tag_gives_the_new_commit_template(repo: ConfigRepo, store: DiskLoadStore) -> None:
    before = assert_fresh(repo, store).environment("dev").services["db"].template
    repo.write("templates/db/app.env.j2", "POSTGRES_DB={{ DB_NAME }}\nMOVED=1\n")
    repo.commit("db template changed under its released tag")
    repo.tag("db/1.0.0", force=True)
    after = assert_fresh(repo, store).environment("dev").services["db"].template
    assert after.tree_id != before.tree_id
    assert after.commit != before.commit
    assert b"MOVED=1" in (after.tree.read("app.env.j2") or b"")


def test_a_new_commit_with_the_same_files_names_the_new_commit(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    first = assert_fresh(repo, store)
    head = repo.commit("nothing changed")
    assert assert_fresh(repo, store).commit == head != first.commit


def test_a_file_replaced_by_a_link_is_refused_not_kept(
    repo: ConfigRepo, store: DiskLoadStore, tmp_path: Path
) -> None:
    kept(repo, store)
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY\n")
    path = repo.root / "environments/dev/db.yaml"
    path.unlink()
    os.symlink(secret, path)
    with pytest.raises(ConfigError, match="symbolic link"):
        kept(repo, store)
    with pytest.raises(ConfigError, match="symbolic link"):  # and again: errors are never kept
        kept(repo, store)


def test_an_environment_directory_replaced_by_a_link_is_refused_not_kept(
    repo: ConfigRepo, store: DiskLoadStore, tmp_path: Path
) -> None:
    """The same files behind a link (the directory moved, a link in its place): the replay
    checks the directories on the way, so the kept load is not used."""
    kept(repo, store)
    kept(repo, store)
    moved = tmp_path / "dev-elsewhere"
    (repo.root / "environments/dev").rename(moved)
    os.symlink(moved, repo.root / "environments/dev")
    with pytest.raises(ConfigError, match="symbolic link"):
        kept(repo, store)


def test_a_broken_config_is_reported_every_time_and_its_fix_loads(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    kept(repo, store)
    repo.write("environments/dev/db.yaml", "template: 9.9.9\n")
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"db/9\.9\.9"):
            kept(repo, store)
    repo.write("environments/dev/db.yaml", "template: 1.0.0\nimage: {ref: postgres:16}\n")
    assert_fresh(repo, store)


def test_warnings_of_a_kept_load_are_reported_again(repo: ConfigRepo, store: DiskLoadStore) -> None:
    repo.write(
        "environments/dev/db.yaml",
        "template: 1.0.0\nimage: {ref: postgres:16}\nvalues:\n  DB_NAMEE: typo\n",
    )
    _, fresh = kept(repo, store)
    config, again = kept(repo, store)
    assert was_kept(config)
    assert [str(p) for p in again.items] == [str(p) for p in fresh.items]
    assert any("DB_NAMEE" in p.message for p in again.warnings)


def test_limits_changed_in_the_project_file_are_applied(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    kept(repo, store)
    text = repo.read("configcenter.yaml")
    repo.write("configcenter.yaml", text + "limits:\n  yaml_file_size: 64\n")
    with pytest.raises(ConfigError, match="yaml_file_size"):
        kept(repo, store)


def test_other_code_never_uses_a_kept_load(repo: ConfigRepo, tmp_path: Path) -> None:
    kept(repo, SaltedStore(tmp_path / "loads", "one"))
    config, _ = kept(repo, SaltedStore(tmp_path / "loads", "two"))
    assert not was_kept(config)


def test_each_focus_is_kept_apart(repo: ConfigRepo, store: DiskLoadStore) -> None:
    dev, _ = kept(repo, store, environments=("dev",))
    both, _ = kept(repo, store)
    assert list(dev.environments) == ["dev"]
    assert list(both.environments) == ["dev", "prod"]
    one, _ = kept(repo, store, environments=("dev",), services=("db",))
    assert list(one.environment("dev").services) == ["db"]
    assert list(kept(repo, store, environments=("dev",))[0].environment("dev").services) == [
        "api",
        "db",
    ]


def test_an_unreadable_kept_load_is_a_miss(repo: ConfigRepo, store: DiskLoadStore) -> None:
    kept(repo, store)
    for path in store.directory.glob("*.load"):
        path.write_bytes(path.read_bytes()[:100])
    config, _ = kept(repo, store)
    assert not was_kept(config)
    assert summary(config) == summary(load_config(repo.source()))


def test_after_one_file_changes_the_rest_is_taken_from_the_kept_load_and_still_right(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    """An edit makes the next load build only what the edit touched: a service's warning is
    still reported, another environment's services are unchanged, the edit is seen."""
    repo.write(
        "environments/dev/db.yaml",
        "template: 1.0.0\nimage: {ref: postgres:16}\nvalues:\n  DB_NAMEE: typo\n",
    )
    _, fresh = kept(repo, store)
    assert any("DB_NAMEE" in p.message for p in fresh.warnings)
    repo.write(
        "environments/prod/api.yaml",
        "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\nreplicas: 5\n",
    )
    config, again = kept(repo, store)
    assert [str(p) for p in again.items] == [str(p) for p in fresh.items]
    assert config.environment("prod").services["api"].replicas == 5
    assert summary(config) == summary(repo.load())


def test_limits_lowered_apply_to_templates_taken_from_the_kept_load(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    kept(repo, store)
    text = repo.read("configcenter.yaml")
    repo.write("configcenter.yaml", text + "limits:\n  template_size: 40\n")
    with pytest.raises(ConfigError, match="template_size"):
        kept(repo, store)


def test_a_new_release_pinned_by_one_service_is_its_own_template(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    kept(repo, store)
    repo.release("db", "1.1.0", {"app.env.j2": "POSTGRES_DB={{ DB_NAME }}\nNEW=1\n"})
    repo.write("environments/dev/db.yaml", "template: 1.1.0\nimage: {ref: postgres:16}\n")
    config = assert_fresh(repo, store)
    dev, prod = (config.environment(e).services["db"].template for e in ("dev", "prod"))
    assert (dev.tag, prod.tag) == ("1.1.0", "1.0.0")
    assert b"NEW=1" in (dev.tree.read("app.env.j2") or b"")
    assert b"NEW=1" not in (prod.tree.read("app.env.j2") or b"")


def unread_docs(config: Config) -> int:
    """How many service documents of a kept load have not been unpickled yet."""
    return sum(
        "data" not in vars(s.doc)
        for env in config.environments.values()
        for s in env.services.values()
    )


def test_a_kept_load_unpickles_a_document_only_when_asked_where_a_value_came_from(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    kept(repo, store)
    config, _ = kept(repo, store)
    services = [s for env in config.environments.values() for s in env.services.values()]
    assert was_kept(config) and unread_docs(config) == len(services) > 1
    api = config.environment("dev").services["api"]
    line = repo.line_of("environments/dev/_env.yaml", "LOG_LEVEL")
    assert str(api.values.entries[("LOG_LEVEL",)].source) == f"environments/dev/_env.yaml:{line}"
    assert unread_docs(config) >= len(services) - 1  # the other services' files stay unread
    assert summary(config) == summary(repo.load())


def services_but(config: Config, edited: str) -> dict[str, Any]:
    """Every service of `config` by "env/name" but `edited`: those lent after its edit."""
    return {
        f"{env.name}/{name}": service
        for env in config.environments.values()
        for name, service in env.services.items()
        if f"{env.name}/{name}" != edited
    }


def test_a_load_after_an_edit_leaves_the_lent_documents_unread(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    """Lending checks dependencies without asking where each one was written: the
    templates' documents of the services taken from the kept load stay unread."""
    kept(repo, store)
    kept(repo, store)
    repo.write(
        "environments/prod/api.yaml",
        "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\nreplicas: 6\n",
    )
    config, _ = kept(repo, store)
    lent = list(services_but(config, "prod/api").values())
    assert lent and all("data" not in vars(s.template.doc) for s in lent)
    assert summary(config) == summary(repo.load())


def test_documents_a_kept_load_never_read_are_kept_again_after_an_edit(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    """A load after an edit writes the unchanged documents' bytes back as they were kept:
    two edits later, every service still says where each of its values came from."""
    kept(repo, store)
    kept(repo, store)
    for replicas in (3, 4):
        repo.write(
            "environments/prod/api.yaml",
            "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\n"
            f"replicas: {replicas}\n",
        )
        config = assert_fresh(repo, store)
        assert config.environment("prod").services["api"].replicas == replicas


def test_a_kept_load_with_garbled_documents_is_a_miss(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    kept(repo, store)
    for path in store.directory.glob("*.load"):
        data = bytearray(path.read_bytes())
        data[-20] ^= 0xFF  # inside the last document's bytes
        path.write_bytes(bytes(data))
    config, _ = kept(repo, store)
    assert not was_kept(config)
    assert summary(config) == summary(load_config(repo.source()))


def unread_trees(config: Config) -> list[str]:
    """The services of a kept load whose merged value trees were not unpickled yet."""
    return [
        f"{env.name}/{s.name}"
        for env in config.environments.values()
        for s in env.services.values()
        if not isinstance(s.values._tree, dict)
    ]


def test_a_kept_load_unpickles_a_value_tree_only_when_it_is_read(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    kept(repo, store)
    config, _ = kept(repo, store)
    services = [f"{e.name}/{s}" for e in config.environments.values() for s in e.services]
    assert was_kept(config) and sorted(unread_trees(config)) == sorted(services)
    fresh = repo.load()
    assert config.environment("dev").services["api"].values.tree == (
        fresh.environment("dev").services["api"].values.tree
    )
    assert sorted(unread_trees(config)) == sorted(s for s in services if s != "dev/api")
    assert summary(config) == summary(fresh)


def test_a_plan_of_unchanged_services_with_kept_digests_reads_no_value_tree(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    from configcenter.core.plan import make_plan
    from configcenter.core.render import Renderer
    from configcenter.core.state import EnvState
    from tests.support.configrepo import deploy_files, state_after

    deployed = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), {}.get)
    state, files = state_after(deployed), deploy_files(deployed)
    digests: dict[str, tuple[str, str, bool]] = {}
    kept(repo, store)
    config, _ = kept(repo, store)
    make_plan(config, "dev", state, Renderer(), files.get, digests=digests)  # fills them
    config, _ = kept(repo, store)
    plan = make_plan(config, "dev", state, Renderer(), files.get, digests=digests)
    assert [s.action for s in plan.services] == ["noop"] * len(plan.services)
    assert sorted(unread_trees(config)) == sorted(
        f"{e.name}/{s}" for e in config.environments.values() for s in e.services
    )
    # Asked for, the consumed values are the service's own, as a fresh load has them.
    fresh = repo.load().environment("dev").services
    for sp in plan.services:
        assert sp.consumed_values == sp.consumption.select(fresh[sp.service].values.tree)


def test_value_trees_a_kept_load_never_read_are_kept_again_after_an_edit(
    repo: ConfigRepo, store: DiskLoadStore
) -> None:
    kept(repo, store)
    kept(repo, store)
    repo.write(
        "environments/prod/api.yaml",
        "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\nreplicas: 5\n",
    )
    config, _ = kept(repo, store)
    lent = services_but(config, "prod/api")
    assert lent and set(lent) <= set(unread_trees(config))
    again, _ = kept(repo, store)
    assert was_kept(again) and summary(again) == summary(repo.load())
