"""Every cache is keyed by what it was computed from: change an input behind its back and
the next answer follows the input, never the cached one.

One test per cache, each changing the input the way a user would (new bytes under the
same name, a file edited between commands, a tag moved) and asserting the fresh result.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from configcenter.adapters import k8s_manifests
from configcenter.core.load import load_config
from configcenter.core.render import Renderer
from configcenter.ports.platform import Deployable
from configcenter.wiring import open_bytecode_cache
from tests.support.configrepo import ConfigRepo

MANIFEST = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata: {}\n"
APP_YAML = b"server:\n  port: 8080\n"


def _deployable(files: dict[str, bytes]) -> Deployable:
    return Deployable(
        env="dev",
        service="api",
        release_id="r1",
        image="registry.example.com/api:1",
        config_digest="",
        files=files,
        values={},
        secrets={},
        replicas=1,
        secrets_generation=1,
    )


def test_manifest_or_config_file_follows_the_bytes_under_the_same_name() -> None:
    """`config_files` remembers whether `extra.yaml` is manifests by name *and* content."""
    as_manifest = _deployable({"extra.yaml": MANIFEST})
    assert k8s_manifests.config_files(as_manifest) == {}
    # Same output name, now an application's YAML: it is a config file, not a manifest.
    as_app = _deployable({"extra.yaml": APP_YAML})
    assert k8s_manifests.config_files(as_app) == {"extra.yaml": APP_YAML}
    # And back: the first answer was not overwritten either.
    assert k8s_manifests.config_files(as_manifest) == {}


def test_env_output_entries_follow_the_bytes_under_the_same_name() -> None:
    """`.env` outputs are parsed once per name and content, never per name alone."""
    before = k8s_manifests.parse_env_file("app.env", b"A=1\nB=2\n")
    assert before == {"A": "1", "B": "2"}
    before["A"] = "changed by a caller"  # the kept answer is not the caller's dict
    assert k8s_manifests.parse_env_file("app.env", b"A=1\nB=2\n") == {"A": "1", "B": "2"}
    assert k8s_manifests.parse_env_file("app.env", b"A=3\n") == {"A": "3"}


def test_kept_consumption_records_follow_the_template_files(repo: ConfigRepo) -> None:
    """What a template reads is kept across runs by its tree's content id: a template edited
    in the work tree (the HEAD pin) is parsed again, by a new run with the same records."""
    records: dict[str, tuple[str, ...]] = {}

    def consumed() -> frozenset[str]:
        template = repo.load().environment("dev").services["db"].template
        return Renderer(consumption_records=records).consumption(template).names

    repo.write("environments/dev/db.yaml", "template: HEAD\nimage: {ref: postgres:16}\n")
    assert consumed() == {"DB_NAME"}
    assert len(records) == 1
    repo.write("templates/db/app.env.j2", "POSTGRES_DB={{ DB_NAME }}\nX={{ ADDED }}\n")
    assert consumed() == {"DB_NAME", "ADDED"}
    # Back to the first content: its record is the one used, and it is still right.
    repo.write("templates/db/app.env.j2", "POSTGRES_DB={{ DB_NAME }}\n")
    assert consumed() == {"DB_NAME"}
    assert len(records) == 2


def test_the_config_repo_keeps_consumption_records_on_disk(repo: ConfigRepo) -> None:
    """Written back by `save_caches`, read by the next run's adapter."""
    repo.write("environments/dev/db.yaml", "template: HEAD\nimage: {ref: postgres:16}\n")
    first = repo.source()
    Renderer(consumption_records=first.consumption_cache).consumption(
        load_config(first).environment("dev").services["db"].template
    )
    first.save_caches()
    assert list(repo.source().consumption_cache.values()) == [("DB_NAME",)]


def test_kept_yaml_parses_follow_the_file_contents(repo: ConfigRepo) -> None:
    """The config repo keeps YAML parses on disk by a digest of the file's text: a value
    edited between two runs is the new value, never the kept parse."""
    first = repo.source()
    assert load_config(first).environment("dev").services["api"].values.tree["DB_HOST"] == "db"
    first.save_caches()
    assert first.parse_cache
    defaults = repo.read("environments/_defaults.yaml")
    repo.write("environments/_defaults.yaml", defaults.replace("DB_HOST: db", "DB_HOST: db-2"))
    tree = load_config(repo.source()).environment("dev").services["api"].values.tree
    assert tree["DB_HOST"] == "db-2"


def test_kept_git_objects_follow_a_moved_tag(repo: ConfigRepo) -> None:
    """Git objects are kept by sha and tags are read afresh each run: a tag moved behind
    the cache's back (plan then refuses it as moved) reads the new commit's files."""
    first = repo.source()
    load_config(first)
    first.save_caches()
    repo.write("templates/db/app.env.j2", "POSTGRES_DB={{ DB_NAME }}\nMOVED=1\n")
    repo.commit("db: the same tag, other files")
    repo.tag("db/1.0.0", force=True)
    template = load_config(repo.source()).environment("dev").services["db"].template
    assert template.tree.read("app.env.j2") == b"POSTGRES_DB={{ DB_NAME }}\nMOVED=1\n"


def test_compiled_templates_follow_the_template_source(repo: ConfigRepo, tmp_path: Path) -> None:
    """Jinja's bytecode on disk is keyed by the template's source, and a renderer's compiled
    templates by the tree's content id: an edit renders anew in the same process and in
    the next one."""
    repo.write("environments/dev/db.yaml", "template: HEAD\nimage: {ref: postgres:16}\n")
    cache = tmp_path / "bytecode"

    def render(renderer: Renderer) -> bytes:
        config = repo.load()
        service = config.environment("dev").services["db"]
        return renderer.render(config, service, "postgres:16").files["app.env"]

    # `autoescape`: compiled by Jinja on its own, so its bytecode is what the cache keeps
    # (the shared compile's code for copies of a template is made again, never written).
    escape = "{% autoescape false %}POSTGRES_DB={{ DB_NAME }}{% endautoescape %}"
    repo.write("templates/db/app.env.j2", escape + "\n")
    renderer = Renderer(open_bytecode_cache(cache))
    assert render(renderer) == b"POSTGRES_DB=shop\n"
    assert any(cache.iterdir())
    repo.write("templates/db/app.env.j2", escape + "-edited\n")
    assert render(renderer) == b"POSTGRES_DB=shop-edited\n"
    assert render(Renderer(open_bytecode_cache(cache))) == b"POSTGRES_DB=shop-edited\n"
    # And a template the shared compile serves follows its source as well.
    repo.write("templates/db/app.env.j2", "POSTGRES_DB={{ DB_NAME }}-shared\n")
    assert render(renderer) == b"POSTGRES_DB=shop-shared\n"
    assert render(Renderer(open_bytecode_cache(cache))) == b"POSTGRES_DB=shop-shared\n"


def test_kept_manifest_parses_are_never_handed_out() -> None:
    """Each caller gets its own copy of a manifest's objects: building a release edits
    them (namespace, labels, pod spec), and the next build of the same bytes must start
    from the file, not from the last build's edits."""
    files = {"extra.yaml": MANIFEST}
    first = k8s_manifests.parse_manifests(files)
    first[0].body["metadata"]["name"] = "edited by a caller"
    first[0].body["data"]["added"] = "x"
    again = k8s_manifests.parse_manifests(files)
    assert again[0].body == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "extra"},
        "data": {},
    }


def test_a_manifest_alias_that_contains_itself_is_refused() -> None:
    looping = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: &d {self: *d}\n"
    with pytest.raises(k8s_manifests.ManifestError, match="alias refers to itself"):
        k8s_manifests.parse_manifests({"loop.yaml": looping})
