"""Layering defaults < environment < service, with provenance for every merged value."""

from __future__ import annotations

import pytest

from configcenter.core.errors import ConfigError, Source
from configcenter.core.values import Override, SecretRef
from configcenter.usecases.inspect import explain
from configcenter.usecases.workspace import Workspace
from tests.support.configrepo import ConfigRepo

DEFAULTS = "environments/_defaults.yaml"
DEV_ENV = "environments/dev/_env.yaml"
API_DEV = "environments/dev/api.yaml"


@pytest.fixture
def layered(repo: ConfigRepo) -> ConfigRepo:
    repo.write(
        DEFAULTS,
        """\
        values:
          LOG_LEVEL: info
          DB_HOST: db
          DB_NAME: shop
          resources:
            cpu: 250m
            memory: 256Mi
          HOSTS: [a, b]
          TIMEOUTS:
            read: 5
            write: 10
        """,
    )
    repo.write(
        DEV_ENV,
        """\
        platform: local
        allow_head: true
        values:
          LOG_LEVEL: debug
          DB_PASSWORD: {secret: "env:SHOP_DB_PASSWORD"}
          resources:
            memory: 512Mi
        """,
    )
    repo.write(
        API_DEV,
        """\
        template: 1.0.0
        image: {ref: x}
        values:
          LOG_LEVEL: trace
          HOSTS: [c]
          TIMEOUTS: disabled
        """,
    )
    return repo


def src(repo: ConfigRepo, rel: str, needle: str) -> Source:
    return Source(rel, repo.line_of(rel, needle))


def test_merged_tree(layered: ConfigRepo) -> None:
    values = layered.load().environment("dev").services["api"].values
    assert values.tree == {
        "LOG_LEVEL": "trace",
        "DB_HOST": "db",
        "DB_NAME": "shop",
        "DB_PASSWORD": SecretRef("env:SHOP_DB_PASSWORD"),
        "resources": {"cpu": "250m", "memory": "512Mi"},  # maps merge key by key
        "HOSTS": ["c"],  # lists are replaced, not appended to
        "TIMEOUTS": "disabled",  # a scalar replaces a whole map
    }


def test_scalar_winner_and_what_it_overrode(layered: ConfigRepo) -> None:
    entry = layered.load().environment("dev").services["api"].values.entries[("LOG_LEVEL",)]
    assert (entry.value, entry.layer) == ("trace", "service")
    assert entry.source == src(layered, API_DEV, "LOG_LEVEL")
    assert entry.overrode == [
        Override("info", src(layered, DEFAULTS, "LOG_LEVEL"), "defaults"),
        Override("debug", src(layered, DEV_ENV, "LOG_LEVEL"), "environment"),
    ]


def test_map_keys_keep_their_own_provenance(layered: ConfigRepo) -> None:
    entries = layered.load().environment("dev").services["api"].values.entries
    cpu, memory = entries[("resources", "cpu")], entries[("resources", "memory")]
    assert (cpu.source, cpu.layer, cpu.overrode) == (src(layered, DEFAULTS, "cpu"), "defaults", [])
    assert (memory.source, memory.layer) == (src(layered, DEV_ENV, "memory"), "environment")
    assert memory.overrode == [Override("256Mi", src(layered, DEFAULTS, "memory"), "defaults")]


def test_replaced_list_and_map(layered: ConfigRepo) -> None:
    entries = layered.load().environment("dev").services["api"].values.entries
    hosts = entries[("HOSTS",)]
    assert hosts.overrode == [Override(["a", "b"], src(layered, DEFAULTS, "HOSTS"), "defaults")]
    timeouts = entries[("TIMEOUTS",)]
    assert timeouts.source == src(layered, API_DEV, "TIMEOUTS")
    assert timeouts.overrode == [
        Override(5, src(layered, DEFAULTS, "read"), "defaults"),
        Override(10, src(layered, DEFAULTS, "write"), "defaults"),
    ]
    assert ("TIMEOUTS", "read") not in entries


def test_map_replacing_a_scalar_keeps_the_override(repo: ConfigRepo) -> None:
    repo.write(
        API_DEV,
        "template: 1.0.0\nimage: {ref: x}\nvalues:\n  DB_NAME:\n    primary: a\n    replica: b\n",
    )
    entries = repo.load().environment("dev").services["api"].values.entries
    assert entries[("DB_NAME", "primary")].overrode == [
        Override("shop", src(repo, DEFAULTS, "DB_NAME"), "defaults")
    ]
    assert entries[("DB_NAME", "replica")].overrode == []


def test_other_environments_are_not_affected(layered: ConfigRepo) -> None:
    values = layered.load().environment("prod").services["api"].values
    assert values.tree["LOG_LEVEL"] == "info"
    assert values.tree["resources"] == {"cpu": "250m", "memory": "256Mi"}
    assert values.tree["TIMEOUTS"] == {"read": 5, "write": 10}


def test_explain_one_key(layered: ConfigRepo) -> None:
    (row,) = explain(Workspace(layered.root), "dev", "api", "LOG_LEVEL")
    assert row.key == "LOG_LEVEL"
    assert row.entry.value == "trace"
    assert [o.layer for o in row.entry.overrode] == ["defaults", "environment"]


def test_explain_a_map_prefix(layered: ConfigRepo) -> None:
    rows = explain(Workspace(layered.root), "dev", "api", "resources")
    assert [(r.key, r.entry.value) for r in rows] == [
        ("resources.cpu", "250m"),
        ("resources.memory", "512Mi"),
    ]


def test_explain_everything_is_sorted(layered: ConfigRepo) -> None:
    keys = [r.key for r in explain(Workspace(layered.root), "dev", "api", None)]
    assert keys == sorted(keys)
    assert "DB_PASSWORD" in keys


def test_explain_unknown_key(layered: ConfigRepo) -> None:
    with pytest.raises(ConfigError) as caught:
        explain(Workspace(layered.root), "dev", "api", "LOG_LEVL")
    (problem,) = caught.value.problems
    assert problem.message == "'LOG_LEVL' has no value for api in dev"
    assert problem.hint.startswith("values are: DB_HOST, DB_NAME, DB_PASSWORD")


def test_explain_unknown_service_and_env(layered: ConfigRepo) -> None:
    with pytest.raises(ConfigError) as caught:
        explain(Workspace(layered.root), "dev", "cache", None)
    assert caught.value.problems[0].message == "service 'cache' is not deployed in dev"
    with pytest.raises(ConfigError) as caught:
        explain(Workspace(layered.root), "stage", "api", None)
    assert caught.value.problems[0].message == "unknown environment 'stage'"
    assert caught.value.problems[0].hint == "environments: dev, prod"


LAYERS = [
    {"A": 1, "M": {"x": 1, "y": {"z": 1}}, "S": {"secret": "env:S"}, "L": [1, 2], "E": {}},
    {"M": {"y": 2, "w": [3]}, "A": {"now": "a map"}, "S": "plain", "E": {"k": 1}},
    {"M": {"y": {"again": {"secret": "env:T"}}}, "A": 7, "L": {"was": "a list"}, "N": None},
]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_the_tree_merged_alone_is_the_tree_merged_with_provenance(count: int) -> None:
    """Merging builds the tree without provenance; asking for the provenance merges the
    layers again: both give the same tree, maps replaced by scalars and back included."""
    from configcenter.core.values import Layered, _merge
    from configcenter.core.yamldoc import YamlDoc

    layered = Layered()
    tree: dict[str, object] = {}
    entries: dict[tuple[str, ...], object] = {}
    for index, values in enumerate(LAYERS[:count]):
        doc = YamlDoc(f"layer{index}.yaml", {"values": values})
        layered.merge(f"layer{index}", doc, values)
        _merge(tree, entries, (), f"layer{index}", doc, values)  # type: ignore[arg-type]
    assert layered.tree == tree
    assert set(layered.entries) == set(entries)
    assert layered.tree["S"] == (SecretRef("env:S") if count == 1 else "plain")
